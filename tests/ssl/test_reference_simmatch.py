"""ptl's SimMatch against USB's own ``SimMatch.train_step`` (semilearn 0.3.2), step after step.

As in ``test_reference_usb_family.py``: USB's SimMatch file and its real hooks
(``DistAlignQueueHook``, ``FixedThresholdingHook``) and its real ``EMA`` run as installed over a
stand-in base class, with USB's own ``SimMatch_Net`` (its projection MLP, L2-normalized) around
a tiny conv + BatchNorm network. ptl trains the same network and the same projection weights
through ``WithHeads``. Both sides take an SGD step after every step (and USB its EMA update,
ptl ``after_step``), over a labeled set of 6 that comes back every two steps (so the bank fills
and its entries are rewritten) and an unlabeled set that comes back every two steps. Losses,
logs, gradients, BatchNorm statistics, the bank, its labels and the alignment queue must agree
after every step; a resumed run must equal an uninterrupted one; each comparison fails under a
small perturbation; and each deliberate difference (module docstring of ``ptl_ssl.simmatch``)
is tested here.
"""

from __future__ import annotations

import copy
import io
import types

import pytest
import torch
from torch import nn

from ptl_cli.engine.heads import attach
from ptl_cli.testing import check_ssl
from ptl_ssl.simmatch import BANK_SEED, SimMatch

K, N_LABELED, BATCH_L, N_UNLABELED, BATCH_U, STEPS = 5, 6, 3, 16, 8, 8
WIDTH = 6  # penultimate features of the tiny network
LR = 0.1
#: The first step at which ptl's bank holds every labeled sample (two steps per labeled epoch).
FILLED_AT = N_LABELED // BATCH_L


@pytest.fixture(scope="module")
def usb(reference) -> types.SimpleNamespace:
    """USB's SimMatch, SimMatch_Net and EMA over a stand-in base class, with their real hooks."""
    stubs = {"ruamel": {}, "ruamel.yaml": {}, "torch.utils.tensorboard": {"SummaryWriter": object}}
    misc = reference.load_file("semilearn", "core/utils/misc.py", stubs)

    def extra_init(self, args) -> None:
        self.distributed, self.world_size, self.gpu = False, 1, None
        self.it, self.epoch = 0, 0

    stand_in = reference.usb_algorithm_stand_in(("FixedThresholdingHook",), extra_init)
    dist_align = reference.load_file("semilearn", "algorithms/hooks/dist_align.py", stand_in.needs)
    hooks = {
        **stand_in.provides["semilearn.algorithms.hooks"],
        "DistAlignQueueHook": dist_align.DistAlignQueueHook,
    }
    provides = {**stand_in.provides, "semilearn.algorithms.hooks": hooks}
    module = reference.load_file("semilearn", "algorithms/simmatch/simmatch.py", provides)
    return types.SimpleNamespace(SimMatch=module.SimMatch, Net=module.SimMatch_Net, EMA=misc.EMA)


@pytest.fixture(autouse=True)
def cpu_for_cuda(monkeypatch):
    """USB's SimMatch builds its bank with ``.cuda(gpu)``: on this CPU-only machine the move is
    the identity (the one driver call stood in for; every computation is USB's own)."""
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *args, **kwargs: self)


def _net() -> nn.Sequential:
    """A real conv + BatchNorm classifier over ``(B, K, 1, 1)`` inputs, confident enough for the
    threshold to pass some pseudo labels and not others."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(K, WIDTH, 1), nn.BatchNorm2d(WIDTH), nn.ReLU(), nn.Flatten(), nn.Linear(WIDTH, K)
    )
    with torch.no_grad():
        net[4].weight.mul_(8)
    return net


class _Backbone(nn.Module):
    """The interface USB's ``SimMatch_Net`` expects of a backbone, over a copy of :func:`_net`."""

    def __init__(self, net: nn.Sequential) -> None:
        super().__init__()
        self.net = net
        self.num_features = WIDTH

    def forward(self, x, only_feat=False, only_fc=False):
        if only_fc:
            return self.net[4](x)
        feat = self.net[:4](x)
        return feat if only_feat else self.net[4](feat)


def _images(rows: torch.Tensor) -> torch.Tensor:
    return rows.reshape(rows.shape[0], -1, 1, 1).clone()


