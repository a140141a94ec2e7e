"""ptl's CRMatch against USB's own ``CRMatch.train_step`` (semilearn 0.3.2), step after step.

USB's algorithm file and its ``FixedThresholdingHook`` run as installed over the stand-in base
class of ``tests/reference.py``. Both sides train the same small conv + BatchNorm network on 4×4
RGB images, ptl's wrapped with its two heads by :class:`ptl_cli.engine.heads.WithHeads`, USB's
given the same module behind the interface of its ``CRMatch_Net`` (``model(x)`` -> logits,
features, ``logits_ds`` and ``logits_rot``; ``ds`` on the pooled features, USB's ViT branch: the
documented difference). USB's rotated batch (its RotNet loader's four quarter turns of B images)
is built from the images ptl takes for it: the first B samples of the ``weak:1`` view. Losses,
logs, gradients of the network and both heads, and BatchNorm's statistics agree after every step;
each comparison fails when one of ptl's parameters is perturbed.
"""

from __future__ import annotations

import copy
import types

import pytest
import torch
from torch import nn

from ptl_cli.engine.heads import WithHeads, attach
from ptl_ssl.crmatch import DS, CRMatch
from ptl_ssl.remixmatch import ROTATION

K, N_LABELED, BATCH_U, STEPS, SIDE, SCALE = 4, 3, 6, 5, 4, 6.0


@pytest.fixture(scope="module")
def usb(reference) -> types.SimpleNamespace:
    """USB's CRMatch class over the stand-in base, with its real fixed-threshold hook."""

    def extra_init(self, args) -> None:
        self.distributed, self.world_size, self.gpu = False, 1, None
        self.it = 0

    stand_in = reference.usb_algorithm_stand_in(("MaskingHook", "FixedThresholdingHook"), extra_init)
    provides = {
        **stand_in.provides,
        "semilearn.core.utils": {**stand_in.provides["semilearn.core.utils"], "get_data_loader": None},
    }
    module = reference.load_file("semilearn", "algorithms/crmatch/crmatch.py", provides)
    return types.SimpleNamespace(CRMatch=module.CRMatch, rotate_img=module.rotate_img)


@pytest.fixture
def cpu_for_cuda(monkeypatch):
    """USB's CRMatch builds the cosine loss's targets with ``.cuda(gpu)``: on this CPU-only machine
    the move is the identity (the one driver call stood in for; every computation is USB's)."""
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *args, **kwargs: self)


def net() -> nn.Module:
    """Conv + BatchNorm over 4×4 images, flattened (no pooling: rotations change the features),
    with a head scaled up so that some predictions are confident at USB's threshold 0.95."""
    model = nn.Sequential(
        nn.Conv2d(3, 5, 3, padding=1),
        nn.BatchNorm2d(5),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(5 * SIDE * SIDE, K),
    )
    with torch.no_grad():
        model[-1].weight.mul_(SCALE)
    return model


class UsbNet(nn.Module):
    """The interface of USB's ``CRMatch_Net`` over a :class:`WithHeads` (same parameters)."""

    def __init__(self, inner: WithHeads) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.inner(x, with_heads=True)
        return {
            "logits": out["logits"],
            "feat": out["features"],
            "logits_ds": out[DS],
            "logits_rot": out[ROTATION],
        }


