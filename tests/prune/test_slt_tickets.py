"""Tickets of the pruners that map their kept weights — MPT (``α · sign(W)``, a stored gain), the
signed supermask (levels in {−1, 0, 1}) and multicoated (levels in {0, …, C}) — rebuilt from seed,
masks and gains bit for bit, from the CLI, with IteRand's re-draws and frozen parts composed in."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from ptl_cli.errors import UserError
from ptl_cli.pruning import TicketSpec
from ptl_cli.runs import Run
from ptl_prune import supermask
from ptl_prune.edgepopup import EdgePopup
from ptl_prune.export import _verify, bit_equal, load_trained
from ptl_prune.ticket import FORMAT, make_ticket, read_ticket, rebuild_state_dict, save_ticket

from .conftest import build

TINY = [
    "--model", "conv2", "--width", "0.25", "--epochs", "1", "--batch-size", "32", "--device", "cpu",
    "--set", "data.train_limit=256", "--set", "data.test_limit=64", "--quiet",
]  # fmt: skip
FROZEN = ["--set", "pruner.params.frozen_pruned=0.2", "--set", "pruner.params.frozen_kept=0.1"]
REDRAWS = ["--rerand-lambda", "0.3", "--rerand-freq", "2"]  # re-draws at steps 2, 4, 6, 8
RUNS = {
    "mpt": ["--sparsity", "0.6", *REDRAWS, *FROZEN],  # gains over re-drawn weights, part frozen
    "signed-supermask": ["--sparsity", "0.6", *FROZEN],  # frozen-kept weights have score 0: sign +1
    "multicoated": [*REDRAWS],  # the first coat's pruned weights re-drawn, three coats
}
ARCH = {"model": "conv2", "width": 0.25, "params": {}, "num_classes": 10, "in_channels": 1, "image_size": 28}


def _ptl(*args: object) -> int:
    from ptl_cli.cli import main

    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    return 0


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, tuple]:
    """Each method's tiny run (one, shared by the tests here), its dense export and its ticket."""
    out = {}
    for method, more in RUNS.items():
        root = tmp_path_factory.mktemp(method)
        run = root / "run"
        assert _ptl("prune", "--method", method, *TINY, *more, "--out", run) == 0
        dense, ticket = root / "model.safetensors", root / "ticket.safetensors"
        assert _ptl("export", run, "--format", "safetensors", "--out", dense) == 0
        out[method] = (run, dense, ticket)
    return out


@pytest.mark.parametrize("method", list(RUNS))
def test_cli_ticket_verifies_and_rebuilds_the_export_bit_for_bit(cli, exported, method):
    run, dense, ticket = exported[method]
    code, out, err = cli("export", run, "--format", "ticket", "--out", ticket, "--verify")
    assert code == 0 and "verified" in out and "bit-identical" in out, err
    rebuilt, meta = rebuild_state_dict(ticket)
    expected = load_file(dense)
    assert rebuilt.keys() == expected.keys()
    assert all(bit_equal(rebuilt[k], expected[k]) for k in expected)
    assert ticket.stat().st_size < dense.stat().st_size / 10
    assert meta["format"] == FORMAT and meta["method"] == method
    tensors, _ = read_ticket(ticket)
    kinds = {key.split("/")[0] for key in tensors}
    weight = expected["features.0.weight"]
    if method == "mpt":
        assert "gain" in kinds and "level" not in kinds and "per-layer gains" in out
        assert meta["events"] == [2, 4, 6, 8] and "source" in kinds
        gain = tensors["gain/features.0"]
        assert torch.equal(weight.abs().unique(), torch.stack([torch.zeros(()), gain]))  # {0, α}
    elif method == "signed-supermask":
        assert "sign" in kinds and "gain" not in kinds and "masks with levels" in out
        assert all(layer["signed"] for layer in meta["layers"])  # every layer flips some kept weights
    else:
        assert {"level", "source"} <= kinds and "sign" not in kinds
        assert all(layer["levels"] == 3 for layer in meta["layers"])  # three coats, two more planes
    # the re-drawn weights a ticket regenerates include kept ones (else sources would prove nothing)
    if method != "signed-supermask":
        trained, _, _ = load_trained(Run(run))
        held = [m.sources[m.kept()] for *_, m in supermask.masked_layers(trained)]
        assert sum(int((h > 0).sum()) for h in held) > 0


