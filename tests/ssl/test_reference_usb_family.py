"""ptl's SoftMatch, AdaMatch, Dash, DeFixMatch and Pi-Model against USB's own training steps
(semilearn 0.3.2), step after step.

As in ``test_reference_flexmatch_freematch.py``: USB's algorithm files and hooks run as
installed over a stand-in base class. Both sides get the same fixed logits (through a real
identity linear layer) for several steps: each sample of a small unlabeled set comes back
every epoch with its own confidence scale, so running statistics move and revisited samples
are weighed differently. Losses, logs, gradients and the state after every step must agree; a
run resumed from a ``weights_only`` checkpoint of the state must equal an uninterrupted one;
and each comparison is shown to fail when one of ptl's parameters is perturbed.
"""

from __future__ import annotations

import copy
import io
import types
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

from ptl_ssl.adamatch import AdaMatch
from ptl_ssl.dash import Dash
from ptl_ssl.defixmatch import DeFixMatch
from ptl_ssl.mixmatch import MixMatch
from ptl_ssl.pimodel import PiModel
from ptl_ssl.softmatch import SoftMatch
from ptl_ssl.vat import VAT

K, N_LABELED, N_UNLABELED, BATCH_U, STEPS = 5, 4, 16, 8, 8


@pytest.fixture(scope="module")
def usb(reference) -> types.SimpleNamespace:
    """USB's algorithms over a stand-in base class, with their real hooks."""
    load = reference.load_file
    # Bn_Controller (Pi-Model's frozen BatchNorm) lives beside imports of a YAML library and
    # tensorboard that it does not use
    stubs = {"ruamel": {}, "ruamel.yaml": {}, "torch.utils.tensorboard": {"SummaryWriter": object}}
    misc = load("semilearn", "core/utils/misc.py", stubs)

    def extra_init(self, args) -> None:
        self.distributed, self.world_size, self.gpu = False, 1, None
        self.it = 0
        self.num_train_iter = getattr(args, "num_train_iter", STEPS)
        self.bn_controller = misc.Bn_Controller()

    stand_in = reference.usb_algorithm_stand_in(
        ("MaskingHook", "PseudoLabelingHook", "FixedThresholdingHook"), extra_init
    )
    dist_align = load("semilearn", "algorithms/hooks/dist_align.py", stand_in.needs)
    hooks = {
        **stand_in.provides["semilearn.algorithms.hooks"],
        "DistAlignEMAHook": dist_align.DistAlignEMAHook,
        "DistAlignQueueHook": dist_align.DistAlignQueueHook,
    }
    provides = {**stand_in.provides, "semilearn.algorithms.hooks": hooks}
    with_hooks = {**stand_in.needs, "semilearn.algorithms.hooks": hooks}
    classes = {}
    for name, cls in (
        ("softmatch", "SoftMatch"),
        ("adamatch", "AdaMatch"),
        ("dash", "Dash"),
        ("defixmatch", "DeFixMatch"),
        ("pimodel", "PiModel"),
        ("vat", "VAT"),
        ("mixmatch", "MixMatch"),
    ):
        extra = {}
        if name in ("softmatch", "adamatch", "dash"):
            extra[f"semilearn.algorithms.{name}.utils"] = load(
                "semilearn", f"algorithms/{name}/utils.py", with_hooks
            )
        if name == "dash":  # its warm-up (not train_step) uses USB's EMA helper
            registry = provides["semilearn.core.utils"]["ALGORITHMS"]
            extra["semilearn.core.utils"] = {"ALGORITHMS": registry, "EMA": object}
            extra["semilearn.datasets"] = {"DistributedSampler": object}
        module = load("semilearn", f"algorithms/{name}/{name}.py", {**provides, **extra})
        classes[name] = getattr(module, cls)
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