def batches(seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Labeled and unlabeled images per step; the weak view leans to a class per sample, scaled
    so that some pseudo labels pass the threshold and some do not."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(STEPS):
        lean = torch.randint(0, K, (BATCH_U,), generator=gen)
        weak = torch.randn(BATCH_U, 3, SIDE, SIDE, generator=gen) + 2.0 * lean.view(-1, 1, 1, 1).float()
        out.append(
            {
                "x": torch.randn(N_LABELED, 3, SIDE, SIDE, generator=gen),
                "y": torch.randint(0, K, (N_LABELED,), generator=gen),
                "weak": weak,
                "strong": torch.randn(BATCH_U, 3, SIDE, SIDE, generator=gen),
                "weak:1": torch.randn(BATCH_U, 3, SIDE, SIDE, generator=gen),
            }
        )
    return out


def _grads(model: nn.Module, loss: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad()
    loss.backward()
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in model.parameters()]


def _same(a, b) -> None:
    torch.testing.assert_close(torch.as_tensor(a).float(), torch.as_tensor(b).float(), rtol=1e-5, atol=1e-6)


def _usb_rotated(usb, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """USB's ``x_ulb_rot`` and ``rot_v``: its RotNet items (each image in four quarter turns, labels
    0..3), collated into a batch and laid out as its ``train`` loop lays them out."""
    items = [(img, *(usb.rotate_img(img, r) for r in (90, 180, 270)), torch.arange(4)) for img in images]
    img, img90, img180, img270, rot_v = (torch.stack(parts) for parts in zip(*items, strict=True))
    return torch.cat((img, img90, img180, img270)), rot_v.transpose(1, 0).contiguous().view(-1)


def compare(params: dict, usb_args: dict, usb, *, steps: int = STEPS) -> list[dict[str, torch.Tensor]]:
    """Run ptl's and USB's CRMatch side by side; assert every step agrees. Returns ptl's logs."""
    torch.manual_seed(0)
    ours = CRMatch(K, **params)
    model = attach(ours, net(), seed=1)
    args = {"p_cutoff": 0.95, "hard_label": True, "rot_loss_ratio": 1.0, **usb_args}
    theirs = usb.CRMatch(
        types.SimpleNamespace(model=UsbNet(copy.deepcopy(model)), num_classes=K, ulb_loss_ratio=1.0, **args),
        None,
    )
    history = []
    for step, batch in enumerate(batches()[:steps]):
        labeled = {"weak": batch["x"]}
        unlabeled = {k: batch[k] for k in ("weak", "strong", "weak:1")}
        loss, logs = ours.loss(model, labeled, batch["y"], unlabeled, step, steps)
        grads = _grads(model, loss)
        rot = _usb_rotated(usb, batch["weak:1"][:N_LABELED]) if theirs.use_rot else (None, None)
        theirs.it = step
        out, log = theirs.train_step(
            x_lb=batch["x"],
            y_lb=batch["y"],
            x_ulb_w=batch["weak"],
            x_ulb_s=batch["strong"],
            x_ulb_rot=rot[0],
            rot_v=rot[1],
        )
        their_grads = _grads(theirs.model.inner, out["loss"])
        _same(loss, out["loss"])
        _same(logs["loss_x"], log["sup_loss"])
        _same(logs["loss_u"], log["unsup_loss"])
        _same(logs["mask_ratio"], log["util_ratio"])
        for a, b in zip(grads, their_grads, strict=True):
            _same(a, b)
        history.append(logs)
    for a, b in zip(model.buffers(), theirs.model.inner.buffers(), strict=True):
        _same(a, b)
    return history


@pytest.mark.parametrize(("params", "usb_args"), [({}, {}), ({"threshold": 0.6}, {"p_cutoff": 0.6})])
def test_crmatch_equals_usb_over_steps(usb, cpu_for_cuda, params, usb_args):
    """Five steps: pseudo labels, masks, the cosine and rotation terms, losses, gradients (both
    heads' included) and BatchNorm's statistics equal USB's; some samples pass the threshold and
    some do not, and the cosine term is active."""
    logs = compare(params, usb_args, usb)
    ratios = [float(log["mask_ratio"]) for log in logs]
    assert max(ratios) > 0 and min(ratios) < 1
    assert any(float(log["loss_ds"]) > 0 for log in logs)
    assert all(float(log["loss_rot"]) > 0 for log in logs)


@pytest.mark.parametrize("perturbed", [{"threshold": 0.9}, {"lambda_rot": 0.9}])
def test_crmatch_comparison_can_fail(usb, cpu_for_cuda, perturbed):
    with pytest.raises(AssertionError):
        compare(perturbed, {}, usb)


def test_the_rotated_images_matter(usb, cpu_for_cuda, monkeypatch):
    """Rotating other images than USB's (the last B unlabeled samples instead of the first B)
    makes the comparison fail: the rotation batch is part of the step."""
    monkeypatch.setattr(
        "ptl_ssl.crmatch.view",
        lambda views, name, *a: views[name].flip(0) if name == "weak:1" else views[name],
    )
    with pytest.raises(AssertionError):
        compare({}, {}, usb)


def test_lambda_rot_weighs_the_rotation_loss_where_usb_only_switches_it_on(usb, cpu_for_cuda):
    """The documented difference: USB adds the rotation loss with weight 1 for any positive
    ``rot_loss_ratio``; ptl multiplies it by ``lambda_rot``. At 0 both leave the rotated images
    out, and ptl's head gets a zero gradient (not none: DistributedDataParallel needs one)."""
    with pytest.raises(AssertionError):
        compare({"lambda_rot": 0.5}, {"rot_loss_ratio": 0.5}, usb, steps=1)
    compare({"lambda_rot": 0.0}, {"rot_loss_ratio": 0.0}, usb, steps=2)
    torch.manual_seed(0)
    algo = CRMatch(K, lambda_rot=0.0)
    model = attach(algo, net(), seed=1)
    batch = batches()[0]
    loss, _ = algo.loss(model, {"weak": batch["x"]}, batch["y"], batch, 0, 1)
    loss.backward()
    rotation = [p for name, p in model.named_parameters() if name.startswith(f"heads.{ROTATION}.")]
    assert rotation and all(p.grad is not None and not p.grad.any() for p in rotation)


def test_square_images_only(usb):
    algo = CRMatch(K)
    model = attach(algo, nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 6, K)), seed=1)
    views = {name: torch.randn(4, 3, 4, 6) for name in ("weak", "strong", "weak:1")}
    with pytest.raises(ValueError, match="square images"):
        algo.loss(model, {"weak": torch.randn(2, 3, 4, 6)}, torch.tensor([0, 1]), views, 0, 1)


def test_check_ssl_passes_and_a_plain_model_is_told_what_is_missing():
    """ptl's own contract check (both heads trained, checkpointed and resumed with the model,
    exact resume, the simulated GPU); a model without the heads wrapper is one error."""
    from ptl_cli.testing import check_ssl

    check_ssl("crmatch", steps=3, resume_at=2)
    batch = batches()[0]
    with pytest.raises(TypeError, match="not wrapped with the heads"):
        CRMatch(K).loss(net(), {"weak": batch["x"]}, batch["y"], batch, 0, 1)
