"""The command line itself: help, version, start-up cost, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ptl_cli.cli import main
from ptl_cli.testing import install_plugin, run_ptl


def test_version_and_help():
    out = run_ptl("--version")
    assert out.returncode == 0 and out.stdout.startswith("ptl ")
    out = run_ptl("--help")
    assert out.returncode == 0
    for command in ("plugins", "list", "recipes", "runs", "resume", "export", "prune", "transfer"):
        assert command in out.stdout


def test_help_and_plugins_do_not_import_torch():
    code = (
        "import sys\n"
        "from ptl_cli.cli import main\n"
        "for args in (['--help'], ['plugins'], ['plugins', '--json']):\n"
        "    try:\n"
        "        main(args)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = [m for m in ('torch', 'torchvision', 'diffusers') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "HEAVY []" in out.stdout, out.stdout[-500:] + out.stderr[-2000:]


def test_unknown_command_is_one_line_exit_2():
    out = run_ptl("prunee")
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "No such command" in out.stderr
    assert "Traceback" not in out.stderr


def test_unknown_component_kind_and_name():
    out = run_ptl("list", "modelz")
    assert out.returncode == 2 and "did you mean 'models'" in out.stderr
    out = run_ptl("list", "models", "--json")
    names = {m["name"] for m in json.loads(out.stdout)}
    assert {"conv6", "resnet18", "wrn28", "torchvision:*"} <= names


def test_list_shows_parameters_with_defaults():
    out = run_ptl("list", "models", "wrn*", "--json")
    (wrn,) = json.loads(out.stdout)
    params = {p["name"]: p["default"] for p in wrn["params"]}
    assert params["bn_momentum"] == 0.001


def test_debug_shows_traceback():
    out = run_ptl("--debug", "list", "modelz")
    assert out.returncode != 0 and "Traceback" in out.stderr


def test_debug_appended_to_the_failed_command_shows_its_traceback():
    """The one-line error says "run again with --debug": appending it works too."""
    for command in (["list", "modelz", "--debug"], ["resume", "no-such-run", "--debug"]):
        out = run_ptl(*command)
        assert out.returncode != 0 and "Traceback" in out.stderr, command
        plain = run_ptl(*command[:-1])
        assert plain.returncode == 2 and "Traceback" not in plain.stderr
    kept = run_ptl("prune", "--dry-run", "--set", "--debug")  # a value, not the flag
    assert kept.returncode == 2 and "Traceback" not in kept.stderr and "--debug" in kept.stderr


def test_help_shows_flags_as_flags(cli):
    """Boolean flags take no value, so help must not print a type after them (Typer 0.29 does)."""
    for args in (["--help"], ["runs", "list", "--help"], ["prune", "--help"]):
        code, out, _ = cli(*args)
        assert code == 0 and "--help" in out
        assert "<bool>" not in out and "BOOLEAN" not in out, args
    _, out, _ = cli("prune", "--help")
    assert "<key.path=value>" in out and "<name|file>" in out  # what a value looks like


def test_list_by_name_alias_and_wildcard(cli):
    code, out, _ = cli("list", "models", "conv6", "--json")
    assert code == 0 and [m["name"] for m in json.loads(out)] == ["conv6"]
    code, out, _ = cli("list", "datasets", "bundled", "--json")  # an alias
    assert code == 0 and [d["name"] for d in json.loads(out)] == ["fashion-pack"]
    code, out, _ = cli("list", "models", "torchvision:resnet50", "--json")  # served by 'torchvision:*'
    assert code == 0 and json.loads(out)[0]["params"][0]["name"] == "weights"
    code, out, _ = cli("list", "models", "conv?", "--json")
    assert code == 0 and [m["name"] for m in json.loads(out)] == ["conv2", "conv4", "conv6", "conv8"]
    code, out, _ = cli("list", "models", "nothing*", "--json")  # a wildcard may match nothing
    assert code == 0 and json.loads(out) == []
    code, _, err = cli("list", "datasets", "cifar11")
    assert code == 2 and "unknown dataset 'cifar11'; did you mean 'cifar10'" in err


def test_runs_list_says_when_there_are_none(cli, tmp_path):
    code, out, _ = cli("runs", "list", "--root", tmp_path / "nothing")
    assert code == 0 and "no runs under" in out
    code, out, _ = cli("runs", "list", "--json", "--root", tmp_path / "nothing")
    assert code == 0 and json.loads(out) == []


def test_an_unreadable_run_does_not_break_runs_list(cli, tmp_path):
    from ptl_cli.runs import Run

    Run.create("demo", "fine", {"kind": "demo"}, out=str(tmp_path / "runs" / "fine"))
    (tmp_path / "runs" / "bad").mkdir(parents=True)
    (tmp_path / "runs" / "bad" / "run.json").write_text("{ not json")
    code, out, err = cli("runs", "list", "--json", "--root", tmp_path / "runs")
    assert code == 0, err
    status = {Path(r["path"]).name: r["status"] for r in json.loads(out)}
    assert status == {"fine": "running", "bad": "broken"}


BOOM = """
from ptl_cli import hookimpl


def boom() -> None:
    "Fail with a bug."
    return 1 / 0


@hookimpl
def ptl_register_commands(app):
    app.command("boom")(boom)
"""


def test_an_unexpected_error_is_one_line_exit_1_unless_debug(cli, plugin_site):
    install_plugin(plugin_site, "ptl-boom", "ptl_boom", BOOM)
    code, _, err = cli("boom")
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert "unexpected ZeroDivisionError: division by zero" in err and "--debug" in err
    with pytest.raises(ZeroDivisionError):
        main(["--debug", "boom"])
