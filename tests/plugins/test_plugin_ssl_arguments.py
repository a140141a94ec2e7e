"""The SSL contract's optional arguments: ``num_labeled``/``num_unlabeled`` for factories and
``unlabeled_index`` for ``loss`` reach only callables that declare them, so plugins written before
them keep working, and the contract checks (``ptl_cli.contracts``) know both kinds."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ptl_cli import contracts
from ptl_cli.errors import UserError
from ptl_cli.testing import ContractError, check_ssl, install_plugin


class OldStyle:
    """An algorithm written against the first contract: no sizes, no indices."""

    labeled_views = ("weak",)
    unlabeled_views = ("weak",)

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes

    def loss(self, model, labeled, targets, unlabeled, step, total_steps):
        return F.cross_entropy(model(labeled["weak"]), targets), {}

    def after_step(self, model, step):
        pass

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


class Indexed(OldStyle):
    """Takes the sizes by name and requires the indices (no default): still a valid loss."""

    def __init__(self, num_classes: int, *, num_unlabeled: int, num_labeled: int) -> None:
        super().__init__(num_classes)
        self.sizes = (num_labeled, num_unlabeled)
        self.seen: list[torch.Tensor] = []

    def loss(self, model, labeled, targets, unlabeled, step, total_steps, unlabeled_index):
        self.seen.append(unlabeled_index.detach())  # kept on its device: no host read in a step
        return super().loss(model, labeled, targets, unlabeled, step, total_steps)

    def state_dict(self):
        return {"seen": [index.cpu() for index in self.seen]}

    def load_state_dict(self, state):
        self.seen = list(state["seen"])


class Catchall(OldStyle):
    def __init__(self, num_classes: int, **kwargs) -> None:
        super().__init__(num_classes)
        self.kwargs = kwargs


SIZES = {"num_labeled": 8, "num_unlabeled": 30}


def test_only_declared_arguments_are_offered():
    assert contracts.optional_arguments("ssl", "factory", OldStyle, SIZES) == {}
    assert contracts.optional_arguments("ssl", "factory", Indexed, SIZES) == SIZES
    assert contracts.optional_arguments("ssl", "factory", Catchall, SIZES) == SIZES
    index = {"unlabeled_index": torch.arange(3)}
    assert contracts.optional_arguments("ssl", "loss", OldStyle(2).loss, index) == {}
    assert contracts.optional_arguments("ssl", "loss", Indexed(2, **SIZES).loss, index) == index
    # names outside the table are never passed, even to **kwargs
    assert contracts.optional_arguments("ssl", "factory", Catchall, {"device": "cpu"}) == {}
    assert contracts.optional_arguments("pruners", "factory", Catchall, SIZES) == {}


def test_the_signature_check_accepts_a_loss_that_requires_the_indices():
    assert contracts.describe_problems(Indexed(2, **SIZES), contracts.SSLAlgorithm) == ""
    assert contracts.describe_problems(OldStyle(2), contracts.SSLAlgorithm) == ""

    class TooMany(OldStyle):
        def loss(self, model, labeled, targets, unlabeled, step, total_steps, extra):
            raise AssertionError

    problems = contracts.describe_problems(TooMany(2), contracts.SSLAlgorithm)
    assert "cannot be called as loss(model, labeled, targets, unlabeled, step, total_steps)" in problems


def test_check_ssl_passes_sizes_and_indices_as_documented():
    check_ssl(OldStyle)
    algo = check_ssl(Indexed)
    assert algo.sizes == (64, 24)
    assert sorted(torch.cat(algo.seen).tolist()) == sorted(list(range(24)) * 2)  # 4 steps of 12: each twice
    assert check_ssl(Catchall).kwargs == {"num_labeled": 64, "num_unlabeled": 24}


def test_a_schema_field_with_a_reserved_name_is_refused(plugin_site):
    source = """
from ptl_cli import hookimpl
from ptl_cli.schema import Params


class Clash(Params):
    num_unlabeled: int = 10


def factory(num_classes, num_unlabeled=10):
    raise AssertionError("never built")


@hookimpl
def ptl_register_ssl_algorithms(register):
    register("clash", factory, params=Clash)
"""
    install_plugin(plugin_site, "ptl-clash", "ptl_clash", source)
    with pytest.raises(ContractError, match="'num_unlabeled', a name ptl passes to the factory itself"):
        check_ssl("clash")
    from ptl_transfer.loops import build_ssl

    with pytest.raises(UserError, match=r"\[ssl\] clash: .*'num_unlabeled'"):
        build_ssl("clash", {}, 5, 8, 24)


def test_build_ssl_gives_flexmatch_the_pool_size():
    from ptl_transfer.loops import build_ssl

    algo = build_ssl("flexmatch", {}, 5, 8, 24)
    assert algo.selected_label.shape == (24,)
    assert build_ssl("fixmatch", {}, 5, 8, 24).threshold == 0.95  # factories without sizes too
