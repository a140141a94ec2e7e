"""The torch-free torchvision catalog that ``--dry-run`` checks ``torchvision:NAME`` against."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torchvision.models as tvm

from ptl_models import tv_catalog


@pytest.mark.parametrize("everything", [False, True])
def test_the_catalog_is_torchvisions_own(everything):
    """Names, weights enums and their members as torchvision's registry gives them."""
    found = tv_catalog.catalog(everything)
    expected = tvm.list_models() if everything else tvm.list_models(module=tvm)
    assert tv_catalog.model_names(everything) == expected
    for name in expected:
        enum = tvm.get_model_weights(name)
        builder = found[name]
        assert (builder.enum, builder.weights) == (enum.__name__, tuple(w.name for w in enum)), name
        assert builder.module == tvm.get_model_builder(name).__module__.rsplit(".", 1)[-1]
    assert tv_catalog.catalog(everything) is found  # read once per process


def test_reading_it_imports_no_torch():
    code = (
        "import sys; from ptl_models import tv_catalog as c; c.catalog(True); print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("torchvision:resnt18",), "unknown torchvision model 'resnt18'; did you mean 'resnet18'"),
        (("torchvision:resnet18", "IMAGENET1K_V2"), "did you mean 'IMAGENET1K_V1'"),
        (("torchvision:resnet18", None, 0.5), "no width factor; remove `width` (got 0.5)"),
        (("torchvision:shufflenet_v2_x1_0", None, 1.0, "cifar"), "stem='cifar' works on torchvision ResNets"),
    ],
)
def test_problems_are_named(args, message):
    assert message in tv_catalog.model_problem(*args)


@pytest.mark.parametrize(
    "args",
    [
        ("torchvision:resnet18", "IMAGENET1K_V1"),
        ("torchvision:resnet18", "ResNet18_Weights.DEFAULT"),
        ("torchvision:wide_resnet50_2", None, 1.0, "cifar"),
        ("torchvision:vit_b_16", "DEFAULT"),
    ],
)
def test_good_names_pass(args):
    assert tv_catalog.model_problem(*args) is None


def test_source_classifier_names_are_checked_like_torchvision():
    assert "unknown torchvision classifier 'resnt50'; did you mean 'resnet50'" in (
        tv_catalog.classifier_problem("torchvision:resnt50", "DEFAULT") or ""
    )
    assert tv_catalog.classifier_problem("torchvision:resnet18", "IMAGENET1K_V2") == (
        "unknown weights 'IMAGENET1K_V2'; known: DEFAULT, IMAGENET1K_V1"
    )
    for name in ("torchvision:resnet50", "torchvision:fasterrcnn_resnet50_fpn"):  # any with weights
        assert tv_catalog.classifier_problem(name, "DEFAULT") is None


def test_which_networks_lack_a_linear_head():
    """Transfer's KD and PP stages swap an nn.Linear head: only SqueezeNet has none."""
    import torch
    from torch import nn

    lacking = [n for n in tv_catalog.model_names() if tv_catalog.lacks_linear_head(f"torchvision:{n}")]
    assert lacking == ["squeezenet1_0", "squeezenet1_1"]
    for name in ("squeezenet1_1", "resnet18", "mobilenet_v3_small", "vit_b_16"):
        with torch.device("meta"):
            model = tvm.get_model(name, weights=None)
        has_linear = any(isinstance(m, nn.Linear) for m in model.modules())
        assert has_linear != tv_catalog.lacks_linear_head(f"torchvision:{name}"), name
