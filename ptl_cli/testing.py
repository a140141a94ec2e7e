"""Helpers for testing ptl and ptl plugins: run the real CLI, install plugin packages, and check a
component against its contract in a few lines.

Plugin authors use these in their own test suites (see docs/plugins/testing.md)::

    from ptl_cli.testing import check_pruner, run_ptl

    def test_my_pruner_keeps_the_contract():
        check_pruner("my-pruner", {"sparsity": 0.5})   # shapes, state_dict, resume, determinism

    def test_listed():
        assert run_ptl("list", "pruners", "--json").returncode == 0

Every ``check_<kind>`` takes the registered *name* (the plugin must then be installed: this also
proves the entry point works), a :class:`ptl_cli.registry.ComponentSpec`, or the factory itself
(a class or function, for a test that runs before installing). It builds the component on real
data from the bundled Fashion-MNIST pack with a tiny real network, raises :class:`ContractError`
(an ``AssertionError``, so pytest shows it as a failed assertion) naming the component and the
broken rule, and returns the built component for further checks of your own. Each check takes
well under a second on a CPU.
"""

from __future__ import annotations

import io
import math
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from ptl_cli.contracts import PROTOCOLS, describe_problems, optional_arguments, reserved_problem
from ptl_cli.kinds import KINDS
from ptl_cli.registry import ComponentSpec, FactoryCall


class ContractError(AssertionError):
    """A component broke its kind's contract; the message names the component and the rule."""


# -- running ptl and installing plugins --------------------------------------------------------------
def run_ptl(
    *args: str | os.PathLike[str],
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: int = 600,
):
    """Run ``python -m ptl_cli ARGS`` in a subprocess, as a user would run ``ptl`` (arguments may
    be paths)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "ptl_cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=timeout,
    )


def install_plugin(
    site: str | os.PathLike[str],
    dist: str,
    module: str,
    source: str,
    version: str = "1.2.3",
    entry: str | None = None,
) -> Path:
    """Create an installed distribution in ``site`` (a str or a path): a module plus a dist-info
    with an entry point; returns ``site`` as a :class:`~pathlib.Path`.

    This is what ``pip install`` leaves behind; putting ``site`` on ``sys.path``/``PYTHONPATH``
    makes ``importlib.metadata`` find the ``ptl`` entry point exactly as for a pip-installed plugin.
    """
    site = Path(site)
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[ptl]\n{entry or dist} = {module}\n")
    (info / "RECORD").write_text("")
    return site


def pip_install(
    *projects: str | os.PathLike[str], target: str | os.PathLike[str], timeout: int = 600
) -> Path:
    """``pip install --no-deps --no-build-isolation --target TARGET PROJECT...`` and return TARGET.

    Installing into a directory of its own (put it on ``PYTHONPATH``) tests a plugin exactly as
    pip would install it, offline, while leaving the current environment untouched: nothing to
    uninstall afterwards, and nothing other processes sharing the environment could see.
    """
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
    command += ["--no-index", "--disable-pip-version-check", "--target", str(target)]
    done = subprocess.run(
        command + [str(p) for p in projects], capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise RuntimeError(f"pip install of {', '.join(map(str, projects))} failed:\n{done.stderr[-3000:]}")
    return Path(target)


def check_plugin_loads(name: str, hooks: Iterable[str] = ()) -> Any:
    """Assert that the installed plugin (entry-point name) loaded, registered its components
    without error, and implements ``hooks``.

    Every component hook and the benchmark hook are run first (as ``ptl list`` and ``ptl bench``
    do), so a malformed ``register`` call
    — a bad name, a factory that is neither a callable nor ``"module:attr"``, a parameter schema
    that is not a pydantic model — fails here with ptl's message rather than passing unnoticed.
    Returns its :class:`ptl_cli.plugins.PluginInfo`. Uses the in-process plugin manager, so call
    :func:`ptl_cli.plugins.reset` first if the test installed something after ptl was loaded.
    """
    from ptl_cli import plugins

    manager = plugins.manager()
    info = manager.plugins.get(name)
    if info is None:
        found = ", ".join(sorted(manager.plugins)) or "none"
        raise ContractError(f"plugin {name!r} is not installed (entry point group 'ptl'); found: {found}")
    if info.status == "ok":
        from ptl_cli.bench import benchmarks

        for kind in KINDS:
            manager.registry(kind)
        benchmarks()  # a malformed ptl_register_benchmarks call fails the plugin too
    if info.status != "ok":
        raise ContractError(f"plugin {name!r} did not load: {info.status}: {info.error}")
    missing = sorted(set(hooks) - set(info.hooks))
    if missing:
        raise ContractError(f"plugin {name!r} implements {info.hooks}, not {missing}")
    return info


# -- resolving what to check ---------------------------------------------------------------------------
def _builder(kind: str, component: Any, params: dict[str, Any] | None) -> tuple[Callable[..., Any], str]:
    """A function building the component from positional args, and a phrase naming it.

    The function checks what ptl itself would trip over, naming the component and its plugin:
    a schema that lets unknown keys through, a factory that cannot take the call ptl makes
    (``FACTORY_CALLS``) with the schema's fields, an exception inside the factory, and a result
    without the members of the kind's protocol or with methods ptl cannot call.
    """
    from ptl_cli import plugins

    label = KINDS[kind].label
    if isinstance(component, str):
        component = plugins.get(kind, component)
    if isinstance(component, ComponentSpec):
        spec = component
        what = f"{label} {spec.name!r} from plugin {spec.plugin!r}"
        _check_schema(spec, what)
        values = spec.validate_params(params, what)
        factory = spec.load_factory()
        if spec.pattern:
            values = {"name": spec.name, **values}
    elif callable(component):
        what = f"{label} {getattr(component, '__qualname__', repr(component))}"
        factory, values = component, dict(params or {})
    else:
        raise TypeError(
            f"expected a registered {label} name, a ComponentSpec or a factory, got {component!r}"
        )

    def build(*args: Any, **optional: Any) -> Any:
        """``optional``: what ptl passes only to a factory that accepts it (``OPTIONAL_ARGUMENTS``)."""
        reserved = reserved_problem(kind, values)
        _require(reserved is None, what, str(reserved))
        call = FactoryCall(
            kind, factory, args, {**optional_arguments(kind, "factory", factory, optional), **values}
        )
        problem = call.problem()
        _require(problem is None, what, str(problem))
        with calling(what, "its factory"):
            obj = call()
        return _conforming(kind, obj, what)

    return build, what


def _check_schema(spec: ComponentSpec, what: str) -> None:
    """A schema must reject unknown keys: otherwise a misspelt recipe key is silently ignored."""
    if spec.params is None:
        return
    extra = spec.params.model_config.get("extra")
    _require(
        extra == "forbid",
        what,
        f"its parameter schema {spec.params.__name__} lets unknown keys through (extra={extra!r}), so a "
        "misspelt recipe key would be silently ignored; subclass ptl_cli.schema.Params",
    )


def _conforming(kind: str, obj: Any, what: str) -> Any:
    problems = describe_problems(obj, PROTOCOLS[kind])
    if problems:
        name = PROTOCOLS[kind].__name__
        raise ContractError(f"{what}: its factory returned {problems} (required by ptl_cli.contracts.{name})")
    return obj


@contextmanager
def calling(what: str, call: str) -> Iterator[None]:
    """Turn an exception raised inside ``call`` into a :class:`ContractError` that names the
    component (and its plugin) and the call; the original stays attached as ``__cause__``, so
    pytest still shows where in the plugin it was raised."""
    try:
        yield
    except ContractError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of the component is reported as its own
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ContractError(f"{what}: {call} raised {type(exc).__name__}: {first}") from exc


def _require(condition: Any, what: str, message: str) -> None:
    if not condition:
        raise ContractError(f"{what}: {message}")


# -- real data and a tiny real network -------------------------------------------------------------------
@lru_cache(maxsize=1)
def _pack_images() -> tuple[Any, Any]:
    """64 real Fashion-MNIST training images (uint8 1×28×28, 10 classes) from the bundled pack."""
    import torch

    from ptl_cli import plugins

    dataset = plugins.get("datasets", "fashion-pack").build(None, "train", False)
    index = torch.arange(64) * (len(dataset) // 64)
    return dataset.images[index].clone(), dataset.targets[index].clone()


def sample_batch(size: int, step: int = 0, seed: int = 0, num_classes: int = 10):
    """Real images as floats in [0, 1] ``(size, 1, 28, 28)`` with labels ``< num_classes``.

    The batch depends only on ``(seed, step)``, like a resumable sampler's, so an interrupted and
    an uninterrupted run see the same data.
    """
    images, labels = _pack_images()
    pick = _batch_indices(images.shape[0], size, step, seed)
    return images[pick].float() / 255.0, labels[pick] % num_classes


def _batch_indices(n: int, size: int, step: int, seed: int):
    """The first ``size`` of a permutation of ``range(n)`` seeded by ``(seed, step)``: which
    images :func:`sample_batch` takes, and which labeled indices :func:`labeled_indices` reports."""
    import torch

    from ptl_cli.engine.seeding import generator_for

    return torch.randperm(n, generator=generator_for(seed, step))[:size]


def tiny_net(num_classes: int = 10, in_channels: int = 1) -> Any:
    """Conv → ReLU → Conv → ReLU → pool → Linear: both layer kinds a pruner must handle, in ~1k weights."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(in_channels, 4, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, num_classes),
    )


