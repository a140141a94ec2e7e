"""A network together with the heads an SSL algorithm trains beside it: :class:`WithHeads`.

SimMatch, CoMatch and CRMatch need the *penultimate features* beside the logits, and train
modules of their own on them (a projection MLP, a rotation classifier). A model plugin is
written without knowing any of that, so ptl finds the features itself: they are the input of
the classifier head, the last ``nn.Linear`` in ``named_modules()`` (:func:`head_name`; true of
the built-in models and of torchvision's and timm's classifiers). One definition serves the
core (this wrapper) and the transfer workflow (head swaps, KD's auxiliary head).

An algorithm asks for heads with an optional member ``heads(feature_dim) -> {name: module}``.
The loop then trains ``WithHeads(net, heads)`` instead of ``net`` (:func:`attach`): built
before the model is moved to its device, wrapped by DDP or compiled, given to the optimizer and
followed by the EMA, so the heads are trained, checkpointed, resumed and moved with the
network for free. ``wrapper(x)`` is ``net(x)``, so algorithms that never ask for heads, the
evaluation and the EMA see no difference; ``wrapper(x, with_heads=True)`` returns a dict with
the logits, the features and each head's output on them. Whatever reads the *trained network*
afterwards (evaluation, a stage's saved weights, ``ptl export``) gets :func:`plain` of it: the
heads are training machinery, not part of the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ptl_cli.errors import UserError

#: Keys of ``wrapper(x, with_heads=True)`` that are not heads (a head may not take these names).
RESERVED = ("logits", "features")


def head_name(model: nn.Module) -> str:
    """The dotted name of the classifier head: the last ``nn.Linear`` in ``named_modules()``."""
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    if last is None:
        raise UserError(
            f"{type(model).__name__} has no nn.Linear head; ptl takes the last nn.Linear as the "
            "classifier head (to swap it, or to feed an SSL algorithm's heads)"
        )
    return last


def get_head(model: nn.Module) -> nn.Linear:
    """The classifier head itself (see :func:`head_name`)."""
    return model.get_submodule(head_name(model))


class WithHeads(nn.Module):
    """``net`` and the ``nn.ModuleDict`` ``heads`` an algorithm trains on its penultimate features.

    ``forward(x)`` returns ``net(x)``. ``forward(x, with_heads=True)`` returns ``{"logits":
    net(x), "features": f, name: heads[name](f) ...}`` where ``f`` is the input of the classifier
    head, ``(B, feature_dim)``, captured by a forward pre-hook that exists during that call only
    (so the plain network carries nothing of the wrapper). Keyword arguments pass through DDP and
    ``torch.compile``, so algorithms call it through whatever wrapper the loop gives them.
    """

    def __init__(self, net: nn.Module, heads: Mapping[str, nn.Module]) -> None:
        super().__init__()
        for name, head in heads.items():
            if not isinstance(name, str) or not name or "." in name or name in RESERVED:
                raise UserError(
                    f"heads(): {name!r} cannot name a head (a non-empty string without '.', not "
                    f"{' or '.join(RESERVED)})"
                )
            if not isinstance(head, nn.Module):
                raise UserError(f"heads(): head {name!r} is a {type(head).__name__}, not an nn.Module")
        self.net = net
        self.heads = nn.ModuleDict(dict(heads))
        self.head_name = head_name(net)
        self.feature_dim = get_head(net).in_features

    def forward(self, x: torch.Tensor, with_heads: bool = False) -> Any:
        if not with_heads:
            return self.net(x)
        captured: list[torch.Tensor] = []
        hook = self.net.get_submodule(self.head_name).register_forward_pre_hook(
            lambda module, args: captured.append(args[0])
        )
        try:
            logits = self.net(x)
        finally:
            hook.remove()
        if len(captured) != 1 or captured[0].ndim != 2:
            shapes = ", ".join(str(tuple(f.shape)) for f in captured) or "never called"
            raise UserError(
                f"{type(self.net).__name__}: its classifier head {self.head_name!r} must be called "
                f"once per forward on (batch, features) inputs to give an algorithm's heads their "
                f"features; it got {shapes}"
            )
        features = captured[0]
        out = {"logits": logits, "features": features}
        for name, head in self.heads.items():
            out[name] = head(features)
        return out


def attach(algo: Any, net: nn.Module, seed: int) -> nn.Module:
    """``WithHeads(net, algo.heads(feature_dim))`` if the algorithm has ``heads``, else ``net``.

    The heads are built under torch's global RNG seeded with ``seed`` (and the RNG is restored
    afterwards), so their initialization is a function of the run's seed alone and building them
    changes no other random number. Call it on the CPU network, before it is moved, wrapped or
    given to an optimizer.
    """
    make = getattr(algo, "heads", None)
    if make is None:
        return net
    dim = get_head(net).in_features
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        heads = make(dim)
    if not isinstance(heads, Mapping) or not heads:
        raise UserError(f"heads({dim}) must return a non-empty dict of name -> nn.Module, got {heads!r}")
    return WithHeads(net, heads)


def plain(model: nn.Module) -> nn.Module:
    """The network without the heads: what evaluation, stage weights and exports see."""
    return model.net if isinstance(model, WithHeads) else model
