"""The KD baseline's distillation term against hand computation on fixed logits."""

from __future__ import annotations

import math

import pytest
import torch

from ptl_transfer.kd import kd_loss

AUX = [[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]]
TEACHER = [[3.0, 1.0, 0.0], [0.0, 0.0, 4.0]]


def _softmax(row: list[float], temperature: float) -> list[float]:
    exps = [math.exp(z / temperature) for z in row]
    return [e / sum(exps) for e in exps]


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kl_mode_is_t_squared_kl_from_teacher_to_student(temperature):
    expected = 0.0
    for a, t in zip(AUX, TEACHER, strict=True):
        p, q = _softmax(t, temperature), _softmax(a, temperature)
        expected += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    expected = expected / len(AUX) * temperature**2  # batch mean, Hinton's T² scaling
    got = kd_loss(torch.tensor(AUX), torch.tensor(TEACHER), "kl", temperature)
    assert math.isclose(got.item(), expected, rel_tol=1e-5)


def test_logits_mode_is_the_mean_squared_logit_difference_at_any_temperature():
    diffs = [(a - t) ** 2 for ra, rt in zip(AUX, TEACHER, strict=True) for a, t in zip(ra, rt, strict=True)]
    for temperature in (1.0, 4.0):
        got = kd_loss(torch.tensor(AUX), torch.tensor(TEACHER), "logits", temperature)
        assert math.isclose(got.item(), sum(diffs) / len(diffs), rel_tol=1e-6)


@pytest.mark.parametrize("mode", ["kl", "logits"])
def test_only_the_student_gets_a_gradient_and_matching_logits_cost_nothing(mode):
    aux = torch.tensor(AUX, requires_grad=True)
    teacher = torch.tensor(TEACHER, requires_grad=True)
    kd_loss(aux, teacher, mode, 2.0).backward()
    assert teacher.grad is None and torch.count_nonzero(aux.grad) > 0
    same = torch.tensor(TEACHER)
    assert kd_loss(same, same, mode, 2.0).item() == pytest.approx(0.0, abs=1e-7)


def test_unknown_mode_names_the_modes():
    with pytest.raises(ValueError, match="kl, logits"):
        kd_loss(torch.tensor(AUX), torch.tensor(TEACHER), "mse")
