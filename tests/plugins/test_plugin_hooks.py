"""Every hookspec, implemented by a real installed (throwaway) plugin and used the way ptl uses it.

Each test is named after its hook (``test_<hookspec>``): ``test_plugin_docs.py`` checks that no
hookspec is left without one. Components are small but real, built on the bundled Fashion-MNIST
pack, and checked with the public ``ptl_cli.testing`` helpers a plugin author would use.
"""

from __future__ import annotations

import json

import torch

from ptl_cli import plugins
from ptl_cli.runs import Run
from ptl_cli.testing import (
    check_classifier,
    check_dataset,
    check_generator,
    check_logger,
    check_model,
    check_plugin_loads,
    check_pruner,
    check_ssl,
    install_plugin,
    run_ptl,
)

MODELS = """
from ptl_cli import hookimpl
from ptl_cli.schema import Params


class MLPParams(Params):
    hidden: int = 16


def mlp(num_classes, in_channels=3, image_size=32, width=1.0, hidden=16):
    from torch import nn

    units = max(1, int(hidden * width))
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size**2, units), nn.ReLU(),
                         nn.Linear(units, num_classes))


@hookimpl
def ptl_register_models(register):
    register("hook-mlp", mlp, description="two-layer MLP", params=MLPParams)
"""


def test_ptl_register_models(plugin_site):
    install_plugin(plugin_site, "ptl-hook-models", "ptl_hook_models", MODELS)
    check_plugin_loads("ptl-hook-models", ["ptl_register_models"])
    model = check_model("hook-mlp", {"hidden": 8}, num_classes=4, in_channels=1, image_size=12)
    assert model[1].out_features == 8


DATASETS = """
from ptl_cli import hookimpl
from ptl_cli.schema import Params


class SubsetParams(Params):
    classes: list[int] = [0, 1, 2]


def pack_subset(root=None, split="train", download=False, classes=(0, 1, 2)):
    from ptl_cli import plugins

    pack = plugins.get("datasets", "fashion-pack").build(root, split, download)
    return pack.select_classes(list(classes))


@hookimpl
def ptl_register_datasets(register):
    register("hook-subset", "ptl_hook_datasets:pack_subset", description="pack classes", params=SubsetParams)
"""


def test_ptl_register_datasets(plugin_site):
    install_plugin(plugin_site, "ptl-hook-datasets", "ptl_hook_datasets", DATASETS)
    check_plugin_loads("ptl-hook-datasets", ["ptl_register_datasets"])
    test = check_dataset("hook-subset", {"classes": [7, 2]}, split="test")
    assert test.info.class_names == ("Sneaker", "Pullover")
    assert len(test) == 200 and set(test.targets.tolist()) == {0, 1}  # 100 test images per class


PRUNERS = """
from ptl_cli import hookimpl
from ptl_cli.schema import Params


class MagnitudeParams(Params):
    sparsity: float = 0.5


def build(sparsity=0.5):
    import torch
    from torch import nn
    from torch.nn.utils import parametrize

    class FixedMask(nn.Module):
        def __init__(self, mask):
            super().__init__()
            self.register_buffer("mask", mask)

        def forward(self, w):
            return w * self.mask

    class OneShotMagnitude:
        # keeps the largest-magnitude (1 - sparsity) of each layer's initial weights; trains them

        def prepare(self, model, seed):
            for m in model.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    flat = m.weight.detach().abs().flatten()
                    keep = flat.numel() - int(sparsity * flat.numel() + 0.5)
                    mask = torch.zeros_like(flat)
                    mask[flat.argsort(descending=True, stable=True)[:keep]] = 1
                    parametrize.register_parametrization(m, "weight", FixedMask(mask.view_as(m.weight)))
            return model

        def layers(self, model):
            return [(n, m) for n, m in model.named_modules() if parametrize.is_parametrized(m, "weight")]

        def trainable_parameters(self, model):
            return [p for p in model.parameters() if p.requires_grad]

        def after_step(self, model, step):
            pass

        def sparsity(self, model):
            masks = [m.parametrizations.weight[0].mask for _, m in self.layers(model)]
            return 1 - sum(int(k.sum()) for k in masks) / sum(k.numel() for k in masks)

        def export_dense(self, model):
            state = {k: v for k, v in model.state_dict().items() if "parametrizations" not in k}
            state.update({f"{n}.weight": m.weight.detach() for n, m in self.layers(model)})
            return state

        def state_dict(self):
            return {}

        def load_state_dict(self, state):
            pass

    return OneShotMagnitude()


@hookimpl
def ptl_register_pruners(register):
    register("hook-magnitude", build, description="one-shot magnitude pruning", params=MagnitudeParams)
"""


