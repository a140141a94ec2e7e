"""Fixtures of the core tests: the throwaway `demo` workflow plugin (`cli` and `show`: tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ptl_cli.testing import install_plugin

DEMO_SOURCE = Path(__file__).with_name("demo_workflow.py")


@pytest.fixture
def demo_site(plugin_site: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The ``demo`` workflow plugin installed (entry point and all) with its default recipe."""
    install_plugin(plugin_site, "ptl-demo", "ptl_demo", DEMO_SOURCE.read_text(), version="0.0.1")
    recipes = plugin_site / "recipes"
    recipes.mkdir()
    (recipes / "demo-default.toml").write_text('kind = "demo"\ndescription = "the demo workflow"\nseed = 5\n')
    monkeypatch.setenv("PTL_RECIPE_PATH", str(recipes))
    return plugin_site