def _steps(seed: int = 0, steps: int = STEPS) -> list[dict[str, torch.Tensor]]:
    """Batches of fixed logits (as images): two steps per epoch over the unlabeled set, each
    sample with its own confidence scale and a class it leans to."""
    gen = torch.Generator().manual_seed(seed)
    lean = torch.randint(0, K, (N_UNLABELED,), generator=gen)
    scale = torch.rand(N_UNLABELED, generator=gen) * 4 + 0.5
    out = []
    for step in range(steps):
        epoch, half = divmod(step, 2)
        perm = torch.randperm(N_UNLABELED, generator=torch.Generator().manual_seed(100 + epoch))
        index = perm[half * BATCH_U : (half + 1) * BATCH_U]
        weak = torch.randn(BATCH_U, K, generator=gen) + 1.5 * torch.nn.functional.one_hot(lean[index], K)
        out.append(
            {
                "x": _images(torch.randn(N_LABELED, K, generator=gen) * 2),
                "x_s": _images(torch.randn(N_LABELED, K, generator=gen) * 2),
                "y": torch.randint(0, K, (N_LABELED,), generator=gen),
                "weak": _images(weak * scale[index, None]),
                "strong": _images(torch.randn(BATCH_U, K, generator=gen) * 2),
            }
        )
    return out


def _usb_algorithm(usb_cls, model: nn.Module, **args):
    namespace = types.SimpleNamespace(
        model=_Outputs(model), num_classes=K, ulb_loss_ratio=args.pop("lambda_u", 1.0), **args
    )
    return usb_cls(namespace, None)


