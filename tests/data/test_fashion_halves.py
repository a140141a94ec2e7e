"""Fashion-MNIST's halves and coarse labels: the source/target separation of the transfer quickstart.

The bundled source models train on half A with coarse labels; the bundled pack's training images
come from half B. These tests check that separation on the real data (Debian's copy) and the
pack's ``fit``/``val`` tuning splits.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ptl_cli import plugins
from ptl_cli.errors import UserError
from ptl_datasets import fashion

needs_debian = pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz").is_file(),
    reason="needs Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist)",
)


def build(name: str, split: str, **params):
    return plugins.get("datasets", name).build(None, split, False, params=params)


def test_halves_are_disjoint_class_balanced_and_seeded():
    labels = torch.arange(10).repeat_interleave(7)[
        torch.randperm(70, generator=torch.Generator().manual_seed(3))
    ]
    a, b = fashion.half_indices(labels, "A"), fashion.half_indices(labels, "B")
    assert set(a.tolist()).isdisjoint(b.tolist()) and len(a) + len(b) == 70
    assert torch.bincount(labels[a]).tolist() == [3] * 10 and torch.bincount(labels[b]).tolist() == [4] * 10
    assert torch.equal(a, fashion.half_indices(labels, "A"))  # the same halves every time
    assert not torch.equal(a, fashion.half_indices(labels, "A", seed=1))  # the seed decides them


def test_coarse_labels_group_tops_footwear_trouser_and_bag():
    coarse = fashion.to_coarse(torch.arange(10))
    names = [fashion.COARSE_NAMES[c] for c in coarse]
    assert names == ["top", "trouser", "top", "top", "top", "footwear", "top", "footwear", "bag", "footwear"]


@needs_debian
def test_source_half_never_contains_a_pack_training_image():
    full = build("fashion-mnist", "train")
    half_a = build("fashion-mnist", "train", half="A", coarse=True)
    assert len(half_a) == 30_000 and half_a.info.class_names == fashion.COARSE_NAMES
    assert torch.bincount(half_a.targets).tolist() == [15_000, 3_000, 9_000, 3_000]
    index_a = fashion.half_indices(full.targets, "A")
    assert torch.equal(half_a.images, full.images[index_a])
    assert torch.equal(half_a.targets, fashion.to_coarse(full.targets[index_a]))
    pack_index = load_file(str(fashion.PACK_PATH))["train_source_index"]
    assert not set(pack_index.tolist()) & set(index_a.tolist())  # pack images are all from half B
    pack = build("fashion-pack", "train")
    assert torch.equal(pack.images, full.images[pack_index])
    half_b = build("fashion-mnist", "train", half="B")
    assert len(half_b) == 30_000 and half_b.info.num_classes == 10
    test = build("fashion-mnist", "test", half="A")  # the test split stays whole
    assert len(test) == 10_000


def test_pack_fit_and_val_split_the_training_images():
    train, fit, val = (
        build("fashion-pack", "train"),
        build("fashion-pack", "fit"),
        build("fashion-pack", "val"),
    )
    assert (
        torch.bincount(val.targets).tolist() == [100] * 10
        and torch.bincount(fit.targets).tolist() == [400] * 10
    )
    seen = {bytes(img.numpy()) for img in train.images}
    fit_set, val_set = {bytes(i.numpy()) for i in fit.images}, {bytes(i.numpy()) for i in val.images}
    assert fit_set | val_set == seen and not fit_set & val_set
    test = {bytes(i.numpy()) for i in build("fashion-pack", "test").images}
    assert not test & val_set  # validation never touches the test split
    coarse = build("fashion-pack", "val", coarse=True)
    assert torch.equal(coarse.targets, fashion.to_coarse(val.targets)) and coarse.info.num_classes == 4
    with pytest.raises(UserError, match="splits 'train', 'test', 'fit' and 'val', not 'valid'"):
        build("fashion-pack", "valid")


def test_clusters_split_each_coarse_class_by_nearest_centroid():
    gen = torch.Generator().manual_seed(0)
    # two coarse classes, each made of two far-apart blobs of 4x4 "images"
    centres = torch.tensor([0.1, 0.9, 0.3, 0.7])
    coarse = torch.tensor([0, 0, 1, 1]).repeat_interleave(20)
    pixels = centres.repeat_interleave(20)[:, None] + 0.02 * torch.randn(80, 16, generator=gen)
    images = (pixels.clamp(0, 1) * 255).round().to(torch.uint8).view(80, 1, 4, 4)
    points = images.flatten(1).double() / 255.0
    found = tuple(fashion._kmeans(points[coarse == c], 2, torch.Generator().manual_seed(0)) for c in (0, 1))
    labels = fashion.to_clusters(images, coarse, found)
    assert torch.equal(labels // 2, coarse)  # a cluster never leaves its coarse class
    for blob in range(4):  # every blob is one cluster, and different blobs are different clusters
        assert labels[blob * 20 : (blob + 1) * 20].unique().numel() == 1
    assert labels.unique().numel() == 4
    names = fashion.info("x", coarse=True, clusters=2).class_names
    assert names == ("top-1", "top-2", "trouser-1", "trouser-2", "footwear-1", "footwear-2", "bag-1", "bag-2")


def test_clusters_need_coarse_labels_and_are_checked_before_loading():
    spec = plugins.get("datasets", "fashion-mnist")
    with pytest.raises(UserError, match="set coarse = true"):
        spec.validate_params({"clusters": 6})
    assert spec.validate_params({"clusters": 6, "coarse": True})["clusters"] == 6


@needs_debian
def test_cluster_labels_come_from_half_a_only_and_repeat():
    half_a = build("fashion-mnist", "train", half="A", coarse=True, clusters=6)
    assert half_a.info.num_classes == 24 and half_a.info.class_names[:2] == ("top-1", "top-2")
    coarse = build("fashion-mnist", "train", half="A", coarse=True)
    assert torch.equal(half_a.targets // 6, coarse.targets)
    counts = torch.bincount(half_a.targets, minlength=24)
    assert (counts > 0).all()  # every cluster is used
    fashion.cluster_centres.cache_clear()
    again = build("fashion-mnist", "train", half="A", coarse=True, clusters=6)
    assert torch.equal(again.targets, half_a.targets)  # recomputed, the same clusters
    # the test split is labeled with half A's centroids; the whole train split too (half B's
    # images never moved a centroid: labeling them is a nearest-centroid lookup)
    test = build("fashion-mnist", "test", coarse=True, clusters=6)
    assert torch.equal(test.targets // 6, build("fashion-mnist", "test", coarse=True).targets)
    centres = fashion.cluster_centres(None, 6)
    assert torch.equal(test.targets, fashion.to_clusters(test.images, test.targets // 6, centres))
