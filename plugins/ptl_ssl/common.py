"""The mechanisms the algorithms here share: view lookup, their two ways of running the forward
pass, hard pseudo labels, the masked unlabeled cross-entropy, the logs, and the plumbing of their
state (none, or a few tensors).

Anything specific to one algorithm (its targets, masks, ramp-ups) stays in that algorithm's file.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn


def view(views: dict[str, torch.Tensor], name: str, algorithm: str, batch: str) -> torch.Tensor:
    """``views[name]``, or an error that says which view the training loop failed to supply."""
    try:
        return views[name]
    except KeyError:
        given = ", ".join(sorted(views)) or "none"
        raise KeyError(
            f"{algorithm} needs the {name!r} view of the {batch} batch, but only got: {given}"
        ) from None


def forward_split(model: nn.Module, *batches: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Logits of each batch, from a single forward pass over their concatenation.

    One pass is what the reference FixMatch implementations do: it is faster, and BatchNorm
    normalizes the labeled and unlabeled samples with the statistics of the mixed batch.
    Batches of different image sizes cannot be concatenated and get one pass each.
    """
    if all(b.shape[1:] == batches[0].shape[1:] for b in batches):
        logits = model(torch.cat(batches) if len(batches) > 1 else batches[0])
        return tuple(logits.split([b.shape[0] for b in batches]))
    return tuple(model(b) for b in batches)


@contextlib.contextmanager
def frozen_batchnorm(model: nn.Module) -> Iterator[None]:
    """Forward passes inside leave BatchNorm's running statistics as they were.

    The batch is still normalized with its own statistics in training mode; only the running
    mean, variance and batch count come back unchanged. This is USB's ``bn_controller`` around
    the unlabeled passes of PseudoLabel and Mean Teacher, whose labeled batch alone then drives
    the statistics used at evaluation. Inside, the buffers hold copies the passes may update;
    afterwards they hold their own storage again, untouched: restoring by an in-place copy would
    bump the version of tensors autograd saved for the backward pass.
    """
    names = ("running_mean", "running_var", "num_batches_tracked")
    buffers = [
        getattr(m, name)
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        and m.track_running_stats
        and m.running_mean is not None
        for name in names
    ]
    kept = [b.data for b in buffers]
    for buffer, data in zip(buffers, kept, strict=True):
        buffer.data = data.clone()
    try:
        yield
    finally:
        for buffer, data in zip(buffers, kept, strict=True):
            buffer.data = data


def check_logits(logits: torch.Tensor, num_classes: int, algorithm: str) -> None:
    """Catch a head of the wrong width here rather than as a cryptic cross-entropy error."""
    if logits.ndim != 2 or logits.shape[1] != num_classes:
        raise ValueError(
            f"{algorithm} was built for {num_classes} classes but the model gives logits of shape "
            f"{tuple(logits.shape)}; expected (batch, {num_classes})"
        )


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside (Distributed)DataParallel and ``torch.compile`` wrappers.

    Matched by type, not by a ``module`` attribute, which an ordinary model may well have.
    """
    from torch.nn.parallel import DataParallel, DistributedDataParallel

    while True:
        if isinstance(model, (DataParallel, DistributedDataParallel)):
            model = model.module
        elif type(model).__name__ == "OptimizedModule" and isinstance(
            getattr(model, "_orig_mod", None), nn.Module
        ):
            model = model._orig_mod
        else:
            return model


def joint_logits(
    model: nn.Module,
    labeled: dict[str, torch.Tensor],
    unlabeled: dict[str, torch.Tensor],
    num_classes: int,
    algorithm: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits of the labeled weak, unlabeled weak and unlabeled strong views, in one forward pass
    (:func:`forward_split`): the FixMatch family's batch, checked for the head's width."""
    x = view(labeled, "weak", algorithm, "labeled")
    u_weak = view(unlabeled, "weak", algorithm, "unlabeled")
    u_strong = view(unlabeled, "strong", algorithm, "unlabeled")
    logits_x, logits_weak, logits_strong = forward_split(model, x, u_weak, u_strong)
    check_logits(logits_x, num_classes, algorithm)
    return logits_x, logits_weak, logits_strong