def _grads(model: nn.Module, loss: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad()
    loss.backward()
    return [p.grad.clone() for p in model.parameters()]


def _usb_step(algorithm, batch: dict, step: int, labeled_strong: bool = False, unlabeled_strong: bool = True):
    algorithm.it = step
    extra = {"x_lb_s": batch["x_s"]} if labeled_strong else {}
    if unlabeled_strong:
        extra["x_ulb_s"] = batch["strong"]
    out, log = algorithm.train_step(x_lb=batch["x"], y_lb=batch["y"], x_ulb_w=batch["weak"], **extra)
    return out, log, _grads(algorithm.model.inner, out["loss"])


def _ptl_step(algorithm, model: nn.Module, batch: dict, step: int):
    labeled = {"weak": batch["x"], "strong": batch["x_s"]}
    labeled = {k: labeled[k] for k in algorithm.labeled_views}
    unlabeled = {"weak": batch["weak"], "strong": batch["strong"]}
    if algorithm.unlabeled_views == ("weak", "weak"):
        unlabeled = {"weak": batch["weak"], "weak:1": batch["strong"]}
    loss, logs = algorithm.loss(model, labeled, batch["y"], unlabeled, step, STEPS)
    return loss, logs, _grads(model, loss)


def _same(a, b) -> None:
    torch.testing.assert_close(torch.as_tensor(a).float(), torch.as_tensor(b).float(), rtol=1e-5, atol=1e-6)


#: ptl log key -> USB log key, for the logs both sides have.
LOG_KEYS = {"loss_x": "sup_loss", "loss_u": "unsup_loss", "mask_ratio": "util_ratio"}


def compare(
    model_cls: type,
    usb_cls,
    usb_args: dict,
    ours,
    state: Callable[[object, object], list[tuple[object, object]]],
    *,
    seed: int = 0,
    steps: int = STEPS,
    labeled_strong: bool = False,
    log_keys: dict[str, str] = LOG_KEYS,
    before_usb_step: Callable[[object, object, int], None] | None = None,
    models: list[nn.Module] | None = None,
    seed_each_step: bool = False,
) -> list[dict[str, torch.Tensor]]:
    """Run ptl's ``ours`` and USB's ``usb_cls(**usb_args)`` over ``steps`` batches; assert each
    step's loss, logs, gradients and the state pairs ``state(ours, theirs)`` agree. Returns
    ptl's logs of every step. ``before_usb_step(ours, theirs, step)`` may hand USB what its
    training loop (not its ``train_step``) would have set. ``models`` (a list) receives both
    sides' models. ``seed_each_step`` seeds the global generator alike before each side's step
    (for algorithms that draw inside it)."""
    model = model_cls(K)
    theirs = _usb_algorithm(usb_cls, copy.deepcopy(model), **usb_args)
    if models is not None:
        models.extend([model, theirs.model.inner])
    history = []
    for step, batch in enumerate(_steps(seed, steps)):
        if seed_each_step:
            torch.manual_seed(1000 + step)
        loss, logs, grads = _ptl_step(ours, model, batch, step)
        if before_usb_step is not None:
            before_usb_step(ours, theirs, step)
        if seed_each_step:
            torch.manual_seed(1000 + step)
            np.random.seed(1000 + step)  # MixMatch's mixup ratio (USB draws it with NumPy)
        out, log, their_grads = _usb_step(theirs, batch, step, labeled_strong, len(ours.unlabeled_views) > 1)
        _same(loss, out["loss"])
        for key, their_key in log_keys.items():
            _same(logs[key], log[their_key])
        for a, b in zip(grads, their_grads, strict=True):
            _same(a, b)
        for a, b in state(ours, theirs):
            _same(a, b)
        history.append(logs)
    return history


def resumes_exactly(model_cls: type, make: Callable[[], object], *, seed: int = 0, at: int = 3) -> None:
    """A run whose algorithm is rebuilt at step ``at`` from a ``weights_only`` checkpoint of its
    ``state_dict`` gives the same losses and final state as an uninterrupted one."""
    batches = _steps(seed)
    model = model_cls(K)
    straight = make()
    losses = [_ptl_step(straight, model, b, i)[0] for i, b in enumerate(batches)]
    first = make()
    for i, b in enumerate(batches[:at]):
        _ptl_step(first, model, b, i)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = make()
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    later = [_ptl_step(resumed, model, b, at + i)[0] for i, b in enumerate(batches[at:])]
    for a, b in zip(losses[at:], later, strict=True):
        assert torch.equal(a, b)
    final, again = straight.state_dict(), resumed.state_dict()
    assert final.keys() == again.keys()
    for key in final:
        assert torch.equal(torch.as_tensor(final[key]), torch.as_tensor(again[key])), key


def _softmatch_state(ours, theirs) -> list[tuple[object, object]]:
    align, weigh = theirs.hooks_dict["DistAlignHook"], theirs.hooks_dict["MaskingHook"]
    return [
        (ours.p_model, align.p_model),
        (ours.p_target, align.p_target),
        (ours.mu, weigh.prob_max_mu_t),
        (ours.var, weigh.prob_max_var_t),
    ]


SOFTMATCH_CASES = [
    ({}, {}),
    (
        {"ema_decay": 0.6, "n_sigma": 3.0, "dist_uniform": False, "lambda_u": 2.0},
        {"ema_p": 0.6, "n_sigma": 3, "dist_uniform": False, "lambda_u": 2.0},
    ),
    (
        {"ema_decay": 0.6, "hard_label": False, "temperature": 0.7},
        {"ema_p": 0.6, "hard_label": False, "T": 0.7},
    ),
]


def _softmatch_usb_args(args: dict) -> dict:
    base = {"T": 0.5, "hard_label": True, "dist_align": True, "dist_uniform": True, "ema_p": 0.999}
    return {**base, "n_sigma": 2, "per_class": False, **args}


@pytest.mark.parametrize(("params", "usb_args"), SOFTMATCH_CASES)
def test_softmatch_equals_usb_over_steps(usb, logits_model, params, usb_args):
    """Eight steps: the aligned priors, the Gaussian's mean and variance, the weights, losses and
    gradients equal USB's after every step."""
    ours = SoftMatch(K, **params)
    logs = compare(logits_model, usb.softmatch, _softmatch_usb_args(usb_args), ours, _softmatch_state)
    if ours.ema_decay < 0.9:  # at 0.999 the mean stays near 1/K and every weight near 1
        ratios = [float(log["mask_ratio"]) for log in logs]
        assert len(set(ratios)) > STEPS // 2 and 0 < min(ratios) < 0.9


def test_softmatch_resumes_exactly(logits_model):
    resumes_exactly(logits_model, lambda: SoftMatch(K, ema_decay=0.6, dist_uniform=False))


@pytest.mark.parametrize("perturbed", [{"ema_decay": 0.61}, {"n_sigma": 2.1}, {"dist_uniform": True}])
def test_softmatch_comparison_can_fail(usb, logits_model, perturbed):
    """The comparison notices a small change of any one parameter."""
    params, usb_args = SOFTMATCH_CASES[1]
    with pytest.raises(AssertionError):
        compare(
            logits_model,
            usb.softmatch,
            _softmatch_usb_args(usb_args),
            SoftMatch(K, **{**params, **perturbed}),
            _softmatch_state,
        )


def _adamatch_state(ours, theirs) -> list[tuple[object, object]]:
    align = theirs.hooks_dict["DistAlignHook"]
    return [(ours.p_model, align.p_model), (ours.p_target, align.p_target)]


ADAMATCH_CASES = [
    ({}, {}),
    (
        {"ema_decay": 0.6, "threshold": 0.8, "lambda_u": 2.0},
        {"ema_p": 0.6, "p_cutoff": 0.8, "lambda_u": 2.0},
    ),
    (
        {"ema_decay": 0.6, "threshold": 0.7, "hard_label": False},
        {"ema_p": 0.6, "p_cutoff": 0.7, "hard_label": False},
    ),
]


def _adamatch_usb_args(args: dict) -> dict:
    return {"T": 0.5, "hard_label": True, "ema_p": 0.999, "p_cutoff": 0.95, **args}


@pytest.mark.parametrize(("params", "usb_args"), ADAMATCH_CASES)
def test_adamatch_equals_usb_over_steps(usb, logits_model, params, usb_args):
    """Eight steps: both running priors, the relative thresholds, masks, losses and gradients."""
    ours = AdaMatch(K, **params)
    logs = compare(logits_model, usb.adamatch, _adamatch_usb_args(usb_args), ours, _adamatch_state)
    ratios = [float(log["mask_ratio"]) for log in logs]
    assert len(set(ratios)) > 2 and any(0 < r < 1 for r in ratios)


def test_adamatch_resumes_exactly(logits_model):
    resumes_exactly(logits_model, lambda: AdaMatch(K, ema_decay=0.6, threshold=0.7))


@pytest.mark.parametrize("perturbed", [{"ema_decay": 0.61}, {"threshold": 0.81}])
def test_adamatch_comparison_can_fail(usb, logits_model, perturbed):
    params, usb_args = ADAMATCH_CASES[1]
    with pytest.raises(AssertionError):
        compare(
            logits_model,
            usb.adamatch,
            _adamatch_usb_args(usb_args),
            AdaMatch(K, **{**params, **perturbed}),
            _adamatch_state,
        )


DASH_CASES = [
    # the threshold shrinks every 2 steps and reaches rho_min at step 6: soft, then hard targets
    (
        {"gamma": 3.0, "rho_min": 0.15, "rho_update_every": 2, "temperature": 0.7},
        {"gamma": 3.0, "rho_min": 0.15, "every": 2, "T": 0.7},
    ),
    (
        {"gamma": 1.5, "c": 1.2, "rho_update_every": 3, "lambda_u": 2.0},
        {"gamma": 1.5, "C": 1.2, "every": 3, "lambda_u": 2.0},
    ),
]


def _dash_usb(args: dict) -> tuple[dict, Callable[[object, object, int], None]]:
    """USB's arguments, and what its training loop would hand ``train_step``: ``rho_init`` (here
    ptl's, measured at the first step) and an epoch length that updates rho every ``every``."""
    args = {
        "T": 0.5,
        "gamma": 1.27,
        "C": 1.0001,
        "rho_min": 0.05,
        "num_wu_iter": 0,
        "num_wu_eval_iter": 1,
        **args,
    }
    every = args.pop("every")

    def before(ours, theirs, step: int) -> None:
        theirs.rho_init = float(ours.rho_init)
        theirs.num_iter_per_epoch = every / 10

    return args, before


def _dash_state(ours, theirs) -> list[tuple[object, object]]:
    return [(ours.rho(len(ours.seen) - 1), theirs.hooks_dict["MaskingHook"].rho)]


class _Recording(Dash):
    """Dash remembering the steps it saw, so the state check knows which step's rho to compare."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[int] = []

    def loss(self, model, labeled, targets, unlabeled, step, total_steps):
        self.seen.append(step)
        return super().loss(model, labeled, targets, unlabeled, step, total_steps)


@pytest.mark.parametrize(("params", "usb_args"), DASH_CASES)
def test_dash_equals_usb_over_steps(usb, logits_model, params, usb_args):
    """Eight steps after the warm-up: the shrinking threshold, the switch to hard labels, masks,
    losses and gradients equal USB's."""
    ours = _Recording(K, warmup_steps=0, **params)
    args, before = _dash_usb(usb_args)
    logs = compare(logits_model, usb.dash, args, ours, _dash_state, before_usb_step=before)
    ratios = [float(log["mask_ratio"]) for log in logs]
    assert len(set(ratios)) > 1 and any(0 < r < 1 for r in ratios)
    if params["gamma"] == 3.0:
        first, last = float(logs[0]["threshold"]), float(logs[-1]["threshold"])
        assert last == pytest.approx(0.15) and first > 0.15  # soft targets first, hard at the end


@pytest.mark.parametrize("perturbed", [{"gamma": 3.1}, {"rho_update_every": 3}, {"temperature": 0.75}])
def test_dash_comparison_can_fail(usb, logits_model, perturbed):
    params, usb_args = DASH_CASES[0]
    args, before = _dash_usb(usb_args)
    with pytest.raises(AssertionError):
        compare(
            logits_model,
            usb.dash,
            args,
            _Recording(K, warmup_steps=0, **{**params, **perturbed}),
            _dash_state,
            before_usb_step=before,
        )


def test_dash_warms_up_on_labeled_data_then_starts_from_its_loss(logits_model):
    """During the warm-up the loss is the labeled cross-entropy of one pass; at the first step
    after it, that step's labeled loss becomes ``rho_init`` and stays."""
    batches = _steps()
    model = logits_model(K)
    algo = Dash(K, warmup_steps=2, rho_update_every=2)
    for step, batch in enumerate(batches[:2]):
        loss, logs, _ = _ptl_step(algo, model, batch, step)
        expected = torch.nn.functional.cross_entropy(model(batch["x"]), batch["y"])
        assert torch.equal(loss, expected) and float(logs["loss_u"]) == 0.0
        assert not bool(algo.rho_init_set)
    _, logs, _ = _ptl_step(algo, model, batches[2], 2)
    first = torch.nn.functional.cross_entropy(model(batches[2]["x"]), batches[2]["y"])
    torch.testing.assert_close(algo.rho_init, first.detach())
    _ptl_step(algo, model, batches[3], 3)
    torch.testing.assert_close(algo.rho_init, first.detach())
    _same(logs["threshold"], 1.0001 * first)


def test_dash_resumes_exactly(logits_model):
    resumes_exactly(
        logits_model, lambda: Dash(K, warmup_steps=2, gamma=3.0, rho_min=0.15, rho_update_every=2)
    )


DEFIXMATCH_CASES = [
    ({"threshold": 0.7}, {"p_cutoff": 0.7}),
    (
        {"threshold": 0.6, "lambda_u": 2.0, "hard_label": False},
        {"p_cutoff": 0.6, "lambda_u": 2.0, "hard_label": False},
    ),
]
DEFIXMATCH_LOGS = {**LOG_KEYS, "loss_anti": "anti_unsup_loss", "mask_ratio_labeled": "util_ratio_lb"}


@pytest.mark.parametrize(("params", "usb_args"), DEFIXMATCH_CASES)
def test_defixmatch_equals_usb_over_steps(usb, logits_model, params, usb_args):
    """Eight steps: both masks, the anti term on the labeled strong view, losses and gradients."""

    def no_state(ours, theirs) -> list:
        return []

    logs = compare(
        logits_model,
        usb.defixmatch,
        {"T": 0.5, "hard_label": True, **usb_args},
        DeFixMatch(K, **params),
        no_state,
        labeled_strong=True,
        log_keys=DEFIXMATCH_LOGS,
    )
    assert any(float(log["mask_ratio_labeled"]) > 0 for log in logs)
    assert any(0 < float(log["mask_ratio"]) < 1 for log in logs)


@pytest.mark.parametrize("perturbed", [{"threshold": 0.8}, {"lambda_u": 1.9}, {"hard_label": False}])
def test_defixmatch_comparison_can_fail(usb, logits_model, perturbed):
    params, usb_args = DEFIXMATCH_CASES[0]
    with pytest.raises(AssertionError):
        compare(
            logits_model,
            usb.defixmatch,
            {"T": 0.5, "hard_label": True, **usb_args},
            DeFixMatch(K, **{**params, **perturbed}),
            lambda ours, theirs: [],
            labeled_strong=True,
            log_keys=DEFIXMATCH_LOGS,
        )


PIMODEL_CASES = [
    ({}, {}),
    ({"lambda_u": 3.0, "rampup_fraction": 0.5}, {"lambda_u": 3.0, "unsup_warm_up": 0.5}),
]
PIMODEL_LOGS = {"loss_x": "sup_loss", "loss_u": "unsup_loss"}


def _bn_net(k: int) -> nn.Module:
    """A real conv + BatchNorm classifier over the ``(B, K, 1, 1)`` test images."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(k, 6, 1), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(), nn.Linear(6, k))


@pytest.mark.parametrize(("params", "usb_args"), PIMODEL_CASES)
def test_pimodel_equals_usb_over_steps(usb, params, usb_args):
    """Eight steps through the ramp-up with a BatchNorm network: losses, gradients and the
    running statistics (updated by the labeled batch only) equal USB's."""
    models: list[nn.Module] = []
    logs = compare(
        _bn_net,
        usb.pimodel,
        {"unsup_warm_up": 0.4, "lambda_u": 10.0, **usb_args},
        PiModel(K, **params),
        lambda ours, theirs: [],
        log_keys=PIMODEL_LOGS,
        models=models,
    )
    ours, theirs = models
    for a, b in zip(ours.buffers(), theirs.buffers(), strict=True):
        _same(a, b)
    assert ours[1].num_batches_tracked == STEPS  # one labeled pass per step, none unlabeled
    weights = [float(log["weight_u"]) for log in logs]
    assert weights[0] == 0 and 0 < weights[1] < weights[2] and weights[-1] == params.get("lambda_u", 10.0)


@pytest.mark.parametrize("perturbed", [{"rampup_fraction": 0.45}, {"lambda_u": 9.5}])
def test_pimodel_comparison_can_fail(usb, perturbed):
    with pytest.raises(AssertionError):
        compare(
            _bn_net,
            usb.pimodel,
            {"unsup_warm_up": 0.4, "lambda_u": 10.0},
            PiModel(K, **perturbed),
            lambda ours, theirs: [],
            log_keys=PIMODEL_LOGS,
        )


VAT_CASES = [
    ({}, {}),
    (
        {"eps": 2.0, "lambda_ent": 0.5, "lambda_u": 1.5, "rampup_fraction": 0.25},
        {"vat_eps": 2.0, "ent_loss_ratio": 0.5, "lambda_u": 1.5, "unsup_warm_up": 0.25},
    ),
]
VAT_LOGS = {"loss_x": "sup_loss", "loss_u": "unsup_loss", "loss_ent": "loss_entmin"}


def _vat_usb_args(args: dict) -> dict:
    return {
        "unsup_warm_up": 0.4,
        "vat_eps": 6.0,
        "vat_embed": False,
        "ent_loss_ratio": 0.06,
        "lambda_u": 0.3,
        **args,
    }


@pytest.fixture
def cpu_for_cuda(monkeypatch):
    """USB's VAT moves its perturbation with ``.cuda(gpu)``: on this CPU-only machine the move is
    the identity (the one driver call stood in for; every computation is USB's own)."""
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *args, **kwargs: self)


