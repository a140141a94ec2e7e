"""The supermask: a frozen random weight ``W``, a learned score ``S``, and the forward uses ``W ⊙ m(S)``.

``m(S)`` keeps the top ``1 - p`` fraction of one layer's scores, or, for layers ranked together
(global sparsity, :class:`GlobalTopK`), its part of one top-k over all their scores. It is
attached to ordinary ``nn.Conv1d/2d/3d`` and ``nn.Linear`` modules with
:mod:`torch.nn.utils.parametrize`, so any model works: the module's ``weight`` becomes
``W ⊙ m(S)``, computed once per access (once per forward).

Cost, per layer and step, beyond the dense layer's own work: one O(n) selection (a k-th value, no
sort: a sampled bracket on the CPU, a multi-block radix select on accelerators), one multiply
forward (``W ⊙ m``) and one backward (``dL/dS = dL/d(W⊙m) ⊙ W``). No gradient is computed for
``W`` when it is frozen, nothing is copied to the host on accelerators, ``dL/dS`` is written into
the incoming gradient's memory, and the mask is saved for backward (one byte per weight) only
when ``W`` is trained.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.optim.optimizer import register_optimizer_step_post_hook

#: The layer types a supermask can wrap: any module whose ``weight`` is used as-is by ``forward``.
PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)

# Below this many entries a plain kthvalue is as fast as anything cleverer.
_SMALL = 1 << 16
_SAMPLE = 4096
_sample_cache: dict[int, torch.Tensor] = {}


def num_pruned(n: int, sparsity: float) -> int:
    """``round(p·n)``, rounding halves up (so it does not depend on banker's rounding)."""
    return min(n, max(0, math.floor(sparsity * n + 0.5)))


# -- selection ---------------------------------------------------------------------------------
def kept_mask(key: torch.Tensor, pruned: int) -> torch.Tensor:
    """Boolean mask (True = kept) that prunes exactly ``pruned`` entries of ``key``: the smallest.

    Ties are broken by position: among equal keys the earlier (flat index) ones are pruned
    first, so the result is deterministic and has exactly ``key.numel() - pruned`` kept entries.
    """
    flat = key.detach().reshape(-1)
    n = flat.numel()
    if pruned <= 0:
        return torch.ones_like(key, dtype=torch.bool)
    if pruned >= n:
        return torch.zeros_like(key, dtype=torch.bool)
    threshold = kth_smallest(flat, pruned)
    kept = flat > threshold
    if flat.device.type == "cpu":
        # A scalar read is free on the CPU, and ties are rare: only fix them when present.
        if int(torch.count_nonzero(kept)) != n - pruned:
            kept = _break_ties(flat, kept, threshold, n - pruned)
    else:  # no host sync on accelerators: always apply the (cheap) tie fix
        kept = _break_ties(flat, kept, threshold, n - pruned)
    return kept.view(key.shape)


def _break_ties(flat: torch.Tensor, kept: torch.Tensor, threshold: torch.Tensor, n_keep: int) -> torch.Tensor:
    """Add the last-positioned entries equal to ``threshold`` until ``n_keep`` are kept."""
    tied = flat == threshold
    need = n_keep - torch.count_nonzero(kept)
    rank = tied.cumsum(0)
    return kept | (tied & (rank > rank[-1] - need))


def kth_smallest(flat: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k``-th smallest entry (1-based) of a 1-D tensor, as a 0-dim tensor, in O(n).

    Accelerators use :func:`kth_smallest_topk`. On the CPU ``kthvalue`` runs a quickselect over a
    full copy; instead a fixed random sample of 4096 entries brackets the answer with a ~6% band
    (one compare pass, one gather), and only the band is selected in. The bracket holds with
    overwhelming probability; when it does not, the exact full select runs, so the result is
    always exact.
    """
    n = flat.numel()
    if flat.device.type != "cpu":
        return kth_smallest_topk(flat, k)
    if n <= _SMALL:
        return flat.kthvalue(k).values
    sample = flat[_sample_index(n)].sort().values
    m = sample.numel()
    q = (k - 0.5) / n
    spread = 4.0 * math.sqrt(m * q * (1.0 - q)) + 2.0
    lo_rank, hi_rank = math.floor(q * m - spread), math.ceil(q * m + spread)
    lo = sample[lo_rank] if lo_rank >= 0 else None
    hi = sample[hi_rank] if hi_rank < m else None
    # one compare pass per bracket end, reused: ``flat < lo`` is counted as ``n - (flat >= lo)``
    # (scores are finite), and the ``>= lo`` mask becomes the band's mask in place
    above = None if lo is None else flat >= lo
    below = 0 if above is None else n - int(torch.count_nonzero(above))
    if below < k:
        if above is None:
            inside = flat <= hi
        elif hi is None:
            inside = above
        else:
            inside = above.logical_and_(flat <= hi)
        band = torch.masked_select(flat, inside)
        if k - below <= band.numel():
            return band.kthvalue(k - below).values
    return flat.kthvalue(k).values


def kth_smallest_topk(flat: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k``-th smallest entry through ``topk``, without a host synchronization.

    On CUDA ``kthvalue`` runs its radix select in a single thread block per slice, so one large
    layer is one block on the whole GPU (pytorch/pytorch#75599: 20× slower than a full sort);
    ``topk`` spreads the same radix select over many blocks. Of the two equivalent forms, the one
    that returns fewer values is used: the max of the ``k`` smallest or the min of the
    ``n - k + 1`` largest.
    """
    n = flat.numel()
    if k <= n - k + 1:
        return flat.topk(k, largest=False, sorted=False).values.max()
    return flat.topk(n - k + 1, largest=True, sorted=False).values.min()


def _sample_index(n: int) -> torch.Tensor:
    """Fixed (seeded) sample positions for tensors of ``n`` entries, cached per size."""
    index = _sample_cache.get(n)
    if index is None:
        gen = torch.Generator().manual_seed(n)
        index = _sample_cache[n] = torch.randint(n, (_SAMPLE,), generator=gen)
    return index


# -- the straight-through product --------------------------------------------------------------
class _MaskedWeight(torch.autograd.Function):
    """``W ⊙ m`` forward; backward gives ``dL/dS = g ⊙ W`` (straight through m) and ``dL/dW = g ⊙ m``.

    With ``score_abs`` the ranking key is ``|S|`` and the gradient reaches ``S`` through the
    absolute value (``g ⊙ W ⊙ sign(S)``), exactly as autograd does in hidden-networks.
    """

    @staticmethod
    def forward(ctx, weight, scores, kept, score_abs):  # type: ignore[override]
        ctx.score_abs = score_abs
        # the mask is kept for backward only when W is trained: a frozen W's mask is freed here,
        # one byte per weight less held from forward to backward
        needed = kept if ctx.needs_input_grad[0] else None
        ctx.save_for_backward(weight, needed, scores if score_abs else None)
        return weight * kept.view(torch.uint8)  # a uint8 factor multiplies faster than a bool one

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        weight, kept, scores = ctx.saved_tensors
        grad_weight = grad * kept.view(torch.uint8) if ctx.needs_input_grad[0] else None
        grad_scores = None
        if ctx.needs_input_grad[1]:
            grad_scores = grad.mul_(weight) if _reusable(grad, weight) else grad * weight
            if ctx.score_abs:
                grad_scores = torch.where(scores < 0, -grad_scores, grad_scores)
        return grad_weight, grad_scores, None, None


def _reusable(grad: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether ``dL/dS = g ⊙ W`` may be written into ``g``'s memory instead of a new tensor.

    ``g`` is the layer's fresh ``dL/d(W⊙m)``, used by nobody after this backward; it is reused
    when contiguous (not a broadcast), shaped and typed like ``W`` and outside a double-backward
    graph. The multiply is the same either way, so the values are identical; what is saved is
    one weight-sized allocation per layer and step, which on a CPU means fresh pages to fault in.
    """
    return (
        not torch.is_grad_enabled()
        and not grad.requires_grad
        and grad.shape == weight.shape
        and grad.dtype == weight.dtype
        and grad.is_contiguous()
    )


class Supermask(nn.Module):
    """The parametrization: holds the scores ``S`` and maps the original ``W`` to ``W ⊙ m(S)``."""

    def __init__(self, scores: torch.Tensor, sparsity: float, score_abs: bool = False) -> None:
        super().__init__()
        self.scores = nn.Parameter(scores)
        #: the shape of the weight (the scores' own, unless only part of it is searched)
        self.shape = tuple(scores.shape)
        self.sparsity = float(sparsity)
        self.pruned = num_pruned(scores.numel(), sparsity)
        self.score_abs = bool(score_abs)
        #: set when this layer is ranked together with others (global sparsity)
        self.group: GlobalTopK | None = None

    def full_scores(self) -> torch.Tensor:
        """The scores shaped like the weight, differentiable: what the forwards pass to their
        autograd functions. Here the parameter itself; a partial search (:mod:`ptl_prune.frozen`)
        holds scores for part of the weight only and scatters them into the weight's shape."""
        return self.scores

    def key(self) -> torch.Tensor:
        """What is ranked: the scores, or their magnitude with ``score_abs``."""
        key = self.full_scores().detach()
        return key.abs() if self.score_abs else key

    def kept(self, rate: float = 1.0) -> torch.Tensor:
        """Current mask (True = kept); ``rate`` < 1 prunes only the lowest ``p·rate`` fraction
        (of this layer, or of the whole group when the layer is ranked globally)."""
        if self.group is not None:
            return self.group.kept(self, rate)
        key = self.key()
        pruned = self.pruned if rate == 1.0 else num_pruned(key.numel(), self.sparsity * rate)
        return kept_mask(key, pruned)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return _MaskedWeight.apply(weight, self.full_scores(), self.kept(), self.score_abs)

    def extra_repr(self) -> str:
        return f"sparsity={self.sparsity}, pruned={self.pruned}, score_abs={self.score_abs}"


_optimizer_steps = [0]


def _count_optimizer_step(optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
    _optimizer_steps[0] += 1


# Fused optimizers (``SGD(fused=True)``, ``AdamW(fused=True)``: ptl's choice on CUDA) write the
# scores in one kernel without bumping their version counters; every torch optimizer's step runs
# this global hook, so the cache below also keys on the number of optimizer steps taken.
register_optimizer_step_post_hook(_count_optimizer_step)


class GlobalTopK:
    """One ranking over several layers' scores: exactly ``round(p·n)`` of their ``n`` weights pruned
    in all, the lowest keys overall (ties by position in layer order), each layer's count free.

    The masks are recomputed only when a score tensor may have changed (an optimizer step of any
    torch optimizer, fused ones included; an in-place write, a load, a move to another device:
    tracked by each tensor's version counter and identity), so the one top-k runs once per step
    however often the masks are read — by the forward, the counts, IteRand's re-draw or an export.
    :meth:`refresh` is what the pruner's ``before_forward`` calls.
    """

    def __init__(self, masks: list[Supermask], sparsity: float) -> None:
        self.masks = list(masks)
        self.sparsity = float(sparsity)
        self._position = {id(m): i for i, m in enumerate(self.masks)}
        self._cache: dict[float, tuple[tuple, list[torch.Tensor]]] = {}
        for mask in self.masks:
            mask.group = self

    def _versions(self) -> tuple:
        scores = tuple((m.scores._version, id(m.scores), m.scores.device) for m in self.masks)
        return (_optimizer_steps[0], *scores)

    def refresh(self, rate: float = 1.0) -> list[torch.Tensor]:
        """The kept masks of every layer of the group (recomputed only if a score changed)."""
        versions = self._versions()
        hit = self._cache.get(rate)
        if hit is not None and hit[0] == versions:
            return hit[1]
        with torch.no_grad():
            keys = [m.key().reshape(-1) for m in self.masks]
            flat = torch.cat(keys) if len(keys) > 1 else keys[0]
            kept = kept_mask(flat, num_pruned(flat.numel(), self.sparsity * rate))
            parts = [
                part.view(m.shape)
                for part, m in zip(kept.split([k.numel() for k in keys]), self.masks, strict=True)
            ]
        self._cache[rate] = (versions, parts)
        return parts

    def kept(self, mask: Supermask, rate: float = 1.0) -> torch.Tensor:
        return self.refresh(rate)[self._position[id(mask)]]


def masked_weight(weight: torch.Tensor, scores: torch.Tensor, kept: torch.Tensor, score_abs: bool = False):
    """``W ⊙ m`` with the straight-through gradient (the function a :class:`Supermask` applies)."""
    return _MaskedWeight.apply(weight, scores, kept, score_abs)


# -- wrapping models ---------------------------------------------------------------------------
def prunable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every Conv/Linear module in registration order: their index is their identity in tickets."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, PRUNABLE)]


def attach(
    module: nn.Module,
    scores: torch.Tensor,
    sparsity: float,
    score_abs: bool,
    kind: type[Supermask] | None = None,
) -> Supermask:
    """Wrap ``module.weight`` with a supermask (``kind``: a :class:`Supermask` subclass that maps
    ``W`` differently, as MPT's binarized weights do); the original weight is frozen."""
    mask = (kind or Supermask)(scores, sparsity, score_abs)
    parametrize.register_parametrization(module, "weight", mask, unsafe=True)
    original(module).requires_grad_(False)
    return mask


def supermask_of(module: nn.Module) -> Supermask | None:
    """The supermask on ``module.weight``, if any."""
    if not parametrize.is_parametrized(module, "weight"):
        return None
    for p in module.parametrizations.weight:
        if isinstance(p, Supermask):
            return p
    return None


def original(module: nn.Module) -> torch.Tensor:
    """The stored (unmasked) weight: the parametrization's original, or the plain weight."""
    if parametrize.is_parametrized(module, "weight"):
        return module.parametrizations.weight.original
    return module.weight


def masked_layers(model: nn.Module) -> Iterator[tuple[int, str, nn.Module, Supermask]]:
    """(layer index, name, module, supermask) of every wrapped layer."""
    for index, (name, module) in enumerate(prunable_layers(model)):
        mask = supermask_of(module)
        if mask is not None:
            yield index, name, module, mask


def batchnorm_affine(model: nn.Module, affine: bool) -> None:
    """BatchNorm's scale and shift trained (``bn_affine = true``: made trainable again, since
    ``prepare`` freezes the network's own parameters) or dropped (:func:`make_batchnorm_nonaffine`)."""
    if not affine:
        make_batchnorm_nonaffine(model)
        return
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
            module.weight.requires_grad_(True)
            module.bias.requires_grad_(True)


def make_batchnorm_nonaffine(model: nn.Module) -> None:
    """Drop BatchNorm's scale and shift (``affine=False``), as both papers do for supermasks."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
            module.affine = False
            module.register_parameter("weight", None)
            module.register_parameter("bias", None)


def dense_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """A plain state dict of the masked network that loads into the unwrapped architecture.

    Masked weights are ``where(m, W, 0)`` (exact zeros, never -0.0, so tickets rebuild them bit
    for bit); non-affine BatchNorm layers get scale 1 and shift 0, the identity they compute.
    """
    state = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    prefixes = {}
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if supermask_of(module) is not None:
            prefixes[prefix + "parametrizations.weight."] = prefix
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not module.affine:
            channels = module.num_features
            ref = module.running_mean if module.running_mean is not None else torch.empty(0)
            out[prefix + "weight"] = torch.ones(channels, dtype=torch.float32, device=ref.device)
            out[prefix + "bias"] = torch.zeros(channels, dtype=torch.float32, device=ref.device)
    for key, value in state.items():
        if not any(key.startswith(p) for p in prefixes):
            out[key] = value.detach().clone()
    with torch.no_grad():
        for _, name, module, mask in masked_layers(model):
            prefix = f"{name}." if name else ""
            w = original(module)
            out[prefix + "weight"] = torch.where(
                mask.kept(), w, torch.zeros((), dtype=w.dtype, device=w.device)
            )
    return out