def _steps(seed: int = 0, steps: int = STEPS) -> list[dict[str, torch.Tensor]]:
    """Two steps per epoch over both sets. Each labeled sample has its own class and image (with
    fresh noise per visit); each unlabeled sample leans to its own class with its own scale."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, K, (N_LABELED,), generator=gen)
    lean = torch.randint(0, K, (N_UNLABELED,), generator=gen)
    scale = torch.rand(N_UNLABELED, generator=gen) * 3 + 0.5
    out = []
    for step in range(steps):
        epoch, half = divmod(step, 2)
        perm_l = torch.randperm(N_LABELED, generator=torch.Generator().manual_seed(200 + epoch))
        index_l = perm_l[half * BATCH_L : (half + 1) * BATCH_L]
        perm_u = torch.randperm(N_UNLABELED, generator=torch.Generator().manual_seed(100 + epoch))
        index_u = perm_u[half * BATCH_U : (half + 1) * BATCH_U]
        base = 2 * torch.nn.functional.one_hot(lean[index_u], K) * scale[index_u, None]
        rows_l = 3 * torch.nn.functional.one_hot(labels[index_l], K).float()

        def noisy(rows: torch.Tensor, amount: float) -> torch.Tensor:
            return _images(rows + amount * torch.randn(rows.shape, generator=gen))

        out.append(
            {
                "index": index_l,
                "x": noisy(rows_l, 0.5),
                "y": labels[index_l],
                "weak": noisy(base, 0.3),
                "strong": noisy(base, 1.0),
            }
        )
    return out


#: ptl's parameter -> USB's argument.
USB_NAMES = {
    "threshold": "p_cutoff",
    "lambda_u": "ulb_loss_ratio",
    "lambda_in": "in_loss_ratio",
    "temperature": "T",
    "proj_size": "proj_size",
    "smoothing_alpha": "smoothing_alpha",
    "da_len": "da_len",
    "teacher_decay": "ema_m",
}
#: Small embeddings and alignment queue (it wraps within the steps), a threshold the steps cross.
SMALL = {"threshold": 0.7, "proj_size": 4, "da_len": 3, "temperature": 0.3}
CASES = [
    SMALL,
    {**SMALL, "smoothing_alpha": 0.6, "lambda_u": 2.0, "lambda_in": 0.5, "temperature": 0.5},
    {**SMALL, "ema_teacher": True, "teacher_decay": 0.5},
]


def _pair(usb, params: dict, ours: SimMatch | None = None):
    """ptl's model and algorithm, and USB's SimMatch over a copy of the same weights and bank."""
    ours = ours or SimMatch(K, num_labeled=N_LABELED, **params)
    model = attach(ours, _net(), seed=1)
    full = {**SimMatch(K, num_labeled=N_LABELED).__dict__, **params}
    args = {USB_NAMES[k]: v for k, v in full.items() if k in USB_NAMES}
    net = usb.Net(_Backbone(copy.deepcopy(model.net)), proj_size=args["proj_size"])
    net.mlp_proj.load_state_dict(model.heads["proj"].state_dict())
    # USB uses its EMA teacher for every dataset but its small-image ones (CIFAR, SVHN, ...)
    dataset = "stl10" if full["ema_teacher"] else "cifar10"
    namespace = types.SimpleNamespace(
        model=net, num_classes=K, dataset=dataset, lb_dest_len=N_LABELED, K=N_LABELED, **args
    )
    theirs = usb.SimMatch(namespace, None)
    theirs.mem_bank = ours.bank.clone()  # the same starting bank (module docstring)
    theirs.ema = usb.EMA(theirs.model, args["ema_m"])
    theirs.ema.register()
    return ours, model, theirs


def _sgd(model: nn.Module) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p -= LR * p.grad


def _ptl_step(algo: SimMatch, model: nn.Module, batch: dict, step: int):
    unlabeled = {"weak": batch["weak"], "strong": batch["strong"]}
    loss, logs = algo.loss(
        model, {"weak": batch["x"]}, batch["y"], unlabeled, step, STEPS, labeled_index=batch["index"]
    )
    model.zero_grad()
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    _sgd(model)
    algo.after_step(model, step)
    return loss, logs, grads


def _usb_step(theirs, batch: dict, step: int, epoch: int):
    theirs.it, theirs.epoch = step, epoch
    out, log = theirs.train_step(batch["index"], batch["x"], batch["y"], batch["weak"], batch["strong"])
    theirs.model.zero_grad()
    out["loss"].backward()
    grads = [p.grad.clone() for p in theirs.model.parameters()]
    _sgd(theirs.model)
    theirs.ema.update()
    return out, log, grads


def _same(a, b) -> None:
    torch.testing.assert_close(torch.as_tensor(a).float(), torch.as_tensor(b).float(), rtol=1e-5, atol=1e-6)


LOG_KEYS = {"loss_x": "sup_loss", "loss_u": "unsup_loss", "mask_ratio": "util_ratio"}


def compare(
    usb, params: dict, ours: SimMatch | None = None, *, steps: int = STEPS, epochs=None, buffers=True
) -> list[dict]:
    """Run ptl's SimMatch (``ours``, by default built from ``params``) and USB's with ``params``
    over ``steps`` batches; assert each step's loss, logs, gradients, BatchNorm statistics (with
    ``buffers``), bank and alignment queue agree. USB's epoch at step ``s`` is ``epochs(s)``, by
    default 0 until ptl's bank is filled and 1 from then on. Returns ptl's logs."""
    ours, model, theirs = _pair(usb, params, ours)
    epochs = epochs or (lambda step: int(step >= FILLED_AT))
    history = []
    for step, batch in enumerate(_steps(steps=steps)):
        loss, logs, grads = _ptl_step(ours, model, batch, step)
        out, log, their_grads = _usb_step(theirs, batch, step, epochs(step))
        _same(loss, out["loss"])
        for key, their_key in LOG_KEYS.items():
            _same(logs[key], log[their_key])
        for a, b in zip(grads, their_grads, strict=True):
            _same(a, b)
        if buffers:
            for a, b in zip(model.buffers(), theirs.model.buffers(), strict=True):
                _same(a, b)
        align = theirs.hooks_dict["DistAlignHook"]
        _same(ours.bank, theirs.mem_bank)
        _same(ours.bank_labels, theirs.labels_bank)
        _same(ours.prior_queue, align.p_model)
        _same(ours.prior_ptr, align.p_model_ptr)
        history.append(logs)
    return history


@pytest.mark.parametrize("params", CASES, ids=["small", "weights", "ema-teacher"])
def test_simmatch_equals_usb_over_steps(usb, params):
    """Eight steps with SGD updates: the aligned and propagated pseudo labels, masks, the
    instance-similarity loss, gradients (network and projection head), the bank and the queue;
    BatchNorm statistics too, but with the EMA teacher (next test)."""
    logs = compare(usb, params, buffers=not params.get("ema_teacher"))
    ratios = [float(log["mask_ratio"]) for log in logs]
    assert len(set(ratios)) > 2 and any(0 < r < 1 for r in ratios)
    in_losses = [float(log["loss_in"]) for log in logs]
    assert in_losses[:FILLED_AT] == [0.0] * FILLED_AT and all(v > 0 for v in in_losses[FILLED_AT:])


def test_the_ema_teachers_pass_leaves_the_students_batchnorm_alone(usb):
    """USB swaps the EMA weights into the student for the teacher's pass, in train mode, so that
    pass also moves the student's BatchNorm statistics; ptl's teacher is a copy with its own
    buffers. Losses and gradients agree (above); the student's running statistics differ."""
    params = {**SMALL, "ema_teacher": True, "teacher_decay": 0.5}
    ours, model, theirs = _pair(usb, params)
    batch = _steps(steps=1)[0]
    _ptl_step(ours, model, batch, 0)
    _usb_step(theirs, batch, 0, 0)
    mean, their_mean = model.net[1].running_mean, theirs.model.backbone.net[1].running_mean
    assert not torch.allclose(mean, their_mean)
    student_only = _net()  # one train-mode pass of the student over the step's batch, nothing else
    student_only(torch.cat([batch["x"], batch["weak"], batch["strong"]]))
    _same(mean, student_only[1].running_mean)


