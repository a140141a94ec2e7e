"""Load single modules of reference implementations installed for the oracle tests.

semilearn (USB) is installed with ``--no-deps``: its package ``__init__`` files import the whole
training stack (scikit-learn, torchvision datasets, ...), which we do not install. These helpers
execute one source file of it as its own module, with the parent packages stubbed as empty
packages while it loads, so only the imports that file itself makes run. Nothing is copied: the
code under test is always compared with the installed reference file.

Tests reach this module through the ``reference`` fixture (``tests/conftest.py``): with
``--import-mode=importlib`` a test module cannot import a sibling module.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import types
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch


def package_dir(package: str) -> Path:
    """Where ``package`` is installed, found without importing (running) it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"reference package {package!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def load_file(package: str, relative: str, provides: Mapping[str, object] | None = None) -> types.ModuleType:
    """Execute ``package/relative`` (e.g. ``"datasets/augmentation/randaugment.py"``) as a module.

    Its parent packages are empty stand-ins during the load (their ``__init__`` never runs).
    ``provides`` maps module names the file imports (``"semilearn.core.hooks"``) to objects
    made available under them, e.g. ``{"semilearn.core.hooks": {"Hook": object}}``: a dict of
    attributes becomes a stub module, a module is used as is. ``sys.modules`` is restored after.
    """
    root = package_dir(package)
    path = root / relative
    name = ".".join([package, *Path(relative).with_suffix("").parts])
    saved = dict(sys.modules)
    try:
        parts = name.split(".")
        for depth in range(1, len(parts)):
            parent = ".".join(parts[:depth])
            stub = types.ModuleType(parent)
            stub.__path__ = [str(root.joinpath(*parts[1:depth]))]
            sys.modules[parent] = stub
        for module_name, value in (provides or {}).items():
            if isinstance(value, types.ModuleType):
                sys.modules[module_name] = value
            else:
                stub = types.ModuleType(module_name)
                stub.__dict__.update(dict(value))  # type: ignore[arg-type]
                sys.modules[module_name] = stub
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    finally:
        sys.modules.clear()
        sys.modules.update(saved)


class _Registry:
    """Stands in for ``semilearn.core.utils.ALGORITHMS``: registering is a no-op here."""

    def register(self, name: str) -> Callable[[type], type]:
        return lambda cls: cls


def usb_algorithm_stand_in(
    hooks: Iterable[str], extra_init: Callable[[Any, Any], None] | None = None
) -> types.SimpleNamespace:
    """A stand-in for USB's ``AlgorithmBase`` and the stub modules its algorithm files import.

    USB's real ``AlgorithmBase`` imports scikit-learn, tensorboard, its datasets and optimizers;
    the stand-in has only the members the algorithms' ``train_step`` use (hooks by name,
    ``compute_prob`` = softmax, ``amp_cm``, ...), set from ``args`` as USB's ``__init__`` sets
    them. ``extra_init(self, args)`` sets what a test's algorithms need beyond that, before the
    hooks are set. ``hooks`` names the real hook classes (from ``algorithms/hooks/masking.py``
    or ``pseudo_label.py``) served as ``semilearn.algorithms.hooks``. Returns the base class,
    ``provides`` (the stub mapping for :func:`load_file`), ``needs`` (what the hook files
    import) and the real modules loaded: ``masking``, ``labeling``, ``criterions``,
    ``cross_entropy``.
    """
    hook = load_file("semilearn", "core/hooks/hook.py")
    algorithm_utils = types.ModuleType("semilearn.algorithms.utils")
    for part in ("misc", "ops"):
        algorithm_utils.__dict__.update(vars(load_file("semilearn", f"algorithms/utils/{part}.py")))
    needs = {"semilearn.core.hooks": {"Hook": hook.Hook}, "semilearn.algorithms.utils": algorithm_utils}
    masking = load_file("semilearn", "algorithms/hooks/masking.py", needs)
    labeling = load_file("semilearn", "algorithms/hooks/pseudo_label.py", needs)
    criterions = load_file("semilearn", "core/criterions/consistency.py")
    cross_entropy = load_file("semilearn", "core/criterions/cross_entropy.py")
    hook_classes = {name: getattr(masking, name, None) or getattr(labeling, name) for name in hooks}

    class AlgorithmBase:
        """The members of USB's ``AlgorithmBase`` that the algorithms' ``train_step`` use."""

        def __init__(self, args, net_builder=None, tb_log=None, logger=None, **kwargs) -> None:
            self.args = args
            self.model = args.model
            self.num_classes = args.num_classes
            self.lambda_u = args.ulb_loss_ratio
            self.use_cat = True  # USB's default
            self.amp_cm = contextlib.nullcontext
            self.ce_loss = cross_entropy.CELoss()
            self.consistency_loss = criterions.ConsistencyLoss()
            self.hooks_dict: dict[str, object] = {}
            if extra_init is not None:
                extra_init(self, args)
            self.set_hooks()

        def set_hooks(self) -> None:
            """USB's own hooks here (EMA, logging, ...) run outside ``train_step``."""

        def register_hook(self, hook, name=None, priority="NORMAL") -> None:
            self.hooks_dict[name or type(hook).__name__] = hook

        def registered_hook(self, name: str) -> bool:
            return name in self.hooks_dict

        def call_hook(self, fn_name, hook_name=None, *args, **kwargs):
            return getattr(self.hooks_dict[hook_name], fn_name)(self, *args, **kwargs)

        def compute_prob(self, logits: torch.Tensor) -> torch.Tensor:
            return torch.softmax(logits, dim=-1)

        def process_out_dict(self, out_dict=None, **kwargs) -> dict:
            return {**(out_dict or {}), **kwargs}

        def process_log_dict(self, log_dict=None, prefix="train", **kwargs) -> dict:
            return {**(log_dict or {}), **kwargs}

    base = {"AlgorithmBase": AlgorithmBase}
    provides = {
        "semilearn.core": base,
        "semilearn.core.algorithmbase": base,
        "semilearn.core.utils": {"ALGORITHMS": _Registry()},
        "semilearn.algorithms.hooks": hook_classes,
        "semilearn.algorithms.utils": algorithm_utils,
    }
    return types.SimpleNamespace(
        AlgorithmBase=AlgorithmBase,
        provides=provides,
        needs=needs,
        masking=masking,
        labeling=labeling,
        criterions=criterions,
        cross_entropy=cross_entropy,
    )
