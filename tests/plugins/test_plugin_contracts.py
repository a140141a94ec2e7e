"""Wrong component shapes are caught: at build time by the core (naming the plugin and the missing
member), and in depth by the ``ptl_cli.testing`` checks, each shown a real broken component.

The broken components are small real classes, passed to the checks as factories; the built-ins
are checked too, so the checks are known to pass on components that keep the contract.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from ptl_cli import plugins
from ptl_cli.data.base import DatasetInfo, TensorImageDataset
from ptl_cli.errors import UserError
from ptl_cli.testing import (
    ContractError,
    check_classifier,
    check_dataset,
    check_generator,
    check_model,
    check_plugin_loads,
    check_pruner,
    check_ssl,
    install_plugin,
    run_ptl,
)

# -- the core's check when a component is built --------------------------------------------------
HALF_PRUNER = """
from ptl_cli import hookimpl


class HalfPruner:
    # forgot sparsity() and export_dense()
    def prepare(self, model, seed):
        return model

    def trainable_parameters(self, model):
        return list(model.parameters())

    def after_step(self, model, step):
        pass

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def tuple_model(num_classes, in_channels=3, image_size=32, width=1.0):
    from torch import nn

    return nn.Linear(in_channels, num_classes), "config"   # a (model, extra) tuple, not a model


@hookimpl
def ptl_register_pruners(register):
    register("half", HalfPruner, description="incomplete pruner")


@hookimpl
def ptl_register_models(register):
    register("tuple-net", tuple_model, description="returns a tuple")
