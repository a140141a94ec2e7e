"""The strong-lottery-ticket family beyond edge-popup: MPT (biprop), signed and multicoated supermasks."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from torch.nn.utils import parametrize

from ptl_cli.errors import UserError
from ptl_cli.testing import check_pruner
from ptl_prune import supermask
from ptl_prune.edgepopup import EdgePopup
from ptl_prune.mpt import MPT
from ptl_prune.multicoated import Multicoated
from ptl_prune.signed import SignedSupermaskPruner

from .conftest import build, train_steps

TINY = [
    "--model", "conv2", "--width", "0.25", "--epochs", "1", "--batch-size", "32",
    "--set", "data.train_limit=128", "--set", "data.test_limit=100", "--quiet",
]  # fmt: skip


def _prepared(pruner, seed: int = 0, width: float = 0.25):
    return pruner.prepare(build("conv2", width=width), seed=seed)


def _trained(fashion, pruner, steps: int = 3):
    images, labels = fashion
    model = _prepared(pruner)
    train_steps(model, pruner, images, labels, steps=steps, batch=16)
    return model


def _grad_of_used_weight(model, layer, images, labels) -> torch.Tensor:
    """Backward through one batch; returns dL/dŴ of ``layer``'s parametrized weight (computed once)."""
    with parametrize.cached():  # the forward then uses exactly the tensor read here
        used = layer.weight
        used.retain_grad()
        torch.nn.functional.cross_entropy(model(images[:16]), labels[:16]).backward()
    return used.grad


def test_mpt_forward_weight_is_alpha_sign_w_on_the_kept_weights(fashion):
    pruner = MPT(sparsity=0.7)
    model = _trained(fashion, pruner)
    for _, name, module, mask in supermask.masked_layers(model):
        w, kept = supermask.original(module), mask.kept()
        n = w.numel()
        assert int(kept.sum()) == n - supermask.num_pruned(n, 0.7)  # exact count per layer
        alpha = (w.abs() * kept).sum() / kept.sum()  # the summation order the forward uses
        assert alpha == pytest.approx(float(w.abs()[kept].mean()), rel=1e-5)  # the mean |W| of the kept
        expected = torch.where(kept, torch.sign(w) * alpha, torch.zeros(()))
        assert torch.equal(module.weight, expected), name
        assert module.weight.abs().unique().numel() == 2  # {0, α}: one magnitude per layer
    # with edge-popup at the same seed the kept weights are W itself, not binarized
    plain = _trained(fashion, EdgePopup(sparsity=0.7, score_abs=True, weight_init="kaiming_normal"))
    assert plain.features[0].weight.abs().unique().numel() > 2


def test_mpt_score_gradient_is_g_times_w_through_abs_and_weights_stay_frozen(fashion):
    images, labels = fashion
    pruner = MPT(sparsity=0.5)
    model = _prepared(pruner)
    before = {n: supermask.original(m).clone() for _, n, m, _ in supermask.masked_layers(model)}
    layer = model.features[0]
    g = _grad_of_used_weight(model, layer, images, labels)
    mask = supermask.supermask_of(layer)
    w, s = supermask.original(layer), mask.scores
    assert torch.allclose(mask.scores.grad, g * w * torch.sign(s), rtol=1e-6, atol=1e-12)
    assert not torch.equal(mask.scores.grad, g * torch.sign(w))  # the |W| factor matters
    train_steps(model, pruner, images, labels, steps=2, batch=16)
    assert all(torch.equal(before[n], supermask.original(m)) for _, n, m, _ in supermask.masked_layers(model))


def test_mpt_composes_with_iterand_redraws_of_the_pruned_weights(fashion):
    pruner = MPT(sparsity=0.5, rerand_lambda=0.5, rerand_freq=1000)
    model = _trained(fashion, pruner, steps=1)
    before = {n: supermask.original(m).clone() for _, n, m, _ in supermask.masked_layers(model)}
    kept = {n: m.kept() for _, n, _, m in supermask.masked_layers(model)}
    pruner.redraw(model, step=1000)
    changed = 0
    for _, name, module, _ in supermask.masked_layers(model):
        w = supermask.original(module)
        moved = w != before[name]
        assert not (moved & kept[name]).any()  # only pruned weights are re-drawn
        changed += int(moved.sum())
        alpha = (w.abs() * kept[name]).sum() / kept[name].sum()
        assert torch.equal(module.weight, torch.where(kept[name], torch.sign(w) * alpha, torch.zeros(())))
    assert changed > 0 and pruner.events == [1000]


