"""Plugin discovery and isolation, with real installed (throwaway) plugin distributions."""

from __future__ import annotations

import json

import pytest

from ptl_cli import plugins
from ptl_cli.errors import UserError
from ptl_cli.testing import install_plugin, run_ptl

GOOD = """
from pydantic import BaseModel, ConfigDict
from ptl_cli import hookimpl


class TinyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hidden: int = 7


def tiny_mlp(num_classes, in_channels=3, image_size=32, width=1.0, hidden=7):
    from torch import nn
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size * image_size, hidden),
                         nn.ReLU(), nn.Linear(hidden, num_classes))


@hookimpl
def ptl_register_models(register):
    register("tiny-mlp", tiny_mlp, description="a two-layer MLP from a third-party plugin", params=TinyParams)
"""


def test_installed_plugin_is_listed_and_usable(plugin_site):
    install_plugin(plugin_site, "ptl-tiny", "ptl_tiny", GOOD, version="0.4.2")
    listed = {p["name"]: p for p in json.loads(run_ptl("plugins", "--json").stdout)}
    assert listed["ptl-tiny"]["version"] == "0.4.2"
    assert listed["ptl-tiny"]["status"] == "ok"
    assert listed["ptl-tiny"]["hooks"] == ["ptl_register_models"]
    assert listed["ptl-tiny"]["builtin"] is False
    models = {m["name"]: m for m in json.loads(run_ptl("list", "models", "--json").stdout)}
    assert models["tiny-mlp"]["plugin"] == "ptl-tiny"
    assert models["tiny-mlp"]["params"][0]["name"] == "hidden"

    import torch

    net = plugins.get("models", "tiny-mlp").build(3, 1, 8, params={"hidden": 5})
    assert net(torch.zeros(2, 1, 8, 8)).shape == (2, 3)
    with pytest.raises(UserError, match="unknown key `hiden`.*did you mean 'hidden'"):
        plugins.get("models", "tiny-mlp").build(3, 1, 8, params={"hiden": 5})


def test_broken_plugin_is_isolated(plugin_site):
    install_plugin(plugin_site, "ptl-broken", "ptl_broken", "raise RuntimeError('boom at import')\n")
    out = run_ptl("plugins", "--json")
    assert out.returncode == 0
    broken = {p["name"]: p for p in json.loads(out.stdout)}["ptl-broken"]
    assert broken["status"] == "error" and "boom at import" in broken["error"]
    # every other command keeps working
    out = run_ptl("list", "models", "--json")
    assert out.returncode == 0 and "conv6" in out.stdout
    human = run_ptl("plugins")
    assert "ptl-broken" in human.stdout and "boom at import" in human.stdout


def test_strict_mode_makes_failures_fatal(plugin_site):
    install_plugin(plugin_site, "ptl-broken", "ptl_broken", "import does_not_exist_anywhere\n")
    out = run_ptl("list", "models", env={"PTL_STRICT_PLUGINS": "1"})
    assert out.returncode == 2
    assert "ptl-broken" in out.stderr and "Traceback" not in out.stderr


def test_disable_plugins_by_name(plugin_site):
    install_plugin(plugin_site, "ptl-tiny", "ptl_tiny", GOOD)
    out = run_ptl("plugins", "--json", env={"PTL_DISABLE_PLUGINS": "ptl-tiny,ssl"})
    status = {p["name"]: p["status"] for p in json.loads(out.stdout)}
    assert status["ptl-tiny"] == "disabled" and status["ssl"] == "disabled"
    out = run_ptl("list", "models", "--json", env={"PTL_DISABLE_PLUGINS": "ptl-tiny"})
    assert "tiny-mlp" not in out.stdout


def test_unknown_hook_is_rejected(plugin_site):
    source = "from ptl_cli import hookimpl\n\n@hookimpl\ndef ptl_register_modles(register):\n    pass\n"
    install_plugin(plugin_site, "ptl-typo", "ptl_typo", source)
    info = plugins.manager().plugins["ptl-typo"]
    assert info.status == "error"
    assert "ptl_register_modles" in info.error and "ptl_register_models" in info.error


def test_invalid_schema_names_the_plugin(plugin_site):
    source = (
        "from ptl_cli import hookimpl\n\n@hookimpl\ndef ptl_register_pruners(register):\n"
        "    register('weird', 'x:y', params=dict)\n"
    )
    install_plugin(plugin_site, "ptl-weird", "ptl_weird", source)
    registry = plugins.manager().registry("pruners")
    assert "weird" not in registry.names()
    info = plugins.manager().plugins["ptl-weird"]
    assert info.status == "error" and "ptl-weird" in info.error and "BaseModel" in info.error


def test_name_clash_with_builtin_is_reported(plugin_site):
    source = GOOD.replace('"tiny-mlp"', '"conv6"')
    install_plugin(plugin_site, "ptl-clash", "ptl_clash", source)
    registry = plugins.manager().registry("models")
    assert registry.get("conv6").plugin == "ptl-clash"  # an installed plugin overrides a built-in
    assert registry.get("models/conv6").plugin == "models"  # the built-in stays reachable
    (conflict,) = registry.conflicts
    assert "ptl-clash" in conflict.message() and "models/conv6" in conflict.message()
    out = run_ptl("list", "models")
    assert "models/conv6" in out.stdout.replace("\n", " ") or "models/conv6" in out.stdout


def test_unknown_name_suggests(plugin_site):
    with pytest.raises(UserError, match="did you mean .*'conv6'"):
        plugins.get("models", "conv7")
