"""Mean Teacher: the teacher is the EMA of the student, and it survives a checkpoint exactly."""

from __future__ import annotations

import io
import math

import pytest
import torch

from ptl_cli.data.base import normalize
from ptl_cli.data.views import make_views
from ptl_ssl.meanteacher import MeanTeacher, sigmoid_rampup


def _batches(fashion, step: int):
    """Labeled and unlabeled views as the loop makes them; the two weak views of the unlabeled
    batch (keys ``weak`` and ``weak:1``) are drawn from the global RNG."""
    images, labels, mean, std = fashion
    lo = (step * 8) % 48
    x = normalize(images[lo : lo + 8].float() / 255, mean, std)
    u = make_views(images[lo + 8 : lo + 24], MeanTeacher.unlabeled_views, mean, std)
    assert set(u) == {"weak", "weak:1"} and not torch.equal(u["weak"], u["weak:1"])
    return {"weak": x}, labels[lo : lo + 8] % 5, u


def _train(algo, model, optimizer, fashion, steps, start=0, seed=0):
    """Plain SGD steps as a training loop would run them; returns each step's losses."""
    losses = []
    for step in range(start, start + steps):
        torch.manual_seed(seed + step)  # the unlabeled weak views come from the global RNG
        labeled, targets, unlabeled = _batches(fashion, step)
        loss, logs = algo.loss(model, labeled, targets, unlabeled, step, 10)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        algo.after_step(model, step)
        losses.append((loss.detach(), logs["loss_u"]))
    return losses


