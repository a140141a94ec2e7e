"""Gem-Miner (Sreenivasan et al., NeurIPS 2022, "Rare Gems"): scores in [0, 1] rounded to a mask.

Every pruned layer holds scores ``S ∈ [0, 1]`` (drawn from U(0, 1)) and a 0/1 ``flag`` (all ones
at first). The forward uses ``W ⊙ m`` with ``m = flag ⊙ [S > 0.5]``: the scores are rounded, never
ranked, so the sparsity emerges from them. The rounding is straight-through (``dL/dS = dL/dŴ ⊙ W ⊙
flag``), the loss carries the regulariser ``λ·‖S‖²`` that pushes scores towards 0, and after every
optimizer step the scores are clamped back into [0, 1]. The target sparsity ``p`` is reached by an
iterative schedule: ``R`` times during the search (every ``prune_every`` epochs) the lowest
``ceil(r · active)`` scores among the still-flagged weights of *all* layers are unflagged for good,
with ``r = 1 - (1 - p)^(1/R)``, so after ``R`` rounds at most ``1 - p`` of the weights remain.

This follows ``hc_iter`` of the reference code (ksreenivasan/pruning_is_enough), read, not copied:

* the rounds come where the reference puts them: after epoch ``kP`` counted from 0 (so the first
  after ``P + 1`` epochs), ``R = floor((E - 1) / P)`` of them in ``E`` search epochs;
* a round unflags every flagged weight whose score is not above the ``ceil(r · active)``-th
  smallest (ties go together, as in the reference); the rounded mask ``[S > 0.5]`` may prune more;
* ``λ·‖S‖²`` enters as its gradient ``2λS``, added to the scores' gradients just before each
  optimizer step (after fp16 loss scaling is undone, so it does not depend on the loss scale); the
  recipe's ``train.weight_decay`` adds to it (the reference's is 0 during the search).

With ``finetune_epochs`` > 0 the last epochs fine-tune the kept weights (the paper's "+ fine-tune"):
the mask is frozen (with ``unflag_before_finetune``, the reference's setting, it is the schedule's
``flag`` alone: weights the rounding dropped come back), the scores stop, the weights train with
``finetune_lr`` (×0.1 after 8/15 and 12/15 of those epochs, the reference's 80 and 120 of 150) and
``finetune_weight_decay``. Without fine-tuning the network is seed + mask, and a ticket rebuilds it.
"""

from __future__ import annotations

import math
import weakref
from typing import Any

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from ptl_cli.engine.seeding import generator_for
from ptl_cli.errors import UserError
from ptl_cli.pruning import TicketSpec
from ptl_prune import inits, supermask
from ptl_prune.edgepopup import EdgePopup

#: the reference's rounding threshold (``quantize_threshold``)
THRESHOLD = 0.5

# -- the regulariser -----------------------------------------------------------------------------
# id(score parameter) -> (weak reference to it, λ): filled by GemMiner.prepare.
_REGULARISED: dict[int, tuple[weakref.ref, float]] = {}


