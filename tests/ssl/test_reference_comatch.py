"""ptl's CoMatch against USB's own ``CoMatch.train_step`` (semilearn 0.3.2), step after step.

As in ``test_reference_usb_family.py``: USB's CoMatch file and its real hooks
(``DistAlignQueueHook``, ``FixedThresholdingHook``) run as installed over a stand-in base class,
with USB's own ``CoMatch_Net`` (its projection MLP, L2-normalized) around a tiny conv +
BatchNorm network. ptl trains the same network and the same projection weights through
``WithHeads``. Eight steps over an unlabeled set that comes back every two steps, with a memory
queue of two global batches and a distribution-alignment queue of three: both queues fill, wrap
around, and memory smoothing switches on. Losses, logs, gradients, BatchNorm statistics and both
queues must agree after every step; a resumed run must equal an uninterrupted one; each
comparison fails under a small perturbation; and each deliberate difference (module docstring of
``ptl_ssl.comatch``) is tested here.
"""

from __future__ import annotations

import copy
import io
import types

import pytest
import torch
from torch import nn

from ptl_cli.engine.heads import attach
from ptl_ssl.comatch import CoMatch

K, N_LABELED, N_UNLABELED, BATCH_U, STEPS = 5, 4, 16, 8, 8
WIDTH = 6  # penultimate features of the tiny network


@pytest.fixture(scope="module")
def usb(reference) -> types.SimpleNamespace:
    """USB's CoMatch and CoMatch_Net over a stand-in base class, with their real hooks."""

    def extra_init(self, args) -> None:
        self.distributed, self.world_size, self.gpu = False, 1, None
        self.it, self.epoch = 0, args.epoch

    stand_in = reference.usb_algorithm_stand_in(("FixedThresholdingHook",), extra_init)
    dist_align = reference.load_file("semilearn", "algorithms/hooks/dist_align.py", stand_in.needs)
    hooks = {
        **stand_in.provides["semilearn.algorithms.hooks"],
        "DistAlignQueueHook": dist_align.DistAlignQueueHook,
    }
    provides = {**stand_in.provides, "semilearn.algorithms.hooks": hooks}
    module = reference.load_file("semilearn", "algorithms/comatch/comatch.py", provides)
    return types.SimpleNamespace(CoMatch=module.CoMatch, Net=module.CoMatch_Net, module=module)


@pytest.fixture(autouse=True)
def cpu_for_cuda(monkeypatch):
    """USB's CoMatch builds its queues with ``.cuda(gpu)``: on this CPU-only machine the move is
    the identity (the one driver call stood in for; every computation is USB's own)."""
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *args, **kwargs: self)


def _net() -> nn.Sequential:
    """A real conv + BatchNorm classifier over ``(B, K, 1, 1)`` inputs, confident enough for the
    thresholds to pass some pseudo labels and not others."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(K, WIDTH, 1), nn.BatchNorm2d(WIDTH), nn.ReLU(), nn.Flatten(), nn.Linear(WIDTH, K)
    )
    with torch.no_grad():
        net[4].weight.mul_(12)
    return net


class _Backbone(nn.Module):
    """The interface USB's ``CoMatch_Net`` expects of a backbone, over a copy of :func:`_net`."""

    def __init__(self, net: nn.Sequential) -> None:
        super().__init__()
        self.net = net
        self.num_features = WIDTH

    def forward(self, x, only_feat=False, only_fc=False):
        if only_fc:
            return self.net[4](x)
        feat = self.net[:4](x)
        return feat if only_feat else self.net[4](feat)


def _wrap(algo: CoMatch) -> nn.Module:
    """ptl's model as the loop builds it: the network wrapped with the algorithm's heads."""
    return attach(algo, _net(), seed=1)


def _images(rows: torch.Tensor) -> torch.Tensor:
    return rows.reshape(rows.shape[0], -1, 1, 1).clone()


def _steps(seed: int = 0, steps: int = STEPS) -> list[dict[str, torch.Tensor]]:
    """Two steps per epoch over the unlabeled set; each sample leans to its own class with its
    own scale, its strong views are noisier copies of its weak view."""
    gen = torch.Generator().manual_seed(seed)
    lean = torch.randint(0, K, (N_UNLABELED,), generator=gen)
    scale = torch.rand(N_UNLABELED, generator=gen) * 3 + 0.5
    out = []
    for step in range(steps):
        epoch, half = divmod(step, 2)
        perm = torch.randperm(N_UNLABELED, generator=torch.Generator().manual_seed(100 + epoch))
        index = perm[half * BATCH_U : (half + 1) * BATCH_U]
        base = 2 * torch.nn.functional.one_hot(lean[index], K) * scale[index, None]
        y = torch.randint(0, K, (N_LABELED,), generator=gen)

        def noisy(amount: float, rows: torch.Tensor = base) -> torch.Tensor:
            return _images(rows + amount * torch.randn(rows.shape, generator=gen))

        out.append(
            {
                "x": noisy(0.5, 3 * torch.nn.functional.one_hot(y, K).float()),
                "y": y,
                "weak": noisy(0.3),
                "strong": noisy(1.0),
                "strong:1": noisy(1.0),
            }
        )
    return out