@pytest.mark.parametrize(
    "perturbed",
    [
        {"temperature": 0.33},
        {"smoothing_alpha": 0.85},
        {"bank_momentum": 0.75},
        {"da_len": 4},
        {"lambda_in": 0.9},
        {"threshold": 0.75},
    ],
)
def test_simmatch_comparison_can_fail(usb, perturbed):
    """The comparison notices a small change of any one parameter on ptl's side."""
    with pytest.raises(AssertionError):
        compare(usb, SMALL, SimMatch(K, num_labeled=N_LABELED, **{**SMALL, **perturbed}))


def test_the_ema_teacher_comparison_can_fail(usb):
    """With the EMA teacher, its decay matters too."""
    params = {**SMALL, "ema_teacher": True, "teacher_decay": 0.5}
    with pytest.raises(AssertionError):
        compare(
            usb,
            params,
            SimMatch(K, num_labeled=N_LABELED, **{**params, "teacher_decay": 0.55}),
            buffers=False,
        )


def test_the_similarity_terms_start_when_the_bank_is_filled_not_after_usbs_first_epoch(usb):
    """The one difference in the loss: USB waits for its epoch counter to pass 0. With USB kept in
    its first epoch the two agree until ptl's bank holds every labeled sample, and differ from
    that step on; with USB past its first epoch from the start, they differ at once."""
    compare(usb, SMALL, steps=FILLED_AT, epochs=lambda step: 0)
    with pytest.raises(AssertionError):
        compare(usb, SMALL, steps=FILLED_AT + 1, epochs=lambda step: 0)
    with pytest.raises(AssertionError):
        compare(usb, SMALL, steps=1, epochs=lambda step: 1)


