"""``ptl plugins new``: write an installable plugin package from the templates in ``templates/``.

The output is a working plugin, not a skeleton of TODOs: a ``pyproject.toml`` with the ``ptl``
entry point, a hooks module that registers one component lazily, its parameter schema, a
minimal component that keeps its kind's contract, and tests built on :mod:`ptl_cli.testing`
that pass right after ``pip install -e .``. Authors then replace the component with their own
and keep the tests green. Only the standard library is used here: the command stays cheap.

Templates are plain files ending in ``.tmpl``; ``{{key}}`` is replaced by the plugin's names and
``_package_`` in a path by the Python package name. ``common/`` is shared by every kind.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ptl_cli.errors import UserError
from ptl_cli.kinds import KINDS as COMPONENT_KINDS

TEMPLATES = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class Kind:
    """What the scaffold knows about one component kind (a view of :data:`ptl_cli.kinds.KINDS`)."""

    registry: str  # the registry kind (``ptl list <registry>``)
    label: str
    module: str  # the component's module in the generated package
    check: str  # the ``ptl_cli.testing.check_<check>`` its tests use
    description: str
    usage: str  # a command that uses the component, for the README


#: ``--kind`` value -> what to write: every kind of :data:`ptl_cli.kinds.KINDS` with a scaffold.
KINDS: dict[str, Kind] = {
    entry.scaffold.name: Kind(
        registry,
        entry.label,
        entry.scaffold.module,
        (entry.check or "").removeprefix("check_"),
        entry.scaffold.description,
        entry.scaffold.usage,
    )
    for registry, entry in COMPONENT_KINDS.items()
    if entry.scaffold is not None
}

_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


@dataclass(frozen=True)
class PluginNames:
    """The names one plugin goes by, all derived from what the author typed."""

    dist: str  # distribution and entry-point name: ptl-foo-bar
    package: str  # Python package: ptl_foo_bar
    component: str  # registered component name: foo-bar
    class_name: str  # FooBar

    @classmethod
    def from_name(cls, name: str) -> PluginNames:
        """``foo-bar`` or ``ptl-foo-bar`` -> dist ``ptl-foo-bar``, component ``foo-bar``."""
        if not _NAME.match(name):
            raise UserError(
                f"plugin name {name!r}: use lower-case letters and digits separated by single '-', "
                "starting with a letter (e.g. 'magnitude' or 'ptl-magnitude')"
            )
        if name == "ptl":
            raise UserError("plugin name 'ptl' is ptl itself; name the component, e.g. 'ptl-magnitude'")
        component = name.removeprefix("ptl-")
        dist = f"ptl-{component}"
        class_name = "".join(part.capitalize() for part in component.split("-"))
        return cls(dist, dist.replace("-", "_"), component, class_name)


def ptl_min_version() -> str:
    """``major.minor`` of the running ptl: what the generated package requires at least."""
    from ptl_cli import __version__

    parts = re.findall(r"\d+", __version__)[:2]
    return ".".join(parts) if len(parts) == 2 and __version__[0].isdigit() else "0"


def render(text: str, values: dict[str, str]) -> str:
    """Replace every ``{{key}}``; a placeholder without a value is a bug in the templates."""

    def substitute(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise KeyError(f"template placeholder {{{{{key}}}}} has no value")
        return values[key]

    return re.sub(r"\{\{(\w+)\}\}", substitute, text)


def template_values(names: PluginNames, kind: str) -> dict[str, str]:
    spec = KINDS[kind]
    return {
        "dist": names.dist,
        "package": names.package,
        "component": names.component,
        "class_name": names.class_name,
        "kind": kind,
        "kind_label": spec.label,
        "kind_plural": spec.registry,
        "module": spec.module,
        "check": spec.check,
        "description": spec.description,
        "usage": spec.usage.format(component=names.component),
        "ptl_min": ptl_min_version(),
    }


def planned_files(names: PluginNames, kind: str) -> dict[Path, Path]:
    """Relative output path -> template file, for the common files and the kind's own."""
    files: dict[Path, Path] = {}
    for base in (TEMPLATES / "common", TEMPLATES / kind):
        for template in sorted(base.rglob("*.tmpl")):
            relative = template.relative_to(base).with_suffix("")  # drop .tmpl
            files[Path(str(relative).replace("_package_", names.package))] = template
    return files


def scaffold(name: str, kind: str, directory: str | Path = ".") -> Path:
    """Write the plugin package for ``name`` into ``directory/<dist>`` and return that path.

    Refuses to write into an existing non-empty directory, so nothing is ever overwritten.
    """
    if kind not in KINDS:
        from ptl_cli.errors import did_you_mean

        raise UserError(f"--kind {kind!r} is not a kind the scaffold knows; {did_you_mean(kind, KINDS)}")
    names = PluginNames.from_name(name)
    target = Path(directory).expanduser() / names.dist
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UserError(f"{target} already exists and is not empty; choose another --dir or name")
    values = template_values(names, kind)
    files = planned_files(names, kind)
    if not files:
        raise UserError(f"the scaffold templates are missing from {TEMPLATES}; reinstall ptl")
    for relative, template in files.items():
        out = target / relative
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render(template.read_text(encoding="utf-8"), values), encoding="utf-8")
    return target


def name_taken_note(names: PluginNames, kind: str) -> str | None:
    """What ``ptl plugins new`` should say when the component's name is already registered.

    Follows the documented precedence (docs/plugins/installing.md): an installed plugin takes a
    name from a built-in; between two installed plugins the entry-point name that sorts first
    keeps it. So the note says truthfully whether the new plugin will own the bare name, and
    how the other component (or the new one) stays reachable as ``plugin/name``.
    """
    from ptl_cli import plugins

    manager = plugins.manager()
    registry = manager.registry(KINDS[kind].registry)
    if names.component not in registry.names():
        return None
    owner = registry.get(names.component).plugin
    if owner == names.dist:  # this very plugin is installed already
        return None
    info = manager.plugins.get(owner)
    taken = f"plugin {owner!r} already registers {registry.label} {names.component!r}"
    if (info is not None and info.builtin) or names.dist < owner:
        other = f"{owner}/{names.component}"
        return f"{taken}; once installed, yours takes the name and theirs stays reachable as {other!r}"
    return (
        f"{taken} and keeps it (between installed plugins the entry-point name that sorts first wins); "
        f"yours will be reachable only as '{names.dist}/{names.component}': consider another name"
    )
