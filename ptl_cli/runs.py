"""Run directories: the resolved recipe, status, metrics, checkpoints and results of one run.

Layout::

    RUN/run.json          kind, status, timestamps, final metrics, error, owner (pid, host)
    RUN/recipe.toml       the fully resolved recipe
    RUN/metrics.jsonl     one JSON object per logged step
    RUN/checkpoints/      step-XXXXXXXXX.pt (the newest two are kept)
    RUN/report.md         results table; RUN/curves.png training curves
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from ptl_cli import atomic
from ptl_cli.errors import UserError

STATUSES = ("running", "completed", "failed", "interrupted")


def runs_root() -> Path:
    """Where runs go when ``--out`` is not given: ``$PTL_RUNS_DIR`` or ``./runs``."""
    return Path(os.environ.get("PTL_RUNS_DIR", "runs"))


class Run:
    """A run directory on disk."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    # -- creation and lookup -----------------------------------------------------------------
    @classmethod
    def create(cls, kind: str, name: str, recipe: dict[str, Any], out: str | None = None) -> Run:
        """A new run in ``out`` (new or empty), or in a fresh time-stamped folder of the runs root."""
        if out:
            path = Path(out)
            if (path / "run.json").exists():
                raise UserError(
                    f"{path} already holds a run; choose another --out, or continue it with "
                    f"`ptl resume {path}`"
                )
            if path.exists() and (not path.is_dir() or any(path.iterdir())):
                # never mix a run's files into a folder of other things (or overwrite a file)
                raise UserError(f"--out {path} exists and is not an empty directory; choose a new path")
        else:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            path = runs_root() / f"{stamp}-{name or kind}"
            suffix = 1
            while path.exists():
                suffix += 1
                path = runs_root() / f"{stamp}-{name or kind}-{suffix}"
        path.mkdir(parents=True, exist_ok=True)
        run = cls(path)
        from ptl_cli import __version__, recipes

        atomic.write_text(path / "recipe.toml", recipes.dumps(recipe))
        now = time.time()
        run.write_info(
            {
                "id": path.name,
                "kind": kind,
                "name": name,
                "status": "running",
                "created": now,
                "updated": now,
                "ptl_version": __version__,
                "metrics": {},
                "error": "",
                **_owner(),
            }
        )
        return run

    @classmethod
    def open(cls, ref: str | os.PathLike[str]) -> Run:
        """A run by path or by id under the runs root; a clear error if it is not a run."""
        candidates = list(dict.fromkeys([Path(ref), runs_root() / str(ref)]))
        for path in candidates:
            if (path / "run.json").is_file():
                return cls(path)
        for path in candidates:
            if path.is_dir():
                raise UserError(f"{path} is not a ptl run (no run.json); runs are listed by `ptl runs list`")
        looked = " and ".join(str(p) for p in candidates)
        raise UserError(f"run {str(ref)!r} not found (looked in {looked}); see `ptl runs list`")

    @staticmethod
    def list(root: Path | None = None) -> list[Run]:
        """The runs directly under ``root``, oldest first (unreadable ones first of all)."""
        root = root or runs_root()
        if not root.is_dir():
            return []
        runs = [Run(p.parent) for p in root.glob("*/run.json")]
        return sorted(runs, key=lambda r: (r._created(), r.path.name))

    def _created(self) -> float:
        try:
            return float(self.info().get("created", 0))
        except (UserError, TypeError, ValueError):
            return 0.0

    # -- state -------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        try:
            return json.loads((self.path / "run.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"{self.path}/run.json cannot be read: {exc}") from None

    def write_info(self, info: dict[str, Any]) -> None:
        atomic.write_json(self.path / "run.json", info)

    def update(self, **fields: Any) -> dict[str, Any]:
        info = self.info()
        info.update(fields)
        info["updated"] = time.time()
        self.write_info(info)
        return info

    def set_status(self, status: str, **fields: Any) -> None:
        """Record ``status``; marking a run ``running`` also records this process as its owner.

        Two processes continuing the same run would interleave checkpoints and metrics, so a run
        that another live process on this machine is running is refused (:class:`UserError`).
        """
        assert status in STATUSES, status
        if status == "running":
            owner = self.live_owner()
            if owner is not None and owner != os.getpid():
                raise UserError(
                    f"run {self.path} is being run by process {owner} (a ptl command); wait for it "
                    f"to end, or stop that process, then `ptl resume {self.path}`"
                )
            fields.update(_owner())
        self.update(status=status, **fields)

    def live_owner(self) -> int | None:
        """The id of a live process on this machine that has this run ``running``, else None.

        A run left ``running`` by a process that is gone (killed, power loss) has no owner: it
        is interrupted in fact, and ``ptl resume`` continues it from its last checkpoint.
        """
        pid = self._local_owner()
        return pid if pid is not None and _alive(pid) else None

    def abandoned(self) -> bool:
        """True for a run left ``running`` on this machine by a process that no longer exists.

        Such a run is interrupted in fact (killed, power loss). A run owned by another machine
        cannot be checked from here and is never called abandoned.
        """
        pid = self._local_owner()
        return pid is not None and not _alive(pid)

    def _local_owner(self) -> int | None:
        """The recorded owner's process id when the run is ``running`` on this machine, else None."""
        info = self.info()
        pid = info.get("pid")
        if info.get("status") != "running" or not isinstance(pid, int) or info.get("host") != _host():
            return None
        return pid

    @property
    def kind(self) -> str:
        return self.info()["kind"]

    def recipe_data(self) -> dict[str, Any]:
        from ptl_cli import recipes

        return recipes.read_toml(self.path / "recipe.toml")

    # -- metrics -----------------------------------------------------------------------------
    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    def log(self, record: dict[str, Any]) -> None:
        """Append one metrics record (a line of JSON)."""
        with self.metrics_path.open("a") as fh:
            fh.write(json.dumps(record, default=float) + "\n")

    def metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        rows = []
        for line in self.metrics_path.read_text().splitlines():
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line cut short by a crash
        return rows

    def latest_record(self) -> dict[str, Any]:
        """The last complete record (reads only the file's tail: cheap on a long run)."""
        try:
            with self.metrics_path.open("rb") as fh:
                fh.seek(0, 2)
                fh.seek(max(0, fh.tell() - 4096))
                lines = fh.read().decode(errors="replace").splitlines()
        except OSError:
            return {}
        for line in reversed(lines):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
        return {}

    def position(self) -> str:
        """Where the run is, from its newest record: ``"pssl step 200"``, ``"epoch 2 step 90"``."""
        record = self.latest_record()
        parts = [str(record["stage"])] if "stage" in record else []
        parts += [f"{key} {record[key]}" for key in ("epoch", "step") if key in record]
        return " ".join(parts) or "starting"

    def truncate_metrics(self, keep: Any) -> None:
        """Keep only records for which ``keep(record)`` is true (used on resume)."""
        self.replace_metrics([r for r in self.metrics() if keep(r)])

    def replace_metrics(self, rows: list[dict[str, Any]]) -> None:
        """Make ``rows`` the whole record, atomically (a reader sees the old file or the new)."""
        atomic.write_text(self.metrics_path, "".join(json.dumps(r, default=float) + "\n" for r in rows))

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"


def _host() -> str:
    import socket

    return socket.gethostname()


def _owner() -> dict[str, Any]:
    """Who is running a run: this process on this machine."""
    return {"pid": os.getpid(), "host": _host()}


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live ptl process; an id reused by another program is not (Linux
    tells by the command line; elsewhere any live process counts)."""
    if pid == os.getpid():
        return True  # this process, whatever its command line (tests, notebooks)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, but another user's
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.parent.is_dir():
        try:
            text = cmdline.read_bytes()
        except OSError:
            return False
        return b"ptl" in text
    return True