def test_the_bank_starts_from_seeded_unit_vectors_and_fills_by_labeled_index():
    algo = SimMatch(K, num_labeled=N_LABELED, **SMALL)
    start = torch.randn(SMALL["proj_size"], N_LABELED, generator=torch.Generator().manual_seed(BANK_SEED))
    assert torch.equal(algo.bank, torch.nn.functional.normalize(start, dim=0))
    assert torch.equal(SimMatch(K, num_labeled=N_LABELED, **SMALL).bank, algo.bank)
    model = attach(algo, _net(), seed=1)
    batches = _steps(steps=FILLED_AT)
    for step, batch in enumerate(batches):
        _ptl_step(algo, model, batch, step)
    assert bool(algo.filled.all())
    seen = torch.cat([b["index"] for b in batches])
    labels = torch.cat([b["y"] for b in batches])
    assert torch.equal(algo.bank_labels[seen], labels)


def test_defaults_are_usbs_cifar_configuration(usb):
    """ptl's defaults are USB's CIFAR configuration (``config/classic_cv/simmatch/
    simmatch_cifar10_40_0.yaml``: T 0.1, da_len 32, ...) and the momentum bank USB uses on CIFAR
    (``ema_bank = 0.7``, no EMA teacher); USB's command-line defaults differ in T and da_len."""
    cifar = {
        "p_cutoff": 0.95,
        "ulb_loss_ratio": 1.0,
        "in_loss_ratio": 1.0,
        "T": 0.1,
        "proj_size": 128,
        "smoothing_alpha": 0.9,
        "da_len": 32,
        "ema_m": 0.999,
    }
    ours = SimMatch(K, num_labeled=N_LABELED)
    assert {USB_NAMES[k]: v for k, v in ours.__dict__.items() if k in USB_NAMES} == cifar
    _, _, theirs = _pair(usb, {})
    assert theirs.use_ema_teacher is False and theirs.ema_bank == ours.bank_momentum
    command_line = {a.name.lstrip("-"): a.default for a in usb.SimMatch.get_argument()}
    assert {k for k in cifar if k in command_line and command_line[k] != cifar[k]} == {"T", "da_len"}


@pytest.mark.parametrize("params", [SMALL, {**SMALL, "ema_teacher": True, "teacher_decay": 0.5}])
def test_simmatch_resumes_exactly(params):
    """Rebuilt at step 3 from a ``weights_only`` checkpoint of its state (the bank mid-fill, the
    EMA teacher if any): the same losses and final state as an uninterrupted run."""
    batches = _steps()

    def run(algo, model, start, stop):
        return [_ptl_step(algo, model, b, i)[0] for i, b in enumerate(batches[start:stop], start)]

    straight = SimMatch(K, num_labeled=N_LABELED, **params)
    model = attach(straight, _net(), seed=1)
    start = copy.deepcopy(model.state_dict())
    losses = run(straight, model, 0, STEPS)
    model.load_state_dict(start)
    first = SimMatch(K, num_labeled=N_LABELED, **params)
    run(first, model, 0, 3)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = SimMatch(K, num_labeled=N_LABELED, **params)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    later = run(resumed, model, 3, STEPS)
    for a, b in zip(losses[3:], later, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    final, again = straight.state_dict(), resumed.state_dict()
    assert final.keys() == again.keys()
    for key in final:
        if key == "teacher":
            assert all(torch.equal(final[key][k], again[key][k]) for k in final[key])
        else:
            assert torch.equal(final[key], again[key]), key


@pytest.mark.parametrize(
    "params", [None, {"ema_teacher": True, "teacher_decay": 0.5}], ids=["bank", "teacher"]
)
def test_simmatch_passes_check_ssl(params):
    """ptl's contract check, its projection head trained as the loop trains it (the simulated GPU
    in fp32 and fp16-mixed once): deterministic, a gradient on the head, resumed bit for bit
    (the bank, and the EMA teacher that a decay of 0.5 moves visibly)."""
    check_ssl("simmatch", params, steps=3, resume_at=2, gpu=params is None)
