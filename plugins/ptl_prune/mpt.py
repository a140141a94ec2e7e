"""MPT / biprop (Diffenderfer & Kailkhura, ICLR 2021): edge-popup scores over binarized weights.

A multi-prize ticket is a pruned *and binarized* subnetwork of a random network: each pruned layer
computes with ``α · sign(W) ⊙ m(S)``, where ``m(S)`` is edge-popup's top-``(1 - p)`` mask and
``α = Σ|W|⊙m / Σm`` is the mean magnitude of that layer's kept weights (one float per layer: the
gain that keeps the binary layer's scale that of the real-valued one). Only the scores train.

The gradient follows the reference code: ``α`` is a constant of the backward pass and the mask is
a straight-through step whose output is scaled by ``|W|``, so ``dL/dS = dL/dŴ ⊙ sign(W) ⊙ |W| =
dL/dŴ ⊙ W`` — edge-popup's own score gradient (times ``sign(S)`` when ``|S|`` is ranked, as the
reference ranks it). Two documented differences: ``α`` divides by the number of weights actually
kept (the reference divides by ``int(k·n)``, which can differ from its kept count by one).

With ``activations = "binary"`` (MPT-1/1) every ``nn.ReLU`` module of the model becomes a sign
activation whose backward is Bi-Real Net's piecewise-quadratic approximation, as the reference's
``BiRealAct``: ``d sign(x)/dx ≈ 2 + 2x`` on [-1, 0), ``2 - 2x`` on [0, 1), 0 elsewhere. The input
image and the logits stay real. As in the reference's binary-activation networks (``*_BinAct``),
a BatchNorm comes before each sign (``binary_batchnorm``, default true): non-affine unless
``bn_affine``, with running statistics, sized by the Conv/Linear layer registered last before the
``nn.ReLU`` it replaces (``BatchNorm2d`` after a ``Conv2d``, ``BatchNorm1d`` after a ``Linear``),
decided at ``prepare`` without a forward. A model whose activations are not ``nn.ReLU`` modules
(ptl's ResNets call ``F.relu``) is refused in one line. Such a network's exports are refused too: a
plain state dict of the architecture would run ReLUs.

Exports write the binarized weights. A ticket stores the seed, the 1-bit masks and each layer's
``α`` (one float, the ticket's per-layer gain), and rebuilds ``α · sign(W) ⊙ m`` bit for bit.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ptl_cli.errors import UserError
from ptl_cli.pruning import TicketSpec
from ptl_prune import supermask
from ptl_prune.iterand import IteRand


def binarized(weight: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """``α · sign(W)`` where kept, exact ``0`` elsewhere, with ``α`` the mean ``|W|`` of the kept
    weights. All on ``weight``'s device: no host synchronization (the count stays a tensor)."""
    kept_count = torch.count_nonzero(kept).clamp_min(1)
    alpha = (weight.abs() * kept).sum() / kept_count
    zero = torch.zeros((), dtype=weight.dtype, device=weight.device)
    return torch.where(kept, torch.sign(weight) * alpha, zero)


class _BinarizedWeight(torch.autograd.Function):
    """``α·sign(W) ⊙ m`` forward; ``dL/dS = g ⊙ W`` (times ``sign(S)`` with ``score_abs``) backward."""

    @staticmethod
    def forward(ctx, weight, scores, kept, score_abs):  # type: ignore[override]
        ctx.score_abs = score_abs
        ctx.save_for_backward(weight, scores if score_abs else None)
        return binarized(weight, kept)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        weight, scores = ctx.saved_tensors
        grad_scores = None
        if ctx.needs_input_grad[1]:
            grad_scores = grad * weight
            if ctx.score_abs:
                grad_scores = torch.where(scores < 0, -grad_scores, grad_scores)
        # W is frozen: sign(W) has no useful gradient, and MPT never trains weights
        return None, grad_scores, None, None


class BinarizedSupermask(supermask.Supermask):
    """The MPT parametrization: maps the frozen ``W`` to ``α · sign(W) ⊙ m(S)``."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return _BinarizedWeight.apply(weight, self.full_scores(), self.kept(), self.score_abs)

    def dense(self, weight: torch.Tensor) -> torch.Tensor:
        """The weight the forward uses, without autograd (what exports write)."""
        with torch.no_grad():
            return binarized(weight, self.kept())


class _SignWithBiRealGradient(torch.autograd.Function):
    """``sign(x)`` forward; Bi-Real Net's ``(2 + 2x)`` on [-1, 0), ``(2 - 2x)`` on [0, 1) backward."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        ctx.save_for_backward(x)
        return torch.sign(x)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        slope = torch.where(x < 0, 2 + 2 * x, 2 - 2 * x).clamp_min_(0)  # 0 outside [-1, 1)
        return grad * torch.where(x >= 1, torch.zeros_like(slope), slope)


class BinaryActivation(nn.Module):
    """The sign activation of MPT-1/1 (what replaces each ``nn.ReLU``), after ``norm`` if given:
    a sign of unnormalized inputs is mostly that of their mean, so the reference normalizes first."""

    def __init__(self, norm: nn.modules.batchnorm._BatchNorm | None = None, after: str = "") -> None:
        super().__init__()
        self.norm = norm
        self.after = after  # the layer that sized ``norm``, for the error below

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm is not None:
            if x.dim() < 2 or x.shape[1] != self.norm.num_features:
                raise UserError(
                    f"MPT-1/1's BatchNorm before a sign has {self.norm.num_features} channels, sized by "
                    f"layer {self.after!r} (the Conv/Linear registered before the ReLU), but gets inputs "
                    f"of shape {tuple(x.shape)}; set pruner.params.binary_batchnorm=false for this model"
                )
            x = self.norm(x)
        return _SignWithBiRealGradient.apply(x)


