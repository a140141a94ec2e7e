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

import importlib.util
import sys
import types
from collections.abc import Mapping
from pathlib import Path


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
