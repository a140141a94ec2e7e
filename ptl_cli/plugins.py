"""Discovering, loading and guarding plugins (entry-point group ``ptl``).

Each entry point is imported on its own: a plugin that fails to import, or implements a hook
that does not exist, is recorded with its error and left out while everything else works.
``PTL_DISABLE_PLUGINS=a,b`` skips plugins by entry-point name; ``PTL_STRICT_PLUGINS=1`` turns
any load or registration failure into an error exit (meant for plugin authors' CI).
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import Any

import pluggy

from ptl_cli import hookspecs
from ptl_cli.errors import UserError, did_you_mean
from ptl_cli.kinds import KINDS
from ptl_cli.registry import Register, Registry, SpecError

GROUP = "ptl"
#: The distribution that ships the built-in plugins; third-party plugins win name clashes.
BUILTIN_DIST = "ptl"


@dataclass
class PluginInfo:
    """What ``ptl plugins`` shows about one entry point."""

    name: str
    module: str
    dist: str = ""
    version: str = ""
    hooks: list[str] = field(default_factory=list)
    status: str = "ok"  # ok | error | disabled
    error: str = ""
    detail: str = ""  # the traceback, shown with --verbose

    @property
    def builtin(self) -> bool:
        return self.dist == BUILTIN_DIST

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "module": self.module,
            "distribution": self.dist,
            "version": self.version,
            "builtin": self.builtin,
            "hooks": self.hooks,
            "status": self.status,
            "error": self.error,
        }


def _strict() -> bool:
    return os.environ.get("PTL_STRICT_PLUGINS", "").strip() not in ("", "0", "false", "no")


def _disabled() -> set[str]:
    raw = os.environ.get("PTL_DISABLE_PLUGINS", "")
    return {n.strip() for n in raw.split(",") if n.strip()}


class PluginManager:
    """Loads every plugin once and builds component registries on demand."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        #: Things a user should know that are not a plugin's failure (``ptl plugins`` prints them).
        self.notes: list[str] = []
        self._registries: dict[str, Registry] = {}
        self._load_all()

    # -- loading -----------------------------------------------------------------------------
    def _load_all(self) -> None:
        disabled = _disabled()
        seen: set[str] = set()
        eps = sorted(
            entry_points(group=GROUP), key=lambda e: (e.dist is None or e.dist.name != BUILTIN_DIST, e.name)
        )
        for ep in eps:
            dist = ep.dist.name if ep.dist else ""
            if ep.name in seen:
                owner = self.plugins[ep.name]
                if owner.dist != dist:  # another distribution took the name: report, never shadow
                    self._name_taken(ep, dist, owner)
                continue  # else the same distribution, visible twice on sys.path
            seen.add(ep.name)
            info = PluginInfo(
                name=ep.name, module=ep.value, dist=dist, version=ep.dist.version if ep.dist else ""
            )
            self.plugins[ep.name] = info
            if ep.name in disabled:
                info.status = "disabled"
                info.error = "blocked by PTL_DISABLE_PLUGINS"
                continue
            self._load_one(ep, info)
        for name in sorted(disabled - set(self.plugins)):
            self.notes.append(
                f"PTL_DISABLE_PLUGINS names {name!r}, which is not installed; "
                f"{did_you_mean(name, self.plugins)}"
            )
        if _strict():
            bad = [p for p in self.plugins.values() if p.status == "error"]
            if bad:
                p = bad[0]
                raise UserError(f"plugin {p.name!r} failed to load: {p.error} (PTL_STRICT_PLUGINS=1)")

    def _name_taken(self, ep: EntryPoint, dist: str, owner: PluginInfo) -> None:
        """Record a plugin left out because its entry-point name is already in use."""
        key = f"{ep.name} ({dist})"
        self.plugins[key] = PluginInfo(
            name=key,
            module=ep.value,
            dist=dist,
            version=ep.dist.version if ep.dist else "",
            status="error",
            error=(
                f"entry point name {ep.name!r} is already used by {owner.dist or 'another package'}; "
                "rename the entry point in [project.entry-points.ptl]"
            ),
        )

    def _load_one(self, ep: EntryPoint, info: PluginInfo) -> None:
        try:
            module = ep.load()
        except BaseException as exc:  # noqa: BLE001 - a plugin may raise anything, even SystemExit
            if isinstance(exc, KeyboardInterrupt):
                raise
            info.status = "error"
            info.error = f"{type(exc).__name__}: {exc}"
            info.detail = traceback.format_exc()
            return
        unknown = _unknown_hooks(module)
        if unknown:
            known = [n for n in dir(hookspecs) if n.startswith("ptl_")]
            name = unknown[0]
            info.status = "error"
            info.error = f"implements unknown hook {name!r}; {did_you_mean(name, known)}"
            return
        try:
            self.pm.register(module, name=ep.name)
        except (ValueError, pluggy.PluginValidationError) as exc:
            info.status = "error"
            info.error = str(exc)
            return
        info.hooks = sorted(
            impl_name
            for impl_name in dir(hookspecs)
            if impl_name.startswith("ptl_")
            and any(i.plugin_name == ep.name for i in getattr(self.pm.hook, impl_name).get_hookimpls())
        )

    # -- registries --------------------------------------------------------------------------
    def registry(self, kind: str) -> Registry:
        """The registry of ``kind`` (see :data:`ptl_cli.kinds.KINDS`), built on first use."""
        if kind not in KINDS:
            raise UserError(f"unknown component kind {kind!r}; {did_you_mean(kind, KINDS)}")
        if kind not in self._registries:
            builtin = frozenset(n for n, p in self.plugins.items() if p.builtin)
            registry = Registry(kind, builtin)
            hook = getattr(self.pm.hook, KINDS[kind].hook)
            # get_hookimpls() is in registration (= load) order; pluggy's own calls run it backwards.
            # Load order decides clashes between installed plugins: the name that sorts first wins.
            for impl in hook.get_hookimpls():
                self._call_register(impl, registry)
            self._registries[kind] = registry
        return self._registries[kind]

    def _call_register(self, impl: Any, registry: Registry) -> None:
        info = self.plugins.get(impl.plugin_name)
        try:
            impl.function(register=Register(registry, impl.plugin_name))
        except SpecError as exc:
            self._registration_failed(info, str(exc))
        except Exception as exc:  # noqa: BLE001 - isolate a broken plugin's hook
            self._registration_failed(info, f"{impl.function.__name__} raised {type(exc).__name__}: {exc}")

    def _registration_failed(self, info: PluginInfo | None, message: str) -> None:
        if info is None:
            raise UserError(message)
        info.status = "error"
        info.error = message
        if _strict():
            raise UserError(f"plugin {info.name!r}: {message} (PTL_STRICT_PLUGINS=1)")

    def get(self, kind: str, name: str):
        """Shortcut for ``registry(kind).get(name)``."""
        return self.registry(kind).get(name)

    def add_commands(self, app: Any) -> None:
        """Let every plugin add its commands; a failing plugin is recorded, not fatal.

        What a plugin adds is undone when its hook raises, or when it reuses a command name that
        is taken (a core command or another plugin's): later registrations would silently
        replace earlier ones, so a plugin could take over ``ptl list`` or ``ptl resume``.
        """
        owners = {name: "ptl" for name in _command_names(app)}
        for impl in self.pm.hook.ptl_register_commands.get_hookimpls():  # load order, as registries
            marks = command_marks(app)
            info = self.plugins.get(impl.plugin_name)
            try:
                impl.function(app=app)
            except Exception as exc:  # noqa: BLE001
                drop_commands_after(app, marks)
                self._registration_failed(info, f"ptl_register_commands raised {type(exc).__name__}: {exc}")
                continue
            added = _command_names(app, marks)
            clash = next((n for i, n in enumerate(added) if n in owners or n in added[:i]), None)
            if clash is not None:
                drop_commands_after(app, marks)
                owner = owners.get(clash, impl.plugin_name)
                where = "a core command" if owner == "ptl" else f"a command of plugin {owner!r}"
                self._registration_failed(
                    info, f"ptl_register_commands adds command {clash!r}, which is already {where}; rename it"
                )
                continue
            owners.update(dict.fromkeys(added, impl.plugin_name))


