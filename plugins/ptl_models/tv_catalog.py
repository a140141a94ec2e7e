"""torchvision's model builders and weight names, read without importing torch.

``--dry-run`` checks a ``torchvision:NAME`` (and its ``weights``) before anything heavy loads,
and importing torchvision costs seconds. Its builders are plain decorated functions
(``@register_model()`` and a ``weights: Optional[X_Weights]`` parameter, ``X_Weights`` a
``WeightsEnum`` of ``NAME = Weights(...)`` members), so parsing the installed package's
sources gives the same catalog as ``torchvision.models.list_models`` and
``get_model_weights``. Should a torchvision release stop reading that way (nothing found), the
catalog comes from torchvision itself. ``tests/models`` compares the two.
"""

from __future__ import annotations

import ast
import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path


@dataclass(frozen=True)
class Builder:
    name: str  # the registered model name
    top_level: bool  # defined in torchvision.models itself (not detection/quantization/...)
    weights: tuple[str, ...]  # its weights enum's member names (DEFAULT not included)
    enum: str  # the enum's class name ("" when none was found)
    module: str = ""  # the file that defines it ("resnet" for torchvision.models.resnet)
    linear: bool = True  # its file builds an nn.Linear (SqueezeNet's classifier is a convolution)


def _names(node: ast.AST | None) -> list[str]:
    """Every plain name in an annotation, outermost first (``Optional[Union[A, B]]`` -> A, B)."""
    return [n.id for n in ast.walk(node) if isinstance(n, ast.Name)] if node is not None else []


def _registered_name(decorators: list[ast.expr], default: str) -> str | None:
    for deco in decorators:
        if isinstance(deco, ast.Call) and getattr(deco.func, "id", None) == "register_model":
            for kw in deco.keywords:
                if kw.arg == "name" and isinstance(kw.value, ast.Constant):
                    return str(kw.value.value)
            if deco.args and isinstance(deco.args[0], ast.Constant):
                return str(deco.args[0].value)
            return default
    return None


def _scan(models_dir: Path, everything: bool) -> dict[str, Builder]:
    enums: dict[str, tuple[str, ...]] = {}
    found: list[tuple[str, bool, list[str], str, bool]] = []
    for path in sorted(models_dir.rglob("*.py") if everything else models_dir.glob("*.py")):
        top_level = path.parent == models_dir
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text, str(path))
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and any(_names(b)[-1:] == ["WeightsEnum"] for b in node.bases):
                members = [
                    t.id
                    for item in node.body
                    if isinstance(item, ast.Assign) and isinstance(item.value, ast.Call)
                    for t in item.targets
                    if isinstance(t, ast.Name)
                ]
                enums[node.name] = tuple(members)
            elif isinstance(node, ast.FunctionDef):
                name = _registered_name(node.decorator_list, node.name)
                if name is None:
                    continue
                args = node.args.args + node.args.kwonlyargs
                weights = next((a.annotation for a in args if a.arg == "weights"), None)
                found.append((name, top_level, _names(weights), path.stem, "Linear(" in text))
    out = {}
    for name, top_level, annotation, module, linear in found:
        enum = next((n for n in annotation if n in enums), "")
        out[name] = Builder(name, top_level, enums.get(enum, ()), enum, module, linear)
    return out


def _from_torchvision(everything: bool) -> dict[str, Builder]:
    import torchvision.models as tvm

    top = set(tvm.list_models(module=tvm))
    out = {}
    for name in tvm.list_models() if everything else top:
        module = tvm.get_model_builder(name).__module__.rsplit(".", 1)[-1]
        try:
            enum = tvm.get_model_weights(name)
        except (ValueError, KeyError):
            out[name] = Builder(name, name in top, (), "", module)
            continue
        out[name] = Builder(name, name in top, tuple(w.name for w in enum), enum.__name__, module)
    return out


@cache
def catalog(everything: bool = False) -> dict[str, Builder]:
    """Registered model name -> :class:`Builder` for the installed torchvision (empty: none).

    Only the builders of ``torchvision.models`` itself (what ``torchvision:NAME`` models are),
    unless ``everything``: then detection, quantization, video, ... too (a tenth of a second).
    """
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return {}
    models_dir = Path(next(iter(spec.submodule_search_locations))) / "models"
    try:
        found = _scan(models_dir, everything) if models_dir.is_dir() else {}
    except (OSError, SyntaxError, UnicodeDecodeError):
        found = {}
    if not found or not any(b.top_level for b in found.values()):
        return _from_torchvision(everything)
    return found


def model_names(everything: bool = False) -> list[str]:
    """What ``list_models(module=torchvision.models)`` (``everything``: ``list_models()``) returns."""
    return sorted(catalog(everything))


def model_problem(
    name: str, weights: str | None = None, width: float | None = None, stem: str = "keep"
) -> str | None:
    """What is wrong with model ``torchvision:ARCH`` (its weights, a width factor, the stem), or None.

    The same words whether the recipe is read (``--dry-run``) or the model is built; the
    caller names the model (a recipe error names the section, a build error the model).
    """
    from ptl_cli.errors import did_you_mean

    builders = catalog()
    if not builders:  # no torchvision here: building the model says so
        return None
    arch = name.split(":", 1)[1] if ":" in name else name
    if arch not in builders:
        return f"unknown torchvision model {arch!r}; {did_you_mean(arch, model_names())}"
    if width is not None and width != 1.0:
        return f"torchvision models have no width factor; remove `width` (got {width})"
    builder = builders[arch]
    if stem == "cifar" and builder.module != "resnet":
        return "stem='cifar' works on torchvision ResNets (conv1 + maxpool) only"
    if weights:
        known = [*builder.weights, "DEFAULT"]
        if weights not in known and weights not in {f"{builder.enum}.{k}" for k in known}:
            return f"unknown weights {weights!r}; {did_you_mean(weights, known)}"
    return None


def classifier_problem(name: str, weights: str) -> str | None:
    """What is wrong with source classifier ``torchvision:ARCH`` and its ``weights``, or None.

    Any registered torchvision model with a weights enum (detection and video ones too), as
    ``torchvision.models.get_model_weights`` accepts them; the caller names the classifier.
    """
    from ptl_cli.errors import did_you_mean

    arch = name.split(":", 1)[1] if ":" in name else name
    builder = catalog().get(arch)  # the classifiers people use: no need to read detection & co.
    if builder is None:
        builders = catalog(everything=True)
        if not builders:
            return None
        builder = builders.get(arch)
    if builder is None or not builder.enum:
        return f"unknown torchvision classifier {arch!r}; {did_you_mean(arch, model_names(everything=True))}"
    if weights != "DEFAULT" and weights not in builder.weights:
        known = ", ".join(["DEFAULT", *builder.weights])
        return f"unknown weights {weights!r}; known: {known}"
    return None


def lacks_linear_head(name: str) -> bool:
    """Whether model ``torchvision:ARCH`` certainly has no ``nn.Linear`` (a head to swap)."""
    builder = catalog().get(name.split(":", 1)[-1])
    return builder is not None and not builder.linear
