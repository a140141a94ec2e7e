"""Tickets: seed + 1-bit masks + re-draw log rebuild the pruned network bit for bit."""

from __future__ import annotations

import pytest
import torch

from ptl_prune import supermask
from ptl_prune.edgepopup import EdgePopup
from ptl_prune.export import bit_equal
from ptl_prune.iterand import IteRand
from ptl_prune.ticket import load_ticket, make_ticket, pack_bits, rebuild_state_dict, save_ticket, unpack_bits

from .conftest import build, train_steps

ARCH = {
    "model": "resnet18",
    "width": 0.25,
    "params": {},
    "num_classes": 10,
    "in_channels": 1,
    "image_size": 28,
}


@pytest.mark.parametrize("n", [1, 8, 13, 1000])
def test_bit_packing_round_trips(n):
    mask = torch.rand(n, generator=torch.Generator().manual_seed(n)) < 0.5
    packed = pack_bits(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == (n + 7) // 8
    assert torch.equal(unpack_bits(packed, n), mask)


@pytest.mark.parametrize("method", ["iterand", "edge-popup"])
def test_ticket_rebuilds_bit_identical_weights(fashion, tmp_path, method):
    images, labels = fashion
    if method == "iterand":
        pruner = IteRand(sparsity=0.6, rerand_freq=2, rerand_lambda=0.3, weight_init="signed_constant")
    else:
        pruner = EdgePopup(sparsity=0.6)
    model = pruner.prepare(supermask_model := build(ARCH["model"], ARCH["width"]), seed=7)
    assert model is supermask_model
    train_steps(model, pruner, images, labels, steps=5, batch=16)  # re-draws at steps 2 and 4
    if method == "iterand":
        assert pruner.events == [2, 4]
        assert any(
            int((m.sources > 0).logical_and(m.kept()).sum()) for *_, m in supermask.masked_layers(model)
        )

    tensors, meta = make_ticket(model, pruner.ticket_spec(model), ARCH, method)
    path = tmp_path / "ticket.safetensors"
    save_ticket(path, tensors, meta)
    rebuilt, meta = rebuild_state_dict(path)
    # no levels, no gains: written as before they existed (format 1, the same tensors and metadata)
    assert meta["format"] == "ptl-ticket/1"
    assert {key.split("/")[0] for key in tensors} <= {"mask", "source", "state"}
    assert all(set(layer) == {"name", "index", "shape", "pruned"} for layer in meta["layers"])
    dense = supermask.dense_state_dict(model)
    assert rebuilt.keys() == dense.keys()
    assert all(bit_equal(rebuilt[k], dense[k]) for k in dense)

    plain = load_ticket(path)  # the architecture, unwrapped, with plain torch modules only
    assert not list(supermask.masked_layers(plain))
    model.eval()
    with torch.no_grad():
        assert torch.allclose(plain(images[:8]), model(images[:8]), rtol=1e-5, atol=1e-6)
    dense_bytes = sum(v.numel() * v.element_size() for v in dense.values())
    assert path.stat().st_size < dense_bytes / 5