def _command_names(app: Any, marks: tuple[int, int] = (0, 0)) -> list[str]:
    """Names of the commands and sub-apps registered on a Typer app (from ``marks`` on).

    Typer names a command after its function when no name is given (``my_cmd`` -> ``my-cmd``);
    a sub-app without any name merges its commands into the parent and is skipped here.
    """
    names = []
    for info in app.registered_commands[marks[0] :]:
        callback = getattr(info, "callback", None)
        name = info.name or (callback.__name__.lower().replace("_", "-") if callback else None)
        if name:
            names.append(name)
    for info in app.registered_groups[marks[1] :]:
        sub = getattr(info, "typer_instance", None)
        name = info.name or getattr(getattr(sub, "info", None), "name", None)
        if isinstance(name, str) and name:
            names.append(name)
    return names


def command_marks(app: Any) -> tuple[int, int]:
    """How many commands and sub-apps ``app`` has now: a point to go back to with
    :func:`drop_commands_after`."""
    return len(app.registered_commands), len(app.registered_groups)


def drop_commands_after(app: Any, marks: tuple[int, int]) -> None:
    """Remove the commands and sub-apps registered on ``app`` after ``marks`` (counts of each)."""
    del app.registered_commands[marks[0] :]
    del app.registered_groups[marks[1] :]


def _unknown_hooks(module: ModuleType) -> list[str]:
    """Names in ``module`` marked with ``@hookimpl`` that are not ptl hookspecs."""
    known = {n for n in dir(hookspecs) if n.startswith("ptl_")}
    unknown = []
    for attr in dir(module):
        obj = getattr(module, attr, None)
        if callable(obj) and hasattr(obj, f"{GROUP}_impl") and attr not in known:
            unknown.append(attr)
    return unknown


_manager: PluginManager | None = None


def manager() -> PluginManager:
    """The process-wide plugin manager (plugins are loaded on first call)."""
    global _manager
    if _manager is None:
        _manager = PluginManager()
    return _manager


def reset() -> None:
    """Forget loaded plugins (tests use this after changing the environment)."""
    global _manager
    _manager = None


def get(kind: str, name: str):
    """Look up a component spec by kind and name: ``plugins.get("pruners", "iterand")``."""
    return manager().get(kind, name)