"""


def test_build_names_the_plugin_and_the_missing_members(plugin_site):
    install_plugin(plugin_site, "ptl-half", "ptl_half", HALF_PRUNER)
    with pytest.raises(UserError) as caught:
        plugins.get("pruners", "half").build()
    message = str(caught.value)
    assert "pruner 'half' from plugin 'ptl-half'" in message
    assert "Pruner contract" in message and "export_dense" in message and "sparsity" in message
    assert "prepare" not in message.split("without")[1]  # only what is missing is listed
    with pytest.raises(UserError, match=r"model 'tuple-net' from plugin 'ptl-half'.*tuple without __call__"):
        plugins.get("models", "tuple-net").build(3, 1, 8)


def test_wrong_shape_is_a_one_line_error_from_the_cli(plugin_site):
    install_plugin(plugin_site, "ptl-half", "ptl_half", HALF_PRUNER)
    out = run_ptl(
        "prune", "--method", "half", "--model", "conv2", "--epochs", "1", "--quiet",
        "--set", "data.train_limit=64", "--set", "data.test_limit=64", "--device", "cpu",
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert "from plugin 'ptl-half'" in out.stderr and "export_dense" in out.stderr


def test_checks_accept_factories_and_report_missing_members():
    with pytest.raises(ContractError, match=r"pruner .*Half.* without .*sparsity"):

        class Half:
            def prepare(self, model, seed):
                return model

        check_pruner(Half)


# -- the built-ins keep their contracts ------------------------------------------------------------
def test_builtins_pass_the_checks():
    check_model("conv2", num_classes=4, in_channels=1, image_size=28)
    check_dataset("fashion-pack", split="test")
    check_pruner("iterand", {"sparsity": 0.5, "rerand_freq": 1})  # a re-draw at every step
    check_ssl("fixmatch", {"threshold": 0.2})


# -- pruners ---------------------------------------------------------------------------------------
class RedrawCounter:
    """Re-draws a random weight every step from a private counter it forgets to checkpoint."""

    def __init__(self) -> None:
        self.draws = 0

    def prepare(self, model: nn.Module, seed: int) -> nn.Module:
        return model

    def trainable_parameters(self, model: nn.Module):
        return list(model.parameters())

    def after_step(self, model: nn.Module, step: int) -> None:
        self.draws += 1
        gen = torch.Generator().manual_seed(self.draws)  # should have been (seed, step)
        with torch.no_grad():
            model[0].weight.view(-1)[0] = torch.randn((), generator=gen) * self.draws

    def sparsity(self, model: nn.Module) -> float:
        return 0.0

    def export_dense(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return model.state_dict()

    def state_dict(self) -> dict:
        return {}  # the bug: `draws` is not saved

    def load_state_dict(self, state: dict) -> None:
        pass


def test_pruner_state_missing_from_checkpoints_breaks_resume():
    with pytest.raises(ContractError, match="after resume at step 2"):
        check_pruner(RedrawCounter)


class WrappedExport(RedrawCounter):
    """Keeps its state, but exports the wrapped keys: the unwrapped model cannot load them."""

    def prepare(self, model: nn.Module, seed: int) -> nn.Module:
        model[0] = nn.Sequential(model[0])
        return model

    def after_step(self, model: nn.Module, step: int) -> None:
        pass


def test_pruner_export_must_load_into_the_unwrapped_model():
    with pytest.raises(ContractError, match="export_dense.. does not load into the unwrapped model"):
        check_pruner(WrappedExport)


def test_pruner_sparsity_must_be_a_fraction():
    class Percent(WrappedExport):
        def prepare(self, model, seed):
            return model

        def sparsity(self, model):
            return 50.0

    with pytest.raises(ContractError, match=r"sparsity\(\) must return a Python float in \[0, 1\], got 50.0"):
        check_pruner(Percent)


# -- SSL algorithms ------------------------------------------------------------------------------
class AdaptiveThreshold:
    """Pseudo labels above an EMA of the confidence; ``keep_state`` decides whether it is saved."""

    labeled_views = ("weak",)
    unlabeled_views = ("weak", "strong")
    keep_state = False

    def __init__(self, num_classes: int) -> None:
        self.tau = torch.tensor(1.0 / num_classes)

    def loss(self, model, labeled, targets, unlabeled, step, total_steps):
        x, u, s = labeled["weak"], unlabeled["weak"], unlabeled["strong"]
        logits_x, logits_u, logits_s = model(torch.cat([x, u, s])).split([len(x), len(u), len(s)])
        conf, label = logits_u.detach().softmax(1).max(1)
        self.tau = 0.5 * self.tau + 0.5 * conf.mean()
        mask = (conf >= self.tau).float()
        loss_u = (nn.functional.cross_entropy(logits_s, label, reduction="none") * mask).mean()
        # the threshold also weighs the unlabeled loss, so a lost threshold changes every loss
        return nn.functional.cross_entropy(logits_x, targets) + 10 * self.tau * loss_u, {"tau": self.tau}

    def after_step(self, model, step):
        pass

    def state_dict(self):
        return {"tau": self.tau.clone()} if self.keep_state else {}

    def load_state_dict(self, state):
        if self.keep_state:
            self.tau = state["tau"].clone()


def test_ssl_state_missing_from_checkpoints_breaks_resume():
    with pytest.raises(ContractError, match=r"resumed at step 2 gives losses .*state_dict"):
        check_ssl(AdaptiveThreshold)

    class Fixed(AdaptiveThreshold):
        keep_state = True

    check_ssl(Fixed)  # the same algorithm with its state saved passes


def test_ssl_state_must_load_with_weights_only():
    class NumpyState(AdaptiveThreshold):
        def state_dict(self):
            return {"tau": np.float64(self.tau)}

    with pytest.raises(ContractError, match=r"state_dict\(\) cannot be checkpointed"):
        check_ssl(NumpyState)


def test_ssl_views_must_be_known():
    class Medium(AdaptiveThreshold):
        unlabeled_views = ("weak", "medium")

    with pytest.raises(ContractError, match="unlabeled_views must be a tuple of view names"):
        check_ssl(Medium)


def test_ssl_loss_must_be_a_differentiable_scalar():
    class PerSample(AdaptiveThreshold):
        def loss(self, model, labeled, targets, unlabeled, step, total_steps):
            logits = model(labeled["weak"])
            return nn.functional.cross_entropy(logits, targets, reduction="none"), {}

    with pytest.raises(ContractError, match="0-dim tensor that requires grad"):
        check_ssl(PerSample)


# -- models and datasets --------------------------------------------------------------------------
def test_model_logits_must_have_num_classes_columns():
    def off_by_one(num_classes, in_channels, image_size, width=1.0):
        return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size**2, num_classes + 1))

    with pytest.raises(ContractError, match=r"gave shape \(2, 4\); expected .* \(2, 3\)"):
        check_model(off_by_one)


def _pack(count: int = 20) -> tuple[torch.Tensor, torch.Tensor, DatasetInfo]:
    pack = plugins.get("datasets", "fashion-pack").build(None, "test", False)
    return pack.images[:count], pack.targets[:count], pack.info


def test_dataset_images_must_be_uint8():
    def floats(root=None, split="train", download=False):
        images, targets, info = _pack()
        dataset = TensorImageDataset(images, targets, info)
        dataset.images = images.float() / 255  # what a careless loader returns
        return dataset

    with pytest.raises(ContractError, match=r"item 0 image is torch.float32 .*expected uint8 \(1, 28, 28\)"):
        check_dataset(floats)


def test_dataset_info_must_be_consistent():
    def three_names(root=None, split="train", download=False):
        images, targets, _ = _pack()
        info = DatasetInfo("broken", 10, 1, 28, ("a", "b", "c"), (0.5,), (0.5,))
        return TensorImageDataset(images, targets, info)

    with pytest.raises(ContractError, match="3 class_names for 10 classes"):
        check_dataset(three_names)


# -- generators and classifiers ------------------------------------------------------------------
class Stripes:
    """A toy generator; subclasses break one rule each."""

    num_classes, image_size, channels = 3, 8, 1
    class_names = ("a", "b", "c")
    id = "stripes-v1"

    def __init__(self, device) -> None:
        self.device = device

    def images(self, probs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        base = probs @ torch.linspace(0.2, 0.8, 3)
        return (base.view(-1, 1, 1, 1) + 0.1 * z.view(-1, 1, 1, 1)).clamp(0, 1).expand(-1, 1, 8, 8)

    def sample(self, y, z=None, generator=None):
        probs = nn.functional.one_hot(y, 3).float() if y.ndim == 1 else y
        z = torch.randn(len(probs), generator=generator) if z is None else z
        return self.images(probs, z)


def test_a_valid_toy_generator_passes():
    check_generator(Stripes)


def test_generator_images_must_be_in_unit_range():
    class Signed(Stripes):
        def images(self, probs, z):
            return super().images(probs, z) * 2 - 1

    with pytest.raises(ContractError, match=r"images in \[0, 1\]"):
        check_generator(Signed)


def test_generator_one_hot_rows_must_equal_indices():
    class IgnoresSoft(Stripes):
        def sample(self, y, z=None, generator=None):
            y = y.argmin(1) if y.ndim == 2 else y  # wrong reading of probability rows
            return super().sample(y, z, generator)

    with pytest.raises(ContractError, match="one-hot probability rows must give the same images"):
        check_generator(IgnoresSoft)


def test_generator_must_follow_its_generator_argument():
    class GlobalRNG(Stripes):
        def sample(self, y, z=None, generator=None):
            return super().sample(y, z, None)  # draws from the global RNG instead

    with pytest.raises(ContractError, match="the same generator seed gives different images"):
        check_generator(GlobalRNG)


def test_classifier_must_resize_inputs_itself():
    class FixedSize(nn.Module):
        num_classes, class_names, id = 10, tuple("abcdefghij"), "fixed"

        def __init__(self, device):
            super().__init__()
            self.head = nn.Linear(3 * 28 * 28, 10)

        def forward(self, images):
            return self.head(images.flatten(1))  # only 28×28 works

    with pytest.raises(ContractError, match="calling it on 40×40 images"):
        check_classifier(FixedSize)


# -- a broken installed plugin, checked by name: every message names the plugin --------------------
BROKEN = """
from pydantic import BaseModel
from ptl_cli import hookimpl
from ptl_cli.schema import Params


