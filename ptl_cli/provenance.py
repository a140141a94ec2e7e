"""What made a run: software versions, the device, the CPU's kernel level, and every plugin
distribution whose components the run's recipe names.

Recorded in ``run.json`` (``provenance``) when a run starts; a resume on other software or
hardware adds what differed to ``resumed_under``. ``ptl runs show`` prints it, ``ptl runs
compare`` flags where runs differ, and a run whose plugin has gone names the distribution to
install (:func:`naming_missing_plugins`).

The CPU's kernel level matters for numbers, not only speed: torch and oneDNN pick AVX2 or
AVX-512 kernels by CPU, which order float reductions differently, so the same seed prints
other digits on another machine.
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ptl_cli.errors import UserError
from ptl_cli.kinds import KINDS

#: Recipe keys whose string value names a component, by the table the key's section sits in
#: (``[pruner] name``, ``[source.generator] name``) or by the key itself (``dataset``, ``arch``).
SECTION_KINDS = {
    "pruner": "pruners",
    "model": "models",
    "generator": "generators",
    "classifier": "classifiers",
    "ssl": "ssl",
    "dataset": "datasets",
    "arch": "models",
}


#: Environment variables that change which CPU kernels run, hence the float results: recorded when
#: set, so ``ptl runs compare`` can say why two runs differ. The last three pin the kernels a
#: run prints the same numbers with on every x86-64 CPU with AVX2 (docs/measured.md).
KERNEL_KNOBS = ("OMP_NUM_THREADS", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR")


def collect(recipe: dict[str, Any], kind: str, device: Any = None) -> dict[str, Any]:
    """This process's software and hardware, and the plugins ``recipe`` (of run kind ``kind``) uses."""
    import torch

    from ptl_cli import __version__

    info: dict[str, Any] = {
        "ptl": __version__,
        "ptl_git": git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device": device_name(device),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "plugins": used_plugins(recipe, kind),
    }
    for name in KERNEL_KNOBS:
        if os.environ.get(name):
            info.setdefault("env", {})[name] = os.environ[name]
    return info


def device_name(device: Any) -> str:
    """``"cpu (x86_64)"``, ``"cuda:0 NVIDIA H100 80GB HBM3"``: the device a run computes on."""
    import torch

    if device is None:
        return "?"
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return f"{device} {torch.cuda.get_device_name(device)}"
    if device.type == "cpu":
        return f"cpu ({platform.machine() or '?'})"
    return str(device)


