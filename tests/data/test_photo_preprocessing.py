"""Photo preprocessing equals ``torchvision.transforms.v2`` on real JPEG files, and stays seeded.

The JPEGs are made here from real Fashion-MNIST images of the bundled pack (three images as the
R, G and B channels of a 2×2 mosaic, upscaled with PIL to non-square photo sizes such as
500×375 and 333×500, saved at quality 90). ptl decodes them with ``torchvision.io.decode_jpeg``,
which gives exactly PIL's pixels (``Image.open(path).convert("RGB")``, what
``torchvision.datasets.ImageFolder`` does; asserted here), and crops and resizes uint8 tensors.
So items equal v2 on tensor images (``v2.PILToTensor()`` first) with a tolerance of 0 grey levels,
and v2 on PIL images (PIL's own bilinear filter) within 1 grey level on under 10% of the pixels.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from ptl_cli import plugins
from ptl_cli.data.base import collate
from ptl_cli.data.photo import crop_box, decode_file, eval_resize, sample_seed
from ptl_cli.data.sampler import ResumableSampler

# (width, height) as PIL writes them: landscape, portrait, square, one too wide and one too tall
# for any crop with an aspect in (3/4, 4/3) at scale ≥ 0.9 (torchvision's fallback centre crop)
SIZES = [(500, 375), (333, 500), (375, 500), (640, 427), (224, 224), (257, 300), (900, 120), (110, 700)]


def photo(pack, k: int, size: tuple[int, int]) -> Image.Image:
    """A real-looking RGB photo: pack images as channels of a mosaic, upscaled to ``size``."""
    images = pack.images[:, 0]
    n = images.shape[0]

    def mosaic(c: int) -> torch.Tensor:
        tiles = [images[(97 * k + 31 * c + 7 * t) % n] for t in range(4)]
        return torch.cat([torch.cat(tiles[:2], 1), torch.cat(tiles[2:], 1)], 0)

    rgb = torch.stack([mosaic(c) for c in range(3)], -1).numpy()
    return Image.fromarray(rgb, mode="RGB").resize(size, Image.BICUBIC)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """``root/<class>/*.jpg``: two classes, every size in each class, 16 photos in all."""
    train = plugins.get("datasets", "fashion-pack").build(None, "train", False)
    root = tmp_path_factory.mktemp("photos")
    for label in range(2):
        (root / f"class{label}").mkdir()
        for i, size in enumerate(SIZES):
            photo(train, 10 * label + i, size).save(root / f"class{label}" / f"{i}.jpg", quality=90)
    return root


def build(root: Path, split: str = "train", image_size: int = 224):
    spec = plugins.get("datasets", "imagefolder")
    return spec.build(None, split, False, params={"path": str(root), "image_size": image_size})


def decoded(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def close_to_pil(image: torch.Tensor, pil_pipeline_output: torch.Tensor) -> None:
    """Within one grey level of v2 on PIL images, on under 10% of the pixels (and not all equal
    everywhere: the two resize filters are different code)."""
    diff = (image.int() - pil_pipeline_output.int()).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() < 0.10


def files(dataset) -> list[Path]:
    """The JPEG behind each item (the dataset reads them class by class, in sorted order)."""
    return [dataset.open_image.files[i] for i in dataset.order]


@pytest.mark.parametrize("image_size", [224, 160])
def test_evaluation_view_is_torchvision_resize_then_center_crop(folder, image_size):
    dataset = build(folder, "train", image_size)
    steps = [v2.Resize(eval_resize(image_size)), v2.CenterCrop(image_size)]
    reference = v2.Compose([v2.PILToTensor(), *steps])
    on_pil = v2.Compose([*steps, v2.PILToTensor()])
    assert eval_resize(224) == 256 and eval_resize(160) == 183
    for i, path in enumerate(files(dataset)):
        image, _ = dataset[i]
        assert image.dtype == torch.uint8 and image.shape == (3, image_size, image_size)
        assert torch.equal(image, reference(decoded(path))), path.name
        close_to_pil(image, on_pil(decoded(path)))
    batch, labels = dataset.__getitems__([3, 0])  # the batched fetch: the same items, stacked
    assert torch.equal(batch, torch.stack([dataset[3][0], dataset[0][0]]))
    assert labels.tolist() == [dataset[3][1], dataset[0][1]]
    # not a resize of the short side to the crop size, as before: the centre crop sees less
    first = decoded(files(dataset)[0])
    tight = TF.pil_to_tensor(TF.center_crop(TF.resize(first, [image_size]), [image_size, image_size]))
    assert (dataset[0][0].float() - tight.float()).abs().mean() > 5


def test_crop_sampling_is_torchvisions_for_the_same_generator_state():
    """ptl's crop boxes equal ``v2.RandomResizedCrop.make_params`` after the same seed, fallbacks too."""
    fallbacks = 0
    for scale, ratio in [
        ((0.08, 1.0), (3 / 4, 4 / 3)),
        ((0.9, 1.0), (3 / 4, 4 / 3)),
        ((0.3, 0.6), (0.5, 2.0)),
    ]:
        reference = v2.RandomResizedCrop(224, scale=scale, ratio=ratio)
        for width, height in SIZES:
            canvas = torch.zeros(3, height, width, dtype=torch.uint8)
            for seed in range(25):
                with torch.random.fork_rng():
                    torch.manual_seed(seed)
                    expected = reference.make_params([canvas])
                box = crop_box(height, width, scale, ratio, torch.Generator().manual_seed(seed))
                assert box == (expected["top"], expected["left"], expected["height"], expected["width"])
                shape = box[3] / box[2]
                fallbacks += not (ratio[0] - 0.02 <= shape <= ratio[1] + 0.02) or box[2:] == (height, width)
    assert fallbacks > 0  # the 10-try fallback was exercised, and matched


def test_training_crops_equal_torchvision_random_resized_crop(folder):
    """Item ``(epoch, i)`` is v2.RandomResizedCrop(224) of the full decoded JPEG, drawn from the
    generator state ptl seeds for that image and epoch; 0 grey levels apart."""
    dataset = build(folder)
    crops = dataset.random_crops(seed=3)
    reference = v2.Compose([v2.PILToTensor(), v2.RandomResizedCrop(224, antialias=True)])
    on_pil = v2.Compose([v2.RandomResizedCrop(224, antialias=True), v2.PILToTensor()])
    for epoch in (0, 1):
        for i, path in enumerate(files(dataset)):
            image, label = crops[(epoch, i)]
            assert image.shape == (3, 224, 224) and label == int(dataset.targets[i])
            expected = {}
            for name, pipeline in (("tensor", reference), ("pil", on_pil)):
                with torch.random.fork_rng():
                    torch.manual_seed(sample_seed(3, epoch, i))
                    expected[name] = pipeline(decoded(path))
            assert torch.equal(image, expected["tensor"]), (epoch, path.name)
            close_to_pil(image, expected["pil"])
            top, left, h, w = crops.box(epoch, i)
            at_box = TF.resized_crop(
                TF.pil_to_tensor(decoded(path)), top, left, h, w, [224, 224], antialias=True
            )
            assert torch.equal(image, at_box)
    keys = [(1, 5), (0, 2)]
    batch, labels = crops.__getitems__(keys)
    assert torch.equal(batch, torch.stack([crops[k][0] for k in keys]))
    assert labels.tolist() == [crops[k][1] for k in keys]


def test_jpeg_decoding_gives_pils_pixels(folder, tmp_path):
    """``decode_file`` (``torchvision.io.decode_jpeg`` on the bytes) equals
    ``Image.open(path).convert("RGB")`` bit for bit: the photos, a greyscale JPEG, a CMYK JPEG
    and a PNG (the last two through PIL)."""
    paths = sorted(folder.rglob("*.jpg"))
    first = decoded(paths[0])
    first.convert("L").save(tmp_path / "grey.jpg", quality=90)
    first.convert("CMYK").save(tmp_path / "cmyk.jpg", quality=90)
    first.save(tmp_path / "lossless.png")
    extra = [tmp_path / name for name in ("grey.jpg", "cmyk.jpg", "lossless.png")]
    for path in paths + extra:
        image = decode_file(path)
        assert image.dtype == torch.uint8 and image.shape[0] == 3
        assert torch.equal(image, TF.pil_to_tensor(decoded(path))), path.name
    assert not torch.equal(decode_file(paths[0]), decode_file(paths[1]))


def test_crops_are_seeded_and_differ_across_epochs_and_seeds(folder):
    dataset = build(folder, image_size=64)
    a, again, other = (
        dataset.random_crops(0),
        build(folder, image_size=64).random_crops(0),
        dataset.random_crops(1),
    )
    keys = [(0, i) for i in range(len(dataset))]
    boxes = [a.box(*k) for k in keys]
    assert boxes == [again.box(*k) for k in keys]
    assert all(torch.equal(a[k][0], again[k][0]) for k in keys[:4])  # same seed: same pixels
    assert sum(b != a.box(1, k[1]) for b, k in zip(boxes, keys, strict=True)) >= len(keys) - 1
    assert sum(b != other.box(*k) for b, k in zip(boxes, keys, strict=True)) >= len(keys) - 1
    assert not torch.equal(a[(0, 0)][0], a[(1, 0)][0])
    with pytest.raises(TypeError, match=r"\(epoch, index\)"):
        a[0]


def test_ranks_workers_and_resume_see_the_same_crops(folder):
    """Two ranks' shares, a loader with two worker processes and a mid-epoch resume all give the
    crops one process gives: a crop depends only on (seed, epoch, image)."""
    crops = build(folder, image_size=48).random_crops(seed=5)

    def batches(sampler, workers=0):
        loader = torch.utils.data.DataLoader(
            crops, batch_size=4, sampler=sampler, num_workers=workers, collate_fn=collate
        )
        return list(loader)

    single = ResumableSampler(len(crops), seed=5, keyed=True)
    single.set_epoch(2)
    one = torch.cat([x for x, _ in batches(single)])
    order = [i for _, i in single]
    by_index = dict(zip(order, one, strict=True))

    for rank in range(2):
        share = ResumableSampler(len(crops), seed=5, rank=rank, world_size=2, keyed=True)
        share.set_epoch(2)
        images = torch.cat([x for x, _ in batches(share, workers=2 if rank else 0)])
        assert all(torch.equal(image, by_index[i]) for image, (_, i) in zip(images, share, strict=True))

    resumed = ResumableSampler(len(crops), seed=5, keyed=True)
    resumed.set_epoch(2, start=8)
    assert torch.equal(torch.cat([x for x, _ in batches(resumed)]), one[8:])


def test_prune_run_on_a_jpeg_folder_crops_in_the_loader_and_resumes_exactly(cli, show, folder, tmp_path):
    """``ptl prune --dataset imagefolder`` end to end on the JPEGs: random-resized crops in two
    loader workers; stopped mid-run and resumed without workers, it ends bit-identical."""
    args = [
        "prune", "--dataset", "imagefolder", "--model", "conv2", "--width", "0.25", "--epochs", "2",
        "--batch-size", "4", "--device", "cpu", "--quiet",
        "--set", f"data.params.path={folder}", "--set", "data.params.image_size=32",
        "--set", "data.val_fraction=0.25", "--set", "augment.crop=random-resized", "--set", "augment.pad=0",
        "--set", "train.checkpoint_every=2", "--set", "train.log_every=1",
    ]  # fmt: skip
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    code, _, err = cli(*args, "--set", "compute.workers=2", "--out", whole)
    assert code == 0, err
    metrics = show(whole)["metrics"]
    assert metrics["steps"] == 6 and 0.0 <= metrics["test_acc"] <= 1.0  # 10 train images: 3 steps/epoch
    code, _, _ = cli(*args, "--set", "train.stop_after_steps=4", "--out", stopped)
    assert code == 130
    code, _, err = cli("resume", stopped, "--quiet")
    assert code == 0, err
    a = torch.load(whole / "final.pt", weights_only=True)["model"]
    b = torch.load(stopped / "final.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert show(stopped)["metrics"]["test_acc"] == metrics["test_acc"]


def test_prune_crops_photos_once_in_the_loader_and_small_images_on_the_device(folder):
    """Photos get the random-resized crop in the loader and only the flip on the device;
    in-memory small images (the pack) keep the device crop."""
    from ptl_cli.data.photo import RandomCrops
    from ptl_prune import data as prune_data
    from ptl_prune.recipe import AugmentSection

    section = AugmentSection(pad=4, crop="random-resized", flip=False)
    photos = build(folder, image_size=32)
    cropped = prune_data.crop_in_loader(photos, section, seed=0)
    assert isinstance(cropped, RandomCrops) and cropped.pad == 4 and cropped.scale == (0.08, 1.0)
    pack = plugins.get("datasets", "fashion-pack").build(None, "train", False)
    assert prune_data.crop_in_loader(pack, section, seed=0) is pack
    assert prune_data.crop_in_loader(photos, AugmentSection(crop="random"), seed=0) is photos

    images = torch.stack([cropped[(0, i)][0] for i in range(4)])
    info = photos.info
    as_is = prune_data.eval_views(images, info)
    assert torch.equal(prune_data.train_views(images, section, info, cropped=True), as_is)
    assert not torch.equal(prune_data.train_views(images, section, info), as_is)  # cropped again


def test_bench_photo_times_both_loaders_on_the_same_folder(cli, folder):
    """``ptl bench photo`` reads the folder with ptl's loader and torchvision's ImageFolder + PIL
    loader, training and evaluation views, and reports their speed ratios; a missing folder is a
    one-line error."""
    import json

    code, out, err = cli(
        "bench", "photo", "--data-dir", str(folder), "--reps", "1", "--batch-size", "4", "--json"
    )
    assert code == 0, err
    (report,) = json.loads(out)
    rows = {row["what"]: row for row in report["rows"]}
    assert set(rows) == {f"{w} {v} (folder)" for w in ("ptl", "torchvision") for v in ("train", "eval")}
    assert {row["images_per_step"] for row in rows.values()} == {len(list(folder.rglob("*.jpg")))}
    assert {"train_ptl_vs_torchvision_speed", "eval_ptl_vs_torchvision_speed"} <= set(report["ratios"])
    code, _, err = cli("bench", "photo", "--data-dir", str(folder / "missing"))
    assert code == 2 and "--data-dir" in err and "Traceback" not in err
