"""``check_pruner`` catches lost state in general (not only state that changed the weights by the
end of a short run), runs ``before_forward`` as ``ptl prune`` does, and the testing helpers take
paths as str or Path."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ptl_cli.testing import ContractError, check_plugin_loads, check_pruner, install_plugin, object_state


class FrozenMagnitude:
    """Prunes the smallest half of the first layer once, at step ``every``; trains all weights."""

    def __init__(self, every: int = 100) -> None:
        self.every, self.calls = every, 0

    def prepare(self, model: nn.Module, seed: int) -> nn.Module:
        return model

    def trainable_parameters(self, model: nn.Module):
        return list(model.parameters())

    def after_step(self, model: nn.Module, step: int) -> None:
        self.calls += 1  # counts its own calls: after a resume this restarts from 0
        if self.calls == self.every:
            with torch.no_grad():
                w = model[0].weight
                w[w.abs() < w.abs().median()] = 0.0

    def sparsity(self, model: nn.Module) -> float:
        return 0.0

    def export_dense(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return model.state_dict()

    def state_dict(self) -> dict:
        return {}  # the bug: `calls` decides when it prunes, and is lost on resume

    def load_state_dict(self, state: dict) -> None:
        pass


class Checkpointed(FrozenMagnitude):
    def state_dict(self) -> dict:
        return {"calls": self.calls}

    def load_state_dict(self, state: dict) -> None:
        self.calls = state["calls"]


def test_a_counter_lost_on_resume_fails_even_before_it_changes_the_weights():
    # in 4 steps the counter never reaches 100: the weights agree, only the state tells
    with pytest.raises(ContractError, match=r"pruner after resume at step 2\['calls'\] differs: 4 vs 2"):
        check_pruner(FrozenMagnitude)
    check_pruner(Checkpointed)  # the same pruner with its state checkpointed passes


def test_the_counter_matters_when_it_is_reached():
    # with every = 3 the resumed run prunes at step 5 instead of 3: the model differs too
    with pytest.raises(ContractError, match="after resume at step 2"):
        check_pruner(lambda: FrozenMagnitude(every=3))
    check_pruner(lambda: Checkpointed(every=3))


class RandomMask(Checkpointed):
    """Zeroes a random quarter of the first layer's weights after every step."""

    def __init__(self, global_rng: bool) -> None:
        super().__init__()
        self.global_rng, self.seed = global_rng, 0

    def prepare(self, model: nn.Module, seed: int) -> nn.Module:
        self.seed = seed
        return model

    def after_step(self, model: nn.Module, step: int) -> None:
        # the bug: torch's global RNG, whose state depends on whatever else the run draws
        own = None if self.global_rng else torch.Generator().manual_seed(self.seed * 100003 + step)
        w = model[0].weight
        with torch.no_grad():
            w[torch.rand(w.shape, generator=own) < 0.25] = 0.0


def test_masks_drawn_from_the_global_rng_fail_and_seeded_ones_pass():
    # the resume check alone cannot tell: a checkpoint restores the global RNG as well
    with pytest.raises(ContractError, match="draws from torch's global RNG"):
        check_pruner(lambda: RandomMask(global_rng=True))
    check_pruner(lambda: RandomMask(global_rng=False))


def test_object_state_keeps_tensors_and_plain_data_only():
    class Holder:
        def __init__(self) -> None:
            self.n, self.name, self.t = 3, "x", torch.ones(2)
            self.nested = {"a": [1, torch.zeros(1)], "net": nn.Linear(1, 1)}
            self.net, self.fn = nn.Linear(1, 1), print

    state = object_state(Holder())
    assert set(state) == {"n", "name", "t", "nested"} and set(state["nested"]) == {"a"}


BEFORE_FORWARD = """
import torch
from torch import nn
from ptl_cli import hookimpl


class CountsForwards:
    '''Counts the training forwards it is told about (state that must survive a resume).'''

    def __init__(self):
        self.forwards = 0

    def prepare(self, model, seed):
        return model

    def before_forward(self, model):
        self.forwards += int(model.training)

    def trainable_parameters(self, model):
        return list(model.parameters())

    def after_step(self, model, step):
        pass

    def sparsity(self, model):
        return 0.0

    def export_dense(self, model):
        return model.state_dict()

    def state_dict(self):
        return {"forwards": self.forwards}

    def load_state_dict(self, state):
        self.forwards = state["forwards"]


@hookimpl
def ptl_register_pruners(register):
    register("counts-forwards", CountsForwards, description="counts forwards")
"""


def test_check_pruner_runs_before_forward_and_helpers_take_str(plugin_site):
    site = install_plugin(str(plugin_site), "ptl-counts", "ptl_counts", BEFORE_FORWARD)
    assert site == plugin_site  # a Path back, whatever was passed
    check_plugin_loads("ptl-counts", hooks=["ptl_register_pruners"])
    pruner = check_pruner("counts-forwards")
    assert pruner.forwards == 4  # one per training step (steps=4), as `ptl prune` calls it
