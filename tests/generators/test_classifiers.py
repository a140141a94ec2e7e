"""Source classifiers from local files and from the torchvision cache, with their preprocessing."""

from __future__ import annotations

import pytest
import torch

from ptl_cli import plugins
from ptl_cli.errors import UserError
from ptl_cli.testing import check_classifier


def test_plain_state_dict_needs_its_settings_and_loads_strictly(tmp_path):
    bundled = plugins.get("classifiers", "bundled").build("cpu", params={"weights": "fashion04"})  # 5 classes
    path = tmp_path / "net.pt"
    torch.save(bundled.net.state_dict(), path)
    settings = {
        "path": str(path),
        "arch": "conv4",
        "width": 0.5,
        "num_classes": 5,
        "image_size": 28,
        "channels": 1,
        "mean": [0.2860],
        "std": [0.3530],
    }
    clf = check_classifier("checkpoint", settings, channels=3, sizes=(28, 64))
    x = torch.rand(4, 1, 28, 28)
    assert torch.allclose(clf(x), bundled(x), atol=1e-6)  # same network, same preprocessing
    assert clf.class_names == ("class 0", "class 1", "class 2", "class 3", "class 4")
    with pytest.raises(UserError, match="does not record arch, num_classes"):
        plugins.get("classifiers", "checkpoint").build("cpu", params={"path": str(path)})
    with pytest.raises(UserError, match="shape mismatch"):
        plugins.get("classifiers", "checkpoint").build("cpu", params={**settings, "num_classes": 4})
    with pytest.raises(UserError, match="not found"):
        plugins.get("classifiers", "checkpoint").build(
            "cpu", params={**settings, "path": str(tmp_path / "no.pt")}
        )


def test_torchvision_classifier_uses_the_cached_file_and_its_preprocessing(tmp_path, monkeypatch):
    import torchvision.models as tvm

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("PTL_OFFLINE", "1")  # the file must come from the cache
    weights = tvm.SqueezeNet1_1_Weights.DEFAULT
    cached = tmp_path / "torch" / "hub" / "checkpoints" / weights.url.rsplit("/", 1)[-1]
    cached.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(tvm.squeezenet1_1(num_classes=1000).state_dict(), cached)  # random weights, real layout
    clf = check_classifier("torchvision:squeezenet1_1", channels=1, sizes=(28, 96))
    assert clf.num_classes == 1000 and clf.class_names[0] == "tench"
    assert (clf.image_size, clf.channels) == (224, 3)
    assert clf.mean == pytest.approx((0.485, 0.456, 0.406))
