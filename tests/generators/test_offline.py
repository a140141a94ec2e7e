"""Hub, published and torchvision weights offline with empty caches: one clear line, never a hang."""

from __future__ import annotations

import pytest

from ptl_cli import plugins
from ptl_cli.errors import UserError
from ptl_cli.testing import run_ptl


@pytest.mark.parametrize(
    ("generator", "weights"),
    [("biggan", "someone/my-biggan"), ("diffusers", "facebook/DiT-XL-2-256")],
)
def test_hub_weights_offline_without_cache_name_what_is_missing(offline_env, generator, weights):
    spec = plugins.get("generators", generator)
    with pytest.raises(UserError) as err:
        spec.build("cpu", params={"weights": weights})
    message = str(err.value)
    assert "\n" not in message
    assert repr(weights) in message and "offline" in message
    assert offline_env["HF_HOME"] in message  # where it looked
    assert "weights=" in message  # how to provide it another way


def test_published_biggan_offline_without_cache_says_where_to_put_which_files(offline_env):
    with pytest.raises(UserError) as err:
        plugins.get("generators", "biggan").build("cpu", params={"weights": "biggan-deep-256"})
    message = str(err.value)
    assert "\n" not in message and "offline" in message
    assert message.startswith("biggan weights 'biggan-deep-256': config.json is not in ")
    assert f"{offline_env['PTL_CACHE_DIR']}/biggan/biggan-deep-256" in message  # where to put them
    assert "biggan-deep-256-pytorch_model.bin" in message  # the published URL
    assert "weights=DIR" in message


def test_torchvision_classifier_offline_without_cache(offline_env):
    spec = plugins.get("classifiers", "torchvision:resnet18")
    with pytest.raises(
        UserError, match=r"resnet18-[0-9a-f]+\.pth is not in the torch hub cache and ptl is offline"
    ):
        spec.build("cpu")
    with pytest.raises(UserError, match="unknown weights 'NOPE'"):
        spec.build("cpu", params={"weights": "NOPE"})


def test_cli_reports_missing_weights_in_one_line(offline_env):
    result = run_ptl(
        "generate",
        "--generator",
        "biggan",
        "-p",
        "weights=biggan-deep-128",
        "--out",
        "x.png",
        env=offline_env,
        timeout=300,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ptl: error: biggan weights 'biggan-deep-128'")
