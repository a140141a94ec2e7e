"""ptl's FixMatch, UDA, PseudoLabel and MeanTeacher against USB's own training steps (semilearn 0.3.2).

USB's algorithm files (``semilearn/algorithms/<name>/<name>.py``) are executed as they are
installed, with their real hooks (``FixedThresholdingHook``, ``PseudoLabelingHook``), real
losses (``ce_loss``, ``consistency_loss``), real ``Bn_Controller`` and ``EMA``. Only their base
class is a stand-in (``usb_algorithm_stand_in`` in ``tests/reference.py``): USB's
``AlgorithmBase`` imports scikit-learn, tensorboard, its datasets and optimizers; the stand-in
provides the few members ``train_step`` uses (hooks by name, ``compute_prob`` = softmax,
``amp_cm``, ``it``, ...), set from ``args`` as USB's ``__init__`` sets them. Both sides get the
same fixed random logits (through a real linear layer set to the identity) and the same model;
losses, logs and parameter gradients are compared. Where ptl differs on purpose, the test says
so and checks the documented difference.
"""

from __future__ import annotations

import copy
import inspect
import math
import types

import pytest
import torch
from torch import nn

from ptl_cli.data.views import view_keys, weak_view
from ptl_ssl.fixmatch import FixMatch
from ptl_ssl.meanteacher import MeanTeacher
from ptl_ssl.pseudolabel import PseudoLabel
from ptl_ssl.uda import UDA

K, N_LABELED, N_UNLABELED = 10, 8, 32


@pytest.fixture(scope="module")
def usb(reference) -> types.SimpleNamespace:
    """USB's four algorithm classes over the stand-in base, and the real pieces they use."""
    load = reference.load_file
    # core/utils/misc.py (Bn_Controller, EMA) imports a YAML library and tensorboard at the top,
    # neither used by those two classes
    misc = load(
        "semilearn",
        "core/utils/misc.py",
        {"ruamel": {}, "ruamel.yaml": {}, "torch.utils.tensorboard": {"SummaryWriter": object}},
    )

    def extra_init(self, args) -> None:
        self.num_train_iter = args.num_train_iter
        self.it = args.it
        self.bn_controller = misc.Bn_Controller()
        self.ema = None

    stand_in = reference.usb_algorithm_stand_in(("PseudoLabelingHook", "FixedThresholdingHook"), extra_init)
    classes = {
        name: getattr(
            load("semilearn", f"algorithms/{name.lower()}/{name.lower()}.py", stand_in.provides), name
        )
        for name in ("FixMatch", "UDA", "PseudoLabel", "MeanTeacher")
    }
    return types.SimpleNamespace(
        **classes,
        consistency_loss=stand_in.criterions.consistency_loss,
        EMA=misc.EMA,
        masking=stand_in.masking,
    )


class _Outputs(nn.Module):
    """USB's networks return ``{"logits", "feat"}``; this wraps a ptl-style model that way."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.inner(x), "feat": x.flatten(1)}


@pytest.fixture(scope="module")
def logits() -> dict[str, torch.Tensor]:
    """Fixed random logits: labeled, unlabeled weak and strong; labels; scaled so that about
    half of the unlabeled rows (20-80%) pass the 0.95 and 0.8 thresholds."""
    gen = torch.Generator().manual_seed(0)
    scale = torch.rand(N_UNLABELED, 1, generator=gen) * 12 + 2
    return {
        "x": torch.randn(N_LABELED, K, generator=gen) * 2,
        "y": torch.randint(0, K, (N_LABELED,), generator=gen),
        "weak": torch.randn(N_UNLABELED, K, generator=gen) * scale,
        "strong": torch.randn(N_UNLABELED, K, generator=gen) * 2,
    }


def _images(rows: torch.Tensor) -> torch.Tensor:
    return rows.reshape(rows.shape[0], -1, 1, 1).clone()


def _usb_step(usb_cls, model: nn.Module, batch: dict, it: int = 0, total: int = 100, ema=None, **args):
    """USB's ``train_step`` on ``batch``: (its outputs, its logs, its parameter gradients)."""
    wrapped = _Outputs(model)
    namespace = types.SimpleNamespace(
        model=wrapped,
        num_classes=K,
        num_train_iter=total,
        ulb_loss_ratio=args.pop("lambda_u", 1.0),
        it=it,
        **args,
    )
    algorithm = usb_cls(namespace, None)
    algorithm.ema = ema
    names = {"x_lb": "x", "y_lb": "y", "x_ulb_w": "weak", "x_ulb_s": "strong"}
    wanted = inspect.signature(algorithm.train_step).parameters
    out, log = algorithm.train_step(**{name: batch[key] for name, key in names.items() if name in wanted})
    model.zero_grad()
    out["loss"].backward()
    return algorithm, out, log, [p.grad.clone() for p in model.parameters()]


