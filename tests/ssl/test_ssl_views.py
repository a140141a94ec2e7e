"""make_views: the requested views, normalized, independently augmented."""

from __future__ import annotations

import pytest
import torch

from ptl_cli.data.base import normalize
from ptl_cli.data.views import crop_padding, make_views, view_keys, weak_view


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
    """Why MeanTeacher's views could move from its loss (where it drew them from the normalized
    batch) into ``make_views`` (which draws them before normalizing) without changing a bit."""
    images, _, mean, std = fashion
    x = images.float() / 255
    after = weak_view(normalize(x, mean, std), torch.Generator().manual_seed(4))
    before = normalize(weak_view(x, torch.Generator().manual_seed(4)), mean, std)
    assert torch.equal(after, before)


def test_a_repeated_name_is_a_further_independent_draw(fashion):
    """``("weak", "weak")`` gives keys ``weak`` and ``weak:1``: two different draws, in request
    order, equal to drawing ``weak_view`` twice from the same generator."""
    images, _, mean, std = fashion
    assert view_keys(("weak", "strong", "weak", "weak")) == ["weak", "strong", "weak:1", "weak:2"]
    views = make_views(images, ("weak", "weak"), mean, std, generator=torch.Generator().manual_seed(5))
    assert list(views) == ["weak", "weak:1"]
    assert not torch.equal(views["weak"], views["weak:1"])
    gen = torch.Generator().manual_seed(5)
    x = images.float() / 255
    first, second = weak_view(x, gen), weak_view(x, gen)
    assert torch.equal(views["weak"], normalize(first, mean, std))
    assert torch.equal(views["weak:1"], normalize(second, mean, std))


def test_the_plugin_names_re_export_the_core_views():
    """The views moved to the core's data package; ``ptl_ssl.views`` and ``ptl_ssl.randaugment``
    keep older imports working with the very same functions."""
    from ptl_cli.data import randaugment, views
    from ptl_ssl import randaugment as old_randaugment
    from ptl_ssl import views as old_views

    for name in old_views.__all__:
        assert getattr(old_views, name) is getattr(views, name)
    for name in old_randaugment.__all__:
        assert getattr(old_randaugment, name) is getattr(randaugment, name)
