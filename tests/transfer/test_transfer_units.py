"""The pieces of the transfer workflow that need no source model: stages, batches, nets, flags."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ptl_cli import plugins, recipes
from ptl_cli.errors import UserError
from ptl_transfer import nets, stages
from ptl_transfer.command import recipe_overrides
from ptl_transfer.recipe import TransferRecipe
from ptl_transfer.sampling import StepStream


def _recipe(**sets):
    data, _ = recipes.load_raw("transfer-quickstart")
    for key, value in sets.items():
        recipes.set_dotted(data, key, value, "test")
    return recipes.validate(data, TransferRecipe, "test").model


def test_phases_add_what_stages_need_in_execution_order():
    names = [p.name for p in stages.phases(_recipe(stages=["pp+pssl"]))]
    assert names == ["pp-pool", "pp-pretrain", "pcs-pool", "pp+pssl"]
    assert [p.name for p in stages.phases(_recipe(stages=["kd", "scratch"]))] == ["scratch", "kd"]
    on_the_fly = [p.name for p in stages.phases(_recipe(stages=["pp"], **{"pp.mode": "on-the-fly"}))]
    assert on_the_fly == ["pp-pretrain", "pp"]


def test_phase_offsets_are_cumulative_steps():
    phases = stages.phases(_recipe(**{"train.steps": 7, "pp.train.steps": 5}))
    offsets = {p.name: (p.offset, p.steps) for p in phases}
    assert offsets["scratch"] == (0, 7) and offsets["kd"] == (7, 7)
    assert offsets["pp-pretrain"] == (14, 5) and offsets["pp"] == (19, 7) and offsets["pp+pssl"] == (33, 7)


def test_final_stage_and_metric_keys():
    assert stages.final_stage(["scratch", "pssl", "pp"]) == "pssl"
    assert stages.metric_key("pp+pssl") == "pp_pssl_test_acc"
    assert stages.metric_key("pp+pssl", "seconds") == "pp_pssl_seconds"
    assert stages.metric_key("pp-pretrain", "seconds") == "pp_pretrain_seconds"


def test_unknown_stage_is_a_one_line_error_naming_the_stages():
    with pytest.raises(UserError, match="unknown stage 'ppssl'; stages are scratch, kd, pp, pssl, pp\\+pssl"):
        _recipe(stages=["ppssl"])


def test_recipe_rejects_unknown_keys():
    with pytest.raises(UserError, match="unknown key `pcs.per_img`"):
        _recipe(**{"pcs.per_img": 3})


def test_step_stream_is_a_sequence_of_permutations_and_needs_only_the_step():
    stream = StepStream(10, 4, seed=1, salt=2)
    drawn = torch.cat([stream.indices(s) for s in range(5)])  # 20 items = 2 epochs
    assert sorted(drawn[:10].tolist()) == list(range(10)) and sorted(drawn[10:].tolist()) == list(range(10))
    fresh = StepStream(10, 4, seed=1, salt=2)
    assert torch.equal(fresh.indices(3), stream.indices(3))
    big = StepStream(3, 8, seed=0, salt=0)  # batch larger than the set
    assert sorted(big.indices(0).tolist()[:3]) == [0, 1, 2]


def _model(arch="resnet18", width=0.125):
    return plugins.get("models", arch).build(5, 1, 28, width)


def test_swap_head_replaces_the_last_linear_only():
    model = _model()
    body = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("linear")}
    nets.swap_head(model, 7, torch.Generator().manual_seed(0))
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in body.items())
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 7)


def test_aux_head_reads_the_features_of_the_target_head():
    net = _model("conv2", 0.25)
    wrapped = nets.aux_head(net, 3, torch.Generator().manual_seed(0))
    x = torch.randn(4, 1, 28, 28)
    out = wrapped(x, with_heads=True)
    assert out["logits"].shape == (4, 5) and out["aux"].shape == (4, 3)
    assert torch.equal(wrapped(x), net(x))
    features = {}
    nets.get_head(net).register_forward_pre_hook(lambda m, i: features.setdefault("x", i[0]))
    net(x)
    assert torch.allclose(out["aux"], wrapped.heads["aux"](features["x"]))


def test_a_kd_checkpoint_of_the_former_aux_head_loads():
    """Before the auxiliary head moved into ``WithHeads`` a KD checkpoint named it ``aux.*``."""
    wrapped = nets.aux_head(_model("conv2", 0.25), 3, torch.Generator().manual_seed(0))
    old = {
        ("aux." + k[len("heads.aux.") :] if k.startswith("heads.aux.") else k): v
        for k, v in wrapped.state_dict().items()
    }
    state = nets.renamed_aux_keys({"step": 2, "model": old, "ema": old})
    wrapped.load_state_dict(state["model"])
    wrapped.load_state_dict(state["ema"])
    assert nets.renamed_aux_keys(None) is None


def test_sgd_exempts_batchnorm_and_biases_from_weight_decay():
    model = _model()
    cfg = _recipe().train
    optimizer = nets.sgd(model, cfg)
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == cfg.weight_decay and no_decay["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim <= 1 for p in no_decay["params"])
    bn = [m.weight for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert any(p is bn[0] for p in no_decay["params"])
    assert optimizer.defaults["nesterov"] and optimizer.defaults["momentum"] == 0.9


def test_cosine_schedule_is_fixmatch_7pi_over_16():
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.03)
    scheduler = nets.cosine(optimizer, 100, 7 / 16)
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(0.03)
    assert lrs[50] == pytest.approx(0.03 * math.cos(7 * math.pi * 50 / 1600))
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.03 * math.cos(7 * math.pi / 16))


def test_ema_warms_up_then_uses_the_decay():
    model = nn.Linear(2, 1)
    ema = nets.EMA(model, decay=0.9)
    with torch.no_grad():
        model.weight.add_(1.0)
    before = ema.model.weight.clone()
    ema.update(model, step=0)  # decay min(0.9, 1/10) = 0.1
    assert torch.allclose(ema.model.weight, 0.1 * before + 0.9 * model.weight)
    before = ema.model.weight.clone()
    ema.update(model, step=1000)  # decay 0.9
    assert torch.allclose(ema.model.weight, 0.9 * before + 0.1 * model.weight)


def test_flags_map_to_recipe_keys():
    out = recipe_overrides(
        "transfer-quickstart", generator="biggan", ssl="uda", stages="pp, pp+pssl", labels_per_class=4
    )
    assert out["ssl.name"] == "uda" and out["ssl.params"] == {}  # another algorithm: its own params
    assert "source.generator.params" not in out  # same generator: the recipe's params stay
    assert out["stages"] == ["pp", "pp+pssl"] and out["target.labels_per_class"] == 4


def test_target_flag_takes_a_dataset_or_a_folder(tmp_path):
    out = recipe_overrides("transfer-quickstart", target="mnist")
    assert out["target.dataset"] == "mnist" and out["target.classes"] == [] and out["target.params"] == {}
    out = recipe_overrides("transfer-quickstart", target=str(tmp_path))
    assert out["target.dataset"] == "imagefolder" and out["target.params"] == {"path": str(tmp_path)}


def test_arch_flag_resets_the_recipe_width():
    out = recipe_overrides("transfer-quickstart", arch="torchvision:mobilenet_v3_small")
    assert out["model.width"] == 1.0 and out["model.params"] == {}


class ProtocolOnlyDataset:
    """A third-party dataset with exactly the ImageDataset protocol: no ``num_classes`` attribute."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, info) -> None:
        self.images, self.targets, self.info = images, targets, info

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.targets[index])