def _corrupt(tensors: dict[str, torch.Tensor], method: str) -> str:
    """Change the smallest thing each method's ticket adds to the 1-bit masks; returns its key."""
    if method == "mpt":
        key = "gain/features.0"
        tensors[key] = torch.nextafter(tensors[key], torch.tensor(math.inf))  # one ulp
    else:
        key = "sign/features.2" if method == "signed-supermask" else "level/features.2/1"
        tensors[key] = tensors[key].clone()
        tensors[key][0] ^= 1  # one weight's sign, or whether it clears the second coat
    return key


@pytest.mark.parametrize("method", list(RUNS))
def test_a_corrupted_level_or_gain_fails_verification(exported, tmp_path, method):
    run, dense, ticket = exported[method]
    if not ticket.exists():
        assert _ptl("export", run, "--format", "ticket", "--out", ticket) == 0
    model, pruner, arch = load_trained(Run(run))
    state = pruner.export_dense(model)
    assert _verify(ticket, "ticket", model, state, arch, method).startswith("verified")
    tensors, meta = read_ticket(ticket)
    _corrupt(tensors, method)
    broken = tmp_path / "broken.safetensors"
    save_ticket(broken, tensors, meta)
    rebuilt, _ = rebuild_state_dict(broken)
    differ = [k for k in state if not bit_equal(rebuilt[k], state[k])]
    assert differ == ["features.0.weight" if method == "mpt" else "features.2.weight"]
    with pytest.raises(UserError, match="verify failed"):
        _verify(broken, "ticket", model, state, arch, method)


def test_levels_round_trip_through_bit_planes_and_bad_declarations_are_refused(tmp_path):
    pruner = EdgePopup(sparsity=0.5)
    model = pruner.prepare(build("conv2", width=0.25), seed=3)
    spec = pruner.ticket_spec(model)
    gen = torch.Generator().manual_seed(0)
    levels = {n: torch.randint(-5, 6, k.shape, generator=gen).to(torch.int8) for n, k in spec.masks.items()}
    levels["classifier.5"] = spec.masks["classifier.5"].to(torch.uint8)  # levels in {0, 1}: a plain mask
    tensors, meta = make_ticket(model, TicketSpec(3, pruner.weight_init, levels), ARCH, "levels")
    assert [layer.get("levels") for layer in meta["layers"]] == [5, 5, 5, 5, None]
    assert "level/features.0/4" in tensors and "level/classifier.5/1" not in tensors
    path = tmp_path / "t.safetensors"
    save_ticket(path, tensors, meta)
    rebuilt, _ = rebuild_state_dict(path)
    for _, name, module, _ in supermask.masked_layers(model):
        w, level = supermask.original(module), levels[name]
        expected = torch.where(level != 0, w * level.float(), torch.zeros(()))
        assert bit_equal(rebuilt[f"{name}.weight"], expected), name
    # one-line refusals: a float mask, a level beyond ±127, a gain without a mask, a gain of NaN
    name = "features.0"
    for masks, gains, match in [
        ({name: levels[name].float()}, {}, "bool tensor .True = kept. or an integer tensor of levels"),
        ({name: levels[name].to(torch.int16) * 100}, {}, "levels beyond ±127"),
        ({}, {name: 0.5}, "gains for layers it declares no mask for"),
        ({name: levels[name]}, {name: math.nan}, "not a finite number"),
    ]:
        with pytest.raises(UserError, match=match):
            make_ticket(model, TicketSpec(3, pruner.weight_init, masks, gains=gains), ARCH, "bad")
