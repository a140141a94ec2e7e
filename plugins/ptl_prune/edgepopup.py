"""edge-popup (Ramanujan et al. 2020): train scores that select a subnetwork of frozen random weights.

Every Conv/Linear layer (first and last included, unless configured otherwise) gets a
:class:`~ptl_prune.supermask.Supermask`. Its weights are re-drawn from ``weight_init`` with a
generator seeded by ``(seed, layer)``: the network is then a function of the seed alone, which
is what a ticket stores. Biases of these layers are zero and frozen (a random bias is not part
of the selected subnetwork), BatchNorm is non-affine unless ``bn_affine``, and only the scores
(plus BatchNorm's scale/shift with ``bn_affine``) are trained. Everything else stays frozen.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ptl_cli.errors import UserError
from ptl_cli.pruning import TicketSpec
from ptl_prune import inits, supermask


class EdgePopup:
    """A pruner (see :class:`ptl_cli.contracts.Pruner`) that learns scores, never weights."""

    method = "edge-popup"
    #: the parametrization put on each pruned layer (a subclass maps ``W`` differently: MPT, signed)
    supermask_kind: type[supermask.Supermask] = supermask.Supermask

    def __init__(
        self,
        sparsity: float = 0.5,
        score_abs: bool = False,
        weight_init: str = "kaiming_uniform",
        score_init: str = "kaiming_uniform",
        prune_first_layer: bool = True,
        prune_last_layer: bool = True,
        bn_affine: bool = False,
        layer_sparsity: dict[str, float] | None = None,
        sparsity_scope: str = "layer",
        frozen_pruned: float = 0.0,
        frozen_kept: float = 0.0,
        frozen_distribution: str = "uniform",
    ) -> None:
        self.rate = sparsity
        self.scope = sparsity_scope
        self.score_abs = score_abs
        self.weight_init = weight_init
        self.score_init = score_init
        self.prune_first_layer = prune_first_layer
        self.prune_last_layer = prune_last_layer
        self.bn_affine = bn_affine
        self.layer_sparsity = dict(layer_sparsity or {})
        #: partial search in a frozen network (:mod:`ptl_prune.frozen`): fractions frozen per layer
        self.frozen_pruned, self.frozen_kept = float(frozen_pruned), float(frozen_kept)
        self.frozen_distribution = frozen_distribution
        self.seed = 0
        self.group: supermask.GlobalTopK | None = None

    # -- the Pruner contract -------------------------------------------------------------------
    def prepare(self, model: nn.Module, seed: int) -> nn.Module:
        """Re-draw every Conv/Linear weight from ``(seed, layer)``, wrap the pruned ones, freeze."""
        self.seed = int(seed)
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        layers = supermask.prunable_layers(model)
        self._check_patterns([name for name, _ in layers])
        shapes = {name: tuple(module.weight.shape) for name, module in layers}
        frozen_counts = self.frozen_counts(shapes) if self.frozen_pruned or self.frozen_kept else {}
        ranked_together = []
        for index, (name, module) in enumerate(layers):
            weight = inits.initial_weight(self.weight_init, module.weight.shape, self.seed, index)
            with torch.no_grad():
                module.weight.copy_(weight)
                if module.bias is not None:
                    module.bias.zero_()
            rate = self.layer_rate(name, index, len(layers))
            if rate > 0:
                scores = inits.initial_scores(self.score_init, module.weight.shape, self.seed, index)
                scores = scores.to(module.weight.device)
                mask = supermask.attach(module, scores, rate, self.score_abs, self._kind())
                if name in frozen_counts:
                    self._freeze(mask, index, *frozen_counts[name])
                if self._override(name) is None:
                    ranked_together.append(mask)
        self.group = None
        if self.scope == "global" and ranked_together:
            # one top-k over every layer at the global rate (overridden layers keep their own)
            self.group = supermask.GlobalTopK(ranked_together, self.rate)
        supermask.batchnorm_affine(model, self.bn_affine)
        return model

    def _kind(self) -> type[supermask.Supermask]:
        """The layers' parametrization: ``supermask_kind``, searching only part of each layer when
        some of it is frozen (the same kind, its scores limited: :func:`ptl_prune.frozen.partial`)."""
        if not (self.frozen_pruned or self.frozen_kept):
            return self.supermask_kind
        from ptl_prune import frozen

        return frozen.partial(self.supermask_kind)

    def _freeze(self, mask: supermask.Supermask, index: int, pruned: int, kept: int) -> None:
        """Freeze this layer's seeded part (the rest keeps its scores)."""
        from ptl_prune import frozen

        mask.freeze(frozen.pattern_of(mask.shape, pruned, kept, self.seed, index))

    def frozen_counts(self, shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, int]]:
        """How many weights of each pruned layer are frozen pruned and kept (``shapes``: every
        Conv/Linear layer's weight shape, in order), or the one-line error when they do not fit.

        The distribution spreads the network-wide fractions over the layers with a positive rate.
        A layer ranked on its own must prune at least its frozen-pruned weights and keep at least
        its frozen-kept ones; layers ranked together (``sparsity_scope = "global"``) need that of
        their totals only, each layer's count being free. :mod:`ptl_prune.preflight` calls this on
        the network built on the meta device, so ``--dry-run`` refuses what the run would."""
        from ptl_prune import frozen

        names = list(shapes)
        rates = {name: self.layer_rate(name, i, len(names)) for i, name in enumerate(names)}
        pruned_layers = [name for name in names if rates[name] > 0]
        counts = frozen.layer_counts(
            [shapes[name] for name in pruned_layers],
            self.frozen_pruned,
            self.frozen_kept,
            self.frozen_distribution,
        )
        out = dict(zip(pruned_layers, counts, strict=True))
        together = [name for name in pruned_layers if self.scope == "global" and self._override(name) is None]
        for name in pruned_layers:
            if name in together:
                continue
            n = math.prod(shapes[name])
            cut, (p, k) = supermask.num_pruned(n, rates[name]), out[name]
            if p > cut or k > n - cut:
                uniform = self.frozen_distribution == "uniform"  # the fractions asked, else the layer's
                fp, fk = (self.frozen_pruned, self.frozen_kept) if uniform else (p / n, k / n)
                raise UserError(
                    f"layer {name!r} prunes {rates[name]:g} of its weights, which cannot hold its "
                    f"frozen_pruned {fp:.4g} (at most the rate) and frozen_kept {fk:.4g} "
                    f"(at most 1 - rate){self._frozen_hint()}"
                )
        if together:
            n = sum(math.prod(shapes[name]) for name in together)
            cut = supermask.num_pruned(n, self.rate)
            p, k = (sum(out[name][i] for name in together) for i in (0, 1))
            if p > cut or k > n - cut:
                raise UserError(
                    f"the {len(together)} layers ranked together prune {cut} of their {n} weights and "
                    f"keep {n - cut}, which cannot hold {p} frozen pruned and {k} frozen kept; lower "
                    "pruner.params.frozen_pruned/frozen_kept or change the sparsity"
                )
        return out

    def _frozen_hint(self) -> str:
        if self.frozen_distribution == "erk":
            return (
                "; frozen_distribution 'erk' freezes large layers more than the network-wide fractions: "
                "lower them, or rank the layers together (sparsity_scope 'global')"
            )
        return ""

    def _check_patterns(self, names: list[str]) -> None:
        """A ``layer_sparsity`` glob that matches no layer is a typo: fail before anything trains."""
        for pattern in self.layer_sparsity:
            if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
                shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
                raise UserError(
                    f"pruner.params.layer_sparsity pattern {pattern!r} matches no Conv/Linear layer of the "
                    f"model; its {len(names)} layers are named like: {shown}"
                )

    def layer_rate(self, name: str, index: int, count: int) -> float:
        """The sparsity of one layer: the global rate, first/last exceptions, then name overrides."""
        rate = self.rate
        if (index == 0 and not self.prune_first_layer) or (index == count - 1 and not self.prune_last_layer):
            rate = 0.0
        override = self._override(name)
        return rate if override is None else override

    def _override(self, name: str) -> float | None:
        """The ``layer_sparsity`` value of the first pattern matching ``name``, if any."""
        for pattern, value in self.layer_sparsity.items():
            if fnmatch.fnmatchcase(name, pattern):
                return value
        return None

    def trainable_parameters(self, model: nn.Module) -> Iterable[nn.Parameter]:
        """The scores, and BatchNorm's scale/shift with ``bn_affine`` (all that requires grad)."""
        return [p for p in model.parameters() if p.requires_grad]

    def before_forward(self, model: nn.Module) -> None:
        """With ``sparsity_scope = "global"``: the one top-k over all layers' scores, computed once
        per step (the layers' forwards then read their part of it)."""
        if self.group is not None:
            self.group.refresh()

    def after_step(self, model: nn.Module, step: int) -> None:
        """Nothing: edge-popup never touches weights."""

    def sparsity(self, model: nn.Module) -> float:
        kept, total = self.counts(model)
        return 1.0 - kept / total if total else 0.0

    def counts(self, model: nn.Module) -> tuple[int, int]:
        """(kept, total) Conv/Linear weights, from the current masks (dense layers count as kept)."""
        total = kept = 0
        with torch.no_grad():
            for _, module in supermask.prunable_layers(model):
                mask = supermask.supermask_of(module)
                n = supermask.original(module).numel()
                total += n
                kept += n if mask is None else int(torch.count_nonzero(mask.kept()))
        return kept, total

    def sparsity_by_layer(self, model: nn.Module) -> dict[str, float]:
        """Fraction pruned of every Conv/Linear layer, from the current masks (0 for dense ones)."""
        out = {}
        with torch.no_grad():
            for name, module in supermask.prunable_layers(model):
                mask = supermask.supermask_of(module)
                n = supermask.original(module).numel()
                out[name] = 0.0 if mask is None or n == 0 else (n - int(torch.count_nonzero(mask.kept()))) / n
        return out

    def export_dense(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return supermask.dense_state_dict(model)

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed = int(state.get("seed", self.seed))

    # -- tickets ---------------------------------------------------------------------------------
    def ticket_spec(self, model: nn.Module) -> TicketSpec:
        """The weights are ``inits.initial_weight(weight_init, shape, seed, layer)``: the seed, the
        distribution and the masks rebuild them (see :class:`ptl_cli.pruning.TicketSpec`)."""
        masks = {name: mask.kept() for _, name, _, mask in supermask.masked_layers(model)}
        return TicketSpec(seed=self.seed, weight_init=self.weight_init, masks=masks)
