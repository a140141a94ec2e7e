"""Source classes as names, and the prompts that stand for them (text-to-image and CLIP sources).

A text-to-image generator and a CLIP zero-shot classifier have no label table of their own: the
source classes are a list of names, and each class is spoken as one or more prompt templates
(``"a photo of a {name}."``). Both components read the same two settings, so a recipe that gives
them the same ``classes`` and ``templates`` conditions and classifies over one label space.

``classes`` is ``"imagenet"`` (the 1000 ImageNet categories in torchvision's order, which is the
order of every ``torchvision:NAME`` classifier's logits), a text file with one name per line, or
an inline list of names. Everything here but :func:`class_names` is cheap: recipes check their
settings with it when they are read (``--dry-run``), without torch.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from pathlib import Path

from ptl_cli.errors import UserError

IMAGENET = "imagenet"
DEFAULT_TEMPLATES = ("a photo of a {name}.",)


def template_problem(templates: Sequence[str]) -> str | None:
    """What is wrong with a list of prompt templates (each needs ``{name}`` and no other field)."""
    if not templates:
        return "templates must hold at least one prompt template, e.g. 'a photo of a {name}.'"
    for template in templates:
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
        except ValueError as exc:
            return f"template {template!r} is not a format string ({exc})"
        if "name" not in fields or any(f != "name" for f in fields):
            return f"template {template!r} must contain {{name}} and no other {{field}}"
    return None


def classes_problem(classes: str | Sequence[str]) -> str | None:
    """What is wrong with a ``classes`` setting, checked without reading torchvision."""
    if isinstance(classes, str):
        if classes == IMAGENET:
            return None
        path = Path(classes).expanduser()
        if not path.is_file():
            return (
                f"classes {classes!r}: not 'imagenet' and no such file; give 'imagenet', a text file "
                "with one class name per line, or a list of names"
            )
        try:
            names = _read_names(path)
        except (OSError, UnicodeDecodeError) as exc:
            return f"classes file {path} cannot be read ({exc})"
    else:
        names = [str(n).strip() for n in classes]
    if not names or any(not n for n in names):
        return "classes must name at least one class, and no name may be empty"
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        return f"classes name {repeated[0]!r} more than once; every source class needs its own name"
    return None


def _read_names(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def class_names(classes: str | Sequence[str]) -> tuple[str, ...]:
    """The class names a ``classes`` setting means (one-line errors for bad settings)."""
    problem = classes_problem(classes)
    if problem:
        raise UserError(problem)
    if isinstance(classes, str):
        if classes == IMAGENET:
            from ptl_generators.conditioning import imagenet_class_names

            return imagenet_class_names()
        return tuple(_read_names(Path(classes).expanduser()))
    return tuple(str(n).strip() for n in classes)


def prompts(names: Sequence[str], templates: Sequence[str]) -> list[list[str]]:
    """``prompts(names, templates)[c][t]``: template ``t`` spoken for class ``c``."""
    problem = template_problem(templates)
    if problem:
        raise UserError(problem)
    return [[t.format(name=name) for t in templates] for name in names]


def require(module: str, extra: str, what: str) -> None:
    """A one-line error when an optional dependency is not installed (not an ImportError trace)."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise UserError(f"{what} needs the {module} package; install it with `pip install 'ptl[{extra}]'`")


def text_digest(names: Sequence[str], templates: Sequence[str], extra: str = "") -> str:
    """A short digest of the classes and templates: part of a component's id (pools are keyed by it)."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps([list(names), list(templates), extra]).encode()).hexdigest()[:16]
