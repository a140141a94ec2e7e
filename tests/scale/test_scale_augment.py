"""Rank-consistent augmentation: N ranks augment each image exactly as one process would.

Each rank holds ``global_batch[rank::world_size]`` (the sampler convention). Inside
``batch_shard(rank, world_size)`` the core augmentations draw the global batch's numbers and
keep the rank's share, so concatenating the ranks' outputs gives the single-process output and
every rank's RNG ends where the single process's does. No process group is needed to check this:
the ranks are simulated one after the other from the same seed.
"""

from __future__ import annotations

import pytest
import torch

from ptl_cli import plugins
from ptl_cli.data import augment


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    pack = plugins.get("datasets", "fashion-pack").build(None, "train", False)
    return pack.images[:48].float() / 255.0


def _pipeline(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Every random core augmentation, in the order the prune workflow chains them."""
    x = augment.random_resized_crop(torch.nn.functional.pad(x, (4,) * 4), size=28, generator=generator)
    x = augment.random_flip(x, generator)
    return augment.weak(x, padding=4, generator=generator)


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("use_generator", [False, True])
def test_ranks_reproduce_the_single_process_batch(images, world_size, use_generator):
    def run(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(7)
        gen = torch.Generator().manual_seed(11) if use_generator else None
        out = _pipeline(x, gen)
        after = (gen.get_state() if gen is not None else torch.get_rng_state()).clone()
        return out, after

    single, single_state = run(images)
    for rank in range(world_size):
        with augment.batch_shard(rank, world_size):
            local, state = run(images[rank::world_size])
        assert torch.equal(local, single[rank::world_size])
        assert torch.equal(state, single_state), "a rank's RNG must advance as the single process's"


def test_without_a_shard_draws_are_the_plain_local_ones(images):
    torch.manual_seed(3)
    plain = augment.weak(images[:8])
    torch.manual_seed(3)
    with augment.batch_shard(0, 1):
        same = augment.weak(images[:8])
    assert torch.equal(plain, same)
    assert augment.current_shard() == (0, 1)


def test_ranks_never_share_draws(images):
    """Without sharding every rank would flip/crop its i-th image like the others' i-th image."""
    x = images[:32]
    outs = []
    for rank in range(2):
        torch.manual_seed(5)
        with augment.batch_shard(rank, 2):
            outs.append(augment.uniform((3, 16), x))
    assert not torch.equal(outs[0], outs[1])
    torch.manual_seed(5)
    whole = augment.uniform((3, 32), x)
    assert torch.equal(torch.stack([outs[0], outs[1]], dim=-1).reshape(3, 32), whole)


def test_bad_shard_is_refused():
    with pytest.raises(ValueError, match="outside"), augment.batch_shard(2, 2):
        pass
