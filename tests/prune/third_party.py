"""A third-party score-only pruner, as a plugin author writes it from docs/plugins alone.

``gtopk`` is edge-popup with one global top-k over every layer's scores: frozen random weights
drawn with ``ptl_prune.inits``, a score per weight, masks computed across layers in
``before_forward`` and kept on the pruner (no private tensor attributes). ``gtopk-ticket`` is the
same pruner declaring what rebuilds it (``ticket_spec``); ``gtopk-fat`` declares a ticket whose
sources make it bigger than the dense export, ``gtopk-liar`` one with the wrong seed. Installed
with ``ptl_cli.testing.install_plugin``.
"""

SOURCE = '''
from typing import ClassVar

import torch
from pydantic import Field
from torch import nn
from torch.nn.utils import parametrize

from ptl_cli import hookimpl
from ptl_cli.pruning import TicketSpec
from ptl_cli.schema import Params


class GlobalParams(Params):
    default_lr: ClassVar[float] = 0.7
    sparsity: float = Field(0.5, ge=0.0, lt=1.0, description="fraction of all weights pruned")
    weight_init: str = Field("signed_constant", description="a ptl_prune.inits distribution")


class Masked(nn.Module):
    """W * m: the mask comes from the pruner, straight-through gradient to the scores."""

    def __init__(self, owner, index, scores):
        super().__init__()
        self.owner, self.index = [owner], index  # a list: not registered as a submodule
        self.scores = nn.Parameter(scores)

    def forward(self, weight):
        kept = self.owner[0].masks[self.index]
        return weight * (kept + (self.scores - self.scores.detach()))  # exactly kept, forward


class GlobalTopK:
    def __init__(self, sparsity=0.5, weight_init="signed_constant"):
        self.rate, self.weight_init, self.seed = sparsity, weight_init, 0
        self.layers, self.masks = [], []

    def prepare(self, model, seed):
        from ptl_prune import inits

        self.seed = seed
        for p in model.parameters():
            p.requires_grad_(False)
        convs = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        for index, (name, module) in enumerate(convs):
            with torch.no_grad():
                module.weight.copy_(inits.initial_weight(self.weight_init, module.weight.shape, seed, index))
                if module.bias is not None:
                    module.bias.zero_()
            scores = inits.initial_scores("kaiming_uniform", module.weight.shape, seed, index)
            self.layers.append((name, module, Masked(self, index, scores)))
        self.before_forward(model)
        for _, module, mask in self.layers:
            parametrize.register_parametrization(module, "weight", mask, unsafe=True)
        return model

    def before_forward(self, model):
        """One threshold over every layer's scores: exactly round(p*n) pruned in all."""
        with torch.no_grad():
            flat = torch.cat([mask.scores.reshape(-1) for _, _, mask in self.layers])
            pruned = int(self.rate * flat.numel() + 0.5)
            kept = torch.ones_like(flat, dtype=torch.bool)
            kept[flat.argsort(stable=True)[:pruned]] = False
            sizes = [mask.scores.numel() for _, _, mask in self.layers]
            self.masks = [
                part.view(mask.scores.shape).float()
                for part, (_, _, mask) in zip(kept.split(sizes), self.layers)
            ]

    def trainable_parameters(self, model):
        return [mask.scores for _, _, mask in self.layers]

    def after_step(self, model, step):
        pass

    def sparsity(self, model):
        self.before_forward(model)
        total = sum(m.numel() for m in self.masks)
        return 1.0 - float(sum(m.sum() for m in self.masks)) / total

    def export_dense(self, model):
        self.before_forward(model)
        out = {}
        for key, value in model.state_dict().items():
            if ".parametrizations." not in key:
                out[key] = value.clone()
        for (name, module, _), kept in zip(self.layers, self.masks):
            w = module.parametrizations.weight.original
            out[name + ".weight"] = torch.where(kept.bool(), w, torch.zeros((), dtype=w.dtype))
        return out

    def state_dict(self):
        return {"seed": self.seed}

    def load_state_dict(self, state):
        self.seed = state["seed"]


class DeclaredGlobalTopK(GlobalTopK):
    def ticket_spec(self, model):
        self.before_forward(model)
        masks = {name: kept.bool() for (name, _, _), kept in zip(self.layers, self.masks)}
        return TicketSpec(seed=self.seed, weight_init=self.weight_init, masks=masks)


class FatTicket(DeclaredGlobalTopK):
    """Declares a log of 30,000 re-draws and random sources: on a small network its ticket is
    bigger than the dense weights."""

    def ticket_spec(self, model):
        spec = super().ticket_spec(model)
        gen = torch.Generator().manual_seed(0)
        sources = {n: torch.randint(0, 30001, m.shape, generator=gen) for n, m in spec.masks.items()}
        return TicketSpec(spec.seed, spec.weight_init, spec.masks, tuple(range(1, 30001)), sources)


class WrongSeed(DeclaredGlobalTopK):
    """Declares another seed than the one its weights were drawn from: the rebuild differs."""

    def ticket_spec(self, model):
        spec = super().ticket_spec(model)
        return TicketSpec(spec.seed + 1, spec.weight_init, spec.masks)


@hookimpl
def ptl_register_pruners(register):
    register("gtopk", GlobalTopK, description="global top-k scores", params=GlobalParams)
    register("gtopk-ticket", DeclaredGlobalTopK, description="gtopk with a ticket", params=GlobalParams)
    register("gtopk-fat", FatTicket, description="gtopk with a ticket bigger than dense", params=GlobalParams)
    register("gtopk-liar", WrongSeed, description="gtopk declaring the wrong seed", params=GlobalParams)
'''