def test_ptl_register_pruners(plugin_site):
    install_plugin(plugin_site, "ptl-hook-pruners", "ptl_hook_pruners", PRUNERS)
    check_plugin_loads("ptl-hook-pruners", ["ptl_register_pruners"])
    pruner = check_pruner("hook-magnitude", {"sparsity": 0.75})
    assert pruner.prepare  # the built object, for further checks of one's own


SSL = """
from ptl_cli import hookimpl
from ptl_cli.schema import Params


class CountingParams(Params):
    threshold: float = 0.3


class CountingPseudoLabel:
    # pseudo labels above a threshold; counts the accepted ones (state that must be checkpointed)

    labeled_views = ("weak",)
    unlabeled_views = ("weak",)

    def __init__(self, num_classes, threshold=0.3):
        import torch

        self.threshold = threshold
        self.accepted = torch.zeros((), dtype=torch.long)

    def loss(self, model, labeled, targets, unlabeled, step, total_steps):
        import torch
        import torch.nn.functional as F

        x, u = labeled["weak"], unlabeled["weak"]
        logits_x, logits_u = model(torch.cat([x, u])).split([len(x), len(u)])
        conf, label = logits_u.detach().softmax(1).max(1)
        mask = (conf >= self.threshold).float()
        self.accepted = self.accepted + mask.sum().long()
        weight = 1.0 + self.accepted.float() / 1000  # the state feeds back into the loss
        loss_u = (F.cross_entropy(logits_u, label, reduction="none") * mask).mean()
        return F.cross_entropy(logits_x, targets) + weight * loss_u, {"accepted": self.accepted}

    def after_step(self, model, step):
        pass

    def state_dict(self):
        return {"accepted": self.accepted.clone()}

    def load_state_dict(self, state):
        self.accepted = state["accepted"].clone()


@hookimpl
def ptl_register_ssl_algorithms(register):
    register("hook-counting", "ptl_hook_ssl:CountingPseudoLabel", description="counting PL",
             params=CountingParams)
"""


def test_ptl_register_ssl_algorithms(plugin_site):
    install_plugin(plugin_site, "ptl-hook-ssl", "ptl_hook_ssl", SSL)
    check_plugin_loads("ptl-hook-ssl", ["ptl_register_ssl_algorithms"])
    algo = check_ssl("hook-counting", {"threshold": 0.2}, num_classes=5)
    # the top probability of 5 classes is at least 0.2: all 12 unlabeled images x 4 steps count
    assert int(algo.state_dict()["accepted"]) == 48


GENERATORS = """
from ptl_cli import hookimpl
from ptl_cli.schema import Params


class MeansParams(Params):
    spread: float = 0.2


class ClassMeans:
    # G(z, p) = p @ (per-class mean images of the bundled pack) + spread * z-weighted pattern

    def __init__(self, device, spread=0.2):
        import torch
        from ptl_cli import plugins

        pack = plugins.get("datasets", "fashion-pack").build(None, "train", False)
        images = pack.images.float() / 255
        self.means = torch.stack([images[pack.targets == k].mean(0) for k in range(10)]).to(device)
        self.pattern = torch.linspace(-1, 1, 28, device=device).view(1, 1, 1, 28)
        self.num_classes, self.image_size, self.channels = 10, 28, 1
        self.class_names = pack.info.class_names
        self.spread, self.device = spread, device

    @property
    def id(self):
        return f"class-means-{self.spread}"

    def sample(self, y, z=None, generator=None):
        import torch
        import torch.nn.functional as F

        p = F.one_hot(y.long(), 10).float() if y.ndim == 1 else y.float()
        if z is None:
            z = torch.randn(len(p), 1, generator=generator)
        mixed = torch.einsum("bk,kchw->bchw", p.to(self.device), self.means)
        return (mixed + self.spread * z.to(self.device).view(-1, 1, 1, 1) * self.pattern).clamp(0, 1)


@hookimpl
def ptl_register_generators(register):
    register("hook-means", "ptl_hook_generators:ClassMeans", description="class means", params=MeansParams)
"""