def test_teacher_follows_the_ema_formula(tiny_cnn, fashion):
    torch.manual_seed(0)
    model = tiny_cnn(5, 1)
    algo = MeanTeacher(5, ema_decay=0.9, lambda_u=10.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    expected = [p.detach().clone() for p in model.parameters()]  # teacher starts as the student
    for step in range(3):
        _train(algo, model, optimizer, fashion, 1, start=step)
        expected = [0.9 * t + 0.1 * s.detach() for t, s in zip(expected, model.parameters(), strict=True)]
    teacher = list(algo.teacher.parameters())
    for t, e, s in zip(teacher, expected, model.parameters(), strict=True):
        torch.testing.assert_close(t, e, rtol=1e-6, atol=1e-7)
        assert not torch.equal(t, s)  # training moved the student away from its average
        assert not t.requires_grad and t.data_ptr() != s.data_ptr()
    for t, s in zip(algo.teacher.buffers(), model.buffers(), strict=True):
        assert t.data_ptr() != s.data_ptr()  # the teacher has its own BatchNorm statistics


def test_state_dict_round_trip_resumes_exactly(tiny_cnn, fashion):
    torch.manual_seed(1)
    model = tiny_cnn(5, 1)
    algo = MeanTeacher(5, ema_decay=0.8, lambda_u=10.0, rampup_fraction=0.5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9)
    _train(algo, model, optimizer, fashion, 2)

    buffer = io.BytesIO()  # through torch.save/load(weights_only=True), as checkpoints are
    torch.save({"model": model.state_dict(), "opt": optimizer.state_dict(), "ssl": algo.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    assert set(saved["ssl"]["teacher"]) == set(algo.teacher.state_dict())

    resumed_model = tiny_cnn(5, 1)
    resumed_model.load_state_dict(saved["model"])
    resumed_opt = torch.optim.SGD(resumed_model.parameters(), lr=0.3, momentum=0.9)
    resumed_opt.load_state_dict(saved["opt"])
    resumed = MeanTeacher(5, ema_decay=0.8, lambda_u=10.0, rampup_fraction=0.5)
    resumed.load_state_dict(saved["ssl"])  # before any loss call: the teacher is built later

    original = _train(algo, model, optimizer, fashion, 3, start=2)
    again = _train(resumed, resumed_model, resumed_opt, fashion, 3, start=2)
    for (loss_a, u_a), (loss_b, u_b) in zip(original, again, strict=True):
        assert torch.equal(loss_a, loss_b) and torch.equal(u_a, u_b)
    assert original[0][1] > 0  # the consistency term is really part of what was compared
    for a, b in zip(algo.teacher.state_dict().values(), resumed.teacher.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_a_fresh_teacher_would_have_given_different_losses(tiny_cnn, fashion):
    """Guards the round-trip test: without the saved teacher, resuming is *not* exact."""
    torch.manual_seed(1)
    model = tiny_cnn(5, 1)
    algo = MeanTeacher(5, ema_decay=0.8, lambda_u=10.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.3)
    _train(algo, model, optimizer, fashion, 2)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    forgetful = MeanTeacher(5, ema_decay=0.8, lambda_u=10.0)
    copy_model = tiny_cnn(5, 1)
    copy_model.load_state_dict(state)
    torch.manual_seed(9)
    _, logs_a = algo.loss(model, *_batches(fashion, 2)[:2], _batches(fashion, 2)[2], 2, 10)
    torch.manual_seed(9)
    _, logs_b = forgetful.loss(copy_model, *_batches(fashion, 2)[:2], _batches(fashion, 2)[2], 2, 10)
    assert not torch.equal(logs_a["loss_u"], logs_b["loss_u"])


def test_consistency_weight_ramps_up_like_a_sigmoid():
    assert sigmoid_rampup(0, 40) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(20, 40) == pytest.approx(math.exp(-5 * 0.25))
    assert sigmoid_rampup(40, 40) == sigmoid_rampup(1000, 40) == 1.0
    assert sigmoid_rampup(3, 0) == 1.0


def test_loss_equals_hand_computation_on_fixed_logits(logits_model):
    """Constant images survive flip + pad-crop unchanged, so the views are known exactly: the
    consistency term is the MSE between the student's and the teacher's softmax, weighted by the
    sigmoid ramp-up, and only the student gets a gradient."""
    student_rows, teacher_scale = [[2.0, 0.0, -1.0], [0.0, 1.0, 0.5]], 0.5

    def constant_images(rows):  # (B, K, 4, 4) images whose spatial mean is the logit row
        return torch.tensor(rows).view(len(rows), 3, 1, 1).expand(-1, -1, 4, 4).contiguous()

    model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), logits_model(3))
    teacher_state = {
        k: v * teacher_scale if k.endswith("weight") else v for k, v in model.state_dict().items()
    }
    algo = MeanTeacher(3, ema_decay=0.99, lambda_u=50.0, rampup_fraction=0.4)
    algo.load_state_dict({"teacher": teacher_state})  # a teacher that differs from the student
    labeled = [[0.0, 3.0, 0.0]]
    loss, logs = algo.loss(
        model,
        {"weak": constant_images(labeled)},
        torch.tensor([1]),
        {"weak": constant_images(student_rows), "weak:1": constant_images(student_rows)},
        20,
        100,
    )

    def softmax(row):
        exps = [math.exp(z) for z in row]
        return [e / sum(exps) for e in exps]

    squares = [
        (s - t) ** 2
        for row in student_rows
        for s, t in zip(softmax(row), softmax([teacher_scale * z for z in row]), strict=True)
    ]
    loss_u = sum(squares) / len(squares)
    weight = 50.0 * math.exp(-5 * (1 - 20 / 40) ** 2)
    loss_x = math.log(sum(math.exp(z) for z in labeled[0])) - labeled[0][1]
    assert math.isclose(logs["loss_u"].item(), loss_u, rel_tol=1e-5)
    assert math.isclose(logs["weight_u"].item(), weight, rel_tol=1e-6)
    assert math.isclose(loss.item(), loss_x + weight * loss_u, rel_tol=1e-5)
    loss.backward()
    assert all(p.grad is None for p in algo.teacher.parameters())
    assert all(p.grad is not None for p in model.parameters())
