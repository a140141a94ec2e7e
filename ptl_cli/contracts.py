"""The shapes of components that plugins provide.

These are :class:`typing.Protocol` classes: a plugin does not inherit from them, it only has to
provide the attributes and methods listed. ``ptl_cli.testing`` checks a component against them.
Images are float tensors in ``[0, 1]`` of shape ``(B, C, H, W)`` unless said otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # torch is heavy; contracts must be importable without it
    import torch
    from torch import nn


@runtime_checkable
class Generator(Protocol):
    """A conditional source generator ``G_s(z, y)``."""

    num_classes: int
    image_size: int
    channels: int
    class_names: Sequence[str]

    @property
    def id(self) -> str:
        """Identifies the weights (name + digest): pools are keyed by it."""

    def sample(
        self,
        y: torch.Tensor,
        z: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Images for class indices ``y`` (shape ``(B,)``) or probability rows ``(B, K_s)``."""


@runtime_checkable
class SourceClassifier(Protocol):
    """``C_s``: a module giving ``K_s`` logits for images in [0, 1] of any size.

    It applies its own preprocessing (resize, normalization) inside ``forward``.
    """

    num_classes: int
    class_names: Sequence[str]

    @property
    def id(self) -> str: ...

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class SSLAlgorithm(Protocol):
    """A semi-supervised loss over a labeled and an unlabeled batch.

    ``labeled_views``/``unlabeled_views`` name the augmentations the algorithm needs for each
    batch (``"weak"``, ``"strong"``, ``"none"``); the training loop supplies them as a dict.
    """

    labeled_views: tuple[str, ...]
    unlabeled_views: tuple[str, ...]

    def loss(
        self,
        model: nn.Module,
        labeled: dict[str, torch.Tensor],
        targets: torch.Tensor,
        unlabeled: dict[str, torch.Tensor],
        step: int,
        total_steps: int,
    ) -> tuple[torch.Tensor, dict[str, float | torch.Tensor]]:
        """The total loss and named scalars to log (tensors are fine: no host sync needed)."""

    def after_step(self, model: nn.Module, step: int) -> None:
        """Called after each optimizer step (MeanTeacher updates its teacher here)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@runtime_checkable
class Pruner(Protocol):
    """Turns a network into one whose weights are selected (and possibly re-drawn)."""

    def prepare(self, model: nn.Module, seed: int) -> nn.Module:
        """Wrap the prunable layers in place and return the model."""

    def trainable_parameters(self, model: nn.Module) -> Iterable[torch.nn.Parameter]:
        """What the optimizer updates: scores for edge-popup, weights for dense SGD."""

    def after_step(self, model: nn.Module, step: int) -> None:
        """Called after each optimizer step (IteRand re-draws pruned weights here)."""

    def sparsity(self, model: nn.Module) -> float:
        """Fraction of prunable weights that are currently pruned."""

    def export_dense(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """A plain state dict with masks applied (loads into an unwrapped model)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@runtime_checkable
class Workflow(Protocol):
    """A run kind (``prune``, ``transfer``): runs a validated recipe inside a run directory."""

    def plan(self, recipe: Any) -> list[tuple[str, str]]:
        """Rows (what, value) that ``--dry-run`` prints: resolved without loading anything heavy."""

    def run(self, ctx: Any) -> dict[str, Any]:
        """Run (or resume, when ``ctx.resuming``) and return the final metrics."""

    def results_table(self, run: Any) -> tuple[list[str], list[list[Any]]]:
        """Header and rows of the results table for a finished run."""