#: ptl's parameter -> USB's argument.
USB_NAMES = {
    "threshold": "p_cutoff",
    "lambda_u": "ulb_loss_ratio",
    "contrast_threshold": "contrast_p_cutoff",
    "lambda_c": "contrast_loss_ratio",
    "temperature": "T",
    "proj_size": "proj_size",
    "queue_batch": "queue_batch",
    "smoothing_alpha": "smoothing_alpha",
    "da_len": "da_len",
}
#: Small queues, so that eight steps fill both and wrap around, and thresholds the steps cross.
SMALL = {"threshold": 0.6, "contrast_threshold": 0.5, "queue_batch": 2, "da_len": 3, "proj_size": 4}
CASES = [
    SMALL,
    {**SMALL, "temperature": 0.5, "smoothing_alpha": 0.6, "lambda_u": 2.0, "lambda_c": 0.5},
    {**SMALL, "queue_batch": 1, "da_len": 5, "threshold": 0.8, "contrast_threshold": 0.3},
]


def _usb_algorithm(usb, model: nn.Module, params: dict, epoch: int = 1, hard_label: bool = False):
    """USB's CoMatch over a copy of ``model`` (network and projection weights alike)."""
    full = {**CoMatch(K).__dict__, **params}
    args = {USB_NAMES[k]: v for k, v in full.items() if k in USB_NAMES}
    backbone = _Backbone(copy.deepcopy(model.net))
    net = usb.Net(backbone, proj_size=args["proj_size"])
    net.mlp_proj.load_state_dict(model.heads["proj"].state_dict())
    namespace = types.SimpleNamespace(
        model=net,
        num_classes=K,
        batch_size=N_LABELED,
        uratio=BATCH_U // N_LABELED,
        hard_label=hard_label,
        epoch=epoch,
        **args,
    )
    return usb.CoMatch(namespace, None)


