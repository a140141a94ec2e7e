"""IteRand (Chijiwa et al. 2021): edge-popup plus periodic re-draws of the pruned weights.

Every ``K_per`` steps each currently pruned weight (``m_j = 0``; with ``rerand_rate`` < 1 only the
lowest ``p·rate`` fraction of scores) is, independently with probability ``r``, replaced by a
fresh draw from the weight distribution. Kept weights, scores and optimizer state are untouched.

The re-draw at step ``t`` of layer ``i`` uses a CPU generator seeded by ``(seed, t, i)``: all
data-parallel ranks draw the same values without communicating, a resumed run draws what the
uninterrupted one would have, and a ticket can regenerate any re-drawn value from the step
alone. To that end each pruned layer keeps ``sources``: for every weight, which draw it holds
(0 = the initial one, e = the e-th re-draw), and the pruner keeps the steps of all re-draws.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from ptl_cli.engine.compute import host_to_device
from ptl_cli.pruning import TicketSpec
from ptl_prune import inits, supermask
from ptl_prune.edgepopup import EdgePopup

_MAX_EVENTS = torch.iinfo(torch.int16).max


class IteRand(EdgePopup):
    method = "iterand"

    def __init__(
        self,
        rerand_freq: int = 300,
        rerand_freq_unit: str = "iterations",
        rerand_lambda: float = 0.1,
        rerand_rate: float = 1.0,
        **edge_popup: Any,
    ) -> None:
        super().__init__(**edge_popup)
        self.rerand_freq = rerand_freq
        self.rerand_freq_unit = rerand_freq_unit
        self.rerand_lambda = rerand_lambda
        self.rerand_rate = rerand_rate
        self.steps_per_epoch = 0
        self.events: list[int] = []

    def prepare(self, model: nn.Module, seed: int) -> nn.Module:
        super().prepare(model, seed)
        for *_, mask in supermask.masked_layers(model):
            source = torch.zeros(mask.shape, dtype=torch.int16, device=mask.scores.device)
            mask.register_buffer("sources", source)
        return model

    def configure(self, steps_per_epoch: int) -> None:
        """Called by the training loop before it starts: needed for ``rerand_freq_unit = epochs``."""
        self.steps_per_epoch = int(steps_per_epoch)

    @property
    def interval(self) -> int:
        """Steps between re-draws."""
        if self.rerand_freq_unit == "epochs":
            if self.steps_per_epoch <= 0:
                raise RuntimeError("IteRand with rerand_freq_unit='epochs' needs configure(steps_per_epoch)")
            return max(1, self.steps_per_epoch // self.rerand_freq)
        return self.rerand_freq

    def after_step(self, model: nn.Module, step: int) -> None:
        if step > 0 and step % self.interval == 0 and self.rerand_lambda > 0:
            self.redraw(model, step)

    @torch.no_grad()
    def redraw(self, model: nn.Module, step: int) -> None:
        """Re-draw each eligible pruned weight with probability ``r`` (seeded by ``(seed, step, layer)``)."""
        if len(self.events) >= _MAX_EVENTS:
            raise RuntimeError(f"IteRand records at most {_MAX_EVENTS} re-draws; raise rerand_freq")
        event = len(self.events) + 1
        for index, _, module, mask in supermask.masked_layers(model):
            weight = supermask.original(module)
            # Drawn on the CPU on purpose: the same values on every device and rank, so tickets
            # rebuild anywhere; copied from pinned memory, so the host does not wait for the GPU.
            gen = inits.redraw_generator(self.seed, step, index)
            fresh = inits.draw(self.weight_init, weight.shape, gen)  # drawn first: tickets need only these
            coin = torch.rand(weight.shape, generator=gen) < self.rerand_lambda
            change = host_to_device(coin, weight.device).logical_and_(~mask.kept(self.rerand_rate))
            fresh = host_to_device(fresh.to(weight.dtype), weight.device)
            weight.copy_(torch.where(change, fresh, weight))
            mask.sources.masked_fill_(change, event)
        self.events.append(int(step))

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "events": list(self.events)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.events = [int(s) for s in state.get("events", [])]

    def ticket_spec(self, model: nn.Module) -> TicketSpec:
        """edge-popup's, plus the re-draw steps and which draw each weight holds."""
        spec = super().ticket_spec(model)
        sources = {name: mask.sources for _, name, _, mask in supermask.masked_layers(model)}
        return dataclasses.replace(spec, redraws=tuple(self.events), sources=sources if self.events else {})