def _roundtrip(state: Any, what: str, which: str) -> Any:
    """``state`` after ``torch.save`` and ``torch.load(weights_only=True)``, as checkpoints load."""
    import torch

    buffer = io.BytesIO()
    try:
        torch.save(state, buffer)
        buffer.seek(0)
        return torch.load(buffer, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means the state cannot be checkpointed
        raise ContractError(
            f"{what}: {which} cannot be checkpointed (torch.load(weights_only=True) needs tensors and "
            f"plain Python data): {type(exc).__name__}: {str(exc).splitlines()[0]}"
        ) from None


def assert_same_state(a: Any, b: Any, what: str, path: str = "state") -> None:
    """Exact equality of nested dicts/lists of tensors and plain values (bit-for-bit for tensors)."""
    import torch

    if isinstance(a, dict) and isinstance(b, dict):
        _require(
            a.keys() == b.keys(), what, f"{path} keys differ: {sorted(map(str, a))} vs {sorted(map(str, b))}"
        )
        for key in a:
            assert_same_state(a[key], b[key], what, f"{path}[{key!r}]")
    elif isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        _require(len(a) == len(b), what, f"{path} lengths differ: {len(a)} vs {len(b)}")
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_state(x, y, what, f"{path}[{i}]")
    elif isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        same = a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)
        _require(same, what, f"{path} differs ({_describe_difference(a, b)})")
    else:
        same = a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))
        _require(same, what, f"{path} differs: {a!r} vs {b!r}")


def _describe_difference(a: Any, b: Any) -> str:
    if a.shape != b.shape or a.dtype != b.dtype:
        return f"{a.dtype} {tuple(a.shape)} vs {b.dtype} {tuple(b.shape)}"
    diff = (a.double() - b.double()).abs().max().item() if a.is_floating_point() else "n/a"
    return f"max abs difference {diff}"


def _logits(out: Any, batch: int, num_classes: int, what: str, where: str) -> Any:
    import torch

    _require(isinstance(out, torch.Tensor), what, f"{where} returned {type(out).__name__}, not a tensor")
    _require(
        tuple(out.shape) == (batch, num_classes),
        what,
        f"{where} gave shape {tuple(out.shape)}; expected (batch, num_classes) = {(batch, num_classes)}",
    )
    _require(bool(torch.isfinite(out).all()), what, f"{where} gave non-finite values")
    return out


