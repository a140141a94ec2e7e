"""The datasets plugin on real data: the bundled pack, Fashion-MNIST where Debian puts it, image
folders, torchvision's loaders, the "not found" messages, and seeded splits."""

from __future__ import annotations

import gzip
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ptl_cli import plugins
from ptl_cli.data.splits import holdout_split, per_class_split
from ptl_cli.errors import UserError
from ptl_datasets import fashion
from ptl_datasets.torchvision_sets import SOURCES

REPO = Path(__file__).resolve().parents[2]
DEBIAN = fashion.DEBIAN_DIR
needs_debian = pytest.mark.skipif(
    not (DEBIAN / "t10k-images-idx3-ubyte.gz").is_file(),
    reason="needs Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist)",
)


def build(name: str, split: str = "train", root: object = None, **params):
    return plugins.get("datasets", name).build(root, split, False, params=params)


@pytest.fixture(scope="module")
def pack():
    return build("fashion-pack", "train"), build("fashion-pack", "test")


def write_idx(path: Path, data: torch.Tensor) -> None:
    """An IDX file of unsigned bytes, the format of (Fashion-)MNIST."""
    header = b"\x00\x00\x08" + bytes([data.ndim]) + b"".join(n.to_bytes(4, "big") for n in data.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + data.contiguous().numpy().tobytes())


# -- the bundled pack ---------------------------------------------------------------------------------
def test_bundled_pack_is_a_balanced_real_subset(pack):
    train, test = pack
    for ds, per_class in ((train, 500), (test, 100)):
        assert ds.images.dtype == torch.uint8 and ds.images.shape[1:] == (1, 28, 28)
        assert torch.bincount(ds.targets, minlength=10).tolist() == [per_class] * 10
        assert ds.info.class_names[9] == "Ankle boot" and ds.info.num_classes == 10
        assert len({bytes(img.numpy()) for img in ds.images}) == len(ds)  # no duplicated image
    # real photographs of clothes, not noise: mostly dark background with a bright object
    mean = train.images.float().mean().item() / 255
    assert 0.2 < mean < 0.4  # Fashion-MNIST's pixel mean is 0.286
    assert plugins.get("datasets", "bundled").name == "fashion-pack"


@needs_debian
def test_bundled_pack_is_reproduced_by_its_script_from_the_full_dataset(tmp_path):
    """scripts/make_data_pack.py rebuilds the shipped file exactly, from Debian's Fashion-MNIST."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    out = tmp_path / "pack.safetensors"
    script = REPO / "scripts" / "make_data_pack.py"
    command = [sys.executable, str(script), "--source", str(DEBIAN), "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rebuilt, shipped = load_file(str(out)), load_file(str(fashion.PACK_PATH))
    assert rebuilt.keys() == shipped.keys()
    assert all(torch.equal(rebuilt[k], shipped[k]) for k in shipped)
    with safe_open(str(fashion.PACK_PATH), "pt") as fh:
        meta = fh.metadata()
    for name in ("train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):  # provenance recorded
        assert meta[name] == hashlib.sha256((DEBIAN / name).read_bytes()).hexdigest()


# -- full Fashion-MNIST ---------------------------------------------------------------------------------
@needs_debian
def test_fashion_mnist_is_found_where_debian_puts_it(pack):
    test = build("fashion-mnist", "test")  # the default data directory is empty in tests
    assert len(test) == 10_000 and test.images.shape[1:] == (1, 28, 28)
    assert torch.bincount(test.targets).tolist() == [1000] * 10
    index = load_pack_index("test")
    assert torch.equal(test.images[index], pack[1].images)  # the pack's images are these images
    assert torch.equal(test.targets[index], pack[1].targets)


def load_pack_index(split: str) -> torch.Tensor:
    from safetensors.torch import load_file

    return load_file(str(fashion.PACK_PATH))[f"{split}_source_index"]


@needs_debian
def test_data_dir_comes_before_the_debian_location(tmp_path, pack):
    """--data-dir with torchvision's layout wins; here it holds 100 real test images only."""
    raw = tmp_path / "FashionMNIST" / "raw"
    test = pack[1]
    write_idx(raw / "t10k-images-idx3-ubyte", test.images[:100, 0])
    write_idx(raw / "t10k-labels-idx1-ubyte", test.targets[:100].to(torch.uint8))
    found = build("fashion-mnist", "test", root=tmp_path)
    assert len(found) == 100 and torch.equal(found.images, test.images[:100])
    gz = tmp_path / "gz" / "fashion-mnist"
    gz.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):  # gzipped, in <dir>/fashion-mnist
        (gz / f"{name}.gz").write_bytes(gzip.compress((raw / name).read_bytes()))
    assert len(build("fashion-mnist", "test", root=tmp_path / "gz")) == 100


