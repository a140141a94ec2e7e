"""``timm:NAME`` architectures: names checked at ``--dry-run`` without timm, supermasks on every
Conv/Linear layer at exactly the requested sparsity, small-image stems, no weights loaded unless asked."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ptl_cli import plugins
from ptl_cli.errors import UserError
from ptl_models.timm_catalog import model_names
from ptl_prune import supermask
from ptl_prune.edgepopup import EdgePopup
from ptl_prune.supermask import num_pruned


def build(name: str, in_channels: int = 1, size: int = 28, **params) -> nn.Module:
    return plugins.get("models", name).build(10, in_channels, size, 1.0, params=params)


def test_the_name_scan_equals_timm_list_models():
    import timm

    assert list(model_names()) == sorted(timm.list_models()) and len(model_names()) > 1000


DRY_RUN = """
import sys
from ptl_cli.cli import main
sys.argv = ["ptl", "prune", "--model", sys.argv[1], "--dataset", "fashion-pack", "--dry-run"]
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code
print("TORCH" if "torch" in sys.modules or "timm" in sys.modules else "LIGHT", code)
"""


@pytest.mark.parametrize(
    ("name", "rc", "words"),
    [("timm:resnt10t", 2, "did you mean 'resnet10t'"), ("timm:resnet10t", 0, "timm:resnet10t")],
)
def test_dry_run_checks_the_name_without_importing_timm_or_torch(name, rc, words):
    result = subprocess.run(
        [sys.executable, "-c", DRY_RUN, name], capture_output=True, text=True, timeout=300
    )
    assert result.stdout.strip().endswith(f"LIGHT {rc}"), result.stdout + result.stderr
    assert words in result.stdout + result.stderr
    if rc:
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_a_width_factor_is_refused_in_one_line():
    with pytest.raises(UserError, match="timm models have no width factor"):
        plugins.get("models", "timm:resnet10t").build(10, 3, 32, 0.5)


def test_a_small_stem_resnet_prunes_at_exactly_the_requested_sparsity(fashion_batch):
    images, labels = fashion_batch
    model = build("timm:resnet10t", stem="small")
    stem = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert stem.stride == (1, 1) and isinstance(model.maxpool, nn.Identity)
    assert model(images[:2]).shape == (2, 10)
    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    pruner = EdgePopup(sparsity=0.7)
    model = pruner.prepare(model, seed=0)
    masked = list(supermask.masked_layers(model))
    assert len(masked) == len(layers) > 10
    optimizer = torch.optim.SGD(pruner.trainable_parameters(model), lr=0.1, momentum=0.9)
    before = [mask.kept().clone() for *_, mask in masked]
    model.train()
    for step in range(3):
        optimizer.zero_grad()
        F.cross_entropy(model(images[step * 8 : step * 8 + 8]), labels[step * 8 : step * 8 + 8]).backward()
        optimizer.step()
        pruner.after_step(model, step + 1)
    for _, _, _, mask in masked:
        assert int((~mask.kept()).sum()) == num_pruned(mask.scores.numel(), 0.7)
    assert any(not torch.equal(b, mask.kept()) for b, (*_, mask) in zip(before, masked, strict=True))


def test_vits_take_small_images_through_create_model_kwargs_and_refuse_the_small_stem(fashion_batch):
    images, _ = fashion_batch
    vit = build("timm:test_vit", kwargs={"img_size": 28, "patch_size": 4})
    assert vit(images[:2]).shape == (2, 10)
    pruned = EdgePopup(sparsity=0.5).prepare(vit, seed=0)
    for _, _, _, mask in supermask.masked_layers(pruned):
        assert int((~mask.kept()).sum()) == num_pruned(mask.scores.numel(), 0.5)
    with pytest.raises(UserError, match="patchify convolution"):
        build("timm:test_vit", stem="small")
    with pytest.raises(UserError, match="refused params.kwargs"):
        build("timm:test_resnet", kwargs={"no_such_argument": 1})


def test_no_weights_are_loaded_unless_asked(monkeypatch, tmp_path):
    """Offline with an empty hub cache: random weights build (seeded), pretrained ones are one line."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    torch.manual_seed(0)
    a = build("timm:test_resnet", in_channels=3, size=32)
    torch.manual_seed(0)
    b = build("timm:test_resnet", in_channels=3, size=32)
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    assert all(torch.equal(x, y) for x, y in pairs)
    with pytest.raises(UserError, match="not in the Hugging Face cache") as err:
        build("timm:test_resnet", pretrained=True)
    assert "\n" not in str(err.value) and "timm/test_resnet.r160_in1k" in str(err.value)


def test_pretrained_weights_come_from_the_hub_cache_with_a_fresh_head(monkeypatch, tmp_path):
    """A snapshot of timm's hub repository laid into the cache (as `hf download` leaves it): the
    body loads from it, the 10-way head is new, and a grey first conv is adapted from RGB."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(3)
    published = timm.create_model("test_resnet", num_classes=1000).state_dict()
    repo = tmp_path / "hub" / "models--timm--test_resnet.r160_in1k"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in published.items()}, str(snapshot / "model.safetensors"))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    net = build("timm:test_resnet", in_channels=3, size=32, pretrained=True)
    state = net.state_dict()
    body = [k for k in published if not k.startswith("fc.")]
    assert body and all(torch.equal(state[k], published[k]) for k in body)
    assert state["fc.weight"].shape == (10, published["fc.weight"].shape[1])
    grey = build("timm:test_resnet", in_channels=1, size=32, pretrained=True)
    first = next(k for k in body if k.endswith("weight") and published[k].ndim == 4)
    torch.testing.assert_close(grey.state_dict()[first], published[first].sum(dim=1, keepdim=True))


@pytest.fixture(scope="module")
def fashion_batch() -> tuple[torch.Tensor, torch.Tensor]:
    dataset = plugins.get("datasets", "fashion-pack").build(None, "train", False)
    index = torch.arange(0, 32 * 17, 17)
    return dataset.images[index].float() / 255.0, dataset.targets[index]


def test_listed_with_its_parameters():
    result = subprocess.run(
        [sys.executable, "-m", "ptl_cli", "list", "models", "timm:*", "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "timm:*" in result.stdout and "pretrained" in result.stdout
    json.loads(result.stdout)


@pytest.mark.parametrize(
    ("name", "params"),
    [("timm:resnet10t", {"stem": "small"}), ("timm:test_vit", {"kwargs": {"img_size": 28, "patch_size": 7}})],
)
def test_the_model_contract_checks_pass(name, params):
    from ptl_cli.testing import check_model

    check_model(name, params)
