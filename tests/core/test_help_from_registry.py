"""Flag help names the registered components (plugins' included), as ``ptl list`` does, and
``ptl list KIND NAME`` describes each parameter."""

from __future__ import annotations

from ptl_cli import plugins
from ptl_cli.testing import install_plugin

THIRD_PARTY_SSL = """
from ptl_cli import hookimpl


@hookimpl
def ptl_register_ssl_algorithms(register):
    register("zz-match", "ptl_zz:ZZ", description="a third-party SSL algorithm")
"""


def test_transfer_help_lists_every_registered_ssl_algorithm_and_points_at_ptl_list(
    cli, plugin_site, monkeypatch
):
    monkeypatch.setenv("COLUMNS", "2000")  # one line per flag
    install_plugin(plugin_site, "ptl-zz", "ptl_zz", THIRD_PARTY_SSL)
    code, out, _ = cli("transfer", "--help")
    assert code == 0
    line = next(x for x in out.splitlines() if "--ssl " in x)
    names = [spec.name for spec in plugins.manager().registry("ssl")]
    assert "zz-match" in names and "flexmatch" in names
    assert all(f"{n}," in line or f"{n} (" in line for n in names), line
    assert "(see `ptl list ssl`)" in line
    code, out, _ = cli("prune", "--help")
    pruners = "edge-popup, gem-miner, iterand, mpt, multicoated, partial-search, sgd, signed-supermask"
    assert f"Pruner: {pruners} (see `ptl list pruners`)" in out
    assert "{choices:" not in out


def test_list_of_one_component_describes_its_parameters(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    code, out, _ = cli("list", "pruners", "iterand")
    assert code == 0 and "iterand: parameters" in out
    assert "r: probability that an eligible pruned weight is re-drawn" in out  # rerand_lambda's Field
    code, out, _ = cli("list", "pruners")
    assert "iterand: parameters" not in out and "`ptl list pruners NAME` describes each parameter" in out


def test_an_unknown_name_lists_each_component_once_and_still_matches_aliases():
    import pytest

    from ptl_cli.errors import UserError

    with pytest.raises(UserError) as far:
        plugins.get("pruners", "random-mask")
    known = "edge-popup, gem-miner, iterand, mpt, multicoated, partial-search, sgd, signed-supermask"
    assert str(far.value) == f"unknown pruner 'random-mask'; known: {known}"  # no alias (edgepopup, biprop)
    with pytest.raises(UserError, match="did you mean 'edgepopup'"):  # an alias is still suggested
        plugins.get("pruners", "edgepopu")
