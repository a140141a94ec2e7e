"""What a built-in source model is, known without loading it: its number of source classes.

The transfer plan (``--dry-run``, and every new run before its scratch stage trains) compares the
generator's and the classifier's, so a pair that cannot share a label space (``--generator
diffusers`` on the clusters recipe: a 4-class DDPM with a 24-class classifier) fails at once
instead of after a stage has trained. Known for the bundled sets, torchvision's ImageNet
classifiers and the published BigGAN-deep checkpoints; files, directories and other hub ids are
checked when they load (``ptl_transfer.sources``). Registered as ``facts="ptl_generators.facts:of"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ptl_generators import bundled

#: Source classes of each bundled set (tests/generators/test_source_facts.py loads the files).
BUNDLED_CLASSES = {"fashion-coarse": 4, "fashion-clusters": 24, "fashion04": 5}
IMAGENET_CLASSES = 1000
BIGGAN_DEEP = ("biggan-deep-128", "biggan-deep-256", "biggan-deep-512")


@dataclass(frozen=True)
class SourceFacts:
    num_classes: int


def of(name: str, params: dict[str, Any]) -> SourceFacts | None:
    """The facts of built-in generator or classifier ``name`` with validated ``params``, or None."""
    weights = str(params.get("weights", ""))
    if name == "bundled":  # the classifier: its weights name the set
        return SourceFacts(BUNDLED_CLASSES[weights])
    if name.startswith("torchvision:"):
        return SourceFacts(IMAGENET_CLASSES)  # every classification weight torchvision ships
    if name in ("biggan", "diffusers") and bundled.is_bundled(weights):
        return SourceFacts(BUNDLED_CLASSES[bundled.name_of(weights)])
    if name == "biggan" and weights in BIGGAN_DEEP:
        return SourceFacts(IMAGENET_CLASSES)
    return None