def test_ptl_register_generators(plugin_site):
    install_plugin(plugin_site, "ptl-hook-generators", "ptl_hook_generators", GENERATORS)
    check_plugin_loads("ptl-hook-generators", ["ptl_register_generators"])
    gen = check_generator("hook-means", {"spread": 0.1})
    # soft conditioning: a 50/50 row gives the mean of the two class images (same z)
    z = torch.zeros(1, 1)
    half = gen.sample(torch.tensor([[0.5, 0.5] + [0.0] * 8]), z=z)
    mix = (gen.sample(torch.tensor([0]), z=z) + gen.sample(torch.tensor([1]), z=z)) / 2
    assert torch.allclose(half, mix, atol=1e-6)


CLASSIFIERS = """
from ptl_cli import hookimpl


def nearest_mean(device):
    import torch
    import torch.nn.functional as F
    from torch import nn
    from ptl_cli import plugins

    class NearestMean(nn.Module):
        # logits = -squared distance to each class's mean image (resized to 28x28, grey)

        def __init__(self):
            super().__init__()
            pack = plugins.get("datasets", "fashion-pack").build(None, "train", False)
            images = pack.images.float() / 255
            means = torch.stack([images[pack.targets == k].mean(0) for k in range(10)])
            self.register_buffer("means", means.flatten(1))
            self.num_classes, self.class_names = 10, pack.info.class_names

        @property
        def id(self):
            return "nearest-mean-fashion-pack"

        def forward(self, images):
            x = F.interpolate(images.mean(1, keepdim=True), size=28, mode="bilinear", antialias=True)
            return -torch.cdist(x.flatten(1), self.means) ** 2

    return NearestMean().to(device)


def facts(name, params):
    # known without building it: the pack's 10 classes (plans compare it with the generator's)
    from types import SimpleNamespace

    return SimpleNamespace(num_classes=10)


@hookimpl
def ptl_register_classifiers(register):
    register(
        "hook-nearest-mean",
        nearest_mean,
        description="nearest class mean",
        facts="ptl_hook_classifiers:facts",
    )
"""


def test_ptl_register_classifiers(plugin_site):
    install_plugin(plugin_site, "ptl-hook-classifiers", "ptl_hook_classifiers", CLASSIFIERS)
    check_plugin_loads("ptl-hook-classifiers", ["ptl_register_classifiers"])
    clf = check_classifier("hook-nearest-mean", channels=3, sizes=(28, 56))
    # a real classifier: it beats chance by far on real test images
    pack = plugins.get("datasets", "fashion-pack").build(None, "test", False)
    accuracy = (clf(pack.images.float() / 255).argmax(1) == pack.targets).float().mean().item()
    assert accuracy > 0.5


def test_a_third_party_classifiers_facts_reach_the_plan(plugin_site, cli):
    """``facts=`` is the same contract for a third party as for the built-ins: its class count
    meets the bundled 4-class generator's in --dry-run, before anything is built."""
    install_plugin(plugin_site, "ptl-hook-classifiers", "ptl_hook_classifiers", CLASSIFIERS)
    assert plugins.get("classifiers", "hook-nearest-mean").facts().num_classes == 10
    code, _, err = cli("transfer", "--source-classifier", "hook-nearest-mean", "--dry-run")
    assert code == 2 and "generator 'biggan' has 4 classes but classifier 'hook-nearest-mean' has 10" in err


LOGGERS = """
import json
from pathlib import Path

from ptl_cli import hookimpl


class JsonLinesLogger:
    # every call as a line of RUN/hook-calls.jsonl: what the run gave the logger, in order

    def __init__(self, run_dir, run_id, resuming):
        self.path = Path(run_dir) / "hook-calls.jsonl"
        self._write("start", run_id=run_id, resuming=resuming)

    def _write(self, call, **data):
        with self.path.open("a") as fh:
            fh.write(json.dumps({"call": call, **data}) + "\\n")

    def log_hyperparams(self, params):
        self._write("hyperparams", params=params)

    def log_metrics(self, metrics, step):
        self._write("metrics", metrics=metrics, step=step)

    def log_image(self, name, path):
        self._write("image", name=name, exists=Path(path).is_file())

    def close(self):
        self._write("close")


class BrokenLogger(JsonLinesLogger):
    def log_metrics(self, metrics, step):
        raise ConnectionError("tracking server unreachable")


@hookimpl
def ptl_register_loggers(register):
    register("hook-jsonl", JsonLinesLogger, description="calls as JSON lines")
    register("hook-broken", BrokenLogger, description="fails on the first metrics")
    register("hook-needs-sdk", JsonLinesLogger, description="needs a package", requires="no_such_sdk_ptl")
"""


