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


COMMANDS = """
from ptl_cli import hookimpl


def hello() -> None:
    "Say hello."
    print("hello from {dist}")


@hookimpl
def ptl_register_commands(app):
    app.command("{name}")(hello)
    {extra}
"""


def commands_plugin(site, dist, name, extra=""):
    module = dist.replace("-", "_")
    install_plugin(site, dist, module, COMMANDS.format(dist=dist, name=name, extra=extra))


def test_a_plugin_cannot_take_over_a_core_command(cli, plugin_site):
    commands_plugin(plugin_site, "ptl-hijack", "list")
    code, out, _ = cli("list", "models", "--json")
    assert code == 0 and "conv6" in out  # still the core's `ptl list`
    info = plugins.manager().plugins["ptl-hijack"]
    assert info.status == "error" and "'list', which is already a core command" in info.error
    code, out, _ = cli("plugins")
    assert code == 0 and "ptl-hijack" in out and "already a core command" in " ".join(out.split())


def test_two_plugins_with_the_same_command(cli, plugin_site):
    commands_plugin(plugin_site, "ptl-aaa", "hello")
    commands_plugin(plugin_site, "ptl-bbb", "hello")
    code, out, _ = cli("hello")
    assert code == 0 and "hello from ptl-aaa" in out  # the first loaded keeps it
    bbb = plugins.manager().plugins["ptl-bbb"]
    assert bbb.status == "error" and "a command of plugin 'ptl-aaa'" in bbb.error


def test_a_plugin_command_exit_status_reaches_the_shell(cli, plugin_site):
    # typer.Exit(3) inside a command is the exit status of `ptl` (click returns it, not raises it).
    extra = (
        "import typer\n\n    def fail() -> None:\n        raise typer.Exit(3)\n\n"
        "    app.command('exit-three')(fail)"
    )
    commands_plugin(plugin_site, "ptl-exits", "hello-exits", extra=extra)
    assert cli("hello-exits")[0] == 0
    assert cli("exit-three")[0] == 3


def test_a_failing_command_hook_leaves_nothing_behind(cli, plugin_site):
    commands_plugin(plugin_site, "ptl-half", "half-done", extra="raise RuntimeError('oops')")
    code, _, err = cli("half-done")
    assert code == 2 and "No such command 'half-done'" in err
    info = plugins.manager().plugins["ptl-half"]
    assert info.status == "error" and "RuntimeError: oops" in info.error
    assert cli("--help")[0] == 0  # everything else keeps working


def test_an_entry_point_name_taken_by_another_package(cli, plugin_site):
    install_plugin(plugin_site, "ptl-impostor", "ptl_impostor", GOOD, entry="models")
    listed = {p["name"]: p for p in json.loads(cli("plugins", "--json")[1])}
    assert listed["models"]["status"] == "ok" and listed["models"]["builtin"]  # the built-in is kept
    impostor = listed["models (ptl-impostor)"]
    assert impostor["status"] == "error" and "rename the entry point" in impostor["error"]
    assert "tiny-mlp" not in cli("list", "models", "--json")[1]


def test_disabling_an_unknown_plugin_is_pointed_out(cli, plugin_site, monkeypatch):
    monkeypatch.setenv("PTL_DISABLE_PLUGINS", "sssl")
    code, out, _ = cli("plugins")
    assert code == 0 and "'sssl', which is not installed; did you mean 'ssl'?" in " ".join(out.split())


def test_strict_mode_fails_on_a_command_clash(plugin_site):
    commands_plugin(plugin_site, "ptl-hijack", "resume")
    out = run_ptl("--help", env={"PTL_STRICT_PLUGINS": "1"})
    assert out.returncode == 2 and "ptl-hijack" in out.stderr and "core command" in out.stderr


def test_between_two_installed_plugins_the_first_name_wins(plugin_site):
    """As docs/plugins/installing.md says: the entry-point name that sorts first keeps the name."""
    install_plugin(plugin_site, "ptl-zeta", "ptl_zeta", GOOD.replace("two-layer", "zeta's"))
    install_plugin(plugin_site, "ptl-alpha", "ptl_alpha", GOOD.replace("two-layer", "alpha's"))
    registry = plugins.manager().registry("models")
    assert registry.get("tiny-mlp").plugin == "ptl-alpha"
    assert registry.get("ptl-zeta/tiny-mlp").description.startswith("a zeta's MLP")
    (conflict,) = registry.conflicts
    assert (conflict.winner, conflict.loser) == ("ptl-alpha", "ptl-zeta")
