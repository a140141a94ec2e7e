"""make_views: the requested views, normalized, independently augmented."""

from __future__ import annotations

import pytest
import torch

from ptl_cli.data.base import normalize
from ptl_ssl.views import crop_padding, make_views, weak_view


def test_views_are_the_requested_names_and_normalized(fashion, fashion01):
    images, _, mean, std = fashion
    views = make_views(
        images, ("weak", "strong", "none"), mean, std, generator=torch.Generator().manual_seed(0)
    )
    assert list(views) == ["weak", "strong", "none"]
    torch.testing.assert_close(views["none"], normalize(fashion01, mean, std))
    for name in ("weak", "strong"):
        assert views[name].shape == images.shape and views[name].dtype == torch.float32
        assert not torch.equal(views[name], views["none"])
    assert not torch.equal(views["weak"], views["strong"])


def test_unknown_view_is_an_error(fashion01):
    with pytest.raises(ValueError, match="known views: none, weak, strong"):
        make_views(fashion01, ["medium"], (0.5,), (0.5,))


def test_weak_padding_scales_with_the_image():
    assert crop_padding(torch.empty(1, 3, 32, 32)) == 4
    assert crop_padding(torch.empty(1, 3, 224, 224)) == 28
    assert crop_padding(torch.empty(1, 1, 28, 28)) == 3


def test_weak_view_commutes_with_normalization(fashion):
    """Why MeanTeacher may draw its weak views from the normalized, unaugmented batch."""
    images, _, mean, std = fashion
    x = images.float() / 255
    after = weak_view(normalize(x, mean, std), torch.Generator().manual_seed(4))
    before = normalize(weak_view(x, torch.Generator().manual_seed(4)), mean, std)
    torch.testing.assert_close(after, before)
