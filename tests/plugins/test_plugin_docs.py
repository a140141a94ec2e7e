"""The plugin guide stays true: every hook documented and tested, every protocol member described,
the tutorial's code identical to the example plugin's, and every link resolving."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ptl_cli import contracts, hookspecs, testing
from ptl_cli.registry import KINDS

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


def test_tutorial_code_is_the_example_plugins_code():
    text = (DOCS / "tutorial.md").read_text()
    blocks = re.findall(r"<!-- example: (\S+) -->\n```\w*\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 10
    for path, block in blocks:
        source = (EXAMPLE / path).read_text()
        assert block in source, f"tutorial block from {path} no longer matches the file:\n{block}"


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