@pytest.mark.parametrize(("params", "usb_args"), VAT_CASES)
def test_vat_equals_usb_over_steps(usb, cpu_for_cuda, params, usb_args):
    """Eight steps with a BatchNorm network and the same random directions: the adversarial and
    entropy terms, losses, gradients and running statistics equal USB's."""
    models: list[nn.Module] = []
    logs = compare(
        _bn_net,
        usb.vat,
        _vat_usb_args(usb_args),
        VAT(K, **params),
        lambda ours, theirs: [],
        log_keys=VAT_LOGS,
        models=models,
        seed_each_step=True,
    )
    ours, theirs = models
    for a, b in zip(ours.buffers(), theirs.buffers(), strict=True):
        _same(a, b)
    assert all(float(log["loss_u"]) > 0 for log in logs)


@pytest.mark.parametrize("perturbed", [{"eps": 5.8}, {"xi": 1e-3}, {"lambda_ent": 0.07}])
def test_vat_comparison_can_fail(usb, cpu_for_cuda, perturbed):
    with pytest.raises(AssertionError):
        compare(
            _bn_net,
            usb.vat,
            _vat_usb_args({}),
            VAT(K, **perturbed),
            lambda ours, theirs: [],
            log_keys=VAT_LOGS,
            seed_each_step=True,
        )


