"""Two plugins, one name: a plugin that registers a name a built-in (or another plugin) already
has is reported clearly — which component the bare name means, and how to reach the other — as
docs/plugins/installing.md promises, and ``ptl plugins new`` says so before the author starts."""

from __future__ import annotations

import json

import pytest

from ptl_cli import plugins
from ptl_cli.scaffold import PluginNames, name_taken_note
from ptl_cli.testing import install_plugin, run_ptl

SSL_NAMED = """
from ptl_cli import hookimpl
from ptl_cli.schema import Params


class KnobParams(Params):
    knob: int = 1


def build(num_classes, knob=1):
    raise NotImplementedError  # never built here: only names are looked up


@hookimpl
def ptl_register_ssl_algorithms(register):
    register({name!r}, build, description="a plugin's own {name}", params=KnobParams)
"""


def test_an_installed_plugin_takes_a_builtins_name_and_both_stay_reachable(plugin_site):
    install_plugin(plugin_site, "ptl-myfix", "ptl_myfix", SSL_NAMED.format(name="fixmatch"))
    registry = plugins.manager().registry("ssl")
    assert registry.get("fixmatch").plugin == "ptl-myfix"  # an installed plugin wins
    assert registry.get("ssl/fixmatch").plugin == "ssl"  # the built-in stays reachable
    assert registry.get("ptl-myfix/fixmatch").plugin == "ptl-myfix"

    listed = " ".join(run_ptl("list", "ssl").stdout.split())
    assert (
        "note: SSL algorithm 'fixmatch' is registered by plugins 'ptl-myfix' and 'ssl'; 'fixmatch' means "
        "'ptl-myfix''s, write 'ssl/fixmatch' for the other"
    ) in listed

    # how to choose: the qualified name in a run ...
    plan = run_ptl("transfer", "--ssl", "ssl/fixmatch", "--dry-run", "--json")
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout)["plan"]["SSL"].startswith("ssl/fixmatch (threshold=0.95")
    mine = json.loads(run_ptl("transfer", "--ssl", "fixmatch", "--dry-run", "--json").stdout)
    assert mine["plan"]["SSL"].startswith("fixmatch (knob=1)")
    # ... or disabling the plugin, which gives the built-in its name back
    disabled = run_ptl("list", "ssl", "--json", env={"PTL_DISABLE_PLUGINS": "ptl-myfix"})
    assert {c["name"]: c["plugin"] for c in json.loads(disabled.stdout)}["fixmatch"] == "ssl"


def test_between_installed_plugins_the_entry_point_name_sorting_first_wins(plugin_site):
    for dist in ("ptl-aaa", "ptl-zzz"):
        install_plugin(plugin_site, dist, dist.replace("-", "_"), SSL_NAMED.format(name="twin"))
    registry = plugins.manager().registry("ssl")
    assert registry.get("twin").plugin == "ptl-aaa"
    assert registry.get("ptl-zzz/twin").plugin == "ptl-zzz"


def test_scaffold_note_for_a_builtins_name():
    note = name_taken_note(PluginNames.from_name("fixmatch"), "ssl")
    assert note == (
        "plugin 'ssl' already registers SSL algorithm 'fixmatch'; once installed, yours takes the name and "
        "theirs stays reachable as 'ssl/fixmatch'"
    )
    assert name_taken_note(PluginNames.from_name("brand-new"), "ssl") is None


@pytest.mark.parametrize(("owner", "wins"), [("ptl-zzz", True), ("ptl-aaa", False)])
def test_scaffold_note_for_another_plugins_name(plugin_site, owner, wins):
    # `ptl plugins new twin` makes the entry point ptl-twin: it sorts after ptl-aaa, before ptl-zzz
    install_plugin(plugin_site, owner, owner.replace("-", "_"), SSL_NAMED.format(name="twin"))
    note = name_taken_note(PluginNames.from_name("twin"), "ssl")
    assert note.startswith(f"plugin {owner!r} already registers SSL algorithm 'twin'")
    if wins:
        assert f"yours takes the name and theirs stays reachable as '{owner}/twin'" in note
    else:
        assert "keeps it" in note and "reachable only as 'ptl-twin/twin'" in note
