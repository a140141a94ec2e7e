"""The bundled quickstart source models: real quality on real Fashion-MNIST images.

Three sets ship: ``fashion-coarse`` (the default: top / trouser / footwear / bag of train half A),
``fashion-clusters`` (those four split into 6 visual clusters each) and ``fashion04`` (classes 0-4,
the far quickstart's source). The default set gets every check; the others their contract and
agreement. Sample counts are small for speed; the model cards report the
same measurements at larger counts.
"""

from __future__ import annotations

import pytest
import torch

from ptl_cli import plugins
from ptl_cli.testing import check_classifier, check_generator
from ptl_generators.quality import accuracy, agreement, mean_probs

FAST_DDIM = {"steps": 10}  # the bundled DDPM's measured step/quality trade-off is in its model card
COARSE = ("top", "trouser", "footwear", "bag")
FINE04 = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat")
CLUSTERS = tuple(f"{c}-{j}" for c in COARSE for j in range(1, 7))
SOFT_PAIR = (0, 3)  # top and bag (the model cards list other pairs too)


@pytest.fixture(scope="module")
def classifier():
    return plugins.get("classifiers", "bundled").build("cpu")


@pytest.fixture(scope="module")
def biggan():
    return plugins.get("generators", "biggan").build("cpu")


@pytest.fixture(scope="module")
def ddpm():
    return plugins.get("generators", "diffusers").build("cpu", params=FAST_DDIM)


def test_bundled_classifier_keeps_the_contract_and_is_accurate_on_the_pack(classifier):
    check_classifier("bundled", channels=1, sizes=(28, 32))
    check_classifier("bundled", channels=3, sizes=(64,))
    assert classifier.class_names == COARSE
    pack = plugins.get("datasets", "fashion-pack").build(None, "test", False, params={"coarse": True})
    acc = accuracy(classifier, pack.images, pack.targets)
    assert acc >= 0.95, f"bundled classifier accuracy {acc:.3f} on the pack's test images, coarse labels"


def test_the_fashion04_classifier_is_the_far_pairs_source():
    clf = plugins.get("classifiers", "bundled").build("cpu", params={"weights": "fashion04"})
    assert clf.class_names == FINE04
    pack = plugins.get("datasets", "fashion-pack").build(None, "test", False)
    keep = pack.targets < 5  # classes 0-4 keep their indices
    acc = accuracy(clf, pack.images[keep], pack.targets[keep])
    assert acc >= 0.9, f"fashion04 classifier accuracy {acc:.3f} on the pack's test images of classes 0-4"


def test_the_cluster_classifier_keeps_each_image_in_its_coarse_class():
    clf = plugins.get("classifiers", "bundled").build("cpu", params={"weights": "fashion-clusters"})
    assert clf.class_names == CLUSTERS
    pack = plugins.get("datasets", "fashion-pack").build(None, "test", False, params={"coarse": True})
    with torch.no_grad():
        clusters = torch.cat(
            [clf(pack.images[i : i + 500].float() / 255).argmax(1) for i in range(0, len(pack), 500)]
        )
    acc = float((clusters // 6 == pack.targets).float().mean())
    assert acc >= 0.95, f"fashion-clusters classifier: coarse accuracy {acc:.3f} on the pack's test images"
    assert torch.bincount(clusters[pack.targets == 0], minlength=24)[:6].min() > 0  # every top cluster used


@pytest.mark.parametrize("name", ["biggan", "diffusers"])
@pytest.mark.parametrize(
    ("weights", "names"),
    [("bundled", COARSE), ("bundled:fashion-clusters", CLUSTERS), ("bundled:fashion04", FINE04)],
)
def test_bundled_generators_keep_the_contract(name, weights, names):
    params = {"weights": weights, **({"steps": 2} if name == "diffusers" else {})}  # contract only
    gen = check_generator(name, params)
    assert (gen.num_classes, gen.channels, gen.image_size) == (len(names), 1, 28)
    assert gen.class_names == names


def test_an_unknown_bundled_name_is_a_one_line_error():
    from ptl_cli.errors import UserError

    with pytest.raises(
        UserError,
        match=r"bundled models are bundled:fashion-coarse, bundled:fashion-clusters, bundled:fashion04$",
    ):
        plugins.get("generators", "biggan").build("cpu", params={"weights": "bundled:fashion09"})


@pytest.mark.parametrize(("name", "per_class"), [("biggan", 40), ("ddpm", 20)])
def test_conditional_samples_are_classified_as_their_class(request, classifier, name, per_class):
    gen = request.getfixturevalue(name)
    mean, rates = agreement(gen, classifier, per_class, seed=1)
    assert mean >= 0.8, f"{name}: agreement {mean:.3f}, per class {[round(r, 2) for r in rates]}"


@pytest.mark.parametrize("weights", ["fashion04", "fashion-clusters"])
def test_the_other_sets_samples_are_classified_as_their_class(weights):
    gen = plugins.get("generators", "biggan").build("cpu", params={"weights": f"bundled:{weights}"})
    clf = plugins.get("classifiers", "bundled").build("cpu", params={"weights": weights})
    mean, rates = agreement(gen, clf, 20, seed=1)
    assert mean >= 0.8, f"{weights} biggan: agreement {mean:.3f}, per class {[round(r, 2) for r in rates]}"


@pytest.mark.parametrize("name", ["biggan", "ddpm"])
def test_soft_conditioning_moves_the_classifier_toward_both_classes(request, classifier, name):
    gen = request.getfixturevalue(name)
    (a, b), n = SOFT_PAIR, 30
    weights = (0.0, 0.25, 0.5, 0.75, 1.0)  # the weight of b in the row (1 - w) e_a + w e_b
    probs = {}
    for w in weights:
        row = [0.0] * gen.num_classes
        row[a], row[b] = 1 - w, w
        probs[w] = mean_probs(gen, classifier, row, n, seed=2)
    pure_a, mix, pure_b = probs[0.0], probs[0.5], probs[1.0]
    assert mix[b] > pure_a[b] + 0.1, (pure_a, mix)  # toward b, seen from pure a
    assert mix[a] > pure_b[a] + 0.1, (pure_b, mix)  # toward a, seen from pure b
    assert mix[a] + mix[b] > 0.5, mix  # and mostly the two mixed classes
    # graded, not a switch: the classifier follows the weight of the mix
    p_a, p_b = [float(probs[w][a]) for w in weights], [float(probs[w][b]) for w in weights]
    assert all(p_b[i + 1] >= p_b[i] - 0.02 for i in range(4)), p_b
    assert all(p_a[i + 1] <= p_a[i] + 0.02 for i in range(4)), p_a
    assert p_a[1] > p_b[1] and p_b[3] > p_a[3], (p_a, p_b)  # the heavier class leads


def test_ids_name_the_weights_and_sampling_settings(biggan, ddpm):
    assert biggan.id.startswith("biggan-") and biggan.id.endswith("-t1")
    assert ddpm.id.startswith("diffusers-") and "-s10-" in ddpm.id and ddpm.id.endswith("-e1")
    other = plugins.get("generators", "biggan").build("cpu", params={"truncation": 0.5})
    assert other.id != biggan.id and other.id.split("-t")[0] == biggan.id.split("-t")[0]


def test_sampling_is_reproducible_with_a_generator(biggan):
    y = torch.tensor([0, 1, 2, 3])
    a = biggan.sample(y, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, biggan.sample(y, generator=torch.Generator().manual_seed(7)))