def test_vat_direction_matters(usb, cpu_for_cuda):
    """Without the same random directions the two sides differ: the draw is part of the step."""
    with pytest.raises(AssertionError):
        compare(_bn_net, usb.vat, _vat_usb_args({}), VAT(K), lambda ours, theirs: [], log_keys=VAT_LOGS)


class _MixMatchWithUsbDraws(MixMatch):
    """ptl's MixMatch given the mixup draws USB's step makes after ``compare`` seeded NumPy and
    torch with ``1000 + step``: its Beta draw comes from NumPy, ptl's from torch on the device.
    Everything else is ptl's own code."""

    def loss(self, model, labeled, targets, unlabeled, step, total_steps):
        self.step = step
        return super().loss(model, labeled, targets, unlabeled, step, total_steps)

    def mix_draws(self, n, device):
        lam = np.random.RandomState(1000 + self.step).beta(self.alpha, self.alpha)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(1000 + self.step))
        return torch.tensor(max(lam, 1 - lam), dtype=torch.float64), perm


MIXMATCH_CASES = [
    ({}, {}),
    (
        {"temperature": 0.3, "alpha": 0.75, "lambda_u": 20.0, "rampup_fraction": 0.5},
        {"T": 0.3, "mixup_alpha": 0.75, "lambda_u": 20.0, "unsup_warm_up": 0.5},
    ),
]
MIXMATCH_LOGS = {"loss_x": "sup_loss", "loss_u": "unsup_loss"}


