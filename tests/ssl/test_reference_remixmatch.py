"""ptl's ReMixMatch against USB's own ``ReMixMatch.train_step`` (semilearn 0.3.2), step after step.

USB's algorithm file and its ``DistAlignEMAHook`` run as installed over the stand-in base class of
``tests/reference.py``. Both sides train the same small conv + BatchNorm network on 4×4 RGB
images (so quarter turns change the features), ptl's wrapped with its rotation head by
:class:`ptl_cli.engine.heads.WithHeads` and USB's given the same module behind the interface of
its ``ReMixMatch_Net`` (``model(x)`` -> logits and features, ``use_rot=True`` -> the rotation
logits). A small unlabeled set is revisited every epoch, so ``p_model`` moves. Both sides get the
same mixup draws and rotations (ptl draws them with torch on the device, USB with NumPy and its
data loader: the one documented difference in how). Losses, logs, gradients of the network and
the head, the prior and BatchNorm's statistics agree after every step; a resumed run equals an
uninterrupted one; each comparison fails when one of ptl's parameters is perturbed.
"""

from __future__ import annotations

import copy
import io
import types

import numpy as np
import pytest
import torch
from torch import nn

from ptl_cli.engine.heads import WithHeads, attach
from ptl_ssl.remixmatch import ROTATION, ReMixMatch, quarter_turns

K, N_LABELED, N_UNLABELED, BATCH_U, STEPS, SIDE = 4, 4, 12, 6, 6, 4


@pytest.fixture(scope="module")
def usb(reference) -> types.SimpleNamespace:
    """USB's ReMixMatch class over the stand-in base, with its real distribution-alignment hook.
    ``labeled_targets`` (set per test) is what USB counts for its ``p_target``."""
    load = reference.load_file
    stubs = {"ruamel": {}, "ruamel.yaml": {}, "torch.utils.tensorboard": {"SummaryWriter": object}}
    misc = load("semilearn", "core/utils/misc.py", stubs)

    def extra_init(self, args) -> None:
        self.distributed, self.world_size, self.gpu = False, 1, None
        self.it = 0
        self.num_train_iter = args.num_train_iter
        self.bn_controller = misc.Bn_Controller()
        self.dataset_dict = {"train_lb": types.SimpleNamespace(targets=args.labeled_targets)}

    stand_in = reference.usb_algorithm_stand_in(("MaskingHook",), extra_init)
    dist_align = load("semilearn", "algorithms/hooks/dist_align.py", stand_in.needs)
    hooks = {
        **stand_in.provides["semilearn.algorithms.hooks"],
        "DistAlignEMAHook": dist_align.DistAlignEMAHook,
    }
    module = load(
        "semilearn",
        "algorithms/remixmatch/remixmatch.py",
        {**stand_in.provides, "semilearn.algorithms.hooks": hooks},
    )
    return types.SimpleNamespace(ReMixMatch=module.ReMixMatch)


def net() -> nn.Module:
    """Conv + BatchNorm over 4×4 images, flattened (no pooling: rotations change the features)."""
    return nn.Sequential(
        nn.Conv2d(3, 5, 3, padding=1),
        nn.BatchNorm2d(5),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(5 * SIDE * SIDE, K),
    )


class UsbNet(nn.Module):
    """The interface of USB's ``ReMixMatch_Net`` over a :class:`WithHeads` (same parameters)."""

    def __init__(self, inner: WithHeads) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor, use_rot: bool = False) -> dict[str, torch.Tensor]:
        out = self.inner(x, with_heads=True)
        result = {"logits": out["logits"], "feat": out["features"]}
        if use_rot:
            result["logits_rot"] = out[ROTATION]
        return result


def batches(seed: int = 0, steps: int = STEPS) -> list[dict[str, torch.Tensor]]:
    """Fixed images per unlabeled sample (weak and two strong views), revisited every epoch of two
    steps; labeled images and labels drawn fresh; the mixup draws and quarter turns of each step."""
    gen = torch.Generator().manual_seed(seed)
    views = {name: torch.randn(N_UNLABELED, 3, SIDE, SIDE, generator=gen) for name in ("weak", "s0", "s1")}
    lean = torch.randint(0, K, (N_UNLABELED,), generator=gen)
    views["weak"] += lean.view(-1, 1, 1, 1).float() * 0.7  # samples lean to classes: the prior moves
    out = []
    for step in range(steps):
        epoch, half = divmod(step, 2)
        perm = torch.randperm(N_UNLABELED, generator=torch.Generator().manual_seed(100 + epoch))
        index = perm[half * BATCH_U : (half + 1) * BATCH_U]
        n = N_LABELED + 3 * BATCH_U
        lam = np.random.RandomState(1000 + step).beta(0.75, 0.75)
        out.append(
            {
                "x": torch.randn(N_LABELED, 3, SIDE, SIDE, generator=gen),
                "y": torch.randint(0, K, (N_LABELED,), generator=gen),
                **{name: v[index] for name, v in views.items()},
                "lam": max(lam, 1 - lam),
                "perm": torch.randperm(n, generator=gen),
                "turns": torch.randint(0, 4, (BATCH_U,), generator=gen),
            }
        )
    return out