def git_commit() -> str | None:
    """The commit (``+dirty`` with local changes) of an editable install from a git checkout."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None  # installed from a wheel: the version says it all
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def component_names(recipe: dict[str, Any]) -> list[tuple[str, str]]:
    """``(kind, name)`` of every component a resolved recipe names, in recipe order."""
    found: list[tuple[str, str]] = []

    def walk(node: Any, section: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(value, str) and (key == "name" and section in SECTION_KINDS):
                    found.append((SECTION_KINDS[section], value))
                elif isinstance(value, str) and key in ("dataset", "arch"):
                    found.append((SECTION_KINDS[key], value))
                elif key == "log" and isinstance(value, list):
                    found.extend(("loggers", v) for v in value if isinstance(v, str))
                else:
                    walk(value, key)

    walk(recipe, "")
    return list(dict.fromkeys(found))


def used_plugins(recipe: dict[str, Any], kind: str) -> list[dict[str, str]]:
    """Each component the run uses, with the plugin and distribution (and version) it came from."""
    from ptl_cli import plugins

    manager = plugins.manager()
    used = []
    for component_kind, name in [("workflows", kind), *component_names(recipe)]:
        try:
            spec = manager.registry(component_kind).get(name)
        except (UserError, KeyError):
            continue  # not a registered name (a folder path for imagefolder, say)
        plugin = manager.plugins.get(spec.plugin)
        used.append(
            {
                "kind": component_kind,
                "name": spec.name,
                "plugin": spec.plugin,
                "distribution": plugin.dist if plugin else "",
                "version": plugin.version if plugin else "",
            }
        )
    return used


def record(run: Any, recipe: dict[str, Any], kind: str, device: Any, resuming: bool) -> None:
    """Write this process's provenance into ``run.json``: the first time as ``provenance``, on a
    resume what differs from it (if anything) appended to ``resumed_under``."""
    now = collect(recipe, kind, device)
    info = run.info()
    first = info.get("provenance")
    if not resuming or not isinstance(first, dict):
        run.update(provenance=now)
        return
    changed = {k: v for k, v in now.items() if first.get(k) != v}
    if changed:
        run.update(resumed_under=[*info.get("resumed_under", []), changed])


def record_processes(run: Any, processes: int, threads: int) -> None:
    """Record that ``run`` computes in ``processes`` child processes of ``threads`` intra-op threads
    each (a transfer run's lanes). The ``threads`` that :func:`collect` saw are the parent's, which
    only waits for its children: alone they would say the numbers came from more threads than
    computed them, and the thread count changes the last digits (docs/measured.md)."""
    provenance = run.info().get("provenance")
    children = {"count": processes, "threads": threads}
    if isinstance(provenance, dict) and provenance.get("processes") != children:
        run.update(provenance={**provenance, "processes": children})


# -- reading it back -------------------------------------------------------------------------------
def lines(provenance: dict[str, Any]) -> list[str]:
    """Provenance as ``ptl runs show`` prints it, one fact a line."""
    if not provenance:
        return ["made by: not recorded (a run from before ptl recorded provenance)"]
    p = provenance
    ptl = p.get("ptl", "?") + (f" (git {p['ptl_git']})" if p.get("ptl_git") else "")
    built = [f"CUDA {p['cuda']}"] if p.get("cuda") else []
    built += [f"cuDNN {p['cudnn']}"] if p.get("cudnn") else []
    torch = p.get("torch", "?") + (f" (built with {', '.join(built)})" if built else "")
    children = p.get("processes")
    threads = f"{p.get('threads', '?')} threads"
    if isinstance(children, dict):
        each = children.get("threads", "?")
        threads = f"{children.get('count', '?')} processes of {each} thread{'s' * (each != 1)} each"
    out = [
        f"ptl {ptl}, Python {p.get('python', '?')}, torch {torch}",
        f"device {p.get('device', '?')}, CPU kernels {p.get('cpu_capability', '?')}, {threads}; "
        f"{p.get('platform', '?')}",
    ]
    if p.get("env"):
        out.append("environment: " + ", ".join(f"{k}={v}" for k, v in p["env"].items()))
    for used in p.get("plugins", []):
        dist = f"{used['distribution']} {used['version']}".strip() or "?"
        label = KINDS[used["kind"]].label if used["kind"] in KINDS else used["kind"]
        out.append(f"{label} {used['name']}: plugin {used['plugin']} from {dist}")
    return out


def flat(provenance: dict[str, Any]) -> dict[str, Any]:
    """One value per fact (``plugin pruners iterand`` -> ``ptl 0.1.0``), for comparing runs."""
    out = {k: v for k, v in provenance.items() if k not in ("plugins", "env", "processes")}
    children = provenance.get("processes")
    if isinstance(children, dict):
        out["processes"] = f"{children.get('count')} × {children.get('threads')} threads"
    out |= {f"env {k}": v for k, v in (provenance.get("env") or {}).items()}
    for used in provenance.get("plugins", []):
        out[f"plugin {used['kind']} {used['name']}"] = f"{used['distribution']} {used['version']}".strip()
    return out


def differences(provenances: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """The facts on which runs differ, each with every run's value (``None``: not recorded)."""
    flats = [flat(p or {}) for p in provenances]
    keys = list(dict.fromkeys(k for f in flats for k in f))
    return {k: [f.get(k) for f in flats] for k in keys if len({repr(f.get(k)) for f in flats}) > 1}


@contextlib.contextmanager
def naming_missing_plugins(run: Any) -> Iterator[None]:
    """Turn "unknown pruner 'x'" for a component ``run`` used into a message naming the
    distribution (and version) that provided it, so the user knows what to reinstall."""
    try:
        yield
    except UserError as exc:
        message = str(exc)
        try:
            used = run.info().get("provenance", {}).get("plugins", [])
        except UserError:
            raise exc from None
        for item in used:
            if message.startswith("unknown ") and f"'{item['name']}'" in message.split(";")[0]:
                dist = item["distribution"] or item["plugin"]
                pin = f"=={item['version']}" if item["version"] else ""
                raise UserError(
                    f"{message.split(';')[0]}: this run used {item['kind']} {item['name']!r} from the "
                    f"distribution {dist} {item['version']}, which is not installed (or failed to "
                    f"load: see `ptl plugins`); install it, e.g. pip install '{dist}{pin}'"
                ) from None
        raise
