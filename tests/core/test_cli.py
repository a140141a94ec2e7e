"""The command line itself: help, version, start-up cost, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

from ptl_cli.testing import run_ptl


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
