"""Optional plugin members cannot fail silently: ptl finds them by name or by signature, so a
misspelt one would simply never be called. Building a component (the CLI's path) and the
``check_*`` helpers both refuse, in one line, a near miss of an optional member or argument and
a known optional method ptl cannot call."""

from __future__ import annotations

import pytest

from ptl_cli.contracts import ensure_satisfies
from ptl_cli.errors import UserError
from ptl_cli.testing import ContractError, check_ssl
from ptl_ssl.fixmatch import FixMatch
from ptl_ssl.flexmatch import FlexMatch


class MisspeltIndex(FixMatch):
    """Means to receive the unlabeled indices, but ptl passes ``unlabeled_index``."""

    def loss(self, model, labeled, targets, unlabeled, step, total_steps, unlabelled_index=None):
        return super().loss(model, labeled, targets, unlabeled, step, total_steps)


class MisspeltSize(FlexMatch):
    """Its factory means to receive the unlabeled set's size, but ptl passes ``num_unlabeled``."""

    def __init__(self, num_classes: int, num_unlabelled: int = 16) -> None:
        super().__init__(num_classes, num_unlabeled=num_unlabelled)


class KeepAll:
    """A complete pruner that prunes nothing (every member of ``ptl_cli.contracts.Pruner``)."""

    def prepare(self, model, seed):
        return model

    def trainable_parameters(self, model):
        return model.parameters()

    def after_step(self, model, step) -> None:
        """Nothing to re-draw."""

    def sparsity(self, model) -> float:
        return 0.0

    def export_dense(self, model):
        return model.state_dict()

    def state_dict(self):
        return {}

    def load_state_dict(self, state) -> None:
        """Stateless."""


class MisspeltHook(KeepAll):
    """A pruner whose per-forward hook (masks across layers) would never run."""

    def befor_forward(self, model) -> None:
        """Would compute the masks; ptl looks for ``before_forward``."""


class MisspeltSchedule(KeepAll):
    """A pruner with a phase of its own (as Gem-Miner's fine-tuning) whose members are misspelt."""

    def search_epoch(self, epochs: int) -> int:
        """Would shorten the learning-rate schedule; ptl looks for ``search_epochs``."""
        return epochs

    def configure(self, steps_per_epoch: int, epoch: int = 0) -> None:
        """Means to receive the run's epochs, but ptl passes ``epochs``."""


class HookWithoutModel(KeepAll):
    def sparsity_by_layer(self) -> dict[str, float]:  # type: ignore[override]
        return {}


@pytest.mark.parametrize(
    ("component", "message"),
    [
        (MisspeltIndex, "loss's parameter unlabelled_index (did you mean unlabeled_index?"),
        (MisspeltSize, "its factory's parameter num_unlabelled (did you mean num_unlabeled?"),
    ],
)
def test_check_ssl_refuses_a_near_miss_of_an_optional_argument(component, message):
    with pytest.raises(ContractError) as info:
        check_ssl(component)
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("pruner", "message"),
    [
        (MisspeltHook(), "befor_forward (did you mean before_forward? ptl never uses befor_forward)"),
        (HookWithoutModel(), "sparsity_by_layer() cannot be called as sparsity_by_layer(model)"),
        (MisspeltSchedule(), "search_epoch (did you mean search_epochs? ptl never uses search_epoch)"),
        (MisspeltSchedule(), "configure's parameter epoch (did you mean epochs?"),
    ],
)
def test_building_refuses_an_optional_member_ptl_would_never_use(pruner, message):
    with pytest.raises(UserError) as info:
        ensure_satisfies("pruners", pruner, "pruner 'mine' from plugin 'mine'")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_the_built_in_components_have_no_near_misses():
    """The members they do have are the right ones: nothing is flagged."""
    assert ensure_satisfies("pruners", KeepAll(), "keep-all")
    assert ensure_satisfies("ssl", FlexMatch(5, num_unlabeled=4), "flexmatch")


def test_every_registered_pruner_builds_without_a_flagged_member():
    """Gem-Miner's configure(epochs=), search_epochs and epoch_settings are known optional members."""
    from ptl_cli import plugins

    registry = plugins.manager().registry("pruners")
    for name in registry.names():
        assert registry.get(name).build(where=name) is not None
