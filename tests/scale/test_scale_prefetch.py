"""The prefetching loader: same batches, same order, same RNG stream, and it stops cleanly."""

from __future__ import annotations

import threading

import pytest
import torch
from torch.utils.data import DataLoader

from ptl_cli import plugins
from ptl_cli.data.base import collate
from ptl_cli.data.loader import map_tensors, prefetch, step_batches
from ptl_cli.data.sampler import ResumableSampler


@pytest.fixture(scope="module")
def pack():
    return plugins.get("datasets", "fashion-pack").build(None, "train", False)


def _loader(pack, batch_size: int, seed: int) -> DataLoader:
    sampler = ResumableSampler(len(pack), seed=seed)
    return DataLoader(pack, batch_size, sampler=sampler, collate_fn=collate, generator=torch.Generator())


def _threads() -> int:
    return sum(t.name == "ptl-prefetch" for t in threading.enumerate())


def test_same_batches_as_the_loader_in_the_same_order(pack):
    loader = _loader(pack, 100, seed=3)
    plain = list(loader)
    with prefetch(loader, "cpu", depth=3) as batches:
        fetched = list(batches)
    assert len(fetched) == len(plain) == 50
    for (a, b), (c, d) in zip(plain, fetched, strict=True):
        assert torch.equal(a, c) and torch.equal(b, d)


def test_step_indexed_sources_and_nested_batches(pack):
    def fetch(step: int) -> dict:
        index = torch.arange(step * 8, step * 8 + 8)
        return {"images": pack.images[index], "labels": (pack.targets[index],)}

    with prefetch(step_batches(fetch, 2, 6), torch.device("cpu")) as batches:
        got = list(batches)
    assert [int(b["labels"][0][0]) for b in got] == [int(pack.targets[s * 8]) for s in range(2, 6)]
    assert torch.equal(got[0]["images"], pack.images[16:24])


def test_the_global_rng_is_untouched(pack):
    """Augmentation in the loop draws from the global RNG: the prefetch thread must not."""
    loader = _loader(pack, 64, seed=1)
    torch.manual_seed(0)
    plain = [torch.rand(3) for _ in loader]
    torch.manual_seed(0)
    with prefetch(loader, "cpu") as batches:
        overlapped = [torch.rand(3) for _ in batches]
    assert all(torch.equal(a, b) for a, b in zip(plain, overlapped, strict=True))


def test_leaving_early_stops_the_thread(pack):
    endless = step_batches(lambda s: pack.images[:4], 0, 10**9)
    with prefetch(endless, "cpu", depth=2) as batches:
        for i, _ in enumerate(batches):
            if i == 3:
                break
    assert _threads() == 0


def test_source_errors_reach_the_loop():
    def broken():
        yield torch.zeros(1)
        raise OSError("shard unreadable")

    with pytest.raises(OSError, match="shard unreadable"), prefetch(broken(), "cpu") as batches:
        list(batches)
    assert _threads() == 0


def test_synchronous_mode_and_map_tensors():
    batches = list(prefetch([torch.ones(2), torch.zeros(2)], "cpu", depth=0))
    assert [b.sum().item() for b in batches] == [2.0, 0.0]
    nested = map_tensors({"a": (torch.ones(1), 3), "b": [torch.zeros(1)]}, lambda t: t + 1)
    assert nested["a"][1] == 3 and nested["a"][0].item() == 2.0 and nested["b"][0].item() == 1.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_cuda_batches_arrive_on_the_device(pack):
    loader = DataLoader(pack, batch_size=256, collate_fn=collate)
    with prefetch(loader, "cuda", depth=2) as batches:
        for images, targets in batches:
            assert images.is_cuda and targets.is_cuda
            assert images.dtype == torch.uint8
