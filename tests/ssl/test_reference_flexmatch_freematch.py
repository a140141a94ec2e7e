"""ptl's FlexMatch and FreeMatch against USB's own training steps (semilearn 0.3.2), step after step.

As in ``test_reference_losses.py``: USB's algorithm files and their thresholding hooks
(``FlexMatchThresholdingHook``, ``FreeMatchThresholdingHook``), pseudo-labeling hook and losses
are executed as installed; only their base class is a stand-in with the few members
``train_step`` uses. Both sides get the same fixed logits (through a real identity linear layer)
for several steps, and for FlexMatch the same unlabeled indices: each step's batch is half of a
per-epoch permutation of a small unlabeled set, so samples come back and their stored pseudo
labels change the thresholds. Losses, logs, gradients and the state after every step must agree.
"""

from __future__ import annotations

import copy
import types

import pytest
import torch
from torch import nn

from ptl_ssl.flexmatch import FlexMatch
from ptl_ssl.freematch import FreeMatch

K, N_LABELED, N_UNLABELED, BATCH_U, STEPS = 5, 4, 16, 8, 8


@pytest.fixture(scope="module")
def usb(reference) -> types.SimpleNamespace:
    """USB's FlexMatch and FreeMatch over a stand-in base class, with their real hooks."""
    load = reference.load_file

    def extra_init(self, args) -> None:
        self.distributed, self.world_size = False, 1

    stand_in = reference.usb_algorithm_stand_in(("MaskingHook", "PseudoLabelingHook"), extra_init)
    with_hooks = {
        **stand_in.needs,
        "semilearn.algorithms.hooks": stand_in.provides["semilearn.algorithms.hooks"],
    }
    classes = {}
    for name in ("flexmatch", "freematch"):
        utils = load("semilearn", f"algorithms/{name}/utils.py", with_hooks)
        provides = {**stand_in.provides, f"semilearn.algorithms.{name}.utils": utils}
        module = load("semilearn", f"algorithms/{name}/{name}.py", provides)
        classes[name] = getattr(module, "FlexMatch" if name == "flexmatch" else "FreeMatch")
    return types.SimpleNamespace(**classes)


class _Outputs(nn.Module):
    """USB's networks return ``{"logits", "feat"}``; this wraps a ptl-style model that way."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.inner(x), "feat": x.flatten(1)}


def _images(rows: torch.Tensor) -> torch.Tensor:
    return rows.reshape(rows.shape[0], -1, 1, 1).clone()


def _steps(seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """STEPS batches of fixed logits (as images) and unlabeled indices.

    Each sample of the unlabeled set has its own confidence scale (some never pass 0.95, some
    always do) and a class it leans to, so the stored pseudo labels fill up over the steps.
    Indices: two steps per epoch, each epoch a new permutation of the set.
    """
    gen = torch.Generator().manual_seed(seed)
    lean = torch.randint(0, K, (N_UNLABELED,), generator=gen)
    scale = torch.rand(N_UNLABELED, generator=gen) * 4 + 0.5
    steps = []
    for step in range(STEPS):
        epoch, half = divmod(step, 2)
        perm = torch.randperm(N_UNLABELED, generator=torch.Generator().manual_seed(100 + epoch))
        index = perm[half * BATCH_U : (half + 1) * BATCH_U]
        weak = torch.randn(BATCH_U, K, generator=gen) + 1.5 * torch.nn.functional.one_hot(lean[index], K)
        steps.append(
            {
                "x": _images(torch.randn(N_LABELED, K, generator=gen) * 2),
                "y": torch.randint(0, K, (N_LABELED,), generator=gen),
                "index": index,
                "weak": _images(weak * scale[index, None]),
                "strong": _images(torch.randn(BATCH_U, K, generator=gen) * 2),
            }
        )
    return steps


def _usb_algorithm(usb_cls, model: nn.Module, **args):
    namespace = types.SimpleNamespace(
        model=_Outputs(model), num_classes=K, ulb_loss_ratio=args.pop("lambda_u", 1.0), **args
    )
    return usb_cls(namespace, None)


def _usb_step(algorithm, model: nn.Module, batch: dict, with_index: bool):
    extra = {"idx_ulb": batch["index"]} if with_index else {}
    out, log = algorithm.train_step(
        x_lb=batch["x"], y_lb=batch["y"], x_ulb_w=batch["weak"], x_ulb_s=batch["strong"], **extra
    )
    model.zero_grad()
    out["loss"].backward()
    return out, log, [p.grad.clone() for p in model.parameters()]


def _ptl_step(algorithm, model: nn.Module, batch: dict, step: int, with_index: bool):
    unlabeled = {"weak": batch["weak"], "strong": batch["strong"]}
    extra = {"unlabeled_index": batch["index"]} if with_index else {}
    loss, logs = algorithm.loss(model, {"weak": batch["x"]}, batch["y"], unlabeled, step, STEPS, **extra)
    model.zero_grad()
    loss.backward()
    return loss, logs, [p.grad.clone() for p in model.parameters()]


def _same(a, b) -> None:
    torch.testing.assert_close(torch.as_tensor(a).float(), torch.as_tensor(b).float(), rtol=1e-5, atol=1e-6)


def _same_step(loss, logs, grads, out, log, their_grads) -> None:
    """One step's loss, logged parts and gradients equal USB's."""
    _same(loss, out["loss"])
    _same(logs["loss_x"], log["sup_loss"])
    _same(logs["loss_u"], log["unsup_loss"])
    _same(logs["mask_ratio"], log["util_ratio"])
    for a, b in zip(grads, their_grads, strict=True):
        _same(a, b)


@pytest.mark.parametrize("warmup", [True, False])
def test_flexmatch_equals_usb_over_steps(usb, logits_model, warmup):
    """Eight steps with revisited samples: masks, losses, gradients, pseudo labels and class-wise
    learning effects equal USB's after every step."""
    model = logits_model(K)
    theirs = _usb_algorithm(
        usb.flexmatch,
        copy.deepcopy(model),
        T=0.5,
        p_cutoff=0.95,
        hard_label=True,
        thresh_warmup=warmup,
        ulb_dest_len=N_UNLABELED,
    )
    ours = FlexMatch(K, threshold=0.95, thresh_warmup=warmup, num_unlabeled=N_UNLABELED)
    their_model = theirs.model.inner
    ratios, betas = [], []
    for step, batch in enumerate(_steps()):
        out, log, their_grads = _usb_step(theirs, their_model, batch, with_index=True)
        loss, logs, grads = _ptl_step(ours, model, batch, step, with_index=True)
        _same_step(loss, logs, grads, out, log, their_grads)
        hook = theirs.hooks_dict["MaskingHook"]
        assert torch.equal(ours.selected_label, hook.selected_label)
        assert torch.equal(ours.classwise_acc, hook.classwise_acc)
        ratios.append(float(logs["mask_ratio"]))
        betas.append(ours.classwise_acc.clone())
    # the per-sample state mattered: the thresholds moved and the masks changed with them
    assert len(set(ratios)) > 2 and any(0 < r < 1 for r in ratios)
    assert not torch.equal(betas[1], betas[-1]) and 0 < int((ours.selected_label >= 0).sum()) < N_UNLABELED