def _ptl_step(algorithm, model: nn.Module, batch: dict, step: int = 0, total: int = 100):
    labeled = {"weak": batch["x"]}
    unlabeled = {key: batch[key] for key in view_keys(algorithm.unlabeled_views)}
    loss, logs = algorithm.loss(model, labeled, batch["y"], unlabeled, step, total)
    model.zero_grad()
    loss.backward()
    return loss, logs, [p.grad.clone() for p in model.parameters()]


def _same(a: torch.Tensor | float, b: torch.Tensor | float) -> None:
    torch.testing.assert_close(torch.as_tensor(a).float(), torch.as_tensor(b).float(), rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def batch(logits) -> dict[str, torch.Tensor]:
    return {
        "x": _images(logits["x"]),
        "y": logits["y"],
        "weak": _images(logits["weak"]),
        "strong": _images(logits["strong"]),
    }


@pytest.fixture
def model(logits_model) -> nn.Module:
    return logits_model(K)


def test_the_fixed_logits_mix_confident_and_unconfident_rows(logits):
    confidence = torch.softmax(logits["weak"], dim=1).amax(1)
    for threshold in (0.8, 0.95):
        assert 0.2 < (confidence >= threshold).float().mean() < 0.8


@pytest.mark.parametrize(("threshold", "lambda_u"), [(0.95, 1.0), (0.8, 2.5)])
def test_fixmatch_equals_usb(usb, model, batch, threshold, lambda_u):
    """USB's hard-label FixMatch (its default) against ptl's at temperature 1 (ptl's default)."""
    _, out, log, usb_grads = _usb_step(
        usb.FixMatch,
        copy.deepcopy(model),
        batch,
        T=0.5,
        p_cutoff=threshold,
        hard_label=True,
        lambda_u=lambda_u,
    )
    loss, logs, grads = _ptl_step(FixMatch(K, threshold=threshold, lambda_u=lambda_u), model, batch)
    _same(loss, out["loss"])
    _same(logs["loss_x"], log["sup_loss"])
    _same(logs["loss_u"], log["unsup_loss"])
    _same(logs["mask_ratio"], log["util_ratio"])
    assert 0 < logs["mask_ratio"] < 1 and logs["loss_u"] > 0
    for ours, theirs in zip(grads, usb_grads, strict=True):
        _same(ours, theirs)


def test_fixmatch_temperature_is_ptls_own(usb, model, batch, logits):
    """A documented difference: ptl's ``temperature`` scales the logits whose softmax gives the
    confidence (as in kekmodel's FixMatch-pytorch); USB's hard-label FixMatch ignores its ``T``.
    At T = 0.5 ptl's mask is USB's own thresholding hook on the tempered probabilities."""
    _, out, _, _ = _usb_step(usb.FixMatch, copy.deepcopy(model), batch, T=0.5, p_cutoff=0.95, hard_label=True)
    loss, logs, _ = _ptl_step(FixMatch(K, threshold=0.95, temperature=0.5), model, batch)
    assert not torch.allclose(loss, out["loss"])
    tempered = torch.softmax(logits["weak"] / 0.5, dim=1)
    mask = usb.masking.FixedThresholdingHook().masking(
        types.SimpleNamespace(p_cutoff=0.95), tempered, softmax_x_ulb=False
    )
    expected = usb.consistency_loss(logits["strong"], tempered.argmax(1), "ce", mask=mask)
    _same(logs["loss_u"], expected)
    _same(logs["mask_ratio"], mask.mean())


def test_uda_without_sharpening_equals_usb(usb, model, batch):
    """USB's UDA builds its soft targets with ``gen_ulb_targets(probs, use_hard_label=False, T,
    softmax=False)``, which returns the probabilities as given: its ``T`` never sharpens.
    ptl at temperature 1 is therefore USB's UDA, whatever USB's T."""
    _, out, log, usb_grads = _usb_step(
        usb.UDA, copy.deepcopy(model), batch, T=0.4, p_cutoff=0.8, tsa_schedule="none", lambda_u=1.5
    )
    loss, logs, grads = _ptl_step(UDA(K, temperature=1.0, threshold=0.8, lambda_u=1.5), model, batch)
    _same(loss, out["loss"])
    _same(logs["loss_x"], log["sup_loss"])
    _same(logs["loss_u"], log["unsup_loss"])
    _same(logs["mask_ratio"], log["util_ratio"])
    for ours, theirs in zip(grads, usb_grads, strict=True):
        _same(ours, theirs)


def test_uda_sharpens_as_the_paper_where_usb_does_not(usb, model, batch, logits):
    """A documented difference: ptl sharpens the targets, softmax(logits / 0.4), as the UDA paper;
    the mask stays on the unsharpened probabilities, as in USB. The consistency term is USB's
    own ``consistency_loss`` with those sharpened targets and USB's own mask."""
    _, out, _, _ = _usb_step(usb.UDA, copy.deepcopy(model), batch, T=0.4, p_cutoff=0.8, tsa_schedule="none")
    loss, logs, _ = _ptl_step(UDA(K, temperature=0.4, threshold=0.8), model, batch)
    assert not torch.allclose(loss, out["loss"])
    probs = torch.softmax(logits["weak"], dim=1)
    mask = usb.masking.FixedThresholdingHook().masking(
        types.SimpleNamespace(p_cutoff=0.8), probs, softmax_x_ulb=False
    )
    sharpened = torch.softmax(logits["weak"] / 0.4, dim=1)
    _same(logs["loss_u"], usb.consistency_loss(logits["strong"], sharpened, "ce", mask=mask))
    _same(logs["mask_ratio"], mask.mean())


@pytest.mark.parametrize("it", [0, 7, 20, 39, 40, 90])
def test_pseudolabel_equals_usb_along_the_warm_up(usb, model, batch, it):
    """USB's linear warm-up ``clip(it / (0.4 · iterations), 0, 1)`` is ptl's ramp-up."""
    _, out, log, usb_grads = _usb_step(
        usb.PseudoLabel,
        copy.deepcopy(model),
        batch,
        it=it,
        total=100,
        p_cutoff=0.95,
        unsup_warm_up=0.4,
        lambda_u=2.0,
    )
    algorithm = PseudoLabel(K, threshold=0.95, lambda_u=2.0, rampup_fraction=0.4)
    loss, logs, grads = _ptl_step(algorithm, model, batch, step=it, total=100)
    _same(loss, out["loss"])
    _same(logs["loss_x"], log["sup_loss"])
    _same(logs["loss_u"], log["unsup_loss"])
    _same(logs["mask_ratio"], log["util_ratio"])
    _same(logs["weight_u"], 2.0 * min(it / 40, 1.0))
    for ours, theirs in zip(grads, usb_grads, strict=True):
        _same(ours, theirs)


@pytest.fixture(scope="module")
def fashion_batch(fashion) -> dict[str, torch.Tensor]:
    """Real normalized Fashion-MNIST images: 8 labeled (with labels) and 16 unlabeled."""
    images, labels, mean, std = fashion
    normalized = (images.float() / 255 - mean[0]) / std[0]
    return {"x": normalized[:8], "y": labels[:8], "none": normalized[8:24]}


def _meanteacher_both(
    usb, algorithm, ours: nn.Module, theirs: nn.Module, ema, batch: dict, it: int, seed: int
):
    """One MeanTeacher step on each side with the same two weak views, drawn from ``seed`` in the
    order the loop draws them: ptl's ``weak`` (the student's) is USB's ``x_ulb_s`` and ptl's
    ``weak:1`` (the teacher's) is USB's ``x_ulb_w``."""
    torch.manual_seed(seed)
    u = batch["none"]
    student, teacher = weak_view(u), weak_view(u)
    assert not torch.equal(student, teacher)  # two independent weak draws
    ptl = _ptl_step(algorithm, ours, {**batch, "weak": student, "weak:1": teacher}, step=it, total=100)
    views = {"x": batch["x"], "y": batch["y"], "strong": student, "weak": teacher}
    usb_side = _usb_step(
        usb.MeanTeacher, theirs, views, it=it, total=100, ema=ema, unsup_warm_up=0.4, lambda_u=50.0
    )
    return ptl, usb_side[1:]


def _move_student(ours: nn.Module, theirs: nn.Module, algorithm, ema) -> None:
    """The same random step for both students, then each side's teacher update."""
    moves = [torch.randn_like(p) * 0.05 for p in ours.parameters()]
    with torch.no_grad():
        for ours_p, theirs_p, move in zip(ours.parameters(), theirs.parameters(), moves, strict=True):
            ours_p.add_(move)
            theirs_p.add_(move)
    algorithm.after_step(ours, 0)
    ema.update()


@pytest.mark.parametrize("it", [10, 40, 75])
def test_meanteacher_equals_usb_given_the_same_views_and_teacher(usb, fashion_batch, it):
    """Two documented differences, and equality otherwise.

    * Views: USB's dataset hands MeanTeacher two independent weak views (its ``x_ulb_s`` is a
      weak view for this algorithm); ptl asks for ``("weak", "weak")``. The same two views are
      handed to both.
    * Ramp-up: ptl weighs the consistency term by the paper's ``exp(-5 (1 - t)^2)``, USB by
      ``t`` itself (``t = clip(it / (0.4 · iterations), 0, 1)``): equal from the end of the
      ramp-up on, and the unweighted terms are equal throughout.

    The teacher: USB's real ``EMA`` registered at the student's first weights and updated once
    after the student moved, against ptl's teacher copied on the first call and moved by
    ``after_step``: their predictions, hence the losses, agree only if the two updates do.
    """
    torch.manual_seed(0)
    ours = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, K))
    theirs = copy.deepcopy(ours)
    ema = usb.EMA(_Outputs(theirs), decay=0.7)
    ema.register()
    algorithm = MeanTeacher(K, ema_decay=0.7, lambda_u=50.0, rampup_fraction=0.4)
    (loss, logs, _), (out, log, _) = _meanteacher_both(
        usb, algorithm, ours, theirs, ema, fashion_batch, 0, seed=3
    )
    _same(logs["loss_u"], log["unsup_loss"])  # the teacher is the student: only the views differ
    _same(out["loss"], log["sup_loss"])  # USB's weight starts at 0, ptl's at 50 exp(-5)
    _same(loss, log["sup_loss"] + 50.0 * math.exp(-5.0) * log["unsup_loss"])
    _move_student(ours, theirs, algorithm, ema)

    (loss, logs, grads), (out, log, usb_grads) = _meanteacher_both(
        usb, algorithm, ours, theirs, ema, fashion_batch, it, seed=1
    )
    _same(logs["loss_x"], log["sup_loss"])
    _same(logs["loss_u"], log["unsup_loss"])
    assert logs["loss_u"] > 1e-4  # teacher and student really disagree
    t = min(it / 40, 1.0)
    _same(logs["weight_u"], 50.0 * math.exp(-5 * (1 - t) ** 2))
    _same(out["loss"], log["sup_loss"] + 50.0 * t * log["unsup_loss"])
    if t == 1.0:
        _same(loss, out["loss"])
        for a, b in zip(grads, usb_grads, strict=True):
            _same(a, b)
    else:
        assert loss < out["loss"]  # the sigmoid ramp is below the linear one


