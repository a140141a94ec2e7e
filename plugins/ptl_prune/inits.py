"""Initial distributions of weights and scores, drawn from explicit seeded CPU generators.

Every draw here comes from a generator seeded by ``(seed, purpose, layer, step)`` through
:func:`ptl_cli.engine.seeding.generator_for`, always on the CPU, never from the global RNG. That
is what makes a pruned network reproducible from its ticket on any machine, and what keeps
IteRand's re-draws identical on every data-parallel rank without communication.

All three weight distributions use the fan-in and the ReLU gain, as the reference code does:
``kaiming_uniform`` is U(-b, b) with b = sqrt(6 / fan_in); ``kaiming_normal`` is N(0, 2 / fan_in);
``signed_constant`` is ±sqrt(2 / fan_in) with a fair random sign.
"""

from __future__ import annotations

import math

import torch

from ptl_cli.engine.seeding import generator_for

#: The weight distributions :func:`draw` knows (and a ticket can regenerate).
WEIGHT_INITS = ("kaiming_uniform", "signed_constant", "kaiming_normal")

#: Salts that keep the random streams of different purposes apart.
WEIGHT, SCORE, REDRAW, FROZEN = 1, 2, 3, 4


def fan_in(shape: tuple[int, ...] | torch.Size) -> int:
    """Inputs feeding one output unit: ``in_features`` or ``in_channels/groups × kernel size``."""
    return math.prod(shape[1:]) if len(shape) > 1 else int(shape[0])


def draw(kind: str, shape: tuple[int, ...] | torch.Size, generator: torch.Generator) -> torch.Tensor:
    """A fresh CPU float32 tensor of ``shape`` from distribution ``kind``."""
    std = math.sqrt(2.0 / fan_in(shape))
    out = torch.empty(shape, dtype=torch.float32)
    if kind == "kaiming_uniform":
        bound = math.sqrt(3.0) * std
        return out.uniform_(-bound, bound, generator=generator)
    if kind == "kaiming_normal":
        return out.normal_(0.0, std, generator=generator)
    if kind == "signed_constant":
        out.uniform_(0.0, 1.0, generator=generator)
        return torch.where(out < 0.5, -std, std)
    raise ValueError(f"unknown initial distribution {kind!r}")


def initial_weight(kind: str, shape: torch.Size, seed: int, layer: int) -> torch.Tensor:
    """The random weights of prunable layer number ``layer`` (its index among Conv/Linear layers)."""
    return draw(kind, shape, generator_for(seed, WEIGHT, layer))


def initial_scores(kind: str, shape: torch.Size, seed: int, layer: int) -> torch.Tensor:
    return draw(kind, shape, generator_for(seed, SCORE, layer))


def redraw_generator(seed: int, step: int, layer: int) -> torch.Generator:
    """The generator of IteRand's re-draw at ``step`` for ``layer``: fresh values first, then coins."""
    return generator_for(seed, REDRAW, step, layer)
