"""The plugin guide stays true: every hook documented and tested, every protocol member described,
the tutorial's code identical to the example plugin's, and every link resolving."""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ptl_cli import contracts, hookspecs, testing
from ptl_cli.registry import KINDS, Register

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "plugins"
REFERENCE = DOCS / "reference.md"
HOOK_TESTS = Path(__file__).with_name("test_plugin_hooks.py")
EXAMPLE = ROOT / "examples" / "ptl-example"

HOOKSPECS = sorted(name for name in dir(hookspecs) if name.startswith("ptl_register_"))


def sections(path: Path) -> dict[str, str]:
    """``## heading`` -> the text up to the next ``##`` heading (backticks stripped from headings)."""
    parts = re.split(r"^## (.+)$", path.read_text(), flags=re.M)
    return {title.strip().strip("`"): body for title, body in zip(parts[1::2], parts[2::2], strict=True)}


def test_there_are_hookspecs():
    assert len(HOOKSPECS) >= 8 and "ptl_register_pruners" in HOOKSPECS


def test_every_hookspec_has_a_docstring():
    for name in HOOKSPECS:
        doc = getattr(hookspecs, name).__doc__ or ""
        assert len(doc.strip()) > 40, f"{name} has no real docstring"
    for kind, call in contracts.FACTORY_CALLS.items():  # which names the factory call ptl makes
        doc = " ".join(getattr(hookspecs, KINDS[kind][0]).__doc__.split())
        assert f"``{call}" in doc, f"{KINDS[kind][0]}'s docstring does not give {call}"


def test_reference_headings_are_exactly_the_hookspecs():
    documented = {title for title in sections(REFERENCE) if title.startswith("ptl_")}
    assert documented == set(HOOKSPECS)


@pytest.mark.parametrize("kind", sorted(contracts.PROTOCOLS))
def test_reference_describes_each_protocol_member(kind):
    hook = KINDS[kind][0]
    protocol = contracts.PROTOCOLS[kind]
    body = sections(REFERENCE)[hook]
    assert f"ptl_cli.contracts.{protocol.__name__}" in body, f"{hook} does not name its protocol"
    if kind == "models":  # documented as "any nn.Module"
        assert "torch.nn.Module" in body
        return
    members = [m for m in contracts.protocol_members(protocol) if not m.startswith("__")]
    missing = [m for m in members if f"`{m}" not in body]
    assert not missing, f"{hook}: protocol members not described: {missing}"
    for name, is_method in contracts.protocol_members(protocol).items():  # methods with their arguments
        if is_method and not name.startswith("__"):
            function = getattr(protocol, name)
            params = list(inspect.signature(function).parameters.values())[1:]
            args = ", ".join(p.name if p.default is p.empty else f"{p.name}={p.default!r}" for p in params)
            assert f"`{name}({args})" in body, f"{hook}: `{name}({args})` is not documented"


@pytest.mark.parametrize("kind", sorted(testing.CHECKS))
def test_reference_points_to_the_check(kind):
    body = sections(REFERENCE)[KINDS[kind][0]]
    assert f"ptl_cli.testing.{testing.CHECKS[kind].__name__}" in body


def test_every_hookspec_has_a_test_of_a_plugin_implementing_it():
    source = HOOK_TESTS.read_text()
    untested = [name for name in HOOKSPECS if not re.search(rf"^def test_{name}\(", source, re.M)]
    assert not untested, f"no test_<hook> in {HOOK_TESTS.name} for {untested}"
    for name in HOOKSPECS:  # and the test's plugin really implements the hook
        assert re.search(rf"^def {name}\(", source, re.M), f"no plugin in {HOOK_TESTS.name} implements {name}"


def test_testing_helpers_are_documented():
    text = (DOCS / "testing.md").read_text()
    missing = [name for name in testing.__all__ if f"`{name}" not in text]
    assert not missing, f"docs/plugins/testing.md does not describe {missing}"


