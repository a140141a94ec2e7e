"""The pseudo-sample pool and PCS, with the bundled source generator and classifier."""

from __future__ import annotations

import json

import pytest
import torch

from ptl_transfer import pcs
from ptl_transfer.pool import Pool


def _pp_pool(root, generator, count=48, shard=16):
    key = {"generator": generator.id, "seed": 3, "shard_size": shard, "image_size": 28, "channels": 1}
    pool = Pool(root, "pp", key, count, -(-count // shard))

    def make(index):
        return pcs.pp_shard(generator, index, shard, 3, 28, 1, 8, "cpu")

    return pool, make


def test_interrupted_generation_resumes_to_the_identical_pool(tmp_path, generator):
    whole, make = _pp_pool(tmp_path / "a", generator)
    assert whole.build(make)
    parts, make2 = _pp_pool(tmp_path / "b", generator)
    polls = iter([False, True])  # stop before the second shard
    assert not parts.build(make2, should_stop=lambda: next(polls))
    assert parts.missing() == [1, 2]
    assert parts.build(make2)  # continues at the first missing shard
    a, b = whole.open().all(), parts.open().all()
    assert torch.equal(a["images"], b["images"]) and torch.equal(a["labels"], b["labels"])
    manifest = json.loads((parts.path / "manifest.json").read_text())
    assert manifest["key"]["generator"] == generator.id and manifest["count"] == 48


def test_pool_is_keyed_by_seed_and_reused(tmp_path, generator):
    pool, make = _pp_pool(tmp_path, generator)
    pool.build(make)
    again, _ = _pp_pool(tmp_path, generator)
    assert again.path == pool.path and again.missing() == []
    other = Pool(tmp_path, "pp", {**pool.key, "seed": 4}, 48, 3)
    assert other.path != pool.path


def test_pp_samples_are_uint8_in_the_target_format_with_uniform_labels(tmp_path, generator):
    pool, make = _pp_pool(tmp_path, generator, count=100, shard=50)
    pool.build(make)
    data = pool.open().all()
    assert data["images"].dtype == torch.uint8 and data["images"].shape == (100, 1, 28, 28)
    counts = torch.bincount(data["labels"], minlength=generator.num_classes)
    assert counts.min() >= 8  # 20 expected per class


def test_unreadable_shard_is_regenerated_identically(tmp_path, generator):
    pool, make = _pp_pool(tmp_path, generator)
    pool.build(make)
    before = pool.open().all()["images"]
    pool.shard_path(1).write_bytes(b"truncated")
    assert torch.equal(pool.open(make).all()["images"], before)


def test_gather_across_memory_mapped_shards_keeps_order(tmp_path, generator, monkeypatch):
    import ptl_transfer.pool as pool_module

    monkeypatch.setattr(pool_module, "IN_MEMORY_BYTES", 0)  # keep the shards apart
    pool, make = _pp_pool(tmp_path, generator)
    pool.build(make)
    data = pool.open()
    assert len(data.shards) == 3
    index = torch.tensor([40, 3, 17, 3, 47, 16])
    whole = torch.cat([s["images"] for s in data.shards])
    assert torch.equal(data.gather(index)["images"], whole[index])


def test_soft_labels_temperature_and_top_k():
    logits = torch.tensor([[3.0, 1.0, 0.5, -1.0], [0.0, 0.0, 2.0, 1.0]])
    assert torch.allclose(pcs.soft_labels(logits), torch.softmax(logits, 1))
    assert torch.allclose(pcs.soft_labels(logits, temperature=2.0), torch.softmax(logits / 2, 1))
    top2 = pcs.soft_labels(logits, top_k=2)
    assert (top2 > 0).sum(1).tolist() == [2, 2]
    assert torch.allclose(top2.sum(1), torch.ones(2))
    full = torch.softmax(logits, 1)
    assert torch.isclose(top2[0, 0] / top2[0, 1], full[0, 0] / full[0, 1])  # ratios kept


@pytest.fixture(scope="module")
def pcs_pool(tmp_path_factory, generator, classifier, target_images):
    images, _ = target_images
    per_image, per_shard = 10, 16
    root = tmp_path_factory.mktemp("pcs")
    key = {"generator": generator.id, "classifier": classifier.id, "n": len(images)}
    pool = Pool(root, "pcs", key, len(images) * per_image, -(-len(images) // per_shard))

    def make(index):
        first = index * per_shard
        chunk = images[first : first + per_shard]
        return pcs.pcs_shard(generator, classifier, chunk, first, index, per_image, 1.0, 0, 0, 64, "cpu")

    pool.build(make)
    return pool.open().all(), per_image


def test_pcs_soft_labels_are_the_classifier_output_on_the_target_images(pcs_pool, classifier, target_images):
    data, per_image = pcs_pool
    images, _ = target_images
    with torch.no_grad():
        expected = torch.softmax(classifier(images.float() / 255).float(), dim=1)
    assert torch.equal(data["index"], torch.arange(len(images)).repeat_interleave(per_image))
    assert torch.allclose(data["soft"], expected[data["index"]], atol=1e-6)


def test_pcs_samples_are_classified_as_their_soft_labels_top_class(pcs_pool, classifier):
    data, _ = pcs_pool
    logits = pcs.classify(classifier, data["images"], "cpu")
    agreement = (logits.argmax(1) == data["soft"].argmax(1)).float().mean().item()
    chance = 1 / classifier.num_classes
    assert agreement > 3 * chance, agreement  # measured: see docs/transfer.md


def test_pcs_conditioning_follows_the_probability_vector(generator, classifier):
    """Moving the condition from one source class to another moves C_s's verdict with it."""
    k = generator.num_classes
    verdicts = []
    for cls in range(k):
        p = torch.zeros(64, k)
        p[:, cls] = 1.0
        same_noise = torch.Generator().manual_seed(5)  # only the condition differs between classes
        with torch.no_grad():
            verdicts.append(classifier(generator.sample(p, generator=same_noise)).argmax(1))
    hits = [(v == c).float().mean().item() for c, v in enumerate(verdicts)]
    assert sum(hits) / k > 3 / k, hits


def test_pcs_records_the_tempered_top_k_soft_labels_it_conditioned_on(generator, classifier, target_images):
    """With a temperature and top-k the recorded ``soft`` is exactly ``top_k(softmax(C_s(x)/T))``,
    renormalized; each image's M samples share it, and their noise differs."""
    images, _ = target_images
    chunk = images[:6]
    shard = pcs.pcs_shard(generator, classifier, chunk, 12, 0, 4, 0.5, 2, 7, 8, "cpu")
    with torch.no_grad():
        probs = torch.softmax(classifier(chunk.float() / 255).float() / 0.5, dim=1)
    values, top = probs.topk(2, dim=1)
    expected = torch.zeros_like(probs).scatter_(1, top, values / values.sum(1, keepdim=True))
    assert torch.equal(shard["index"], torch.arange(12, 18).repeat_interleave(4))
    assert torch.allclose(shard["soft"], expected.repeat_interleave(4, dim=0), atol=1e-6)
    assert ((shard["soft"] > 0).sum(1) == 2).all() and torch.equal(shard["labels"], shard["soft"].argmax(1))
    same_condition = shard["images"][:4].float()
    assert (same_condition[1:] - same_condition[0]).abs().amax() > 0  # M draws, not M copies


def test_pp_samples_are_resized_and_channel_matched_to_the_target(generator):
    """A 28×28 grey generator feeding a 32×32 RGB target: shards come out in the target's format."""
    shard = pcs.pp_shard(generator, 0, 6, 0, 32, 3, 6, "cpu")
    images = shard["images"]
    assert images.dtype == torch.uint8 and images.shape == (6, 3, 32, 32)
    assert torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 1], images[:, 2])
    assert images.float().std() > 10  # real content, not a blank fill