def test_ptl_register_loggers(plugin_site, tmp_path):
    env = _install_dice(plugin_site)
    install_plugin(plugin_site, "ptl-hook-loggers", "ptl_hook_loggers", LOGGERS)
    check_plugin_loads("ptl-hook-loggers", ["ptl_register_loggers"])
    check_logger("hook-jsonl", run_dir=tmp_path / "checked")
    calls = [json.loads(line) for line in (tmp_path / "checked" / "hook-calls.jsonl").open()]
    assert [c["call"] for c in calls].count("start") == 2 and calls[-1]["call"] == "close"

    run = tmp_path / "run"
    logs = 'compute.log=["hook-jsonl", "hook-broken"]'
    done = run_ptl("dice", "--set", logs, "--out", str(run), "--quiet", env=env)
    assert done.returncode == 0, done.stderr  # a logger failure never stops the run
    text = " ".join(done.stdout.split())  # the console wraps long lines
    assert text.count("warning:") == 1 and "logger 'hook-broken' failed in log_metrics()" in text
    assert "tracking server unreachable" in text
    calls = [json.loads(line) for line in (run / "hook-calls.jsonl").open()]
    starts = [c for c in calls if c["call"] == "start"]
    assert len(starts) == 2 and not starts[0]["resuming"] and starts[0]["run_id"] == "run"
    hyper = next(c["params"] for c in calls if c["call"] == "hyperparams")
    assert hyper["kind"] == "dice" and hyper["steps"] == 6 and hyper["seed"] == 3
    records = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    sent = [(c["step"], c["metrics"]["train/total"]) for c in calls if c["call"] == "metrics"]
    assert sent == [(r["step"], r["total"]) for r in records] and len(sent) == 6
    ends = [c["call"] for c in calls if c["call"] in ("image", "close")]
    assert ends == ["image", "close"]  # to hook-jsonl only: hook-broken was switched off
    assert all(c["exists"] for c in calls if c["call"] == "image")

    missing = run_ptl("dice", "--set", 'compute.log=["hook-needs-sdk"]', "--dry-run", env=env)
    assert missing.returncode == 2 and "needs the no_such_sdk_ptl package" in missing.stderr
    typo = run_ptl("dice", "--set", 'compute.log=["hook-jsnl"]', "--dry-run", env=env)
    assert typo.returncode == 2 and "did you mean 'hook-jsonl'" in typo.stderr


WORKFLOW = """
from typing import Annotated, Optional

import typer
from pydantic import Field

from ptl_cli import hookimpl, options
from ptl_cli.recipes import RecipeBase


class DiceRecipe(RecipeBase):
    kind: str = "dice"
    steps: int = Field(6, ge=1)
    stop_after: int = Field(0, ge=0, description="simulate an interruption after this many steps")


class DiceWorkflow:
    # sums torch.rand draws: a resumed run must restore the RNG to end where an uninterrupted one does

    def plan(self, recipe):
        return [("steps", recipe.steps)]

    def run(self, ctx):
        import torch
        from ptl_cli.engine.interrupt import Interrupted
        from ptl_cli.engine.seeding import capture_rng, restore_rng

        step, total = 0, torch.zeros(())
        state = ctx.load_checkpoint()
        if state is not None:
            step, total = state["step"], state["total"]
            restore_rng(state["rng"])
        while step < ctx.recipe.steps:
            total = total + torch.rand(())
            step += 1
            ctx.log(step=step, stage="train", total=total)
            if (step == ctx.recipe.stop_after and not ctx.resuming) or ctx.should_stop():
                ctx.save_checkpoint({"step": step, "total": total, "rng": capture_rng()}, step)
                raise Interrupted()
        return {"total": float(total), "steps": step}

    def results_table(self, run):
        metrics = run.info()["metrics"]
        return ["steps", "total"], [[metrics["steps"], metrics["total"]]]


@hookimpl
def ptl_register_workflows(register):
    register("dice", "ptl_hook_dice:DiceWorkflow", description="sum of random draws", params=DiceRecipe)


def dice(
    steps: Annotated[Optional[int], typer.Option(help="Steps.")] = None,
    recipe: options.Recipe = None,
    sets: options.Sets = None,
    out: options.Out = None,
    dry_run: options.DryRun = False,
    as_json: options.Json = False,
    quiet: options.Quiet = False,
) -> None:
    '''Roll dice (a test workflow).'''
    from ptl_cli.launch import launch

    common = options.Common(recipe=recipe, sets=sets, out=out, dry_run=dry_run, json=as_json, quiet=quiet)
    launch("dice", common, "dice-default", {"steps": steps})


@hookimpl
def ptl_register_commands(app):
    app.command("dice")(dice)
"""


