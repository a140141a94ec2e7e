"""The one table of component kinds: every reader agrees with it, nothing imports in a cycle, and
components (workflows included) build through ``ComponentSpec.build``."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ptl_cli import contracts, hookspecs, plugins, scaffold, testing
from ptl_cli.errors import UserError
from ptl_cli.kinds import KINDS
from ptl_cli.registry import KINDS as REGISTRY_KINDS
from ptl_cli.testing import install_plugin


def test_every_kind_names_a_hook_a_protocol_and_a_check_that_exist():
    for name, kind in KINDS.items():
        assert callable(getattr(hookspecs, kind.hook)), name
        assert contracts.PROTOCOLS[name].__name__ == kind.protocol
        assert contracts.FACTORY_CALLS[name] == kind.factory_call
        if kind.check:
            assert testing.CHECKS[name].__name__ == kind.check
    assert set(testing.CHECKS) == {n for n, k in KINDS.items() if k.check}
    assert REGISTRY_KINDS is KINDS
    assert REGISTRY_KINDS["ssl"][:2] == ("ptl_register_ssl_algorithms", "SSL algorithm")  # old tuple shape


def test_the_scaffold_offers_exactly_the_kinds_with_templates():
    offered = {k.scaffold.name: n for n, k in KINDS.items() if k.scaffold}
    assert set(scaffold.KINDS) == set(offered)
    for key, view in scaffold.KINDS.items():
        assert view.registry == offered[key] and view.label == KINDS[offered[key]].label
        assert (scaffold.TEMPLATES / key).is_dir()
        assert f"check_{view.check}" == KINDS[view.registry].check


def test_optional_arguments_come_from_the_table():
    assert contracts.OPTIONAL_ARGUMENTS == {
        ("ssl", "factory"): ("num_labeled", "num_unlabeled"),
        ("ssl", "loss"): ("unlabeled_index", "labeled_index"),
        ("pruners", "configure"): ("epochs",),
    }


@pytest.mark.parametrize(
    ("module", "absent"),
    [
        ("ptl_cli.kinds", "ptl_cli.errors"),  # the table imports nothing of ptl's
        ("ptl_cli.contracts", "ptl_cli.registry"),  # contracts no longer reaches back into the registry
        ("ptl_cli.registry", "torch"),
    ],
)
def test_no_import_cycle(module, absent):
    code = f"import sys, {module}; print({absent!r} in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_spec_build_passes_only_the_optional_arguments_the_factory_accepts():
    """``optional=`` filters what ptl may pass by the kind's table and by the factory's signature."""
    sizes = {"num_labeled": 8, "num_unlabeled": 24}
    flex = plugins.get("ssl", "flexmatch").build(5, optional=sizes)  # FlexMatch's factory takes both
    assert flex.num_unlabeled == 24
    fix = plugins.get("ssl", "fixmatch").build(5, optional=sizes)  # FixMatch takes neither: not passed
    assert not hasattr(fix, "num_unlabeled")
    pruner = plugins.get("pruners", "edge-popup").build(params={"sparsity": 0.5}, optional=sizes)
    assert pruner.rate == 0.5  # pruners have no optional arguments: nothing extra reaches it


WORKFLOW_WITH_ARGUMENT = """
from ptl_cli import hookimpl


class Needy:
    def __init__(self, budget):
        self.budget = budget


@hookimpl
def ptl_register_workflows(register):
    register("needy", Needy)
"""


def test_a_workflow_is_built_like_any_component(plugin_site):
    """``load_workflow`` goes through ``spec.build``: a factory that needs an argument is one line."""
    from ptl_cli.launch import load_workflow

    install_plugin(plugin_site, "ptl-needy", "ptl_needy", WORKFLOW_WITH_ARGUMENT)
    plugins.reset()
    with pytest.raises(
        UserError, match=r"^workflow 'needy' from plugin 'ptl-needy': its factory cannot be called"
    ):
        load_workflow("needy")
    assert type(load_workflow("prune")).__name__ and hasattr(load_workflow("prune"), "plan")
