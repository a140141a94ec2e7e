"""Run directories: the resolved recipe, status, metrics, checkpoints and results of one run.

Layout::

    RUN/run.json          kind, status, timestamps, final metrics, error, owner (pid, host)
    RUN/recipe.toml       the fully resolved recipe
    RUN/metrics.jsonl     one JSON object per logged step
    RUN/checkpoints/      step-XXXXXXXXX.pt (the newest two are kept)
    RUN/report.md         results table; RUN/curves.png training curves
    RUN/.lock             flocked by the one process writing the run (see :meth:`Run.claim`)
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from ptl_cli import atomic
from ptl_cli.errors import UserError

STATUSES = ("running", "completed", "failed", "interrupted")
LOCK_FILE = ".lock"
#: The runs this process writes: resolved path -> the open lock file whose flock it holds. The
#: descriptors stay open until the process ends, which is what keeps the lock.
_HELD: dict[str, int] = {}


def runs_root() -> Path:
    """Where runs go when ``--out`` is not given: ``$PTL_RUNS_DIR`` or ``./runs``."""
    return Path(os.environ.get("PTL_RUNS_DIR", "runs"))


class Run:
    """A run directory on disk."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._seen_ids: set[Any] | None = None  # identities of the logged records (see log)
        self._seen_stamp: tuple[int, int] | None = None

    # -- creation and lookup -----------------------------------------------------------------
    @classmethod
    def create(cls, kind: str, name: str, recipe: dict[str, Any], out: str | None = None) -> Run:
        """A new run in ``out`` (new or empty), or in a fresh time-stamped folder of the runs root.

        The folder is claimed before anything is written into it: its lock file is created with
        ``O_EXCL`` and locked (:meth:`claim`), so of two commands given the same ``--out`` at once
        exactly one gets it and the other stops in one line, touching nothing.
        """
        from ptl_cli import outputs

        if out:
            path = Path(out)
            outputs.check_run_dir(path, "--out")
            made = not path.exists()
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UserError(f"--out {path}: cannot create it: {exc.strerror}") from None
        else:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            root = runs_root()
            if root.exists() and not root.is_dir():
                raise UserError(f"the runs directory {root} is a file; set $PTL_RUNS_DIR to a folder")
            outputs.check_creatable(root / "x", "the runs directory")
            made, suffix = True, 1
            while True:
                base = f"{stamp}-{name or kind}"
                path = root / (base if suffix == 1 else f"{base}-{suffix}")
                try:
                    root.mkdir(parents=True, exist_ok=True)
                    path.mkdir()
                    break
                except FileExistsError:
                    suffix += 1
                except OSError as exc:
                    raise UserError(f"cannot create a run under {root}: {exc.strerror}") from None
        run = cls(path)
        run.claim(new=True)
        try:
            run._write_start(kind, name, recipe)
        except BaseException:
            # a full disk (or a kill) before the run is recorded: leave the folder as it was
            # found, so the same --out can be given again
            run.release()
            for child in path.iterdir():
                child.unlink()
            if made:
                path.rmdir()
            raise
        return run

    def _write_start(self, kind: str, name: str, recipe: dict[str, Any]) -> None:
        from ptl_cli import __version__, recipes

        text = recipes.dumps(recipe)
        atomic.write_text(self.path / "recipe.toml", text)
        now = time.time()
        self.write_info(
            {
                "id": self.path.name,
                "kind": kind,
                "name": name,
                "status": "running",
                "created": now,
                "updated": now,
                "ptl_version": __version__,
                "metrics": {},
                "error": "",
                "recipe_sha256": recipe_digest(text),
                "recipe_started": recipe,
                **_owner(),
            }
        )

    # -- one writer per run --------------------------------------------------------------------
    def claim(self, new: bool = False, what: str = "run", read_only_ok: bool = False) -> None:
        """Make this process the run's only writer until it ends; a second one gets a UserError.

        An exclusive ``flock`` on ``RUN/.lock``, held for the life of the process: the kernel
        drops it when the process ends however it ends (SIGKILL and power loss included), so no
        stale lock is ever left. ``new`` claims a folder for a new run: the lock file must not
        exist yet (``O_EXCL``), which is what makes creating a run atomic. Claiming again in the
        same process is a no-op (a test, or an export after a run in one notebook).
        ``read_only_ok``: a reader that writes elsewhere (``ptl export -o``) goes on when the run
        lies on storage it may not write, where the lock file cannot be made.
        """
        lock = self.path / LOCK_FILE
        key = str(self.path.resolve())
        held = _HELD.get(key)
        if held is not None:
            try:
                if os.fstat(held).st_ino == os.stat(lock).st_ino:
                    return
            except OSError:
                pass
            _release(key)  # the folder was removed and made again: claim the new one
        flags = os.O_RDWR | os.O_CREAT | (os.O_EXCL if new else 0)
        try:
            fd = os.open(lock, flags, 0o666)
        except FileExistsError:
            raise UserError(
                f"{self.path} already holds a run (or another ptl process is starting one there); "
                "choose another --out"
            ) from None
        except OSError as exc:
            if read_only_ok and exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
                return  # a run on read-only storage: nobody can be writing it from here
            raise UserError(f"{what} {self.path}: cannot open its lock file {lock}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            who = f"process {holder}" if holder.isdigit() else "another process"
            raise UserError(
                f"{what} {self.path} is being written by {who} (a ptl command); wait for it to end, "
                "or stop it, then try again"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _HELD[key] = fd

    def release(self) -> None:
        """Give up the claim (a run discarded before it started)."""
        _release(str(self.path.resolve()))

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
        """``run.json``, checked to be a run's record: a broken one is a UserError naming it."""
        where = self.path / "run.json"
        try:
            data = json.loads(where.read_bytes().decode("utf-8"))
        except (OSError, ValueError) as exc:  # ValueError: bad JSON, or not UTF-8
            raise UserError(f"{where} cannot be read: {exc}") from None
        if not isinstance(data, dict):
            raise UserError(f"{where} is broken: a JSON {type(data).__name__}, not a run record")
        for key in ("kind", "status"):
            if not isinstance(data.get(key), str):
                raise UserError(f"{where} is broken: no `{key}` (a run records its kind and status)")
        if not isinstance(data.get("metrics", {}), dict):
            raise UserError(f"{where} is broken: `metrics` is not an object")
        if data["status"] not in STATUSES:
            raise UserError(f"{where} is broken: unknown status {data['status']!r}")
        return data

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

    def log(self, record: dict[str, Any]) -> bool:
        """Add one metrics record (a line of JSON); idempotent per (stage, step, what it holds).

        A record logged again (a run resumed after it crashed between logging a record and
        saving the checkpoint that covers it) replaces the first one instead of following it, so
        a resumed run's record equals an uninterrupted run's whatever point it failed at.
        Returns False for such a replacement (the trackers already have the record), else True.
        """
        ident = record_identity(record)
        seen = self._seen()
        if ident is not None and ident in seen:
            rows, replaced = [], False
            for row in self.metrics():
                if not replaced and record_identity(row) == ident:
                    row, replaced = record, True
                rows.append(row)
            self.replace_metrics(rows if replaced else [*rows, record])
            return not replaced
        atomic.append_text(self.metrics_path, json.dumps(record, default=float) + "\n")
        if ident is not None:
            seen.add(ident)
        self._seen_stamp = _stamp(self.metrics_path)
        return True

    def _seen(self) -> set[Any]:
        """The identities of the records on disk, read once (again after another writer)."""
        stamp = _stamp(self.metrics_path)
        if self._seen_ids is not None and self._seen_stamp == stamp:
            return self._seen_ids
        rows = self.metrics()
        if stamp is not None and stamp[1] and not _ends_with_newline(self.metrics_path):
            self.replace_metrics(rows)  # a last line cut short by a crash: never append to it
        self._seen_ids = {i for i in map(record_identity, rows) if i is not None}
        self._seen_stamp = _stamp(self.metrics_path)
        return self._seen_ids

    def metrics(self) -> list[dict[str, Any]]:
        """The records, skipping lines that are not a JSON object (cut short by a crash, edited)."""
        try:
            text = self.metrics_path.read_bytes().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise UserError(f"{self.metrics_path} cannot be read: {exc.strerror}") from None
        rows = []
        for line in text.splitlines():
            line = line.strip()
            if line:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a crash
                if isinstance(row, dict):
                    rows.append(row)
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
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                return row
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
        self._seen_ids = None

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"


def record_identity(record: Any) -> tuple[Any, ...] | None:
    """What makes a metrics record the same record when logged again: its stage, its step and the
    keys it holds (a train record and a test record at one step differ); None without a step."""
    if not isinstance(record, dict) or "step" not in record:
        return None
    keys = tuple(sorted(k for k in record if k != "time"))
    return (json.dumps(record.get("stage"), default=str), json.dumps(record["step"], default=str), keys)


def recipe_digest(text: str) -> str:
    """The hash of a run's ``recipe.toml`` text, recorded at creation and checked on resume."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size)


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as fh:
        fh.seek(-1, 2)
        return fh.read(1) == b"\n"


def _release(key: str) -> None:
    fd = _HELD.pop(key, None)
    if fd is not None:
        os.close(fd)


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