def test_missing_or_corrupt_fashion_mnist_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion, "DEBIAN_DIR", tmp_path / "not-installed")
    with pytest.raises(UserError) as err:
        build("fashion-mnist", "test", root=tmp_path / "data")
    message = str(err.value)
    assert message.startswith("Fashion-MNIST not found — looked in ") and "\n" not in message
    assert str(tmp_path / "data" / "FashionMNIST" / "raw") in message and "not-installed" in message
    assert "apt-get install dataset-fashion-mnist" in message and "--download" in message

    raw = tmp_path / "data" / "fashion-mnist"
    write_idx(raw / "t10k-images-idx3-ubyte", torch.zeros(10, 28, 28, dtype=torch.uint8))
    write_idx(raw / "t10k-labels-idx1-ubyte", torch.zeros(10, dtype=torch.uint8))
    images = raw / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])  # a download cut short
    with pytest.raises(UserError, match=r"t10k-images-idx3-ubyte is truncated or corrupt"):
        build("fashion-mnist", "test", root=tmp_path / "data")
    with pytest.raises(UserError, match="splits 'train' and 'test'"):
        build("fashion-mnist", "val")


# -- torchvision datasets ------------------------------------------------------------------------------
def test_every_torchvision_dataset_is_registered():
    registered = set(plugins.manager().registry("datasets").names())
    assert set(SOURCES) <= registered
    assert {"fashion-pack", "fashion-mnist", "imagenet", "imagefolder"} <= registered


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_missing_torchvision_dataset_says_where_it_looked_and_how_to_get_it(name, tmp_path):
    with pytest.raises(UserError) as err:
        build(name, "train", root=tmp_path)
    message = str(err.value)
    folder = SOURCES[name].folder
    looked = tmp_path / folder if folder else tmp_path
    assert message.startswith(f"{name} (train) not found — looked in {looked}; "), message
    assert "--download" in message or "by hand" in message
    assert "\n" not in message


def test_missing_dataset_from_the_command_line_is_exit_2(tmp_path, capsys):
    from ptl_cli.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["prune", "--dataset", "svhn", "--data-dir", str(tmp_path), "--out", str(tmp_path / "r"), "-q"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    assert err == (
        f"ptl: error: svhn (train) not found — looked in {tmp_path}; "
        "pass --download (needs internet) to fetch it there, or --data-dir DIR where it is\n"
    )


def test_unknown_split_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match=r"cifar10 has splits 'train', 'test', not 'val'"):
        build("cifar10", "val", root=tmp_path)


def test_torchvision_loader_in_memory_path_with_real_images(tmp_path, pack):
    """torchvision's own MNIST reader, fed real Fashion-MNIST images in MNIST's file layout."""
    train, test = pack
    raw = tmp_path / "MNIST" / "raw"
    write_idx(raw / "train-images-idx3-ubyte", train.images[:300, 0])
    write_idx(raw / "train-labels-idx1-ubyte", train.targets[:300].to(torch.uint8))
    write_idx(raw / "t10k-images-idx3-ubyte", test.images[:50, 0])
    write_idx(raw / "t10k-labels-idx1-ubyte", test.targets[:50].to(torch.uint8))
    loaded = build("mnist", "train", root=tmp_path)
    assert torch.equal(loaded.images, train.images[:300]) and torch.equal(loaded.targets, train.targets[:300])
    assert loaded.info.name == "mnist" and loaded.info.channels == 1 and loaded.info.image_size == 28
    assert loaded.info.num_classes == 10 and loaded.info.mean == (0.1307,)
    assert len(build("mnist", "test", root=tmp_path)) == 50


# -- image folders ---------------------------------------------------------------------------------------
def save_pngs(directory: Path, images: torch.Tensor, labels: torch.Tensor, names: list[str]) -> None:
    from PIL import Image

    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = directory / names[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0].numpy()).save(folder / f"{i:04d}.png")