def test_class_selection_works_on_a_dataset_with_only_the_protocol():
    from ptl_transfer.target import select_classes

    pack = plugins.get("datasets", "fashion-pack").build(None, "test", False)
    plain = ProtocolOnlyDataset(pack.images, pack.targets, pack.info)
    subset = select_classes(plain, [7, 5])
    assert subset.info.num_classes == 2 and subset.info.class_names == ("Sneaker", "Sandal")
    assert len(subset) == int(((pack.targets == 7) | (pack.targets == 5)).sum())
    image, label = subset[0]
    original = int(subset.keep[0])
    assert torch.equal(image, pack.images[original])
    assert label == {7: 0, 5: 1}[int(pack.targets[original])]


def test_collapsed_pseudo_labels_give_one_warning_line_naming_the_class():
    from ptl_transfer.evaluate import COLLAPSE_SHARE, collapse_warning

    names = ("Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
    far = collapse_warning("pp+pssl", [0.0, 1.0, 0.0, 0.0, 0.0], names)  # the far pair's measured shares
    assert far is not None and "\n" not in far
    assert far == "pp+pssl: pseudo labels collapsed onto Shirt (100% of the pool)"
    assert collapse_warning("pssl", [0.1, 0.25, 0.2, 0.2, 0.25], names) is None  # balanced: quiet
    assert collapse_warning("pssl", [COLLAPSE_SHARE, 1 - COLLAPSE_SHARE, 0, 0, 0], names) is None
    assert "onto Sandal (81%" in collapse_warning("pssl", [COLLAPSE_SHARE + 0.01, 0.19, 0, 0, 0], names)