# -- models --------------------------------------------------------------------------------------------
def check_model(
    component: Any,
    params: dict[str, Any] | None = None,
    *,
    num_classes: int = 3,
    in_channels: int = 1,
    image_size: int = 28,
    width: float = 1.0,
) -> Any:
    """Check a model: logits of shape ``(B, num_classes)`` in train and eval mode, gradients reach
    its parameters, the same seed builds the same weights, and its ``state_dict`` survives a
    ``weights_only`` checkpoint into a fresh build with identical outputs."""
    import torch

    build, what = _builder("models", component, params)

    def fresh():
        torch.manual_seed(0)
        return build(num_classes, in_channels, image_size, width)

    model = fresh()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    _require(
        isinstance(model, torch.nn.Module),
        what,
        f"the factory returned {type(model).__name__}, not nn.Module",
    )
    x = torch.rand(2, in_channels, image_size, image_size, generator=torch.Generator().manual_seed(0))
    model.train()
    with calling(what, "its forward in train mode"):
        logits = model(x)
    loss = _logits(logits, 2, num_classes, what, "forward in train mode").logsumexp(1).mean()
    loss.backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    _require(trainable, what, "has no parameters with requires_grad=True")
    _require(
        any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in trainable),
        what,
        "no gradient reaches its parameters",
    )
    model.eval()
    with torch.no_grad(), calling(what, "its forward in eval mode"):
        out = _logits(model(x), 2, num_classes, what, "forward in eval mode")
        _logits(model(x[:1]), 1, num_classes, what, "forward of a single image in eval mode")
    twin = fresh()
    assert_same_state(initial, twin.state_dict(), what, "weights built twice from one seed")
    torch.manual_seed(1)
    restored = build(num_classes, in_channels, image_size, width)
    state = _roundtrip(model.state_dict(), what, "state_dict()")
    with calling(what, "load_state_dict() of its own state_dict() into a fresh build"):
        restored.load_state_dict(state)
    restored.eval()
    with torch.no_grad():
        _require(
            torch.equal(restored(x), out), what, "a model loaded from its state_dict gives other outputs"
        )
    return model