def test_signed_mask_keeps_hides_or_inverts_and_scores_move_signs(fashion):
    images, labels = fashion
    pruner = SignedSupermaskPruner(sparsity=0.6)
    model = _prepared(pruner)
    scores0 = {n: m.scores.detach().clone() for _, n, _, m in supermask.masked_layers(model)}
    train_steps(model, pruner, images, labels, steps=4, lr=1.0, batch=16)
    crossed = inverted = 0
    for _, name, module, mask in supermask.masked_layers(model):
        w, signs = supermask.original(module), mask.signs()
        n = w.numel()
        assert set(signs.unique().tolist()) == {-1, 0, 1}
        assert int((signs != 0).sum()) == n - supermask.num_pruned(n, 0.6)  # exact count per layer
        assert torch.equal(signs != 0, mask.kept())
        assert torch.equal(signs[signs != 0], torch.sign(mask.scores)[signs != 0].to(torch.int8))
        assert torch.equal(module.weight, w * signs)  # W kept, hidden or sign-flipped: never rescaled
        crossed += int(((scores0[name] < 0) != (mask.scores < 0)).sum())
        inverted += int((signs == -1).sum())
    # scores crossed zero (a weight's mask moves +1 -> 0 -> -1: the top-|S| rule prunes it on the way),
    # and inverted weights are a real share of the kept ones, not an edge case
    kept = sum(int(m.kept().sum()) for *_, m in supermask.masked_layers(model))
    assert crossed > 0 and inverted > 0.3 * kept


def test_signed_score_gradient_is_straight_through_the_signed_mask(fashion):
    images, labels = fashion
    model = _prepared(SignedSupermaskPruner(sparsity=0.5))
    layer = model.features[0]
    grad_w = _grad_of_used_weight(model, layer, images, labels)
    mask = supermask.supermask_of(layer)
    w = supermask.original(layer)
    assert torch.allclose(mask.scores.grad, grad_w * w, rtol=1e-6, atol=1e-12)
    assert (mask.scores < 0).any()  # so the missing sign(S) factor would have shown


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("mpt", {"sparsity": 0.6}),
        ("mpt", {"sparsity": 0.8, "sparsity_scope": "global"}),
        ("mpt", {"rerand_lambda": 0.5, "rerand_freq": 1}),  # composed with IteRand's re-draws
        ("signed-supermask", {"sparsity": 0.6}),
        ("signed-supermask", {"sparsity": 0.8, "sparsity_scope": "global"}),
        ("multicoated", {}),
        ("multicoated", {"layer_sparsity": {"6": 0.5}}),  # the tiny net's last layer at its own rate
    ],
)
def test_contract_resume_and_simulated_gpu(method, params):
    check_pruner(method, params)


@pytest.mark.parametrize("method", ["mpt", "signed-supermask", "multicoated"])
def test_cli_prune_and_export(cli, show, tmp_path, method):
    run = tmp_path / method
    code, _, err = cli("prune", "--method", method, "--sparsity", "0.6", *TINY, "--out", run)
    assert code == 0, err
    summary = show(run)
    assert summary["recipe"]["pruner"]["name"] == method
    assert summary["metrics"]["sparsity"] == pytest.approx(0.6, abs=1e-3)
    code, out, err = cli("export", run, "--format", "safetensors", "--out", tmp_path / "m.st", "--verify")
    assert code == 0 and "bit-identical" in out, err
    weight = load_file(tmp_path / "m.st")["features.0.weight"]
    magnitudes = weight.abs().unique()
    if method == "mpt":
        assert magnitudes.numel() == 2  # 0 and the layer's α
    elif method == "multicoated":  # signed-constant weights times levels 0..3: 4 magnitudes
        assert magnitudes.numel() == 4 and (weight != 0).float().mean() == pytest.approx(0.4, abs=0.01)
    else:
        assert magnitudes.numel() > 2 and (weight != 0).float().mean() == pytest.approx(0.4, abs=0.01)
    code, out, err = cli("export", run, "--format", "ticket", "--out", tmp_path / "t.st")
    assert code == 0 and "verified" in out, err  # its levels or gains: tests/prune/test_slt_tickets.py


