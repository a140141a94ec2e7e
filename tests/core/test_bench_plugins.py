"""``ptl_register_benchmarks``: what a plugin may register, and what marks it failed.

A malformed registration (an option ``ptl bench`` already has, a taken name, a positional
option, a hook that raises) fails that plugin alone, as for components: its benchmarks are
dropped and every other benchmark stays. The benchmark that runs is in
``tests/plugins/test_plugin_hooks.py::test_ptl_register_benchmarks``.
"""

from __future__ import annotations

import pytest

from ptl_cli import bench, plugins
from ptl_cli.testing import ContractError, check_plugin_loads, install_plugin

PLUGIN = """
from ptl_cli import hookimpl


def good(bench, *, rounds: int = 2):
    return None


def {name}(bench, {signature}):
    return None


@hookimpl
def ptl_register_benchmarks(register):
    register("good-one", good)
    {call}
"""

CASES = {
    "core option": ("steps_again", "*, steps: int = 3", 'register("again", steps_again)', "'steps'"),
    "taken name": ("mine", "*, depth: int = 1", 'register("photo", mine)', "'photo' is already registered"),
    "positional": ("sized", "size", 'register("sized", sized)', "keyword-only with a default"),
    "bad name": ("upper", "*, depth: int = 1", 'register("Upper", upper)', "lower case"),
    "raises": (
        "broken",
        "*, depth: int = 1",
        'raise RuntimeError("no GPU here")',
        "RuntimeError: no GPU here",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_malformed_registration_fails_that_plugin_only(plugin_site, case):
    name, signature, call, message = CASES[case]
    install_plugin(
        plugin_site,
        "ptl-bad-bench",
        "ptl_bad_bench",
        PLUGIN.format(name=name, signature=signature, call=call),
    )
    plugins.reset()
    table = bench.benchmarks()
    assert "good-one" not in table  # what the failing hook registered before is dropped too
    assert {"photo", "prune"} <= set(table)
    info = plugins.manager().plugins["ptl-bad-bench"]
    assert info.status == "error" and "ptl_register_benchmarks" in info.error and message in info.error
    plugins.reset()  # the plugin author's own test catches it too
    with pytest.raises(ContractError, match="ptl_register_benchmarks"):
        check_plugin_loads("ptl-bad-bench")


def test_options_come_from_the_keyword_only_parameters(plugin_site):
    source = PLUGIN.format(name="deep", signature="*, depth: int = 1", call='register("deep", deep, "d")')
    install_plugin(plugin_site, "ptl-ok-bench", "ptl_ok_bench", source)
    plugins.reset()
    table = bench.benchmarks()
    assert [p.name for p in table["good-one"].options] == ["rounds"]
    assert [p.name for p in table["deep"].options] == ["depth"] and table["deep"].description == "d"
    assert not table["deep"].default and table["prune"].default
    names = list(bench.command.__signature__.parameters)
    assert names[0] == "what" and {"rounds", "depth", "k_per", "data_dir"} <= set(names)
    assert plugins.manager().plugins["ptl-ok-bench"].status == "ok"
