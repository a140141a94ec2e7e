"""``ptl plugins new``: names, templates, the command, and the real thing — every kind's package,
``pip install -e``'d into a throwaway virtual environment, passes its own tests there and is
ruff-clean. The current environment is never modified."""

from __future__ import annotations

import re
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from ptl_cli import scaffold
from ptl_cli.errors import UserError
from ptl_cli.scaffold import KINDS, PluginNames, planned_files, render, template_values
from ptl_cli.testing import run_ptl


@pytest.mark.parametrize(
    ("typed", "dist", "package", "component", "class_name"),
    [
        ("magnitude", "ptl-magnitude", "ptl_magnitude", "magnitude", "Magnitude"),
        ("ptl-magnitude", "ptl-magnitude", "ptl_magnitude", "magnitude", "Magnitude"),
        ("soft-match2", "ptl-soft-match2", "ptl_soft_match2", "soft-match2", "SoftMatch2"),
    ],
)
def test_names(typed, dist, package, component, class_name):
    assert PluginNames.from_name(typed) == PluginNames(dist, package, component, class_name)


@pytest.mark.parametrize("bad", ["Magnitude", "my_pruner", "2fast", "a--b", "ptl", "ptl-", "x y"])
def test_bad_names_are_clear_errors(bad):
    with pytest.raises(UserError, match="plugin name"):
        PluginNames.from_name(bad)


def test_unknown_kind_suggests(tmp_path):
    with pytest.raises(UserError, match="did you mean 'pruner'"):
        scaffold.scaffold("x", "pruners", tmp_path)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_template_renders_completely(kind):
    names = PluginNames.from_name("demo-thing")
    values = template_values(names, kind)
    files = planned_files(names, kind)
    expected = {
        "pyproject.toml",
        "README.md",
        "src/ptl_demo_thing/__init__.py",
        "src/ptl_demo_thing/hooks.py",
        "src/ptl_demo_thing/params.py",
        f"src/ptl_demo_thing/{KINDS[kind].module}.py",
        "tests/test_ptl_demo_thing.py",
    }
    assert {str(p) for p in files} == expected
    for template in files.values():
        text = render(template.read_text(), values)
        assert "{{" not in text and "_package_" not in text, template
    hooks = render(files[next(p for p in files if p.name == "hooks.py")].read_text(), values)
    assert "import torch" not in hooks  # registering must stay free


def test_render_refuses_unknown_placeholders():
    with pytest.raises(KeyError, match="nope"):
        render("{{nope}}", {})


def test_command_creates_refuses_to_overwrite_and_warns_on_a_taken_name(tmp_path):
    out = run_ptl("plugins", "new", "fixmatch", "--kind", "ssl", "--dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "ptl-fixmatch" / "src" / "ptl_fixmatch" / "algorithm.py").is_file()
    flat = " ".join(out.stdout.split())
    assert "already registers SSL algorithm 'fixmatch'" in flat and "'ssl/fixmatch'" in flat
    again = run_ptl("plugins", "new", "fixmatch", "--kind", "ssl", "--dir", str(tmp_path))
    assert again.returncode == 2 and "already exists" in again.stderr
    missing = run_ptl("plugins", "new", "x")
    assert missing.returncode == 2 and "--kind" in missing.stderr


def test_plugins_without_subcommand_still_lists():
    out = run_ptl("plugins", "--json")
    assert out.returncode == 0 and '"name": "models"' in out.stdout


def test_every_kind_installs_with_pip_e_and_passes_its_own_tests(tmp_path):
    projects = [scaffold.scaffold(f"scaffolded-{kind}", kind, tmp_path / "src") for kind in sorted(KINDS)]
    for command in (["check"], ["format", "--check"]):
        ruff = [sys.executable, "-m", "ruff", *command, "--no-cache", *map(str, projects)]
        linted = subprocess.run(ruff, capture_output=True, text=True)
        assert linted.returncode == 0, linted.stdout + linted.stderr

    python = throwaway_env(tmp_path / "venv")
    editable = [arg for p in projects for arg in ("-e", str(p))]
    pip = subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index", *editable],
        capture_output=True,
        text=True,
    )
    assert pip.returncode == 0, pip.stderr[-3000:]
    tests = subprocess.run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *(str(p / "tests") for p in projects)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert tests.returncode == 0, tests.stdout[-5000:] + tests.stderr[-2000:]
    passed = re.search(r"(\d+) passed", tests.stdout)
    assert passed and int(passed.group(1)) >= 4 * len(projects)
    # and the environment this test runs in never saw them
    assert "scaffolded" not in run_ptl("plugins", "--json").stdout


def throwaway_env(env_dir: Path) -> str:
    """A virtual environment that installs into its own site-packages but sees this one's packages
    (ptl, torch, pytest, pip, setuptools) — whether this one is a venv itself or not — and returns
    its interpreter. A ``.pth`` line runs ``site.addsitedir`` so the parent's ``.pth`` files (ptl's
    editable install) are processed too."""
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    child_site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    parents = [p for p in site.getsitepackages() if Path(p).is_dir()]
    lines = [f"import site; site.addsitedir({p!r})" for p in parents]
    (Path(child_site) / "parent-environment.pth").write_text("\n".join(lines) + "\n")
    return str(python)