#: the BatchNorm that normalizes each kind of layer's output
_NORM_AFTER = {
    nn.Conv1d: nn.BatchNorm1d,
    nn.Conv2d: nn.BatchNorm2d,
    nn.Conv3d: nn.BatchNorm3d,
    nn.Linear: nn.BatchNorm1d,
}


def binarize_activations(model: nn.Module, batchnorm: bool, affine: bool = False) -> None:
    """Replace every ``nn.ReLU`` module of ``model`` by the sign activation, each after a BatchNorm
    (``batchnorm``) sized by the last Conv/Linear layer registered before it: in a sequential
    network the layer whose output it receives. Refused in one line when there is no ReLU module,
    or a ReLU with no such layer before it."""
    last: tuple[str, nn.Module] | None = None
    replace = []
    for name, module in model.named_modules():
        if isinstance(module, tuple(_NORM_AFTER)):
            last = (name, module)
        elif isinstance(module, nn.ReLU):
            if batchnorm and last is None:
                raise UserError(
                    f"pruner 'mpt' puts a BatchNorm before each sign, sized by the Conv/Linear layer "
                    f"before the ReLU, and ReLU {name!r} has none before it; set "
                    "pruner.params.binary_batchnorm=false"
                )
            replace.append((name, last))
    if not replace:
        raise UserError(
            "pruner 'mpt' with activations 'binary' replaces the model's nn.ReLU modules, and this "
            "model has none (its activations are functions, e.g. ptl's ResNets); use a Conv-2/4/6/8"
        )
    for name, before in replace:
        norm, layer_name = None, ""
        if batchnorm and before is not None:
            layer_name, layer = before
            weight = supermask.original(layer)
            channels = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
            kind = next(bn for cls, bn in _NORM_AFTER.items() if isinstance(layer, cls))  # parametrized too
            norm = kind(channels, affine=affine, device=weight.device, dtype=weight.dtype)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, BinaryActivation(norm, layer_name))


class MPT(IteRand):
    """A pruner (see :class:`ptl_cli.contracts.Pruner`): edge-popup over binarized weights.

    It is an :class:`IteRand` whose re-draw probability defaults to 0 (the paper): with
    ``rerand_lambda`` > 0 the pruned weights are re-drawn as IteRand does, and binarized once kept."""

    method = "mpt"
    supermask_kind = BinarizedSupermask

    def __init__(
        self,
        score_abs: bool = True,
        weight_init: str = "kaiming_normal",
        rerand_lambda: float = 0.0,
        activations: str = "real",
        binary_batchnorm: bool = True,
        **iterand: Any,
    ) -> None:
        super().__init__(score_abs=score_abs, weight_init=weight_init, rerand_lambda=rerand_lambda, **iterand)
        self.activations = activations
        self.binary_batchnorm = binary_batchnorm

    def prepare(self, model: nn.Module, seed: int) -> nn.Module:
        """edge-popup's, then (MPT-1/1) every ``nn.ReLU`` module replaced by the sign activation
        (after a BatchNorm with ``binary_batchnorm``: :func:`binarize_activations`)."""
        super().prepare(model, seed)
        if self.activations == "binary":
            binarize_activations(model, self.binary_batchnorm, self.bn_affine)
        return model

    def export_dense(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """edge-popup's export with each pruned layer's weight replaced by ``α · sign(W) ⊙ m``."""
        if self.activations == "binary":
            raise UserError(
                "pruner 'mpt' with binary activations computes sign(x) where the architecture has ReLUs, "
                "which an exported state dict cannot say; use the run's final.pt with ptl_prune"
            )
        return dense_with(model, supermask.dense_state_dict(model))

    def ticket_spec(self, model: nn.Module) -> TicketSpec:
        """IteRand's declaration (seed, 1-bit masks, re-draws) plus each layer's ``α`` as its gain:
        the ticket rebuilds ``α · sign(W) ⊙ m``. ``α`` is stored, not recomputed (a float mean
        whose last bit depends on the summation order: :class:`ptl_cli.pruning.TicketSpec`), and
        read back from the weight the forward uses — ``|α · sign(W)| = α`` exactly at any kept
        ``W ≠ 0`` — so it is the very float the network ran with (0 when no kept ``W`` is nonzero,
        which rebuilds the same all-zero layer)."""
        import dataclasses

        spec = super().ticket_spec(model)
        gains = {}
        with torch.no_grad():
            for _, name, module, mask in supermask.masked_layers(model):
                gains[name] = mask.dense(supermask.original(module)).abs().amax().cpu()
        return dataclasses.replace(spec, gains=gains)


def dense_with(model: nn.Module, dense: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``dense`` with every masked layer's weight taken from its parametrization's ``dense(W)``."""
    for _, name, module, mask in supermask.masked_layers(model):
        prefix = f"{name}." if name else ""
        dense[prefix + "weight"] = mask.dense(supermask.original(module)).detach().clone()
    return dense