def _install_dice(site):
    install_plugin(site, "ptl-hook-dice", "ptl_hook_dice", WORKFLOW)
    (site / "recipes").mkdir()
    (site / "recipes" / "dice-default.toml").write_text('kind = "dice"\nseed = 3\n')
    return {"PTL_RECIPE_PATH": str(site / "recipes")}


def test_ptl_register_workflows(plugin_site, tmp_path):
    env = _install_dice(plugin_site)
    check_plugin_loads("ptl-hook-dice", ["ptl_register_workflows", "ptl_register_commands"])
    whole = run_ptl("dice", "--out", str(tmp_path / "whole"), "--json", "--quiet", env=env)
    assert whole.returncode == 0, whole.stderr
    expected = json.loads(whole.stdout)["metrics"]
    assert expected["steps"] == 6

    cut = run_ptl("dice", "--set", "stop_after=2", "--out", str(tmp_path / "cut"), "--quiet", env=env)
    assert cut.returncode == 130, cut.stderr
    info = Run(tmp_path / "cut").info()
    assert info["kind"] == "dice" and info["status"] == "interrupted"
    # the interruption is part of the recipe here, acting on a fresh run only (a resumed run
    # goes on, as after a real Ctrl-C); the recipe is never edited: resume refuses a changed one
    resumed = run_ptl("resume", str(tmp_path / "cut"), "--json", "--quiet", env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["metrics"] == expected


def test_ptl_register_commands(plugin_site):
    env = _install_dice(plugin_site)
    assert "dice" in run_ptl("--help", env=env).stdout
    plan = run_ptl("dice", "--steps", "4", "--dry-run", "--json", env=env)
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout)["plan"] == {"steps": 4}
    bad = run_ptl("dice", "--set", "step=4", env=env)  # strict recipe validation applies to plugins
    assert bad.returncode == 2 and "did you mean 'steps'" in bad.stderr


BENCHMARK = """
from typing import Annotated

import typer

from ptl_cli import hookimpl
from ptl_cli.bench import Report, Row


def bench_eval(bench, *, passes: Annotated[int, typer.Option("--passes", help="Forwards per call.")] = 1):
    '''Forward passes without gradients over the first images of --dataset.'''
    import torch

    data = bench.load_dataset()
    model = bench.build_model(bench.model or "conv2", data.info).to(bench.device).eval()
    images = torch.stack([data[i][0] for i in range(bench.batch(64, 4))]).float().div(255).to(bench.device)

    def forward():
        with torch.no_grad():
            for _ in range(passes):
                model(images)

    report = Report("eval", str(bench.device), {"passes": passes, **bench.flags()})
    report.rows.append(Row("forward", passes * images.shape[0], bench.time(forward), "no_grad"))
    return report


@hookimpl
def ptl_register_benchmarks(register):
    register("eval", bench_eval, description="forward passes without gradients")
"""


def test_ptl_register_benchmarks(plugin_site):
    install_plugin(plugin_site, "ptl-hook-bench", "ptl_hook_bench", BENCHMARK)
    check_plugin_loads("ptl-hook-bench", ["ptl_register_benchmarks"])
    usage = run_ptl("bench", "--help")
    assert usage.returncode == 0 and "--passes" in usage.stdout and "eval" in usage.stdout
    out = run_ptl("bench", "eval", "--device", "cpu", "--steps", "1", "--warmup", "0", "-b", "3",
                  "--passes", "2", "--json", env={"OMP_NUM_THREADS": "1"})  # fmt: skip
    assert out.returncode == 0, out.stderr
    [report] = json.loads(out.stdout)
    assert report["workflow"] == "eval" and report["config"]["passes"] == 2
    assert report["rows"][0]["images_per_step"] == 2 * 3 and report["rows"][0]["ms_per_step"] > 0
    unknown = run_ptl("bench", "evaluate", "--device", "cpu")
    assert unknown.returncode == 2 and "choose from prune, transfer, eval, photo" in unknown.stderr
