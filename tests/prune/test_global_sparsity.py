"""Global sparsity (``sparsity_scope = "global"``): one top-k over every layer's scores, through the
pruner's ``before_forward`` hook; exact in total, each layer's count free; IteRand re-draws
against the global mask; runs resume exactly and report per-layer sparsity."""

from __future__ import annotations

import json

import pytest
import torch

from ptl_cli import pruning
from ptl_cli.testing import check_pruner
from ptl_prune import supermask
from ptl_prune.edgepopup import EdgePopup
from ptl_prune.export import bit_equal
from ptl_prune.iterand import IteRand

from .conftest import build, train_steps
from .test_cli import TINY, final_state, records


def reference_global_mask(model, p: float, score_abs: bool) -> list[torch.Tensor]:
    """Independent reference: a stable sort of all layers' keys, the lowest round(p·n) pruned."""
    masks = [mask for *_, mask in supermask.masked_layers(model)]
    keys = [(m.scores.detach().abs() if score_abs else m.scores.detach()).reshape(-1) for m in masks]
    flat = torch.cat(keys)
    kept = torch.ones_like(flat, dtype=torch.bool)
    kept[torch.sort(flat, stable=True).indices[: supermask.num_pruned(flat.numel(), p)]] = False
    return [
        part.view(m.scores.shape)
        for part, m in zip(kept.split([k.numel() for k in keys]), masks, strict=True)
    ]


@pytest.mark.parametrize("score_abs", [False, True])
def test_global_scope_prunes_exactly_p_of_all_weights_layers_free(fashion, score_abs):
    images, labels = fashion
    pruner = EdgePopup(sparsity=0.6, score_abs=score_abs, sparsity_scope="global")
    model = pruning.prepare(pruner, build("conv2", 0.25), 3)
    train_steps(model, pruner, images, labels, steps=3, batch=16)
    kept, total = pruner.counts(model)
    assert total - kept == supermask.num_pruned(total, 0.6)  # exact in total
    expected = reference_global_mask(model, 0.6, score_abs)
    got = [mask.kept() for *_, mask in supermask.masked_layers(model)]
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
    by_layer = pruner.sparsity_by_layer(model)
    assert max(abs(v - 0.6) for v in by_layer.values()) > 0.02  # the layers' shares are free
    # the forward uses these masks, not the per-layer ones
    layer = EdgePopup(sparsity=0.6, score_abs=score_abs)
    twin = pruning.prepare(layer, build("conv2", 0.25), 3)
    twin.load_state_dict(model.state_dict())
    model.eval(), twin.eval()
    with torch.no_grad():
        assert not torch.equal(model(images[:8]), twin(images[:8]))
    dense = supermask.dense_state_dict(model)
    for (_, name, _, _), kept_mask in zip(supermask.masked_layers(model), expected, strict=True):
        assert torch.equal(dense[f"{name}.weight"] != 0, kept_mask)


def test_layer_sparsity_overrides_stay_per_layer_under_global_scope(fashion):
    pruner = EdgePopup(sparsity=0.5, sparsity_scope="global", layer_sparsity={"classifier.5": 0.2})
    model = pruning.prepare(pruner, build("conv2", 0.25), 0)
    by_layer = pruner.sparsity_by_layer(model)
    last = supermask.original(dict(model.named_modules())["classifier.5"]).numel()
    assert by_layer["classifier.5"] == supermask.num_pruned(last, 0.2) / last
    kept, total = pruner.counts(model)
    ranked = total - last
    assert (total - kept) - supermask.num_pruned(last, 0.2) == supermask.num_pruned(ranked, 0.5)


def test_iterand_redraws_exactly_the_globally_pruned_weights(fashion):
    images, labels = fashion
    pruner = IteRand(sparsity=0.5, sparsity_scope="global", rerand_freq=2, rerand_lambda=1.0)
    model = pruning.prepare(pruner, build("conv2", 0.25), 1)
    train_steps(model, pruner, images, labels, steps=1, batch=16)
    before = [supermask.original(m).clone() for _, _, m, _ in supermask.masked_layers(model)]
    train_steps(model, pruner, images, labels, steps=1, start=1, batch=16)  # re-draw at step 2
    assert pruner.events == [2]
    pruned_global = [~k for k in reference_global_mask(model, 0.5, False)]
    per_layer = [~supermask.kept_mask(m.scores, m.pruned) for *_, m in supermask.masked_layers(model)]
    assert any(not torch.equal(a, b) for a, b in zip(pruned_global, per_layer, strict=True))
    for (_, _, module, _), old, pruned in zip(
        supermask.masked_layers(model), before, pruned_global, strict=True
    ):
        changed = supermask.original(module) != old
        assert torch.equal(changed, pruned)  # r = 1: every globally pruned weight, nothing else


@pytest.mark.parametrize("method", ["edge-popup", "iterand"])
def test_global_scope_keeps_the_pruner_contract(method):
    params = {"sparsity": 0.5, "sparsity_scope": "global"}
    check_pruner(method, params | ({"rerand_freq": 1} if method == "iterand" else {}))


def test_global_run_resumes_exactly_and_reports_layer_sparsity(cli, show, tmp_path):
    args = ["prune", "--method", "iterand", "--rerand-freq", "3", "--sparsity-scope", "global", *TINY]
    run = tmp_path / "run"
    code, out, err = cli(*args, "--json", "--out", run, "--set", "train.stop_after_steps=5")
    assert code == 130, err
    assert json.loads(out)["status"] == "interrupted"  # --json prints an object for every outcome
    code, out, err = cli("resume", run, "--json", "--quiet")
    assert code == 0, err
    assert json.loads(out)["status"] == "completed"
    reference = tmp_path / "reference"
    assert cli(*args, "--out", reference)[0] == 0
    a, b = final_state(reference), final_state(run)
    assert a.keys() == b.keys() and all(bit_equal(a[k], b[k]) for k in a)
    assert records(run) == records(reference)

    metrics = show(run)["metrics"]
    assert metrics["params_total"] - metrics["params_kept"] == round(metrics["params_total"] * 0.5)
    layers = metrics["layer_sparsity"]
    assert set(layers) == {"features.0", "features.2", "classifier.1", "classifier.3", "classifier.5"}
    sizes = {
        k[: -len(".parametrizations.weight.original")]: v.numel()
        for k, v in a.items()
        if k.endswith("original")
    }
    pruned = sum(layers[name] * sizes[name] for name in layers)
    assert pruned == pytest.approx(metrics["params_total"] - metrics["params_kept"], abs=1e-6)
    assert len(set(layers.values())) > 1
    report = (run / "report.md").read_text()
    assert "sparsity of classifier.1" in report


def test_help_says_what_sparsity_means_for_each_scope(cli):
    code, out, _ = cli("prune", "--help")
    text = " ".join(out.replace("│", " ").split())
    assert code == 0 and "--sparsity-scope" in text
    assert "of each layer with --sparsity-scope layer" in text and "of all pruned layers together" in text
