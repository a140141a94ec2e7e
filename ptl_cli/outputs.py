"""Checks of the paths a command will write, made before it computes anything.

ptl never writes over a file it did not create: a run's own files (its model, run.json, its
checkpoints), another run, a sweep's record, or any existing file unless the user says
``--force`` where a command offers it. A path that cannot be written (under a file, in a
read-only folder, a folder where a file belongs) is refused in one line, exit status 2, before
any data is read or any step trained, and ``--dry-run`` makes the same checks.
"""

from __future__ import annotations

import os
from pathlib import Path

from ptl_cli.errors import UserError

RUN_RECORD, SWEEP_RECORD = "run.json", "sweep.json"


def owner_of(path: Path) -> Path | None:
    """The run or sweep directory ``path`` lies in (``path`` itself counts), else None."""
    here = Path(os.path.abspath(path))
    for folder in (here, *here.parents):
        if (folder / RUN_RECORD).is_file() or (folder / SWEEP_RECORD).is_file():
            return folder
    return None


def check_creatable(path: Path, flag: str) -> None:
    """``path`` does not exist yet and can be created: its nearest existing ancestor is a
    folder this user may write in."""
    here = Path(os.path.abspath(path))
    for ancestor in here.parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise UserError(f"{flag} {path}: {ancestor} is a file, not a folder; choose another path")
            if not os.access(ancestor, os.W_OK | os.X_OK):
                raise UserError(f"{flag} {path}: cannot create it: {ancestor} is not writable")
            return
        if ancestor.is_symlink():  # a dangling link on the way
            raise UserError(f"{flag} {path}: {ancestor} is a broken link; choose another path")


def check_run_dir(path: Path, flag: str = "--out") -> None:
    """``path`` can become a new run (or sweep) directory: new, or an empty folder ptl may write."""
    if path.is_symlink() and not path.exists():
        raise UserError(f"{flag} {path} is a broken link; choose a new path")
    if not path.exists():
        check_creatable(path, flag)
        return
    if not path.is_dir():
        raise UserError(f"{flag} {path} is a file; choose a new path for the run's folder")
    if (path / RUN_RECORD).exists():
        raise UserError(
            f"{path} already holds a run; choose another {flag}, or continue it with `ptl resume {path}`"
        )
    if (path / ".lock").exists():  # claimed by a run another process is starting
        raise UserError(f"{path} already holds a run (another ptl process starts it); choose a new path")
    if (path / SWEEP_RECORD).exists():
        raise UserError(f"{flag} {path} holds a sweep; choose a new path")
    if any(path.iterdir()):
        # never mix a run's files into a folder of other things
        raise UserError(f"{flag} {path} exists and is not an empty directory; choose a new path")
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path} is not writable; choose another path")


def check_new_file(
    path: Path, flag: str, force: bool = False, ours: tuple[Path, ...] = (), force_flag: str = "--force"
) -> None:
    """``path`` can receive a file this command writes (atomically, by rename).

    Allowed: a new path in a writable folder; a file in ``ours`` (what this command itself wrote
    there before, such as a run's default export); an existing file outside every run and sweep
    with ``force``. Never: a directory, or an existing file inside a run or a sweep (its model,
    its record, its checkpoints): those are a run's own files and ``force`` does not reach them.
    """
    if path.is_dir():
        raise UserError(f"{flag} {path} is a directory; give the file name to write")
    if not path.exists() and not path.is_symlink():
        check_creatable(path, flag)
        return
    target = Path(os.path.realpath(path))
    if any(target == Path(os.path.realpath(p)) for p in ours):
        return
    owner = owner_of(target.parent)
    if owner is not None:
        what = "sweep" if (owner / SWEEP_RECORD).is_file() and not (owner / RUN_RECORD).is_file() else "run"
        raise UserError(
            f"{flag} {path} is a file of the {what} {owner}; ptl never writes over a {what}'s own files: "
            "choose a new file name"
        )
    if not force:
        raise UserError(f"{flag} {path} exists; choose a new file name, or pass {force_flag} to replace it")
    if not os.access(target.parent, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: cannot replace it: {target.parent} is not writable")


def check_cache_dir() -> None:
    """``$PTL_CACHE_DIR`` / ``$PTL_RUNS_DIR``, when set, are folders (or can become ones)."""
    for name in ("PTL_CACHE_DIR", "PTL_RUNS_DIR", "PTL_DATA_DIR"):
        value = os.environ.get(name)
        if not value:
            continue
        path = Path(value).expanduser()
        if path.exists() and not path.is_dir():
            raise UserError(f"${name} {path} is a file, not a folder; point it at a folder")
        if not path.exists():
            check_creatable(path, f"${name}")