def _add_regulariser_gradient(optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
    """``dS += 2λS`` for every Gem-Miner score this optimizer is about to update.

    A global step pre-hook: it runs inside ``optimizer.step()``, after a ``GradScaler`` has
    unscaled the gradients (and not at all for a step it skips), for fused optimizers too."""
    if not _REGULARISED:
        return
    with torch.no_grad():
        for group in optimizer.param_groups:
            for param in group["params"]:
                entry = _REGULARISED.get(id(param))
                if entry is not None and entry[0]() is param and param.grad is not None:
                    param.grad.add_(param, alpha=2.0 * entry[1])


register_optimizer_step_pre_hook(_add_regulariser_gradient)


def _register(scores: nn.Parameter, lmbda: float) -> None:
    for key in [k for k, (ref, _) in _REGULARISED.items() if ref() is None]:
        del _REGULARISED[key]
    if lmbda > 0:
        _REGULARISED[id(scores)] = (weakref.ref(scores), float(lmbda))


# -- the parametrization -------------------------------------------------------------------------
class _RoundedWeight(torch.autograd.Function):
    """``W ⊙ flag ⊙ [S > 0.5]`` forward. Backward, searching: ``dL/dS = g ⊙ W ⊙ flag`` (straight
    through the rounding); fine-tuning: ``dL/dW = g ⊙ m`` and nothing for ``S``."""

    @staticmethod
    def forward(ctx, weight, scores, flag, tune):  # type: ignore[override]
        kept = flag & (scores.detach() > THRESHOLD)
        ctx.tune = tune
        ctx.save_for_backward(weight, kept if tune else flag)
        return weight * kept.view(torch.uint8)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        weight, mask = ctx.saved_tensors
        if ctx.tune:
            return (grad * mask.view(torch.uint8) if ctx.needs_input_grad[0] else None), None, None, None
        grad_scores = grad * weight * mask.view(torch.uint8) if ctx.needs_input_grad[1] else None
        return None, grad_scores, None, None


class GemSupermask(supermask.Supermask):
    """The parametrization: scores in [0, 1], the schedule's ``flag`` (a bool buffer), the
    rounded mask ``flag ⊙ [S > 0.5]``; ``tune`` is set by the pruner in the fine-tuning epochs."""

    def __init__(self, scores: torch.Tensor, sparsity: float = 0.0, score_abs: bool = False) -> None:
        super().__init__(scores, 0.0, False)
        self.register_buffer("flag", torch.ones(scores.shape, dtype=torch.bool, device=scores.device))
        self.tune = False

    def kept(self, rate: float = 1.0) -> torch.Tensor:
        return self.flag & (self.scores.detach() > THRESHOLD)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return _RoundedWeight.apply(weight, self.scores, self.flag, self.tune)

    def extra_repr(self) -> str:
        return f"threshold={THRESHOLD}"


def finetune_lr_at(epoch: int, epochs: int, lr: float) -> float:
    """The fine-tuning learning rate in its ``epoch`` (from 0) of ``epochs``: ×0.1 at 8/15 and
    12/15 of them (the reference's multistep milestones 80 and 120 of 150)."""
    milestones = (math.floor(epochs * 8 / 15), math.floor(epochs * 12 / 15))
    return lr * 0.1 ** sum(0 < m <= epoch for m in milestones)  # a milestone at 0 (few epochs): none


class GemMiner(EdgePopup):
    """A pruner (see :class:`ptl_cli.contracts.Pruner`): Gem-Miner's rounded scores, regulariser and
    iterative schedule, with optional weight fine-tuning after."""

    method = "gem-miner"
    supermask_kind = GemSupermask

    def __init__(
        self,
        sparsity: float = 0.9628,
        lmbda: float = 3e-5,
        prune_every: int = 5,
        prune_every_unit: str = "epochs",
        prune_rounds: int | None = None,
        weight_init: str = "signed_constant",
        prune_first_layer: bool = True,
        prune_last_layer: bool = True,
        bn_affine: bool = False,
        finetune_epochs: int = 0,
        finetune_lr: float = 0.01,
        finetune_weight_decay: float = 1e-4,
        unflag_before_finetune: bool = True,
    ) -> None:
        super().__init__(
            sparsity=sparsity,
            weight_init=weight_init,
            prune_first_layer=prune_first_layer,
            prune_last_layer=prune_last_layer,
            bn_affine=bn_affine,
        )
        self.lmbda = float(lmbda)
        self.prune_every = int(prune_every)
        self.prune_every_unit = prune_every_unit
        self.prune_rounds = prune_rounds
        self.finetune_epochs = int(finetune_epochs)
        self.finetune_lr = float(finetune_lr)
        self.finetune_weight_decay = float(finetune_weight_decay)
        self.unflag_before_finetune = bool(unflag_before_finetune)
        self.steps_per_epoch = 0
        self.epochs = 0
        self.step = 0

    # -- schedule ------------------------------------------------------------------------------
    def configure(self, steps_per_epoch: int, epochs: int = 0) -> None:
        """Called by ``ptl prune`` before training: the rounds and the fine-tuning are in epochs."""
        self.steps_per_epoch, self.epochs = int(steps_per_epoch), int(epochs)
        self.check_epochs(self.epochs)
        if self.rounds() < 1:
            raise UserError(
                f"pruner 'gem-miner': no pruning round fits in {self.search_units()} search "
                f"{self.prune_every_unit} with prune_every {self.prune_every} (the first round comes after "
                "prune_every + 1); lower prune_every or set prune_rounds"
            )

    def check_epochs(self, epochs: int) -> None:
        """The errors a recipe's ``train.epochs`` can cause, raised by ``--dry-run`` as by the run."""
        if epochs and self.finetune_epochs >= epochs:
            raise UserError(
                f"pruner 'gem-miner': finetune_epochs {self.finetune_epochs} leaves no search epoch of "
                f"train.epochs {epochs}; train.epochs counts the search and the fine-tuning"
            )
        search = epochs - self.finetune_epochs
        if (
            epochs
            and self.prune_every_unit == "epochs"
            and self.prune_rounds is None
            and search <= self.prune_every
        ):
            raise UserError(
                f"pruner 'gem-miner': no pruning round fits in {search} search epochs with prune_every "
                f"{self.prune_every} (the first round comes after prune_every + 1); lower prune_every"
            )

    def _unit(self) -> int:
        """Steps per unit of ``prune_every``."""
        return self.steps_per_epoch if self.prune_every_unit == "epochs" else 1

    def search_steps(self) -> int | None:
        """Steps of the score search (None: not configured, all of them)."""
        if not self.epochs or not self.steps_per_epoch:
            return None
        return (self.epochs - self.finetune_epochs) * self.steps_per_epoch

    def search_units(self) -> int:
        steps = self.search_steps()
        return 0 if steps is None or not self._unit() else steps // self._unit()

    def rounds(self) -> int:
        """``R``: given, or the reference's ``floor((E - 1) / P)`` for ``E`` search units."""
        if self.prune_rounds is not None:
            return int(self.prune_rounds)
        return max(0, (self.search_units() - 1) // self.prune_every)

    def round_rate(self) -> float:
        """``r = 1 - (1 - p)^(1/R)``: the share of the flagged weights each round unflags."""
        rounds = self.rounds()
        return 0.0 if rounds < 1 else 1.0 - (1.0 - self.rate) ** (1.0 / rounds)

    def round_at(self, step: int) -> int:
        """The round (1..R) that ends at ``step``, or 0: after unit ``kP + 1`` (counted from 1)."""
        unit = self._unit()
        if unit <= 0 or step % unit:
            return 0
        done = step // unit  # units completed
        if done <= 1 or (done - 1) % self.prune_every:
            return 0
        k = (done - 1) // self.prune_every
        return k if k <= self.rounds() else 0

    def tuning(self, step: int) -> bool:
        """Whether the step after ``step`` fine-tunes weights."""
        search = self.search_steps()
        return bool(self.finetune_epochs) and search is not None and step >= search

    # -- the Pruner contract -------------------------------------------------------------------
    def prepare(self, model: nn.Module, seed: int) -> nn.Module:
        """Weights from ``(seed, layer)``, scores U(0, 1) from ``(seed, layer)``, flags all ones."""
        self.seed = int(seed)
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        layers = supermask.prunable_layers(model)
        for index, (name, module) in enumerate(layers):
            weight = inits.initial_weight(self.weight_init, module.weight.shape, self.seed, index)
            with torch.no_grad():
                module.weight.copy_(weight)
                if module.bias is not None:
                    module.bias.zero_()
            if self.layer_rate(name, index, len(layers)) > 0:
                gen = generator_for(self.seed, inits.SCORE, index)
                scores = torch.empty(module.weight.shape).uniform_(0.0, 1.0, generator=gen)
                mask = supermask.attach(module, scores.to(module.weight.device), 0.0, False, GemSupermask)
                _register(mask.scores, self.lmbda)
                if self.finetune_epochs:
                    supermask.original(module).requires_grad_(True)  # trained only once tuning
        supermask.batchnorm_affine(model, self.bn_affine)
        return model

    def before_forward(self, model: nn.Module) -> None:
        """Search or fine-tune, from the steps done (so a resumed run knows its phase)."""
        tune = self.tuning(self.step)
        for *_, mask in supermask.masked_layers(model):
            mask.tune = tune

    def search_epochs(self, epochs: int) -> int:
        """The epochs the recipe's learning-rate schedule spans: those of the search."""
        return epochs - self.finetune_epochs

    def epoch_settings(self, epoch: int) -> dict[str, float] | None:
        """The optimizer's settings in a fine-tuning epoch (``epoch`` from 0), else None."""
        if not self.finetune_epochs or not self.epochs or epoch < self.epochs - self.finetune_epochs:
            return None
        tuned = epoch - (self.epochs - self.finetune_epochs)
        return {
            "lr": finetune_lr_at(tuned, self.finetune_epochs, self.finetune_lr),
            "weight_decay": self.finetune_weight_decay,
        }

    @torch.no_grad()
    def after_step(self, model: nn.Module, step: int) -> None:
        """Searching: clamp the scores into [0, 1], prune a round when one ends here; at the last
        search step with fine-tuning: freeze the mask (unflagging it if asked)."""
        was_tuning = self.tuning(self.step)
        self.step = int(step)
        if was_tuning:
            return
        masks = [mask for *_, mask in supermask.masked_layers(model)]
        for mask in masks:
            mask.scores.clamp_(0.0, 1.0)
        if self.round_at(step) and masks:
            self.prune_round(masks)
        if self.tuning(step) and self.unflag_before_finetune:
            for mask in masks:  # the reference rounds every score to 1: the mask is the flag
                mask.scores.masked_fill_(mask.flag, 1.0)

    @torch.no_grad()
    def prune_round(self, masks: list[GemSupermask]) -> None:
        """Unflag the flagged weights whose score is at most the ``ceil(r · active)``-th smallest
        flagged score over all layers (no host synchronization: counts stay tensors)."""
        keys = torch.cat([torch.where(m.flag, m.scores, torch.inf).reshape(-1) for m in masks])
        active = sum(torch.count_nonzero(m.flag) for m in masks)
        count = torch.ceil(active.double() * self.round_rate()).long()
        ordered = keys.sort().values
        threshold = ordered.gather(0, (count - 1).clamp_min(0).view(1)).squeeze(0)
        threshold = torch.where(count > 0, threshold, torch.full_like(threshold, -torch.inf))
        for mask in masks:
            mask.flag &= mask.scores > threshold

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """The scores (and, with fine-tuning, the pruned layers' weights: they get gradients only
        in the fine-tuning epochs; BatchNorm's scale and shift with ``bn_affine``)."""
        return [p for p in model.parameters() if p.requires_grad]

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed = int(state.get("seed", self.seed))
        self.step = int(state.get("step", self.step))

    def ticket_spec(self, model: nn.Module) -> TicketSpec:
        if self.finetune_epochs:
            raise UserError(
                "pruner 'gem-miner' fine-tuned its kept weights (finetune_epochs > 0), which a ticket "
                "(seed + masks) does not rebuild; export it with --format safetensors"
            )
        return super().ticket_spec(model)