def test_imagefolder_with_split_folders_labels_classes_consistently(tmp_path, pack):
    train, test = pack
    names = ["bag", "coat", "dress"]  # sorted: the label order
    keep = torch.isin(train.targets, torch.tensor([3, 4, 8]))
    relabel = {3: 2, 4: 1, 8: 0}
    images = train.images[keep][:30]
    labels = torch.tensor([relabel[int(t)] for t in train.targets[keep][:30]])
    save_pngs(tmp_path / "train", images, labels, names)
    save_pngs(tmp_path / "test", images[labels != 1][:5], labels[labels != 1][:5], names)  # no coats
    (tmp_path / "train" / ".ipynb_checkpoints").mkdir()  # hidden folders are not classes

    ds = build("imagefolder", "train", path=str(tmp_path), image_size=28)
    assert ds.info.class_names == tuple(names) and ds.info.channels == 3 and len(ds) == 30
    order = torch.argsort(labels, stable=True)  # files are read class by class
    assert torch.equal(ds.targets, labels[order])
    image, label = ds[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 28, 28)
    # the evaluation view: short side to round(28·256/224) = 32, then the centre 28×28
    grey = torch.nn.functional.interpolate(images[order][:1].float(), size=32, mode="bilinear")
    centre = grey[0, :, 2:30, 2:30].expand(3, -1, -1)
    assert (image.float() - centre).abs().max() <= 1 and label == int(labels[order][0])

    held = build("imagefolder", "test", path=str(tmp_path), image_size=28)
    assert held.info.class_names == tuple(names)  # the train split's classes, coats included
    test_labels = labels[labels != 1][:5]
    assert len(held) == 5 and torch.equal(held.targets, test_labels.sort(stable=True).values)


def test_imagefolder_without_splits_holds_out_a_seeded_fifth(tmp_path, pack):
    train, _ = pack
    save_pngs(tmp_path, train.images[:40], train.targets[:40] % 2, ["even", "odd"])
    a = build("imagefolder", "train", path=str(tmp_path), image_size=16)
    b = build("imagefolder", "test", path=str(tmp_path), image_size=16)
    assert (len(a), len(b)) == (32, 8)
    seen_a = {bytes(a[i][0].numpy()) for i in range(len(a))}
    seen_b = {bytes(b[i][0].numpy()) for i in range(len(b))}
    assert not seen_a & seen_b  # no test image is trained on
    again = build("imagefolder", "test", path=str(tmp_path), image_size=16)
    assert torch.equal(again.targets, b.targets) and torch.equal(again[3][0], b[3][0])  # seeded


def test_imagefolder_and_imagenet_errors(tmp_path):
    with pytest.raises(UserError, match=r"imagefolder \(train\) not found — looked in .*nowhere"):
        build("imagefolder", path=str(tmp_path / "nowhere"))
    (tmp_path / "empty" / "cats").mkdir(parents=True)
    with pytest.raises(UserError, match="no images under"):
        build("imagefolder", path=str(tmp_path / "empty"))
    with pytest.raises(UserError, match=r"imagenet \(train\) not found — looked in .*imagenet/train"):
        build("imagenet", root=tmp_path)
    with pytest.raises(UserError, match="cannot be downloaded"):
        plugins.get("datasets", "imagenet").build(tmp_path, "train", True)
    (tmp_path / "split" / "train" / "a").mkdir(parents=True)
    (tmp_path / "split" / "test" / "zebra").mkdir(parents=True)
    with pytest.raises(UserError, match="class folders the train split lacks: zebra"):
        build("imagefolder", "test", path=str(tmp_path / "split"))


# -- splits --------------------------------------------------------------------------------------------
def test_labels_per_class_split_is_exact_disjoint_and_seeded(pack):
    targets = pack[0].targets
    labeled, rest = per_class_split(targets, 4, seed=7)
    assert torch.bincount(targets[labeled], minlength=10).tolist() == [4] * 10
    assert len(set(labeled.tolist()) | set(rest.tolist())) == len(targets)
    assert not set(labeled.tolist()) & set(rest.tolist())
    again, _ = per_class_split(targets, 4, seed=7)
    other, _ = per_class_split(targets, 4, seed=8)
    assert torch.equal(labeled, again) and not torch.equal(labeled, other)
    with pytest.raises(UserError, match="class 0 has only 500 examples"):
        per_class_split(targets, 501, seed=0)


def test_holdout_split_is_seeded_and_sized():
    train, val = holdout_split(1000, 0.1, seed=3)
    assert (len(train), len(val)) == (900, 100)
    assert sorted(train.tolist() + val.tolist()) == list(range(1000))
    assert torch.equal(val, holdout_split(1000, 0.1, seed=3)[1])
    assert not torch.equal(val, holdout_split(1000, 0.1, seed=4)[1])


def test_select_classes_relabels_in_the_given_order(pack):
    target = pack[1].select_classes([5, 6, 7, 8, 9])
    assert len(target) == 500 and target.info.num_classes == 5
    assert target.info.class_names == ("Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
    assert torch.bincount(target.targets).tolist() == [100] * 5
    source = pack[1].images[pack[1].targets == 9]
    assert torch.equal(target.images[target.targets == 4], source)