class WithDraws(ReMixMatch):
    """ptl's ReMixMatch handed the step's mixup draws and quarter turns (USB's come from NumPy and
    its data loader); everything else is ptl's own code."""

    batch: dict[str, torch.Tensor]

    def mix_draws(self, n, device):
        assert n == len(self.batch["perm"])
        return torch.tensor(self.batch["lam"], dtype=torch.float64), self.batch["perm"]

    def rotation_draws(self, n, device):
        return self.batch["turns"]


def _grads(model: nn.Module, loss: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad()
    loss.backward()
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in model.parameters()]


def _same(a, b) -> None:
    torch.testing.assert_close(torch.as_tensor(a).float(), torch.as_tensor(b).float(), rtol=1e-5, atol=1e-6)


def _ptl_step(algo, model, batch, step, total=STEPS):
    algo.batch = batch
    labeled = {"weak": batch["x"]}
    unlabeled = {"weak": batch["weak"], "strong": batch["s0"], "strong:1": batch["s1"]}
    loss, logs = algo.loss(model, labeled, batch["y"], unlabeled, step, total)
    return loss, logs, _grads(model, loss)


def _usb_step(theirs, batch, step):
    from torchvision.transforms.functional import rotate

    theirs.it = step
    rotated = torch.stack(
        [rotate(img, 90 * int(t)) for img, t in zip(batch["s0"], batch["turns"], strict=True)]
    )
    np.random.seed(1000 + step)
    real_randperm = torch.randperm
    torch.randperm = lambda n, *a, **kw: batch["perm"]  # USB's mixup permutation: the step's own
    try:
        out, log = theirs.train_step(
            x_lb=batch["x"],
            y_lb=batch["y"],
            x_ulb_w=batch["weak"],
            x_ulb_s_0=batch["s0"],
            x_ulb_s_1=batch["s1"],
            x_ulb_s_0_rot=rotated,
            rot_v=batch["turns"],
        )
    finally:
        torch.randperm = real_randperm
    return out, log, _grads(theirs.model.inner, out["loss"])


USB_DEFAULTS = {
    "T": 0.5,
    "kl_loss_ratio": 0.5,
    "rot_loss_ratio": 0.5,
    "unsup_warm_up": 1 / 64,
    "mixup_alpha": 0.75,
    "mixup_manifold": False,
    "lambda_u": 1.5,
}


def compare(
    params: dict, usb_args: dict, usb, *, labeled_targets=None, steps: int = STEPS, ours_cls=WithDraws
):
    """Run ptl's and USB's ReMixMatch side by side; assert every step agrees. Returns ptl's logs."""
    torch.manual_seed(0)
    ours = ours_cls(K, **params)
    model = attach(ours, net(), seed=1)
    args = {**USB_DEFAULTS, **usb_args}
    namespace = types.SimpleNamespace(
        model=UsbNet(copy.deepcopy(model)),
        num_classes=K,
        ulb_loss_ratio=args.pop("lambda_u"),
        num_train_iter=args.pop("num_train_iter", STEPS),
        labeled_targets=list(range(K)) * 2 if labeled_targets is None else labeled_targets,
        **args,
    )
    theirs = usb.ReMixMatch(namespace, None)
    history = []
    for step, batch in enumerate(batches(steps=steps)):
        loss, logs, grads = _ptl_step(ours, model, batch, step, steps)
        out, log, their_grads = _usb_step(theirs, batch, step)
        _same(loss, out["loss"])
        _same(logs["loss_x"], log["sup_loss"])
        _same(logs["loss_u"], log["unsup_loss"])
        for a, b in zip(grads, their_grads, strict=True):
            _same(a, b)
        _same(ours.p_model, theirs.hooks_dict["DistAlignHook"].p_model)
        history.append(logs)
    for a, b in zip(model.buffers(), theirs.model.inner.buffers(), strict=True):
        _same(a, b)
    return history


CASES = [
    ({}, {}),
    (
        {
            "temperature": 0.3,
            "alpha": 0.75,
            "lambda_u": 2.0,
            "lambda_kl": 0.7,
            "lambda_rot": 0.25,
            "rampup_fraction": 0.5,
            "ema_decay": 0.9,
        },
        {"T": 0.3, "lambda_u": 2.0, "kl_loss_ratio": 0.7, "rot_loss_ratio": 0.25, "unsup_warm_up": 0.5},
    ),
]


@pytest.mark.parametrize(("params", "usb_args"), CASES)
def test_remixmatch_equals_usb_over_steps(usb, params, usb_args, monkeypatch):
    """Six steps through the ramp-up: guesses, mixed targets, the rotation term, losses, gradients
    (the rotation head's included), the aligned prior and BatchNorm's statistics equal USB's."""
    if "ema_decay" in params:  # USB's hook takes its momentum from its constructor's default
        monkeypatch.setattr(usb.ReMixMatch, "set_hooks", _hooks_with_momentum(usb, params["ema_decay"]))
    logs = compare(params, usb_args, usb)
    assert all(float(log["loss_rot"]) > 0 for log in logs)
    weights = [float(log["weight_u"]) for log in logs]
    assert weights[0] == 0 and weights[-1] == params.get("lambda_u", 1.5)