class RampParams(Params):
    sparsity: float = 0.5
    ramp: int = 3


class Loose(BaseModel):  # not a Params: unknown keys are silently dropped
    sparsity: float = 0.5


class Base:
    def __init__(self, sparsity=0.5, ramp=3):
        self.ramp = ramp

    def prepare(self, model, seed):
        return model

    def trainable_parameters(self, model):
        return list(model.parameters())

    def after_step(self, model, step):
        pass

    def sparsity(self, model):
        return 0.0

    def export_dense(self, model):
        return model.state_dict()

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


class NoSeed(Base):
    def prepare(self, model):  # ptl calls prepare(model, seed)
        return model


class NoRamp(Base):
    def __init__(self, sparsity=0.5):  # the schema has `ramp` too
        pass


class Crashes(Base):
    def after_step(self, model, step):
        if step == self.ramp:
            raise IndexError("layer 7 has no mask")


def no_width(num_classes, in_channels, image_size):  # ptl passes width as well
    from torch import nn

    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size**2, num_classes))


@hookimpl
def ptl_register_pruners(register):
    register("no-seed", NoSeed, params=RampParams)
    register("no-ramp", NoRamp, params=RampParams)
    register("crashes", Crashes, params=RampParams)
    register("loose", Base, params=Loose)


