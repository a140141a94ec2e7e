"""timm's registered model names, read without importing timm (or torch).

``--dry-run`` checks a ``timm:NAME`` before anything heavy loads, and ``import timm`` costs
seconds (it imports torch and every model module). timm registers each architecture with a
top-level ``@register_model`` decorator on its entry-point function in ``timm/models/*.py``, so
a scan of the installed package's sources for that pattern gives the same names as
``timm.list_models()`` in a few hundredths of a second. Should a timm release stop reading that
way (nothing found), the names come from timm itself. ``tests/models`` compares the two.
"""

from __future__ import annotations

import importlib.util
import re
from functools import cache
from pathlib import Path

_REGISTERED = re.compile(r"^@register_model(?:\(\s*\))?[ \t]*\n(?:@[^\n]*\n)*def[ \t]+(\w+)", re.M)


def installed() -> bool:
    return importlib.util.find_spec("timm") is not None


@cache
def model_names() -> tuple[str, ...]:
    """Every architecture ``timm.create_model`` builds (what ``timm.list_models()`` returns)."""
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        return ()
    models_dir = Path(next(iter(spec.submodule_search_locations))) / "models"
    found: set[str] = set()
    try:
        for path in sorted(models_dir.glob("*.py")):
            found.update(_REGISTERED.findall(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError):
        found = set()
    if not found:
        import timm

        return tuple(sorted(timm.list_models()))
    return tuple(sorted(found))


def model_problem(name: str, width: float | None = None) -> str | None:
    """What is wrong with model ``timm:ARCH`` (an unknown name, a width factor), or None.

    The same words whether the recipe is read (``--dry-run``) or the model is built.
    """
    from ptl_cli.errors import did_you_mean

    if not installed():
        return "timm is not installed; install it with `pip install 'ptl[timm]'`"
    arch = name.split(":", 1)[1] if ":" in name else name
    names = model_names()
    if arch not in names:
        return f"unknown timm model {arch!r}; {did_you_mean(arch, names)}"
    if width is not None and width != 1.0:
        return f"timm models have no width factor; remove `width` (got {width}), or pick a smaller model"
    return None