# -- datasets ------------------------------------------------------------------------------------------
def check_dataset(
    component: Any,
    params: dict[str, Any] | None = None,
    *,
    root: str | None = None,
    split: str = "train",
    download: bool = False,
    items: int = 3,
) -> Any:
    """Check a dataset: ``info`` is complete and consistent, ``targets`` are int64 labels in range,
    items are ``(uint8 (C, H, W), int)`` matching ``info`` and ``targets``, and building twice
    gives the same data (splits must not depend on global random state)."""
    import torch

    build, what = _builder("datasets", component, params)
    dataset = build(root, split, download)
    info = dataset.info
    for field in ("name", "num_classes", "channels", "image_size", "class_names", "mean", "std"):
        _require(hasattr(info, field), what, f"info has no {field!r} (use ptl_cli.data.base.DatasetInfo)")
    _require(info.num_classes >= 1, what, f"info.num_classes is {info.num_classes}")
    _require(
        len(info.class_names) == info.num_classes,
        what,
        f"{len(info.class_names)} class_names for {info.num_classes} classes",
    )
    _require(
        len(info.mean) == len(info.std) == info.channels,
        what,
        f"mean/std have {len(info.mean)}/{len(info.std)} entries for {info.channels} channels",
    )
    _require(all(s > 0 for s in info.std), what, f"info.std must be positive, got {info.std}")
    targets = dataset.targets
    _require(
        isinstance(targets, torch.Tensor) and targets.dtype == torch.int64 and targets.ndim == 1,
        what,
        f"targets must be a 1-D int64 tensor, got {getattr(targets, 'dtype', type(targets))}",
    )
    _require(
        len(dataset) == targets.numel() > 0, what, f"len() is {len(dataset)} for {targets.numel()} targets"
    )
    _require(
        int(targets.min()) >= 0 and int(targets.max()) < info.num_classes,
        what,
        f"targets span [{int(targets.min())}, {int(targets.max())}] for {info.num_classes} classes",
    )
    n = len(dataset)
    indices = sorted({0, n // 2, n - 1, *range(min(items, n))})
    for i in indices:
        with calling(what, f"dataset[{i}]"):
            image, label = dataset[i]
        shape = (info.channels, info.image_size, info.image_size)
        _require(
            isinstance(image, torch.Tensor) and image.dtype == torch.uint8 and tuple(image.shape) == shape,
            what,
            f"item {i} image is {getattr(image, 'dtype', type(image))} "
            f"{tuple(getattr(image, 'shape', ()))}; expected uint8 {shape}",
        )
        _require(
            int(label) == int(targets[i]), what, f"item {i} has label {label} but targets[{i}] = {targets[i]}"
        )
    again = build(root, split, download)
    _require(torch.equal(again.targets, targets), what, "building it twice gives different targets")
    _require(
        torch.equal(again[indices[-1]][0], dataset[indices[-1]][0]),
        what,
        "building it twice gives other images",
    )
    return dataset


# -- pruners -------------------------------------------------------------------------------------------
def check_pruner(
    component: Any,
    params: dict[str, Any] | None = None,
    *,
    model: Callable[[], Any] | None = None,
    steps: int = 4,
    resume_at: int = 2,
    seed: int = 0,
    gpu: bool = True,
) -> Any:
    """Check a pruner on a tiny real conv net (:func:`tiny_net`: 10 classes, 1×28×28 inputs), or on
    ``model()`` — called with no arguments, a fresh network per call, for those same inputs:
    ``prepare`` keeps output shapes, gradients reach ``trainable_parameters``, ``sparsity`` is a
    fraction, ``export_dense`` loads into the unwrapped network and gives the same outputs, its
    ``state_dict`` survives a ``weights_only`` checkpoint, and ``steps`` training steps
    interrupted at ``resume_at`` and resumed from a checkpoint equal an uninterrupted run: the
    model, the outputs, and the pruner's whole state — every attribute holding tensors or plain
    data, not only what ``state_dict()`` returns. The model is prepared as ``ptl prune`` does
    (:func:`ptl_cli.pruning.prepare`: ``before_forward`` runs before every forward).

    With ``gpu`` (and a CUDA build of torch) the steps also run on a simulated GPU
    (:mod:`ptl_cli.testing_gpu`) in fp32 and fp16-mixed: no tensor on the wrong device, no CPU
    generator feeding a CUDA draw, and no host synchronization in a training step (the first
    step may make one-time ones, such as moving state built on the CPU to the device)."""
    import torch

    from ptl_cli import pruning
    from ptl_cli.engine.seeding import capture_rng, restore_rng

    build, what = _builder("pruners", component, params)
    make_model = model or tiny_net

    def fresh(stir: bool = False) -> tuple[Any, Any, Any]:
        torch.manual_seed(seed)
        pruner = build()
        net = make_model()
        if stir:
            torch.manual_seed(seed + 104729)
        with calling(what, "prepare(model, seed)"):
            prepared = pruning.prepare(pruner, net, seed)
        _require(isinstance(prepared, torch.nn.Module), what, f"prepare() returned {type(prepared).__name__}")
        with calling(what, "trainable_parameters(model)"):
            params_ = list(pruner.trainable_parameters(prepared))
        _require(params_, what, "trainable_parameters() is empty: the optimizer would have nothing to update")
        _require(
            all(isinstance(p, torch.nn.Parameter) and p.requires_grad for p in params_),
            what,
            "trainable_parameters() must yield nn.Parameter objects with requires_grad=True",
        )
        owned = {id(p) for p in prepared.parameters()}
        _require(
            all(id(p) in owned for p in params_),
            what,
            "trainable_parameters() yields tensors that are not parameters of the prepared model "
            "(they would be missing from its state_dict and lost on resume)",
        )
        optimizer = torch.optim.SGD(params_, lr=0.1, momentum=0.9)
        return pruner, prepared, optimizer

    def train(pruner: Any, net: Any, optimizer: Any, start: int, stop: int, stir: bool = False) -> None:
        net.train()
        for step in range(start, stop):
            if stir:  # what else draws from torch's global RNG (augmentation, loaders) moves it
                torch.manual_seed(seed + 7919 * (step + 1))
            x, y = sample_batch(8, step, seed)
            # the step `ptl prune` runs; after_step gets the optimizer steps done so far
            pruning.train_step(pruner, net, optimizer, x, y, step + 1, guard=lambda call: calling(what, call))
            if step == 0:  # the step leaves its gradients in place
                _require(
                    any(p.grad is not None for p in pruner.trainable_parameters(net)),
                    what,
                    "no gradient reaches trainable_parameters()",
                )
            with calling(what, "sparsity(model)"):
                fraction = pruner.sparsity(net)
            _check_sparsity(fraction, what)

    pruner, net, optimizer = fresh()
    x, _ = sample_batch(4, 0, seed)
    net.eval()
    with torch.no_grad(), calling(what, "the prepared model's forward"):
        _logits(net(x), 4, 10, what, "the prepared model's forward")
    train(pruner, net, optimizer, 0, steps)

    # masks and re-draws must come from (seed, step), not from torch's global RNG: its state
    # depends on everything else the run draws, and differs between data-parallel ranks
    stirred_pruner, stirred, stirred_opt = fresh(stir=True)
    train(stirred_pruner, stirred, stirred_opt, 0, steps, stir=True)
    _require(
        _same_tensors(net.state_dict(), stirred.state_dict())
        and _same_tensors(pruner.state_dict(), stirred_pruner.state_dict()),
        what,
        "training draws from torch's global RNG (another state of it gave other weights or masks): "
        "draw from a torch.Generator seeded by (seed, step), as docs/plugins/reference.md asks",
    )

    twin_pruner, twin, twin_opt = fresh()
    train(twin_pruner, twin, twin_opt, 0, resume_at)
    with calling(what, "state_dict()"):
        pruner_state = twin_pruner.state_dict()
    checkpoint = _roundtrip(
        {
            "model": twin.state_dict(),
            "optimizer": twin_opt.state_dict(),
            "pruner": pruner_state,
            "rng": capture_rng(),
        },
        what,
        "state_dict()",
    )
    resumed_pruner, resumed, resumed_opt = fresh()
    torch.manual_seed(seed + 12345)  # a resumed process starts from other global RNG state
    restore_rng(checkpoint["rng"])
    resumed.load_state_dict(checkpoint["model"])
    resumed_opt.load_state_dict(checkpoint["optimizer"])
    with calling(what, "load_state_dict(state) of its own state_dict() after a checkpoint"):
        resumed_pruner.load_state_dict(checkpoint["pruner"])
    train(resumed_pruner, resumed, resumed_opt, resume_at, steps)
    assert_same_state(net.state_dict(), resumed.state_dict(), what, f"model after resume at step {resume_at}")
    assert_same_state(pruner.state_dict(), resumed_pruner.state_dict(), what, "pruner state after resume")
    try:
        assert_same_state(
            object_state(pruner),
            object_state(resumed_pruner),
            what,
            f"pruner after resume at step {resume_at}",
        )
    except ContractError as exc:
        raise ContractError(f"{exc} (is all state in state_dict()?)") from None
    net.eval()
    resumed.eval()
    with torch.no_grad():
        _require(
            torch.equal(net(x), resumed(x)),
            what,
            f"a run resumed at step {resume_at} computes other outputs than an uninterrupted one",
        )

    with calling(what, "export_dense(model)"):
        dense = pruner.export_dense(net)
    _require(isinstance(dense, dict), what, f"export_dense() returned {type(dense).__name__}, not a dict")
    plain = make_model()
    try:
        plain.load_state_dict(_roundtrip(dense, what, "export_dense()"))
    except RuntimeError as exc:
        raise ContractError(
            f"{what}: export_dense() does not load into the unwrapped model: {str(exc).splitlines()[0]}"
        ) from None
    net.eval()
    plain.eval()
    with torch.no_grad():
        _require(
            torch.allclose(plain(x), net(x), atol=1e-5, rtol=1e-4),
            what,
            "the unwrapped model loaded from export_dense() gives other outputs than the pruned model",
        )
    if gpu:
        check_pruner_on_gpu(component, params, model=model, steps=steps, seed=seed)
    return pruner


def _same_tensors(a: Any, b: Any) -> bool:
    """Whether two (nested) state dicts hold equal tensors and values under the same keys."""
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_tensors(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same_tensors(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def object_state(obj: Any) -> dict[str, Any]:
    """What a component holds: its attributes that are tensors or plain data (numbers, strings,
    and dicts/lists/tuples of them), recursively; modules, functions and other objects are left
    out. Two runs that must agree (uninterrupted and resumed) must agree on all of it."""

    def plain(value: Any, depth: int = 0) -> Any:
        import torch

        if isinstance(value, (bool, int, float, str, type(None))):
            return value
        if isinstance(value, torch.nn.Module) or depth > 8:
            return _SKIP
        if isinstance(value, torch.Tensor):
            return value.detach()
        if isinstance(value, dict):
            items = {str(k): plain(v, depth + 1) for k, v in value.items()}
            return {k: v for k, v in items.items() if v is not _SKIP}
        if isinstance(value, (list, tuple)):
            return [v for v in (plain(v, depth + 1) for v in value) if v is not _SKIP]
        return _SKIP

    state = {}
    for name, value in sorted(getattr(obj, "__dict__", {}).items()):
        kept = plain(value)
        if kept is not _SKIP:
            state[name] = kept
    return state


_SKIP = object()


def _check_sparsity(value: Any, what: str) -> None:
    _require(
        isinstance(value, (int, float)) and 0.0 <= float(value) <= 1.0,
        what,
        f"sparsity() must return a Python float in [0, 1], got {value!r}",
    )


# -- SSL algorithms --------------------------------------------------------------------------------------
def make_views(images01: Any, names: Iterable[str], generator: Any = None) -> dict[str, Any]:
    """The views an SSL algorithm asks for, as the transfer workflow builds them (normalized with
    the bundled Fashion-MNIST statistics): :func:`ptl_cli.data.views.make_views`."""
    from ptl_cli.data.views import make_views as core_views

    return core_views(images01, tuple(names), (0.2860,), (0.3530,), generator=generator)


def confident_net(num_classes: int = 5, in_channels: int = 1, scale: float = 40.0) -> Any:
    """:func:`tiny_net` with its head scaled by ``scale``: on the bundled images about a third of
    its predictions pass 0.95, so state gated by confidence (pseudo labels, adaptive thresholds)
    changes from the first steps, as it does once a real model has learned something."""
    import torch

    net = tiny_net(num_classes, in_channels)
    with torch.no_grad():
        net[-1].weight.mul_(scale)
        net[-1].bias.mul_(scale)
    return net


#: The unlabeled set of :func:`check_ssl`: this many real images, drawn as ``ptl transfer`` draws
#: the PCS pool (a new permutation each epoch), ``UNLABELED_BATCH`` at a time: two steps an epoch.
NUM_UNLABELED, UNLABELED_BATCH, NUM_LABELED = 24, 12, 64
#: The labeled batch of :func:`check_ssl`: this many of the ``NUM_LABELED`` bundled images a step.
LABELED_BATCH = 4


def labeled_indices(step: int, seed: int = 0, batch: int = LABELED_BATCH):
    """Indices, in the labeled set (the 64 bundled images, in order), of the labeled batch at
    ``step``: the images ``sample_batch(batch, step, seed)`` gives, so a ``loss`` that declares
    ``labeled_index`` sees each image under one index whenever it comes back."""
    return _batch_indices(NUM_LABELED, batch, step, seed)


def unlabeled_indices(step: int, seed: int = 0, n: int = NUM_UNLABELED, batch: int = UNLABELED_BATCH):
    """Indices of the unlabeled batch at ``step``: positions ``[step*batch, (step+1)*batch)`` of the
    concatenated per-epoch permutations of ``range(n)``, each seeded by ``(seed, 1, epoch)``."""
    import torch

    from ptl_cli.engine.seeding import generator_for

    positions = torch.arange(step * batch, (step + 1) * batch)
    out = torch.empty(batch, dtype=torch.long)
    for epoch in torch.unique(positions // n).tolist():
        chosen = positions // n == epoch
        out[chosen] = torch.randperm(n, generator=generator_for(seed, 1, epoch))[positions[chosen] % n]
    return out


class _CheckedSSL:
    """An SSL algorithm as :func:`check_ssl` hands it to the SSL step: each call is named in its
    errors, ``loss``'s result is checked before it is backpropagated, and the gradient before
    ``after_step`` (every head of :func:`ptl_cli.engine.heads.attach` must get one too: a head
    no loss uses would fail under DDP); ``unlabeled_index`` and ``labeled_index`` are passed on
    only to a ``loss`` that declares them."""

    def __init__(self, algo: Any, what: str, net: Any) -> None:
        self.algo, self.what, self.net = algo, what, net
        self.labeled_views, self.unlabeled_views = algo.labeled_views, algo.unlabeled_views
        indices = {"unlabeled_index": None, "labeled_index": None}
        self.declared = set(optional_arguments("ssl", "loss", algo.loss, indices))

    def loss(
        self,
        model: Any,
        labeled: Any,
        targets: Any,
        unlabeled: Any,
        step: int,
        total: int,
        unlabeled_index: Any = None,
        labeled_index: Any = None,
    ) -> tuple[Any, dict[str, Any]]:
        import torch

        what = self.what
        given = {"unlabeled_index": unlabeled_index, "labeled_index": labeled_index}
        extra = {k: v for k, v in given.items() if k in self.declared}
        call = "".join(f", {k}=..." for k in extra)
        with calling(what, f"loss(model, labeled, targets, unlabeled, {step}, {total}{call})"):
            out = self.algo.loss(model, labeled, targets, unlabeled, step, total, **extra)
        _require(isinstance(out, tuple) and len(out) == 2, what, "loss() must return (loss, logs)")
        loss, logs = out
        _require(
            isinstance(loss, torch.Tensor) and loss.ndim == 0 and loss.requires_grad,
            what,
            "loss() must return a 0-dim tensor that requires grad as its first item",
        )
        _require(bool(torch.isfinite(loss)), what, f"loss() is not finite at step {step}: {loss.item()}")
        _require(isinstance(logs, dict), what, f"loss() logs must be a dict, got {type(logs).__name__}")
        for key, value in logs.items():
            scalar = isinstance(value, (int, float)) or (
                isinstance(value, torch.Tensor) and value.numel() == 1
            )
            _require(isinstance(key, str) and scalar, what, f"log {key!r} is not a named scalar: {value!r}")
        return loss, logs

    def after_step(self, model: Any, step: int) -> None:
        from ptl_cli.engine.heads import WithHeads, plain

        _require(
            any(p.grad is not None for p in plain(self.net).parameters()),
            self.what,
            "no gradient reaches the model",
        )
        for name, head in self.net.heads.items() if isinstance(self.net, WithHeads) else ():
            trained = [p for p in head.parameters() if p.requires_grad]
            _require(
                not trained or any(p.grad is not None for p in trained),
                self.what,
                f"no gradient reaches its head {name!r} at step {step} (every head must be used by "
                "every loss: DDP fails on parameters a step leaves out)",
            )
        with calling(self.what, f"after_step(model, {step})"):
            self.algo.after_step(model, step)


def check_ssl(
    component: Any,
    params: dict[str, Any] | None = None,
    *,
    num_classes: int = 5,
    model: Callable[[int], Any] | None = None,
    steps: int = 4,
    resume_at: int = 2,
    seed: int = 0,
    gpu: bool = True,
) -> Any:
    """Check an SSL algorithm on real images and a tiny real conv net (:func:`confident_net`, or
    ``model(num_classes)``, a fresh network per call): it names known views, ``loss`` gives a
    finite scalar with gradients plus scalar logs, ``after_step`` runs, its ``state_dict``
    survives a ``weights_only`` checkpoint, two runs from one seed agree, and a run resumed at
    ``resume_at`` equals an uninterrupted one: the losses, the model, and the algorithm's whole
    state, every attribute holding tensors or plain data, not only what ``state_dict()`` returns.

    The unlabeled batches come from a set of :data:`NUM_UNLABELED` real images, drawn as
    ``ptl transfer`` draws them (:func:`unlabeled_indices`): a factory that accepts
    ``num_unlabeled``/``num_labeled`` gets the sizes, a ``loss`` that declares ``unlabeled_index``
    the indices, and samples come back every epoch, so per-sample state is exercised; a ``loss``
    that declares ``labeled_index`` gets the labeled batch's indices (:func:`labeled_indices`).
    An algorithm with ``heads`` trains them as ``ptl transfer`` does
    (:func:`ptl_cli.engine.heads.attach` before the optimizer): each must get a gradient every
    step, and they are checkpointed and resumed with the model.

    With ``gpu`` (and a CUDA build of torch) the SSL step also runs on a simulated GPU
    (:mod:`ptl_cli.testing_gpu`) in fp32 and fp16-mixed, as :func:`check_pruner` does."""
    import torch

    from ptl_cli.data.views import VIEW_NAMES
    from ptl_cli.engine.seeding import capture_rng, generator_for, restore_rng

    build, what = _builder("ssl", component, params)
    make_model = model or (lambda k: confident_net(k))
    sizes = {"num_labeled": NUM_LABELED, "num_unlabeled": NUM_UNLABELED}
    algo = build(num_classes, **sizes)
    for attr in ("labeled_views", "unlabeled_views"):
        views = getattr(algo, attr)
        _require(
            isinstance(views, tuple) and all(v in VIEW_NAMES for v in views),
            what,
            f"{attr} must be a tuple of view names from {VIEW_NAMES}, got {views!r}",
        )
    pool, _ = sample_batch(NUM_UNLABELED, 0, seed + 1, num_classes)

    def fresh() -> tuple[Any, Any, Any]:
        from ptl_cli.engine.heads import attach

        torch.manual_seed(seed)
        algo = build(num_classes, **sizes)
        with calling(what, "heads(feature_dim)"):
            net = attach(algo, make_model(num_classes), seed)
        return algo, net, torch.optim.SGD(net.parameters(), lr=0.03, momentum=0.9)

    def train(algo: Any, net: Any, optimizer: Any, start: int, stop: int) -> list[float]:
        """Steps ``start..stop-1`` with the SSL step ``ptl transfer`` takes (views from a
        generator seeded by ``(seed, step)``, then loss, SGD step, ``after_step``)."""
        from ptl_cli.engine.ssl_step import SSLStep

        gen = torch.Generator()

        def views(images: Any, names: tuple[str, ...]) -> dict[str, Any]:
            return make_views(images, names, gen)

        ssl_step = SSLStep(_CheckedSSL(algo, what, net), net, optimizer, views, total_steps=steps)
        losses = []
        net.train()
        for step in range(start, stop):
            gen.manual_seed(generator_for(seed, step).initial_seed())
            x, y = sample_batch(LABELED_BATCH, step, seed, num_classes)
            index = unlabeled_indices(step, seed)
            loss, _ = ssl_step(step, x, y, pool[index], index, labeled_indices(step, seed))
            losses.append(loss.item())
        return losses

    algo, net, optimizer = fresh()
    losses = train(algo, net, optimizer, 0, steps)
    twin_algo, twin, twin_opt = fresh()
    twin_losses = train(twin_algo, twin, twin_opt, 0, resume_at)
    _require(twin_losses == losses[:resume_at], what, "two runs from the same seed give different losses")
    with calling(what, "state_dict()"):
        ssl_state = twin_algo.state_dict()
    checkpoint = _roundtrip(
        {
            "model": twin.state_dict(),
            "optimizer": twin_opt.state_dict(),
            "ssl": ssl_state,
            "rng": capture_rng(),
        },
        what,
        "state_dict()",
    )
    resumed_algo, resumed, resumed_opt = fresh()
    torch.manual_seed(seed + 12345)  # a resumed process starts from other global RNG state
    resumed.load_state_dict(checkpoint["model"])
    resumed_opt.load_state_dict(checkpoint["optimizer"])
    with calling(what, "load_state_dict(state) of its own state_dict() after a checkpoint"):
        resumed_algo.load_state_dict(checkpoint["ssl"])
    restore_rng(checkpoint["rng"])
    resumed_losses = train(resumed_algo, resumed, resumed_opt, resume_at, steps)
    _require(
        resumed_losses == losses[resume_at:],
        what,
        f"a run resumed at step {resume_at} gives losses {resumed_losses}, an uninterrupted one "
        f"{losses[resume_at:]} (is all state in state_dict()?)",
    )
    assert_same_state(net.state_dict(), resumed.state_dict(), what, f"model after resume at step {resume_at}")
    assert_same_state(algo.state_dict(), resumed_algo.state_dict(), what, "SSL state after resume")
    try:
        where = f"SSL algorithm after resume at step {resume_at}"
        assert_same_state(object_state(algo), object_state(resumed_algo), what, where)
    except ContractError as exc:
        raise ContractError(f"{exc} (is all state in state_dict()?)") from None
    if gpu:
        check_ssl_on_gpu(component, params, num_classes=num_classes, model=model, steps=steps, seed=seed)
    return algo


# -- the simulated GPU ------------------------------------------------------------------------------------
GPU_PRECISIONS = ("fp32", "fp16-mixed")


def _gpu_verdict(gpu: Any, first: list[Any], what: str, precision: str) -> None:
    """A contract error naming every problem the simulated GPU recorded during the steps.

    ``first`` is what the first step recorded: there a one-time host sync is tolerated (state
    built on the CPU and moved to the device on first use); a wrong device, a CPU generator or a
    race is not. From the second step on, any host sync fails, declared or not."""
    found = [f for f in first if f.kind != "sync"] + gpu.findings
    if found:
        more = f"; and {len(found) - 6} more" if len(found) > 6 else ""
        listed = "; ".join(str(f) for f in found[:6]) + more
        raise ContractError(
            f"{what}: on a simulated GPU ({precision}) a training step {listed}. A step on a GPU "
            "must keep every tensor and generator on its device and read nothing back to the host "
            "(keep logs as tensors; docs/plugins/reference.md)"
        )


def check_pruner_on_gpu(
    component: Any,
    params: dict[str, Any] | None = None,
    *,
    model: Callable[[], Any] | None = None,
    steps: int = 4,
    seed: int = 0,
    precisions: tuple[str, ...] = GPU_PRECISIONS,
) -> None:
    """``steps`` training steps of a pruner (the step ``ptl prune`` runs, with ``after_step``) on a
    simulated ``cuda:0``, per precision; nothing if torch has no CUDA build (pip's CPU-only wheel)."""
    import torch

    from ptl_cli import pruning, testing_gpu
    from ptl_cli.engine.compute import host_to_device, optimizer_options
    from ptl_cli.engine.device import Precision
    from ptl_cli.engine.sync import host_sync

    if not testing_gpu.available():
        return
    build, what = _builder("pruners", component, params)
    make_model = model or tiny_net
    for name in precisions:
        torch.manual_seed(seed)
        pruner = build()
        prepared = pruning.prepare(pruner, make_model(), seed)  # on the CPU, then moved, as ptl prune does
        batches = [sample_batch(8, step, seed) for step in range(steps)]
        with testing_gpu.SimulatedGPU() as gpu:
            device = torch.device("cuda", 0)
            with host_sync("setup"):
                net = prepared.to(device)
                params = list(pruner.trainable_parameters(net))
                optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9, **optimizer_options(device))
                precision = Precision(name, device)
            gpu.clear()
            net.train()
            first: list[Any] = []
            for step, (x, y) in enumerate(batches):
                x, y = host_to_device(x, device), host_to_device(y, device)
                guard = lambda call: calling(what, call)  # noqa: E731
                pruning.train_step(pruner, net, optimizer, x, y, step + 1, precision=precision, guard=guard)
                if step == 0:
                    first = list(gpu.findings)
                    gpu.clear()
        _gpu_verdict(gpu, first, what, name)


def check_ssl_on_gpu(
    component: Any,
    params: dict[str, Any] | None = None,
    *,
    num_classes: int = 5,
    model: Callable[[int], Any] | None = None,
    steps: int = 4,
    seed: int = 0,
    precisions: tuple[str, ...] = GPU_PRECISIONS,
    ema: Callable[[Any], Any] | None = None,
) -> None:
    """``steps`` SSL steps (:class:`ptl_cli.engine.ssl_step.SSLStep`: views, loss, optimizer,
    ``after_step``, and the update of ``ema(model)`` when given) on a simulated ``cuda:0``, per
    precision; nothing if torch has no CUDA build (pip's CPU-only wheel)."""
    import torch

    from ptl_cli import testing_gpu
    from ptl_cli.engine.compute import host_to_device, optimizer_options
    from ptl_cli.engine.device import Precision
    from ptl_cli.engine.heads import attach
    from ptl_cli.engine.ssl_step import SSLStep
    from ptl_cli.engine.sync import host_sync

    if not testing_gpu.available():
        return
    build, what = _builder("ssl", component, params)
    make_model = model or (lambda k: confident_net(k))
    sizes = {"num_labeled": NUM_LABELED, "num_unlabeled": NUM_UNLABELED}
    pool, _ = sample_batch(NUM_UNLABELED, 0, seed + 1, num_classes)
    batches = [sample_batch(LABELED_BATCH, step, seed, num_classes) for step in range(steps)]
    for name in precisions:
        torch.manual_seed(seed)
        algo = build(num_classes, **sizes)
        with calling(what, "heads(feature_dim)"):
            net = attach(algo, make_model(num_classes), seed)  # on the CPU, then moved, as ptl transfer does
        with testing_gpu.SimulatedGPU() as gpu:
            device = torch.device("cuda", 0)
            with host_sync("setup"):
                net = net.to(device)
                fused = optimizer_options(device)
                optimizer = torch.optim.SGD(net.parameters(), lr=0.03, momentum=0.9, **fused)
                averaged = ema(net) if ema is not None else None
                ssl_step = SSLStep(
                    algo,
                    net,
                    optimizer,
                    views=lambda images, names: make_views(images, names),  # the device's RNG
                    total_steps=steps,
                    precision=Precision(name, device),
                    ema=averaged,
                )
            gpu.clear()
            net.train()
            first: list[Any] = []
            for step, (x, y) in enumerate(batches):
                index = unlabeled_indices(step, seed)
                x, y, u, xi, ui = (
                    host_to_device(t, device) for t in (x, y, pool[index], labeled_indices(step, seed), index)
                )
                with calling(what, f"the SSL step {step} (views, loss, after_step)"):
                    ssl_step(step, x, y, u, ui, xi)
                if step == 0:
                    first = list(gpu.findings)
                    gpu.clear()
        _gpu_verdict(gpu, first, what, name)


# -- generators and source classifiers ------------------------------------------------------------------
def check_generator(
    component: Any,
    params: dict[str, Any] | None = None,
    *,
    device: str = "cpu",
    batch: int = 3,
    seed: int = 0,
) -> Any:
    """Check a conditional generator: its metadata, ``sample`` gives ``(B, channels, size, size)``
    floats in [0, 1] for class indices and for probability rows, one-hot rows equal the indices
    they encode, and the same ``z``/``generator`` gives the same images."""
    import torch

    build, what = _builder("generators", component, params)
    gen = build(torch.device(device))
    k = gen.num_classes
    _require(isinstance(k, int) and k >= 1, what, f"num_classes must be a positive int, got {k!r}")
    for attr in ("image_size", "channels"):
        value = getattr(gen, attr)
        _require(isinstance(value, int) and value >= 1, what, f"{attr} must be a positive int, got {value!r}")
    _require(len(gen.class_names) == k, what, f"{len(gen.class_names)} class_names for {k} classes")
    _require(isinstance(gen.id, str) and gen.id, what, f"id must be a non-empty string, got {gen.id!r}")
    shape = (batch, gen.channels, gen.image_size, gen.image_size)
    y = torch.arange(batch, device=device) % k

    def sample(cond: Any, z: Any = None, s: int = seed) -> Any:
        with torch.no_grad(), calling(what, f"sample(y of shape {tuple(cond.shape)}, generator=...)"):
            out = gen.sample(cond, z=z, generator=torch.Generator(device=device).manual_seed(s))
        _require(
            isinstance(out, torch.Tensor) and out.is_floating_point(), what, "sample() must give float images"
        )
        _require(tuple(out.shape) == shape, what, f"sample() gave {tuple(out.shape)}; expected {shape}")
        _require(
            bool(torch.isfinite(out).all()) and float(out.min()) >= 0.0 and float(out.max()) <= 1.0,
            what,
            f"sample() must give images in [0, 1], got [{float(out.min()):.3g}, {float(out.max()):.3g}]",
        )
        return out

    first = sample(y)
    _require(torch.equal(first, sample(y)), what, "the same generator seed gives different images")
    _require(
        not torch.equal(first, sample(y, s=seed + 1)), what, "different generator seeds give the same images"
    )
    one_hot = torch.nn.functional.one_hot(y, k).float()
    _require(
        torch.allclose(sample(one_hot), first, atol=1e-4),
        what,
        "one-hot probability rows must give the same images as the class indices they encode",
    )
    soft = torch.full((batch, k), 1.0 / k, device=device)
    sample(soft)
    return gen


def check_classifier(
    component: Any,
    params: dict[str, Any] | None = None,
    *,
    device: str = "cpu",
    channels: int = 3,
    sizes: tuple[int, ...] = (28, 40),
) -> Any:
    """Check a source classifier: metadata, and ``(B, num_classes)`` logits for images in [0, 1] of
    several sizes (it resizes and normalizes inside ``forward``)."""
    import torch

    build, what = _builder("classifiers", component, params)
    clf = build(torch.device(device))
    k = clf.num_classes
    _require(isinstance(k, int) and k >= 1, what, f"num_classes must be a positive int, got {k!r}")
    _require(len(clf.class_names) == k, what, f"{len(clf.class_names)} class_names for {k} classes")
    _require(isinstance(clf.id, str) and clf.id, what, f"id must be a non-empty string, got {clf.id!r}")
    for size in sizes:
        x = torch.rand(2, channels, size, size, generator=torch.Generator().manual_seed(size)).to(device)
        where = f"calling it on {size}×{size} images"
        try:
            with torch.no_grad():
                out = clf(x)
        except Exception as exc:  # noqa: BLE001 - any failure here is the contract's breach
            raise ContractError(
                f"{what}: {where} raised {type(exc).__name__}: {str(exc).splitlines()[0]} "
                "(a source classifier resizes and normalizes inside forward)"
            ) from exc
        _logits(out, 2, k, what, where)
    return clf


def check_logger(
    component: Any,
    params: dict[str, Any] | None = None,
    *,
    run_dir: str | os.PathLike[str],
    steps: int = 3,
) -> Any:
    """Check an experiment logger as a run drives it, in ``run_dir`` (a temporary folder): built
    with ``(run_dir, run_id, resuming=False)``, it takes flattened hyperparameters, ``steps``
    metrics records (two stages, as workflows log them), a real PNG and ``close()``; built again
    with ``resuming=True`` it continues the same run. What it wrote is the caller's to read back."""
    from PIL import Image

    build, what = _builder("loggers", component, params)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    image = run_dir / "curves.png"
    Image.new("RGB", (32, 24), (200, 30, 30)).save(image)
    hyper = {"kind": "prune", "seed": 0, "train.lr": 0.1, "model.width": 0.5, "compute.log": "['x']"}
    for resuming, first in ((False, 0), (True, steps)):
        logger = build(str(run_dir), run_dir.name, resuming)
        with calling(what, "log_hyperparams(params)"):
            logger.log_hyperparams(dict(hyper))
        for step in range(first, first + steps):
            with calling(what, f"log_metrics(metrics, {step + 1})"):
                logger.log_metrics({"train/loss": 1.0 / (step + 1), "train/lr": 0.1}, step + 1)
        with calling(what, "log_metrics(metrics, step) of a stage that restarts its steps"):
            logger.log_metrics({"test/test_acc": 0.5}, 1)
        if resuming:
            with calling(what, "log_image(name, path)"):
                logger.log_image("curves", str(image))
        with calling(what, "close()"):
            logger.close()
    return logger


#: ``check_<kind>`` for each component kind that has one, as named in :data:`ptl_cli.kinds.KINDS`.
CHECKS: dict[str, Callable[..., Any]] = {
    name: globals()[kind.check] for name, kind in KINDS.items() if kind.check
}

__all__ = [
    "CHECKS",
    "ContractError",
    "assert_same_state",
    "calling",
    "check_classifier",
    "check_dataset",
    "check_generator",
    "check_logger",
    "check_model",
    "check_plugin_loads",
    "check_pruner",
    "check_ssl",
    "confident_net",
    "install_plugin",
    "make_views",
    "pip_install",
    "run_ptl",
    "sample_batch",
    "tiny_net",
]