@hookimpl
def ptl_register_models(register):
    register("no-width", no_width)
"""


CANNOT_CALL = r"factory cannot be called as ptl calls it, "
BROKEN_RULES = {
    "no-seed": r"whose prepare\(model\) cannot be called as prepare\(model, seed\)",
    "no-ramp": CANNOT_CALL + r"factory\(\*\*params\) with params sparsity, ramp: "
    r"NoRamp\(sparsity=0.5\): got an unexpected keyword argument 'ramp'",
    "crashes": r"after_step\(model, 3\) raised IndexError: layer 7 has no mask",
    "loose": r"schema Loose lets unknown keys through .* subclass ptl_cli.schema.Params",
    "no-width": CANNOT_CALL + r"factory\(num_classes, in_channels, image_size, width=1.0, \*\*params\) "
    r".*too many positional arguments",
}


@pytest.mark.parametrize("name", sorted(BROKEN_RULES))
def test_checks_name_the_plugin_and_the_broken_rule(plugin_site, name):
    install_plugin(plugin_site, "ptl-broken", "ptl_broken", BROKEN)
    label, check = ("model", check_model) if name == "no-width" else ("pruner", check_pruner)
    with pytest.raises(ContractError, match=BROKEN_RULES[name]) as caught:
        check(name)
    assert str(caught.value).startswith(f"{label} {name!r} from plugin 'ptl-broken':")
    if name == "crashes":  # the plugin's own exception stays attached: pytest shows its line
        assert isinstance(caught.value.__cause__, IndexError)


def test_wrong_method_signature_is_caught_when_ptl_builds_it(plugin_site):
    install_plugin(plugin_site, "ptl-broken", "ptl_broken", BROKEN)
    with pytest.raises(
        UserError,
        match=r"pruner 'no-seed' from plugin 'ptl-broken' does not satisfy the Pruner "
        r"contract: .*prepare\(model\) cannot be called as prepare\(model, seed\)",
    ):
        plugins.get("pruners", "no-seed").build(params={"sparsity": 0.5})


INVALID = {
    "not a pydantic model": ("register('x', 'm:f', params=dict)", "must be a pydantic BaseModel subclass"),
    "a schema instance": ("register('x', 'm:f', params=P())", "must be a pydantic BaseModel subclass"),
    "a bad name": ("register('My Pruner', 'm:f')", "names are lower-case"),
    "a bad factory": ("register('x', 42)", "give a callable or a 'module:attr' string"),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_malformed_registration_fails_naming_the_plugin(plugin_site, case):
    call, message = INVALID[case]
    source = (
        "from ptl_cli import hookimpl\nfrom ptl_cli.schema import Params\n\n\n"
        "class P(Params):\n    k: int = 1\n\n\n"
        f"@hookimpl\ndef ptl_register_pruners(register):\n    {call}\n"
    )
    module = "ptl_malformed_" + case.replace(" ", "_")  # one module per case: imports are cached
    install_plugin(plugin_site, "ptl-malformed", module, source)
    with pytest.raises(
        ContractError,
        match=rf"plugin 'ptl-malformed' did not load: error: plugin 'ptl-malformed' .*{message}",
    ):
        check_plugin_loads("ptl-malformed", ["ptl_register_pruners"])
    if case != "not a pydantic model":
        return  # the command line reports every case alike; once is enough
    listed = run_ptl("list", "pruners")
    assert listed.returncode == 0 and "iterand" in listed.stdout  # the rest of ptl keeps working
    assert "plugin 'ptl-malformed' not loaded" in " ".join(listed.stdout.split())
    strict = run_ptl("list", "pruners", env={"PTL_STRICT_PLUGINS": "1"})
    assert strict.returncode == 2 and "plugin 'ptl-malformed'" in strict.stderr, strict.stderr


def test_ptl_plugins_shows_a_malformed_registration_as_error(plugin_site):
    call, _ = INVALID["not a pydantic model"]
    source = f"from ptl_cli import hookimpl\n\n\n@hookimpl\ndef ptl_register_pruners(register):\n    {call}\n"
    install_plugin(plugin_site, "ptl-malformed", "ptl_malformed", source)
    listed = {p["name"]: p for p in json.loads(run_ptl("plugins", "--json").stdout)}
    assert listed["ptl-malformed"]["status"] == "error"