def tutorial_files() -> dict[str, list[str]]:
    """The tutorial's ``<!-- example: PATH -->`` blocks, grouped by the file they belong to."""
    text = (DOCS / "tutorial.md").read_text()
    files: dict[str, list[str]] = {}
    for path, block in re.findall(r"<!-- example: (\S+) -->\n```\w*\n(.*?)```", text, flags=re.S):
        files.setdefault(path, []).append(block)
    return files


def _code_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_tutorial_blocks_are_the_whole_example_plugin_in_order():
    # pasting each block at the end of the file it names must give the package, every line of it
    files = tutorial_files()
    package = sorted(
        str(p.relative_to(EXAMPLE))
        for pattern in ("pyproject.toml", "src/**/*.py", "tests/**/*.py")
        for p in EXAMPLE.glob(pattern)
    )
    assert sorted(files) == package, "the tutorial does not write every file of examples/ptl-example"
    for path, blocks in files.items():
        written = _code_lines("\n".join(blocks))
        actual = _code_lines((EXAMPLE / path).read_text())
        assert written == actual, f"tutorial blocks for {path} are not the file, in order"


def test_tutorial_blocks_each_parse_on_their_own():
    # a block cut in the middle of a class or statement cannot be pasted (nor formatted by ruff)
    for path, blocks in tutorial_files().items():
        if path.endswith(".py"):
            for block in blocks:
                ast.parse(block, filename=f"tutorial.md ({path})")


@pytest.mark.parametrize("page", sorted(p.name for p in DOCS.glob("*.md")))
def test_python_blocks_are_valid_python(page):
    for block in re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), flags=re.S):
        ast.parse(textwrap.dedent(block), filename=page)


def test_python_blocks_are_ruff_formatted():
    pytest.importorskip("ruff")
    ruff = [sys.executable, "-m", "ruff", "format", "--check", "--no-cache", str(DOCS)]
    done = subprocess.run(ruff, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


def test_reference_gives_each_hooks_arguments():
    for name in HOOKSPECS:
        args = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
        assert f"`{name}({args})`" in sections(REFERENCE)[name], f"{name}: arguments ({args}) not documented"


def test_reference_gives_registers_exact_signature():
    signature = inspect.signature(Register.__call__)
    params = [p.replace(annotation=p.empty) for p in list(signature.parameters.values())[1:]]
    call = f"register{signature.replace(parameters=params, return_annotation=signature.empty)}"
    assert call == "register(name, factory, description='', params=None, aliases=(), **meta)"
    documented = call.replace("''", '""')
    assert f"\n{documented}\n" in sections(REFERENCE)["register"]
    for param in params:  # and each argument has a row in the table
        assert re.search(rf"^\| `\**{param.name}` \|", sections(REFERENCE)["register"], re.M), param.name


@pytest.mark.parametrize("kind", sorted(contracts.FACTORY_CALLS))
def test_reference_gives_each_factory_call(kind):
    body = sections(REFERENCE)[KINDS[kind][0]]
    factory = re.search(r"\*\*Factory\*\*: `([^`]+)`", body)
    assert factory, f"{KINDS[kind][0]}: no **Factory** line"
    assert factory.group(1).startswith(contracts.FACTORY_CALLS[kind]), factory.group(1)


@pytest.mark.parametrize("page", sorted(p.name for p in DOCS.glob("*.md")))
def test_links_resolve(page):
    text = (DOCS / page).read_text()
    for target in re.findall(r"\]\(([^)#\s]+)?(#[^)\s]+)?\)", text):
        path, anchor = target
        if path.startswith(("http://", "https://")):
            continue
        file = (DOCS / page).parent / path if path else DOCS / page
        assert file.exists(), f"{page}: link to {path} is broken"
        if anchor and file.suffix == ".md":
            slugs = {_slug(title) for title in sections(file)}
            assert anchor[1:] in slugs, f"{page}: no heading for {path}{anchor}"


def _slug(title: str) -> str:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
