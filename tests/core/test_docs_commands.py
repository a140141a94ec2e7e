"""Every ``ptl`` command that README.md and docs/ show is run here, or named as needing what a test
cannot have (data, a GPU, a download, a cluster) with the reason.

Docs drift: a renamed option or a recipe that no longer plans would otherwise reach users first.
Run commands (prune, transfer, train-source, sweep, run) are run with ``--dry-run``, which
resolves and validates the whole recipe and loads nothing; read-only and cheap commands run for
real; ``RUN`` is a tiny finished prune run made once. A command that fits none of these fails the
test, so a new kind of documented command needs a decision here, never a silent skip.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

# Commands that accept --dry-run (`ptl <cmd> --help` lists it): planned, never trained.
DRY_RUN = ("prune", "transfer", "train-source", "sweep", "run")
# Commands that are read-only or cheap on the bundled models: run as written.
AS_WRITTEN = ("list", "plugins", "recipes", "runs list", "runs compare", "export", "generate", "--help")

# Documented commands a test cannot run, matched by regex on the command: why each needs more.
NEEDS = {
    r"^ptl generate .*-p weights=(biggan-deep|stabilityai/)": "downloads pretrained weights",
    r"^ptl train-source \w+ .*\[": "a synopsis with placeholders (D, N, [optional] parts)",
    r"^ptl sweep --recipe FILE --grid \.\.\.": "a synopsis with placeholders (FILE, ...)",
    r"^ptl sweep --recipe RUN/": "needs a finished run directory and then trains five seeds",
    r"^ptl sweep .*--launcher slurm": "needs a Slurm cluster (sbatch)",
    r"^ptl sweep show ": "needs a finished sweep directory",
    r"--device cuda": "needs a GPU",
    r"^ptl bench\b": "measures real training throughput (minutes on a CPU)",
    r"^ptl transfer --target ~/my-images": "needs the user's own image folder",
    r"--method (magnitude|gmp)\b|^ptl list pruners gmp": (
        "needs the plugin the plugin docs build and install (ptl-magnitude / ptl-example)"
    ),
    r"--ssl sat-fixmatch": "needs the tutorial's example SSL plugin (sat-fixmatch)",
}

# Documented commands that fail today: each is a docs (or product) bug to fix, not to hide.
KNOWN_BROKEN: dict[str, str] = {}


def _commands(path: Path) -> Iterator[tuple[int, str]]:
    """(line, command) of each ``ptl`` line in the fenced blocks of ``path``; ``\\`` continuations
    joined, trailing ``# comments`` and a ``$`` prompt dropped."""
    lines = path.read_text(encoding="utf-8").splitlines()
    fenced = False
    pending: tuple[int, str] | None = None
    for number, raw in enumerate(lines, 1):
        text = raw.strip()
        if text.startswith("```"):
            fenced, pending = not fenced, None
            continue
        if not fenced:
            continue
        if pending is None:
            text = text.removeprefix("$ ")
            command = _strip_env(text)[1]
            if not (command == "ptl" or command.startswith("ptl ")):
                continue
            pending = (number, "")
        start, joined = pending
        text = re.sub(r"\s+#.*$", "", text)
        joined = f"{joined} {text.removesuffix(chr(92)).strip()}".strip()
        if text.endswith("\\"):
            pending = (start, joined)
        else:
            pending = None
            yield start, joined


#: ``NAME=value`` assignments before a command (``ATEN_CPU_CAPABILITY=avx2 ptl transfer``).
ENV_PREFIX = re.compile(r"^((?:[A-Z_][A-Z0-9_]*=\S+\s+)+)")


def _strip_env(command: str) -> tuple[dict[str, str], str]:
    """The environment a documented command sets before ``ptl``, and the command without it."""
    found = ENV_PREFIX.match(command)
    if found is None:
        return {}, command
    pairs = (item.split("=", 1) for item in found.group(1).split())
    return dict(pairs), command[found.end() :]


def _collect() -> list[tuple[str, int, str]]:
    return [(str(p.relative_to(ROOT)), n, cmd) for p in DOCS for n, cmd in _commands(p)]


COMMANDS = _collect()


def _match(table: dict[str, str], command: str) -> str | None:
    command = _strip_env(command)[1]
    return next((why for pattern, why in table.items() if re.search(pattern, command)), None)


# what the parametrized test runs: all but the allow-listed (their test is the one below)
RUNNABLE = [c for c in COMMANDS if _match(NEEDS, c[2]) is None]


def _argv(command: str) -> list[str] | None:
    """The arguments to run ``command`` with here, or None when it belongs to no known group."""
    args = shlex.split(_strip_env(command)[1])[1:]
    head = " ".join(args[:2])
    if args and args[0] in DRY_RUN and head != "sweep show":
        return args if "--dry-run" in args else [*args, "--dry-run"]
    if any(head == group or (args and args[0] == group) for group in AS_WRITTEN) or "--help" in args:
        return args
    return None


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished one-epoch IteRand run on 128 bundled images: what ``RUN`` stands for."""
    from ptl_cli.cli import main

    runs = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PTL_RUNS_DIR", str(runs))
        mp.setenv("PTL_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        argv = ["prune", "--method", "iterand", "--epochs", "1", "--device", "cpu"]
        argv += ["--set", "data.train_limit=128", "--set", "data.test_limit=64"]
        try:
            main(argv)
        except SystemExit as exc:
            assert exc.code in (0, None), f"the tiny run failed: exit {exc.code}"
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    return run


def test_every_documented_command_is_run_or_has_a_reason() -> None:
    """A new documented command of a kind this file does not know fails here, by name."""
    assert len(COMMANDS) > 50, "the collector found too few commands: did the docs' fences change?"
    assert _argv("ptl frobnicate --fast") is None  # an unknown kind is no decision
    assert _argv("ptl runs show RUN") is None  # nor is a command of a known group not listed
    assert _strip_env("A_B=1 C=x,y ptl list") == ({"A_B": "1", "C": "x,y"}, "ptl list")
    unknown = [
        f"{doc}:{line}: {cmd}"
        for doc, line, cmd in COMMANDS
        if _match(NEEDS, cmd) is None and _match(KNOWN_BROKEN, cmd) is None and _argv(cmd) is None
    ]
    assert not unknown, "documented commands neither run nor allow-listed:\n" + "\n".join(unknown)


@pytest.mark.parametrize(("doc", "line", "command"), RUNNABLE, ids=[f"{d}:{n}" for d, n, _ in RUNNABLE])
def test_documented_command(
    doc: str,
    line: int,
    command: str,
    cli: Callable[..., tuple[int, str, str]],
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each documented command exits 0 (with --dry-run for run commands); a KNOWN_BROKEN one
    must still fail, so the entry goes when the docs or the command are fixed."""
    broken = _match(KNOWN_BROKEN, command)
    argv = _argv(command)
    assert argv is not None, f"{doc}:{line}: no decision for {command!r}"
    if any(re.fullmatch(r"RUN\d?", a) for a in argv):
        run = str(request.getfixturevalue("tiny_run"))
        argv = [run if re.fullmatch(r"RUN\d?", a) else a for a in argv]
    for name, value in _strip_env(command)[0].items():  # (kernel knobs: read once by torch)
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)  # --out grid.png, `plugins new` and the like write here
    code, out, err = cli(*argv)
    if broken is not None:
        assert code == 2, f"{doc}:{line}: {command!r} works now: remove it from KNOWN_BROKEN"
        assert "ptl: error:" in err and "Traceback" not in err
        return
    assert code == 0, f"{doc}:{line}: `ptl {' '.join(argv)}` exited {code}:\n{err[-2000:]}"