def _bn_state(model: nn.Module) -> list[torch.Tensor]:
    return [b.clone() for name, b in model.named_buffers() if "running" in name or "num_batches" in name]


@pytest.mark.parametrize("name", ["FixMatch", "UDA", "PseudoLabel"])
def test_batchnorm_sees_the_batches_usb_forwards(usb, tiny_cnn, fashion_batch, name):
    """With BatchNorm in the model, the forward passes matter: USB's FixMatch and UDA run one
    pass over labeled + unlabeled (``use_cat``); its PseudoLabel runs the labeled batch alone and
    the unlabeled one with the running statistics frozen (``bn_controller``). ptl must normalize
    the same batches (same losses and gradients) and leave the same running statistics."""
    torch.manual_seed(0)
    ours = tiny_cnn(K, 1)
    theirs = copy.deepcopy(ours)
    u = fashion_batch["none"]
    batch = {"x": fashion_batch["x"], "y": fashion_batch["y"], "weak": u, "strong": u.flip(-1).roll(3, -2)}
    usb_args = {
        "FixMatch": {"T": 0.5, "p_cutoff": 0.0, "hard_label": True},
        "UDA": {"T": 0.4, "p_cutoff": 0.0, "tsa_schedule": "none"},
        "PseudoLabel": {"p_cutoff": 0.0, "unsup_warm_up": 0.4},
    }[name]
    algorithm = {"FixMatch": FixMatch(K, threshold=0.0), "UDA": UDA(K, temperature=1.0, threshold=0.0)}.get(
        name, PseudoLabel(K, threshold=0.0)
    )
    _, out, _, usb_grads = _usb_step(getattr(usb, name), theirs, batch, it=50, **usb_args)
    loss, _, grads = _ptl_step(algorithm, ours, batch, step=50)
    _same(loss, out["loss"])
    for a, b in zip(grads, usb_grads, strict=True):
        _same(a, b)
    for a, b in zip(_bn_state(ours), _bn_state(theirs), strict=True):
        _same(a, b)


def test_meanteacher_batchnorm_sees_the_batches_usb_forwards(usb, tiny_cnn, fashion_batch):
    """USB's Mean Teacher: the labeled batch alone updates BatchNorm's statistics; the teacher's
    and the student's unlabeled passes run with them frozen. Same losses, gradients, statistics."""
    torch.manual_seed(0)
    ours = tiny_cnn(K, 1)
    theirs = copy.deepcopy(ours)
    ema = usb.EMA(_Outputs(theirs), decay=0.7)
    ema.register()
    algorithm = MeanTeacher(K, ema_decay=0.7, lambda_u=50.0, rampup_fraction=0.4)
    _meanteacher_both(usb, algorithm, ours, theirs, ema, fashion_batch, 0, seed=3)
    _move_student(ours, theirs, algorithm, ema)
    (loss, logs, grads), (out, _, usb_grads) = _meanteacher_both(
        usb, algorithm, ours, theirs, ema, fashion_batch, 50, seed=1
    )
    assert logs["loss_u"] > 1e-6
    _same(loss, out["loss"])
    for a, b in zip(grads, usb_grads, strict=True):
        _same(a, b)
    for a, b in zip(_bn_state(ours), _bn_state(theirs), strict=True):
        _same(a, b)
