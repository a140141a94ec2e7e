"""The facts plans check against (ptl_datasets.facts) are what the loaded datasets say."""

from __future__ import annotations

import pytest

from ptl_cli import plugins
from ptl_cli.errors import UserError


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("fashion-pack", {}),
        ("fashion-pack", {"coarse": True}),
        ("fashion-mnist", {}),
        ("fashion-mnist", {"coarse": True}),
        ("fashion-mnist", {"coarse": True, "clusters": 3}),
    ],
)
def test_facts_match_the_loaded_data(name, params):
    spec = plugins.get("datasets", name)
    try:
        data = spec.build(None, "test", False, params=params)
    except UserError as exc:  # Fashion-MNIST is not on every machine; the pack always is
        assert name != "fashion-pack", exc
        pytest.skip(str(exc))
    facts = spec.facts(params)
    info = data.info
    assert (facts.num_classes, facts.channels, facts.image_size) == (
        info.num_classes,
        info.channels,
        info.image_size,
    )
    assert int(data.targets.max()) == facts.num_classes - 1


def test_unknown_counts_stay_unknown():
    """Folders and sets whose classes torchvision derives from the labels are checked on load."""
    for name in ("imagefolder", "imagenet", "cub200", "svhn", "flowers102"):
        assert plugins.get("datasets", name).facts() is None
    assert plugins.get("datasets", "dtd").facts({"image_size": 64}).image_size == 64