def _grads(model: nn.Module, loss: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad()
    loss.backward()
    return [p.grad.clone() for p in model.parameters()]


def _ptl_step(algo: CoMatch, model: nn.Module, batch: dict, step: int):
    unlabeled = {name: batch[name] for name in ("weak", "strong", "strong:1")}
    loss, logs = algo.loss(model, {"weak": batch["x"]}, batch["y"], unlabeled, step, STEPS)
    return loss, logs, _grads(model, loss)


def _usb_step(theirs, batch: dict, step: int):
    theirs.it = step
    out, log = theirs.train_step(
        x_lb=batch["x"],
        y_lb=batch["y"],
        x_ulb_w=batch["weak"],
        x_ulb_s_0=batch["strong"],
        x_ulb_s_1=batch["strong:1"],
    )
    return out, log, _grads(theirs.model, out["loss"])


def _same(a, b) -> None:
    torch.testing.assert_close(torch.as_tensor(a).float(), torch.as_tensor(b).float(), rtol=1e-5, atol=1e-6)


LOG_KEYS = {
    "loss_x": "sup_loss",
    "loss_u": "unsup_loss",
    "loss_contrast": "contrast_loss",
    "mask_ratio": "util_ratio",
}


def compare(
    usb, params: dict, ours: CoMatch | None = None, *, steps: int = STEPS, **usb_kwargs
) -> list[dict]:
    """Run ptl's CoMatch (``ours``, by default ``CoMatch(K, **params)``) and USB's with
    ``params`` over ``steps`` batches; assert each step's loss, logs, gradients, BatchNorm
    statistics and queues agree. Returns ptl's logs."""
    ours = ours or CoMatch(K, **params)
    model = _wrap(CoMatch(K, **params))
    theirs = _usb_algorithm(usb, model, params, **usb_kwargs)
    history = []
    for step, batch in enumerate(_steps(steps=steps)):
        loss, logs, grads = _ptl_step(ours, model, batch, step)
        out, log, their_grads = _usb_step(theirs, batch, step)
        _same(loss, out["loss"])
        for key, their_key in LOG_KEYS.items():
            _same(logs[key], log[their_key])
        for a, b in zip(grads, their_grads, strict=True):
            _same(a, b)
        for a, b in zip(model.buffers(), theirs.model.buffers(), strict=True):
            _same(a, b)
        align = theirs.hooks_dict["DistAlignHook"]
        _same(ours.queue_feats, theirs.queue_feats)
        _same(ours.queue_probs, theirs.queue_probs)
        _same(ours.queue_ptr, [theirs.queue_ptr])
        _same(ours.prior_queue, align.p_model)
        _same(ours.prior_ptr, align.p_model_ptr)
        history.append(logs)
    return history


@pytest.mark.parametrize("params", CASES)
def test_comatch_equals_usb_over_steps(usb, params):
    """Eight steps: the aligned, smoothed pseudo labels, masks, the label graph's contrastive
    loss, gradients (network and projection head), BatchNorm statistics and both queues."""
    logs = compare(usb, params)
    ratios = [float(log["mask_ratio"]) for log in logs]
    assert len(set(ratios)) > 2 and any(0 < r < 1 for r in ratios)
    assert all(float(log["loss_contrast"]) > 0 for log in logs)


def test_the_queues_fill_and_wrap_around():
    """With a queue of two global batches (2 x 12 entries) the pointer comes back to 0 every two
    steps, and the alignment queue (3 rows) wraps within the eight steps; no row stays zero."""
    algo = CoMatch(K, **SMALL)
    model = _wrap(algo)
    pointers = []
    for step, batch in enumerate(_steps()):
        _ptl_step(algo, model, batch, step)
        pointers.append((int(algo.queue_ptr), int(algo.prior_ptr)))
    assert algo.queue_feats.shape == (2 * (N_LABELED + BATCH_U), 4)
    assert pointers[:4] == [(12, 1), (0, 2), (12, 0), (0, 1)]
    assert bool((algo.queue_feats.norm(dim=1) > 0.99).all()) and bool(
        (algo.prior_queue.sum(dim=1) > 0.99).all()
    )


@pytest.mark.parametrize(
    "perturbed",
    [
        {"smoothing_alpha": 0.85},
        {"temperature": 0.22},
        {"contrast_threshold": 0.55},
        {"da_len": 4},
        {"queue_batch": 3},
    ],
)
def test_comatch_comparison_can_fail(usb, perturbed):
    """The comparison notices a small change of any one parameter on ptl's side."""
    with pytest.raises(AssertionError):
        compare(usb, SMALL, CoMatch(K, **{**SMALL, **perturbed}))


class _SwappedStrongViews(CoMatch):
    """CoMatch handed its two strong views the other way round."""

    def loss(self, model, labeled, targets, unlabeled, step, total_steps):
        swapped = {**unlabeled, "strong": unlabeled["strong:1"], "strong:1": unlabeled["strong"]}
        return super().loss(model, labeled, targets, swapped, step, total_steps)


def test_comatch_comparison_sees_which_strong_view_is_which(usb):
    """The inputs matter: the cross-entropy reads the first strong view and the contrastive loss
    is not symmetric in the two, so swapping them fails the comparison."""
    with pytest.raises(AssertionError):
        compare(usb, SMALL, _SwappedStrongViews(K, **SMALL), steps=2)


def test_memory_smoothing_starts_when_the_queue_is_full_not_after_usbs_first_epoch(usb):
    """The one difference in the loss: USB smooths only once its epoch counter is past 0 as well.
    With USB still in its first epoch the two agree for steps 0..queue_batch, and differ from
    step queue_batch + 1, the first step ptl smooths."""
    queue_batch = SMALL["queue_batch"]
    compare(usb, SMALL, steps=queue_batch + 1, epoch=0)
    with pytest.raises(AssertionError):
        compare(usb, SMALL, steps=queue_batch + 2, epoch=0)


def test_usbs_hard_label_changes_nothing(usb):
    """USB's CoMatch accepts ``hard_label`` but never reads it: its targets are always soft, so ptl
    offers no such key and equals USB either way."""
    compare(usb, SMALL, steps=4, hard_label=True)


def test_defaults_are_usbs_cifar_configuration(usb):
    """ptl's defaults are USB's CIFAR benchmark configuration
    (``config/classic_cv/comatch/comatch_cifar10_40_0.yaml``, the paper's CIFAR settings); where
    USB's command-line defaults differ, no USB result uses them."""
    cifar = {
        "p_cutoff": 0.95,
        "contrast_p_cutoff": 0.8,
        "contrast_loss_ratio": 1.0,
        "ulb_loss_ratio": 1.0,
        "proj_size": 64,
        "queue_batch": 5,
        "smoothing_alpha": 0.9,
        "T": 0.2,
        "da_len": 32,
    }
    ours = CoMatch(K).__dict__
    assert {USB_NAMES[k]: v for k, v in ours.items() if k in USB_NAMES} == cifar
    command_line = {a.name.lstrip("-"): a.default for a in usb.CoMatch.get_argument()}
    assert {k for k in cifar if k in command_line and command_line[k] != cifar[k]} == {
        "T",
        "proj_size",
        "queue_batch",
        "da_len",
    }


def test_comatch_resumes_exactly():
    """Rebuilt at step 3 from a ``weights_only`` checkpoint of its state (the queues mid-fill,
    sized at the first step): the same losses and final state as an uninterrupted run."""
    batches = _steps()
    straight = CoMatch(K, **SMALL)
    model = _wrap(straight)
    start = copy.deepcopy(model.state_dict())
    losses = [_ptl_step(straight, model, b, i)[0] for i, b in enumerate(batches)]
    model.load_state_dict(start)
    first = CoMatch(K, **SMALL)
    for i, b in enumerate(batches[:3]):
        _ptl_step(first, model, b, i)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = CoMatch(K, **SMALL)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    later = [_ptl_step(resumed, model, b, 3 + i)[0] for i, b in enumerate(batches[3:])]
    for a, b in zip(losses[3:], later, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    final, again = straight.state_dict(), resumed.state_dict()
    assert final.keys() == again.keys()
    for key in final:
        assert torch.equal(final[key], again[key]), key