def labeled_then_unlabeled(
    model: nn.Module, x: torch.Tensor, u: torch.Tensor, num_classes: int, algorithm: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of ``x``, then of ``u`` under :func:`frozen_batchnorm`: USB's two passes for
    PseudoLabel and Mean Teacher, where the labeled batch alone updates BatchNorm's statistics."""
    logits_x = model(x)
    with frozen_batchnorm(model):
        logits_u = model(u)
    check_logits(logits_x, num_classes, algorithm)
    return logits_x, logits_u


def pseudo_labels(
    logits: torch.Tensor, threshold: float, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard labels ``argmax q`` and the float mask ``max q >= threshold``, ``q = softmax(logits/T)``."""
    probs = torch.softmax(logits.detach().float() / temperature, dim=1)
    confidence, labels = probs.max(dim=1)
    return labels, (confidence >= threshold).float()


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``mean_u[ mask * CE(labels, logits) ]``: the mean runs over all samples, masked ones
    included, as in the papers, so the term grows as more pseudo labels pass."""
    return (F.cross_entropy(logits, labels, reduction="none") * mask).mean()


def loss_logs(loss_x: torch.Tensor, loss_u: torch.Tensor, **more: torch.Tensor) -> dict[str, torch.Tensor]:
    """The logs of one step: the two loss terms (detached), then ``more`` in the order given."""
    return {"loss_x": loss_x.detach(), "loss_u": loss_u.detach(), **more}


class Stateless:
    """For an algorithm that keeps nothing between steps (a ramp-up is a function of the step the
    loop passes in): nothing to update, an empty state, and the empty state accepted back."""

    def after_step(self, model: nn.Module, step: int) -> None:
        """Nothing to update."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Stateless: accepts the empty dict :meth:`state_dict` gives."""


class TensorState:
    """For an algorithm whose state is a few tensor attributes, named with their dtypes in
    ``state_dtypes``: built on the CPU, they follow the logits to their device on first use
    (:meth:`_follow`), are saved as CPU copies and loaded onto the device they are on."""

    state_dtypes: ClassVar[dict[str, torch.dtype]]

    def _follow(self, device: torch.device) -> None:
        """Move the state to ``device`` if it is elsewhere (built or loaded on the CPU)."""
        from ptl_cli.engine.compute import host_to_device

        names = list(self.state_dtypes)
        if getattr(self, names[0]).device != device:
            for name in names:  # from pinned memory: the first step does not wait for the copy
                setattr(self, name, host_to_device(getattr(self, name), device))

    def after_step(self, model: nn.Module, step: int) -> None:
        """Nothing to do: the state is updated in ``loss``, from the step's own predictions."""

    def state_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name).detach().cpu().clone() for name in self.state_dtypes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = getattr(self, next(iter(self.state_dtypes))).device
        loaded = {
            name: torch.as_tensor(state[name], dtype=dtype).to(device).clone()
            for name, dtype in self.state_dtypes.items()
        }
        for name, value in loaded.items():
            setattr(self, name, value)


def projection_head(feature_dim: int, proj_size: int) -> nn.Module:
    """``Linear(d, d) -> ReLU -> Linear(d, proj_size)``: the projection MLP of SimMatch and CoMatch
    (USB's), trained through the ``heads`` member on the penultimate features."""
    return nn.Sequential(nn.Linear(feature_dim, feature_dim), nn.ReLU(), nn.Linear(feature_dim, proj_size))


def with_heads(model: nn.Module, x: torch.Tensor, head: str, algorithm: str) -> dict[str, torch.Tensor]:
    """``model(x, with_heads=True)``, or an error saying the loop did not give the algorithm's heads
    (a model called without ptl's wrapper, :func:`ptl_cli.engine.heads.attach`)."""
    try:
        out = model(x, with_heads=True)
    except TypeError as exc:
        if "with_heads" not in str(exc):
            raise
        out = None
    if not isinstance(out, dict) or head not in out:
        raise TypeError(
            f"{algorithm} calls model(x, with_heads=True) for its {head!r} head, but the model it "
            "was given is not wrapped with the heads (ptl_cli.engine.heads.attach does that)"
        )
    return out


class EMATeacher:
    """An exponential moving average of the student, for algorithms that keep their own teacher
    (Mean Teacher's targets, SimMatch's bank with ``ema_teacher``).

    The copy is made from the (unwrapped) student on first use, so it is built on the student's
    device and with its heads; weights saved before that (a resume) are loaded into it then.
    ``update`` moves its parameters towards the student's as ``t <- d t + (1 - d) s``; buffers stay
    its own. :meth:`state` and :meth:`load` carry it through checkpoints, so resume is exact.
    """

    def __init__(self, decay: float, algorithm: str) -> None:
        self.decay = decay
        self.algorithm = algorithm
        self.model: nn.Module | None = None
        self._pending: dict[str, torch.Tensor] | None = None  # loaded before the copy exists

    def of(self, student: nn.Module) -> nn.Module:
        """The teacher, copied from ``student`` on the first call."""
        if self.model is None:
            import copy

            teacher = copy.deepcopy(unwrap(student))
            for p in teacher.parameters():
                p.requires_grad_(False)
                p.grad = None
            if self._pending is not None:
                teacher.load_state_dict(self._pending)
                self._pending = None
            self.model = teacher
        return self.model

    @torch.no_grad()
    def update(self, student: nn.Module) -> None:
        """One EMA step towards the student's parameters (nothing before the first copy)."""
        if self.model is None:
            return
        teacher_params = list(self.model.parameters())
        student_params = [p.detach() for p in unwrap(student).parameters()]
        if len(teacher_params) != len(student_params):
            raise RuntimeError(
                f"{self.algorithm}: the model's parameters changed since the teacher was copied"
            )
        torch._foreach_lerp_(teacher_params, student_params, 1.0 - self.decay)

    def state(self) -> dict[str, torch.Tensor] | None:
        """The teacher's weights and buffers (copies), or ``None`` before it exists."""
        if self.model is not None:
            return {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        if self._pending is not None:
            return {k: v.clone() for k, v in self._pending.items()}
        return None

    def load(self, saved: dict[str, torch.Tensor] | None) -> None:
        """Weights from :meth:`state`, into the teacher now or when it is copied."""
        if saved is None:
            return
        if self.model is not None:
            self.model.load_state_dict(saved)
        else:
            self._pending = {k: v.detach().clone() for k, v in saved.items()}
