"""Every third-party import of the project and its tests is declared in pyproject.toml, and CI
runs README's test command verbatim, in a fresh environment.

A package the machine image happens to have is not a declared dependency: CI once passed only
because the image shipped scipy. These checks read the source, so they fail in any environment.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("ptl_cli", "plugins", "tests")


def _requirement_name(spec: str) -> str:
    return re.split(r"[\s<>=!~\[;(]", spec.strip(), maxsplit=1)[0].lower().replace("_", "-")


def declared_distributions() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        specs.extend(extra)
    return {_requirement_name(s) for s in specs}


def top_level_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def installed_by_tests(path: Path) -> set[str]:
    """Throwaway plugin packages a test writes and installs itself (``install_plugin(site, dist,
    "module", source)``): imported after installation, provided by no distribution."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        func = getattr(node, "func", None)
        name = getattr(func, "id", None) or getattr(func, "attr", None)
        if isinstance(node, ast.Call) and name == "install_plugin" and len(node.args) >= 3:
            module = node.args[2]
            if isinstance(module, ast.Constant) and isinstance(module.value, str):
                names.add(module.value)
    return names


def project_modules() -> set[str]:
    """Top-level names the project itself provides (its packages, the tests' own modules and the
    throwaway plugins the tests install)."""
    own = {"ptl_cli", "tests", "conftest"}
    own.update(p.name for p in (ROOT / "plugins").iterdir() if p.is_dir())
    for path in (ROOT / "tests").rglob("*.py"):
        own.add(path.stem)
        own.update(installed_by_tests(path))
    own.update(p.name for p in (ROOT / "tests").rglob("src/*") if p.is_dir())  # packages tests pip-install
    for path in (ROOT / "examples").rglob("*.py"):
        own.update(part for part in path.relative_to(ROOT / "examples").parts)
    own.update(p.name for p in (ROOT / "examples").rglob("*") if p.is_dir())
    return own


def undeclared_imports() -> dict[str, list[str]]:
    declared = declared_distributions()
    providers = metadata.packages_distributions()
    own, stdlib = project_modules(), set(sys.stdlib_module_names)
    missing: dict[str, list[str]] = {}
    for folder in SCANNED:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for name in top_level_imports(path):
                if name in stdlib or name in own or name.startswith("_"):
                    continue
                dists = {d.lower().replace("_", "-") for d in providers.get(name, [name])}
                if not dists & declared:
                    missing.setdefault(name, []).append(str(path.relative_to(ROOT)))
    return missing


def test_every_import_is_declared():
    missing = undeclared_imports()
    assert not missing, "imports no pyproject.toml requirement provides: " + "; ".join(
        f"{name} ({', '.join(paths[:3])})" for name, paths in sorted(missing.items())
    )


def test_the_check_sees_an_undeclared_import(tmp_path):
    # The scan itself works: an import of a module no requirement provides is reported.
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import scipy.stats\nfrom numpy import zeros\nimport json\n"
        "install_plugin(site, 'ptl-probe', 'ptl_probe', SOURCE)\nimport ptl_probe\n"
    )
    assert top_level_imports(probe) == {"scipy", "numpy", "json", "ptl_probe"}
    assert installed_by_tests(probe) == {"ptl_probe"}
    assert "scipy" not in declared_distributions()
    assert "numpy" in declared_distributions()


def readme_test_command() -> str:
    lines = [line for line in (ROOT / "README.md").read_text().splitlines() if "python -m pytest" in line]
    return lines[0].split("#", 1)[0].strip()


def test_ci_runs_readme_test_command_in_a_fresh_venv():
    script = (ROOT / ".ci" / "run").read_text()
    command = readme_test_command()
    assert command.startswith("pip install") and command.endswith("python -m pytest")
    body = [line.strip() for line in script.splitlines() if not line.lstrip().startswith("#")]
    assert command in body, f"README's test command is not in .ci/run verbatim: {command}"
    venv = next(i for i, line in enumerate(body) if "-m venv" in line)
    activate = next(i for i, line in enumerate(body) if "bin/activate" in line)
    assert venv < activate < body.index(command)