def test_flexmatch_state_matters(logits_model):
    """The same batch gives another loss after the state was reset: the stored labels act."""
    steps = _steps()
    model = logits_model(K)
    trained = FlexMatch(K, num_unlabeled=N_UNLABELED)
    for step, batch in enumerate(steps[:-1]):
        _ptl_step(trained, model, batch, step, with_index=True)
    later, _, _ = _ptl_step(trained, model, steps[-1], STEPS - 1, with_index=True)
    fresh, _, _ = _ptl_step(FlexMatch(K, num_unlabeled=N_UNLABELED), model, steps[-1], STEPS - 1, True)
    assert not torch.allclose(later, fresh)


def test_flexmatch_keeps_the_last_of_a_repeated_sample(logits_model):
    """A batch straddling two sampler epochs may hold a sample twice: the later prediction is
    stored, as a sequential update would leave it (CUDA's scatter would pick either)."""
    algo = FlexMatch(K, threshold=0.5, num_unlabeled=4)
    weak = torch.tensor([[9.0, 0, 0, 0, 0], [0, 0, 9.0, 0, 0], [0, 9.0, 0, 0, 0]])
    batch = {"x": _images(weak[:1]), "y": torch.tensor([0]), "weak": _images(weak), "strong": _images(weak)}
    batch["index"] = torch.tensor([3, 1, 3])
    _ptl_step(algo, logits_model(K), batch, 0, with_index=True)
    assert algo.selected_label.tolist() == [-1, 2, -1, 1]


@pytest.mark.parametrize(
    ("params", "usb_args"),
    [
        ({}, {"ema_p": 0.999, "ent_loss_ratio": 0.01, "use_quantile": False, "clip_thresh": False}),
        (
            {"ema_decay": 0.7, "lambda_e": 0.5, "lambda_u": 2.0, "use_quantile": True, "clip_thresh": True},
            {"ema_p": 0.7, "ent_loss_ratio": 0.5, "lambda_u": 2.0, "use_quantile": True, "clip_thresh": True},
        ),
    ],
)
def test_freematch_equals_usb_over_steps(usb, logits_model, params, usb_args):
    """Eight steps: the EMA thresholds, masks, fairness loss and gradients equal USB's."""
    model = logits_model(K)
    theirs = _usb_algorithm(usb.freematch, copy.deepcopy(model), T=0.5, hard_label=True, **usb_args)
    ours = FreeMatch(K, **params)
    their_model = theirs.model.inner
    ratios, fair = [], []
    for step, batch in enumerate(_steps(seed=1)):
        out, log, their_grads = _usb_step(theirs, their_model, batch, with_index=False)
        loss, logs, grads = _ptl_step(ours, model, batch, step, with_index=False)
        _same_step(loss, logs, grads, out, log, their_grads)
        hook = theirs.hooks_dict["MaskingHook"]
        _same(ours.time_p, hook.time_p)
        _same(ours.p_model, hook.p_model)
        _same(ours.label_hist, hook.label_hist)
        ratios.append(float(logs["mask_ratio"]))
        fair.append(float(logs["loss_fair"]))
    assert all(f != 0 for f in fair)
    if ours.ema_decay < 0.9:  # at 0.999 the threshold stays near its start, 1/K, for eight steps
        assert len(set(ratios)) > 2 and any(0 < r < 1 for r in ratios)


def test_freematch_fairness_is_zero_without_masked_samples(logits_model):
    """No sample passes the threshold: USB skips the fairness term; ptl's is exactly 0."""
    algo = FreeMatch(K)
    algo.time_p = torch.tensor(1.5)  # above any confidence
    batch = _steps(seed=2)[0]
    loss, logs, _ = _ptl_step(algo, logits_model(K), batch, 0, with_index=False)
    assert float(logs["mask_ratio"]) == 0.0 and float(logs["loss_fair"]) == 0.0 and torch.isfinite(loss)