def test_multicoated_levels_are_nested_exact_coats_and_the_gradient_counts_them(fashion):
    images, labels = fashion
    pruner = Multicoated(sparsity=0.5, coat_sparsity=[0.7, 0.9])
    model = _trained(fashion, pruner, steps=2)
    for *_, module, mask in supermask.masked_layers(model):
        w, key, n = supermask.original(module), mask.scores.abs(), mask.scores.numel()
        coats = [supermask.kept_mask(key, supermask.num_pruned(n, p)) for p in (0.5, 0.7, 0.9)]
        assert [int(c.sum()) for c in coats] == [n - supermask.num_pruned(n, p) for p in (0.5, 0.7, 0.9)]
        assert all(torch.equal(outer & inner, inner) for outer, inner in zip(coats, coats[1:], strict=False))
        level = sum(c.to(torch.uint8) for c in coats)
        assert torch.equal(mask.level(), level) and set(level.unique().tolist()) == {0, 1, 2, 3}
        assert torch.equal(module.weight, w * level)  # levels 0..3 scale the random weight
    assert pruner.sparsity(model) == pytest.approx(0.5, abs=1e-3)  # the first coat's
    layer = model.features[0]
    model.zero_grad(set_to_none=True)  # the training steps left their last gradient
    grad_w = _grad_of_used_weight(model, layer, images, labels)
    mask = supermask.supermask_of(layer)
    expected = 3 * grad_w * supermask.original(layer) * torch.sign(mask.scores)
    assert torch.allclose(mask.scores.grad, expected, rtol=1e-5, atol=1e-12)


def test_multicoated_settings_that_cannot_work_fail_in_one_line():
    with pytest.raises(UserError, match="sparsity_scope must be 'layer'"):
        Multicoated(sparsity_scope="global")
    with pytest.raises(UserError, match="must rise strictly"):
        Multicoated(sparsity=0.8, coat_sparsity=[0.7])


def test_mpt_binary_activations_are_signs_with_bi_real_gradients(fashion):
    images, _ = fashion
    model = _prepared(MPT(sparsity=0.5, activations="binary"))
    assert not any(isinstance(m, torch.nn.ReLU) for m in model.modules())
    seen = []
    model.features[2].register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    model(images[:4])
    assert set(seen[0].unique().tolist()) <= {-1.0, 0.0, 1.0} and seen[0].abs().sum() > 0
    # the gradient is that of Bi-Real Net's piecewise quadratic (written out: the reference's BiRealAct)
    x = torch.linspace(-1.5, 1.5, 301, requires_grad=True)
    act = type(next(m for m in model.modules() if type(m).__name__ == "BinaryActivation"))()  # the sign alone
    act(x).sum().backward()
    y = x.detach().clone().requires_grad_(True)
    approx = torch.where(
        y < -1, -1.0, torch.where(y < 0, y * y + 2 * y, torch.where(y < 1, -y * y + 2 * y, 1.0))
    )
    approx.sum().backward()
    assert torch.equal(act(x), torch.sign(x)) and torch.allclose(x.grad, y.grad, atol=1e-6)
    assert (x.grad[(x > -1) & (x < 1)] > 0).all() and (x.grad[x.abs() > 1] == 0).all()


def test_cli_mpt_binary_activations_resume_and_refused_export(cli, show, tmp_path):
    args = ["prune", "--method", "mpt", *TINY, "--set", "pruner.params.activations=binary"]
    args += ["--set", "data.train_limit=256", "--set", "train.checkpoint_every=3"]
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    code, _, err = cli(*args, "--out", whole)
    assert code == 0, err
    assert cli(*args, "--out", stopped, "--set", "train.stop_after_steps=4")[0] == 130
    code, _, err = cli("resume", stopped, "--quiet")
    assert code == 0, err
    a = torch.load(whole / "final.pt", weights_only=True)["model"]
    b = torch.load(stopped / "final.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the BatchNorm before each sign (binary_batchnorm's default): its trained statistics resumed too
    assert a["features.1.norm.running_mean"].abs().max() > 0 and a["classifier.2.norm.num_batches_tracked"]
    assert show(stopped)["metrics"]["test_acc"] == show(whole)["metrics"]["test_acc"]
    code, _, err = cli("export", whole, "--format", "safetensors", "--out", tmp_path / "m.st")
    assert code == 2 and "binary activations" in err and "Traceback" not in err
    code, _, err = cli(
        "prune",
        "--method",
        "mpt",
        "--model",
        "resnet18",
        "--set",
        "pruner.params.activations=binary",
        "--dry-run",
    )
    assert code == 2 and "has none" in err and len(err.strip().splitlines()) == 1