def _hooks_with_momentum(usb, momentum: float):
    """USB's ``set_hooks`` with its alignment hook's momentum set (its CLI has no such argument)."""
    original = usb.ReMixMatch.set_hooks

    def set_hooks(self):
        original(self)
        self.hooks_dict["DistAlignHook"].m = momentum

    return set_hooks


@pytest.mark.parametrize(
    "perturbed",
    [
        {"temperature": 0.55},
        {"lambda_kl": 0.45},
        {"lambda_rot": 0.45},
        {"ema_decay": 0.99},
        {"rampup_fraction": 0.5},
    ],
)
def test_remixmatch_comparison_can_fail(usb, perturbed):
    with pytest.raises(AssertionError):
        compare(perturbed, {}, usb)


def test_p_target_is_uniform_the_labeled_distribution_of_a_balanced_split(usb):
    """The documented difference: USB aligns towards the labeled set's class counts; ptl towards
    the uniform prior, which is that distribution when every class has as many labels (above).
    With an imbalanced labeled set the two differ."""
    with pytest.raises(AssertionError):
        compare({}, {}, usb, labeled_targets=[0, 0, 0, 1, 2, 3], steps=2)


def test_without_rotation_loss_the_head_stays_in_the_graph_at_weight_zero(usb):
    """``lambda_rot = 0`` equals USB's ReMixMatch without rotation (``rot_loss_ratio = 0``); the
    head's gradient is zero, not missing, so DistributedDataParallel finds every parameter used."""
    torch.manual_seed(0)
    algo = WithDraws(K, lambda_rot=0.0)
    model = attach(algo, net(), seed=1)
    _, _, grads = _ptl_step(algo, model, batches()[0], 0)
    head = [p for name, p in model.named_parameters() if name.startswith("heads.")]
    assert head and all(p.grad is not None and not p.grad.any() for p in head)
    assert any(g.any() for g in grads)
    compare({"lambda_rot": 0.0}, {"rot_loss_ratio": 0.0}, usb, steps=3)


def test_quarter_turns_are_torchvisions_rotations_and_need_square_images():
    from torchvision.transforms.functional import rotate

    images = torch.randn(8, 3, 5, 5)
    turns = torch.arange(8) % 4
    expected = torch.stack([rotate(img, 90 * int(t)) for img, t in zip(images, turns, strict=True)])
    assert torch.equal(quarter_turns(images, turns), expected)
    assert not torch.equal(quarter_turns(images, (turns + 1) % 4), expected)
    with pytest.raises(ValueError, match="square images"):
        quarter_turns(torch.randn(2, 3, 4, 6), torch.tensor([1, 2]))


def test_own_draws_are_on_the_device_and_reproducible():
    """ptl's own draws: ``lam`` in [0.5, 1] from torch, a permutation, quarter turns covering
    {0, 1, 2, 3}; the same global seed gives the same draws."""
    algo = ReMixMatch(K)
    torch.manual_seed(0)
    lam, perm = algo.mix_draws(20, torch.device("cpu"))
    turns = algo.rotation_draws(200, torch.device("cpu"))
    assert 0.5 <= float(lam) <= 1 and torch.equal(perm.sort().values, torch.arange(20))
    assert set(turns.tolist()) == {0, 1, 2, 3}
    torch.manual_seed(0)
    again = algo.mix_draws(20, torch.device("cpu"))
    assert torch.equal(again[0], lam) and torch.equal(again[1], perm)


def test_resumes_exactly():
    """Rebuilt at step 3 from a ``weights_only`` checkpoint of its state: the same losses and
    final prior as an uninterrupted run (the same draws handed to both)."""
    data = batches()

    def run(algo_at, start, model):
        return [_ptl_step(algo_at, model, b, start + i)[0] for i, b in enumerate(data[start:])]

    torch.manual_seed(0)
    straight = WithDraws(K)
    model = attach(straight, net(), seed=1)
    model_copy = copy.deepcopy(model)
    losses = run(straight, 0, model)
    first = WithDraws(K)
    for i, b in enumerate(data[:3]):
        _ptl_step(first, model_copy, b, i)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = WithDraws(K)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert bool(resumed.p_model_seen)
    for a, b in zip(losses[3:], run(resumed, 3, model_copy), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(straight.p_model, resumed.p_model)


def test_check_ssl_passes_and_a_plain_model_is_told_what_is_missing():
    """ptl's own contract check (the rotation head trained, checkpointed and resumed with the
    model, exact resume, the simulated GPU); a model without the heads wrapper is one error."""
    from ptl_cli.testing import check_ssl

    check_ssl("remixmatch", steps=3, resume_at=2)
    algo = WithDraws(K)
    algo.batch = batches()[0]
    with pytest.raises(TypeError, match="not wrapped with the heads"):
        algo.loss(
            net(),
            {"weak": algo.batch["x"]},
            algo.batch["y"],
            {"weak": algo.batch["weak"], "strong": algo.batch["s0"], "strong:1": algo.batch["s1"]},
            0,
            STEPS,
        )
