"""Shared fixtures for the source-model tests: tiny real configurations of the real architectures.

Helpers are fixtures (tests may run with ``--import-mode=importlib``, where a test module cannot
import a sibling module).
"""

from __future__ import annotations

import pytest


def tiny_biggan_config(num_classes: int = 3, out_channels: int = 1):
    """BigGAN-deep code at 16×16: two up-sampling blocks, self-attention, 4×4 bottom."""
    from ptl_generators.biggan import BigGANConfig

    return BigGANConfig(
        output_dim=16,
        z_dim=8,
        class_embed_dim=8,
        channel_width=4,
        num_classes=num_classes,
        layers=[(False, 8, 8), (True, 8, 4), (True, 4, 2)],
        attention_layer_position=2,
        n_stats=11,
        bottom_width=4,
        out_channels=out_channels,
        rgb_conv_channels=out_channels,
    )


@pytest.fixture
def biggan_config():
    """``biggan_config(num_classes=3, out_channels=1)`` -> a tiny :class:`BigGANConfig`."""
    return tiny_biggan_config


@pytest.fixture
def offline_env(tmp_path, monkeypatch):
    """No network allowed and empty caches: HF_HUB_OFFLINE=1; HF_HOME, TORCH_HOME, PTL_CACHE_DIR in tmp."""
    env = {
        "HF_HUB_OFFLINE": "1",
        "PTL_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "TORCH_HOME": str(tmp_path / "torch"),
        "PTL_CACHE_DIR": str(tmp_path / "ptl-cache"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    return env
