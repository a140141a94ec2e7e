"""What ptl offers pruners beyond the :class:`ptl_cli.contracts.Pruner` protocol: the optional members
ptl looks for, the per-forward hook, the typed declaration that makes a ticket possible, and the
one training step (:func:`train_step`) that training, benchmarks and contract checks share.

Optional members of a pruner (documented in ``docs/plugins/reference.md``):

* ``before_forward(model)`` — called before every forward of the prepared model (training and
  evaluation, in ``ptl prune``, ``ptl export`` and ``check_pruner`` alike): the place to compute
  masks across layers, e.g. one global top-k over every layer's scores. It is registered as a
  forward pre-hook on the model ``prepare`` returned, so wrappers (DDP, ``torch.compile``) and any
  direct ``model(x)`` call run it too. Keep the result on the pruner or on modules it added to
  the model — not on private tensor attributes.
* ``sparsity_by_layer(model) -> {layer name: fraction pruned}`` — for the run's metrics, report
  and ``ptl runs show``; without it ptl counts the exact zeros of ``export_dense`` per layer.
* ``ticket_spec(model) -> TicketSpec`` — what rebuilds the network (seed, masks as kept/pruned or
  as integer levels, re-draws, per-layer gains): ``ptl export --format ticket`` works for exactly
  the pruners that have it.

The core imports no algorithm: the ticket *format* lives in the built-in prune plugin; this module
only says what a pruner must declare.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is heavy; this module must be importable without it
    import torch
    from torch import nn


@dataclass(frozen=True)
class TicketSpec:
    """What rebuilds a score-only pruner's network: its seed, weight distribution, masks, re-draws,
    and for pruners that map the kept weights (signs, levels, binarization) that map.

    The network must be exactly this: every prunable layer (``nn.Conv1d/2d/3d``/``nn.Linear``,
    numbered in ``model.named_modules()`` order from 0) holds
    ``ptl_prune.inits.initial_weight(weight_init, shape, seed, layer)``, except weights that took
    a re-draw: the ``e``-th re-draw (at step ``redraws[e - 1]``) of layer ``i`` is the whole fresh
    tensor ``ptl_prune.inits.draw(weight_init, shape, ptl_prune.inits.redraw_generator(seed,
    step, i))``, and ``sources[name]`` says which draw each weight holds (0 = the initial one).
    Call that drawn tensor ``W``. ``masks[name]`` is given for every masked layer (a layer without
    one is dense, ``W`` itself) and says what the layer computes with:

    * a bool tensor (True = kept): ``where(m, W, 0)`` — edge-popup, IteRand;
    * an integer tensor of levels ``m`` in [-127, 127]: ``where(m != 0, W · m, 0)`` — a signed
      mask in {−1, 0, 1} flips a weight's sign, a multi-level one in {0, …, C} counts it C times.

    ``gains[name]`` (a float per masked layer, optional) binarizes the layer's weight first:
    ``W`` is replaced by ``gain · sign(W)`` before the mask applies (MPT's ``α · sign(W) ⊙ m``).
    The gain is *stored*, not recomputed from ``W`` and the mask: a gain such as a mean magnitude
    is a float reduction whose last bit depends on its summation order — the device, thread count
    and vector width of the machine that trained — so a recomputed one could rebuild another
    network than the one verified; stored, the rebuild is elementwise only (IEEE-exact on every
    machine) for four bytes a layer. Declare it as the forward computed it (a 0-dim tensor of the
    weight's dtype, or a float that dtype holds exactly).
    Biases, BatchNorm statistics and every other tensor are taken from ``export_dense``.

    ptl rebuilds the network from the written ticket and compares it with ``export_dense`` bit for
    bit before it reports anything: a declaration that does not describe the network is refused.
    """

    seed: int
    weight_init: str
    masks: Mapping[str, torch.Tensor]
    redraws: Sequence[int] = ()
    sources: Mapping[str, torch.Tensor] = field(default_factory=dict)
    gains: Mapping[str, float | torch.Tensor] = field(default_factory=dict)


def prepare(pruner: Any, model: nn.Module, seed: int) -> nn.Module:
    """``pruner.prepare(model, seed)``, with ``pruner.before_forward`` (if any) run before every
    forward of the result. Every place that prepares a pruner (training, exports, checks) calls this."""
    prepared = pruner.prepare(model, seed)
    before = getattr(pruner, "before_forward", None)
    if callable(before) and hasattr(prepared, "register_forward_pre_hook"):
        prepared.register_forward_pre_hook(lambda module, args: before(module))
    return prepared


def name_of(pruner: Any, method: str | None = None) -> str:
    """How messages name a pruner: its registered method name, else its class."""
    return method or getattr(pruner, "method", None) or type(pruner).__name__


def train_step(
    pruner: Any,
    model: nn.Module,
    optimizer: Any,
    images: torch.Tensor,
    targets: torch.Tensor,
    step: int,
    *,
    precision: Any = None,
    forward: nn.Module | None = None,
    guard: Callable[[str], AbstractContextManager[Any]] = lambda call: nullcontext(),
) -> tuple[torch.Tensor, torch.Tensor]:
    """One training step of a prepared network, the one ``ptl prune``, its benchmark and
    ``check_pruner`` all run: forward (the pruner's ``before_forward`` hook runs, as
    :func:`prepare` registered it), cross-entropy, backward, optimizer step, then
    ``pruner.after_step(model, step)`` with ``step`` the optimizer steps done so far (1 after the
    first). Returns ``(loss, logits)``; the gradients stay on the parameters until the next step.

    ``precision`` (:class:`ptl_cli.engine.device.Precision`) adds autocast and fp16 loss scaling;
    ``forward`` is the module to call when it wraps ``model`` (DDP, ``torch.compile``), while the
    pruner always gets ``model`` itself; ``guard(call)`` wraps each call into the pruner's code
    (the contract checks turn a failure there into a message naming the call).
    """
    import torch.nn.functional as F

    autocast = precision.autocast() if precision is not None else nullcontext()
    with guard("the prepared model's forward"), autocast:
        logits = (forward if forward is not None else model)(images)
        loss = F.cross_entropy(logits, targets)
    optimizer.zero_grad(set_to_none=True)
    if precision is not None:
        precision.backward_and_step(loss, optimizer)
    else:
        loss.backward()
        optimizer.step()
    with guard(f"after_step(model, {step})"):
        pruner.after_step(model, step)
    return loss, logits