def _mixmatch_usb_args(args: dict) -> dict:
    return {
        "T": 0.5,
        "unsup_warm_up": 1 / 64,
        "mixup_alpha": 0.5,
        "mixup_manifold": False,
        "lambda_u": 100.0,
        **args,
    }


@pytest.mark.parametrize(("params", "usb_args"), MIXMATCH_CASES)
def test_mixmatch_equals_usb_over_steps(usb, params, usb_args):
    """Eight steps with a BatchNorm network and the same mixup draws: guesses, mixed targets,
    losses, gradients and running statistics (the labeled chunk's only) equal USB's."""
    models: list[nn.Module] = []
    logs = compare(
        _bn_net,
        usb.mixmatch,
        _mixmatch_usb_args(usb_args),
        _MixMatchWithUsbDraws(K, **params),
        lambda ours, theirs: [],
        log_keys=MIXMATCH_LOGS,
        models=models,
        seed_each_step=True,
    )
    ours, theirs = models
    for a, b in zip(ours.buffers(), theirs.buffers(), strict=True):
        _same(a, b)
    assert ours[1].num_batches_tracked == STEPS  # the labeled chunk's pass only
    assert len({float(log["mix_lambda"]) for log in logs}) == STEPS


@pytest.mark.parametrize("perturbed", [{"temperature": 0.55}, {"rampup_fraction": 0.5}, {"lambda_u": 90.0}])
def test_mixmatch_comparison_can_fail(usb, perturbed):
    with pytest.raises(AssertionError):
        compare(
            _bn_net,
            usb.mixmatch,
            _mixmatch_usb_args({}),
            _MixMatchWithUsbDraws(K, **perturbed),
            lambda ours, theirs: [],
            log_keys=MIXMATCH_LOGS,
            seed_each_step=True,
        )


def test_mixmatch_draws_its_mixup_on_the_device_and_favours_the_own_input():
    """ptl's own draws: ``lam`` in [0.5, 1], a permutation, reproducible from the generator's
    state, different from step to step."""
    algo = MixMatch(K)
    torch.manual_seed(0)
    draws = [algo.mix_draws(20, torch.device("cpu")) for _ in range(20)]
    lams = torch.stack([lam for lam, _ in draws])
    assert lams.min() >= 0.5 and lams.max() <= 1 and len(set(lams.tolist())) == 20
    assert all(torch.equal(perm.sort().values, torch.arange(20)) for _, perm in draws)
    torch.manual_seed(0)
    again = algo.mix_draws(20, torch.device("cpu"))
    assert torch.equal(again[0], draws[0][0]) and torch.equal(again[1], draws[0][1])
