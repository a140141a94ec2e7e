"""The class counts plans check source models against (ptl_generators.facts) are the models'.

The transfer plan compares the generator's and classifier's counts before anything loads; a
wrong entry would refuse a good pair or pass a bad one, so each is checked against the built
bundled models, and what cannot be known without files stays unknown.
"""

from __future__ import annotations

import pytest

from ptl_cli import plugins
from ptl_cli.testing import run_ptl
from ptl_generators import bundled
from ptl_generators.facts import BUNDLED_CLASSES


@pytest.mark.parametrize("name", bundled.NAMES)
def test_the_bundled_counts_are_the_built_models(name):
    assert set(BUNDLED_CLASSES) == set(bundled.NAMES)
    classifier = plugins.get("classifiers", "bundled")
    built = {"classifier": classifier.build("cpu", params={"weights": name}).num_classes}
    known = {"classifier": classifier.facts({"weights": name}).num_classes}
    for generator in ("biggan", "diffusers"):
        spec = plugins.get("generators", generator)
        built[generator] = spec.build("cpu", params={"weights": f"bundled:{name}"}).num_classes
        known[generator] = spec.facts({"weights": f"bundled:{name}"}).num_classes
    assert known == built == dict.fromkeys(built, BUNDLED_CLASSES[name])


def test_what_depends_on_files_stays_unknown(tmp_path):
    diffusers, biggan = plugins.get("generators", "diffusers"), plugins.get("generators", "biggan")
    assert diffusers.facts({"weights": "facebook/DiT-XL-2-256"}) is None
    assert biggan.facts({"weights": str(tmp_path / "mine.safetensors")}) is None
    assert biggan.facts({"weights": "biggan-deep-256"}).num_classes == 1000
    assert plugins.get("classifiers", "torchvision:resnet18").facts({}).num_classes == 1000
    assert plugins.get("classifiers", "checkpoint").facts({"path": str(tmp_path / "c.pt")}) is None


def test_a_plan_refuses_source_models_of_different_class_counts():
    """``--generator diffusers`` on the clusters recipe resets the generator to the 4-class DDPM
    while the classifier has 24 classes: --dry-run says so (it used to fail after scratch)."""
    mixed = run_ptl(
        "transfer", "--recipe", "transfer-quickstart-clusters", "--generator", "diffusers", "--dry-run"
    )
    assert mixed.returncode == 2 and mixed.stderr.count("\n") == 1 and "Traceback" not in mixed.stderr
    assert "generator 'diffusers' has 4 classes but classifier 'bundled' has 24" in mixed.stderr
    paired = run_ptl(
        "transfer", "--recipe", "transfer-quickstart-clusters", "--generator", "diffusers",
        "--set", "source.generator.params.weights=bundled:fashion-clusters", "--dry-run",
    )  # fmt: skip
    assert paired.returncode == 0, paired.stderr
