"""Sweep cells as one Slurm job array through submitit (``pip install 'ptl[slurm]'``).

Each array task runs one cell with the same command line a local sweep uses (a ``ptl run`` or
``ptl resume`` child process). When Slurm preempts a task or its time runs out, submitit calls
:meth:`CellTask.checkpoint`: the cell's run receives SIGTERM, writes its checkpoint and exits
(exactly as on Ctrl-C), and the requeued task continues the run from that checkpoint with
``ptl resume``. ``--launcher submitit-local`` runs the same path with submitit's local executor
(no cluster): it is how the tests check it.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from ptl_cli.errors import UserError


class CellTask:
    """The callable submitit pickles: ``task(sweep_dir, cell_id) -> exit status of the cell's run``.

    One instance serves the whole array; ``checkpoint`` (submitit's hook) stops the running
    child cleanly and returns the same call to requeue, which resumes the run directory.
    """

    def __init__(self, threads: int = 1) -> None:
        self.threads = threads
        self._child: subprocess.Popen | None = None

    def __call__(self, sweep_dir: str, cell_id: str) -> int:
        from ptl_cli.sweep import Sweep, cell_command, thread_env

        sweep = Sweep.open(sweep_dir)
        cell = next(c for c in sweep.cells if c.id == cell_id)
        if (sweep.run_dir(cell) / "run.json").is_file():
            sweep.refresh()
            if cell.status == "completed":
                return 0
        command = cell_command(sweep, cell)
        env = thread_env(self.threads)  # the job's CPUs (cpus_per_task)
        with sweep.log_file(cell).open("a") as log:
            log.write(f"$ {' '.join(command)}\n")
            log.flush()
            child = self._child = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
            # polled, not wait()ed: submitit's signal handler calls checkpoint() in this thread,
            # and its wait() could not take the lock a blocking wait() here would hold
            while child.poll() is None:
                time.sleep(0.2)
        self._child = None
        return child.returncode

    def checkpoint(self, sweep_dir: str, cell_id: str) -> Any:
        """Preempted or out of time: let the run save its checkpoint, then requeue the same call."""
        import submitit

        child = self._child
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=600)
            except subprocess.TimeoutExpired:
                child.kill()
        return submitit.helpers.DelayedSubmission(CellTask(self.threads), sweep_dir, cell_id)

    def __getstate__(self) -> dict[str, Any]:
        return {"threads": self.threads, "_child": None}


def check_launcher(launcher: str) -> None:
    """submitit is installed and, for ``slurm``, Slurm is here: checked before anything is written."""
    try:
        import submitit
    except ImportError:
        raise UserError(
            f"--launcher {launcher} needs submitit: pip install 'ptl[slurm]' (or pip install submitit)"
        ) from None
    if launcher == "slurm" and submitit.AutoExecutor.which() != "slurm":
        raise UserError(
            "--launcher slurm: no Slurm here (sbatch not found); run the sweep from a cluster's login "
            "node, or use --launcher local"
        )


def executor(sweep: Any, table: Any) -> Any:
    """A submitit executor for the sweep's launcher, with the ``[sweep.slurm]`` resources."""
    import submitit

    check_launcher(table.launcher)
    cluster = "local" if table.launcher == "submitit-local" else "slurm"
    folder = Path(sweep.path) / "submitit" / "%j"
    ex = submitit.AutoExecutor(folder=folder, cluster=cluster)
    slurm = table.slurm
    params: dict[str, Any] = {
        "name": f"ptl-{Path(sweep.path).name}"[:64],
        "timeout_min": slurm.time,
        "gpus_per_node": slurm.gpus_per_node,
        "cpus_per_task": slurm.cpus_per_task,
        "tasks_per_node": 1,
        "nodes": 1,
    }
    if slurm.mem_gb is not None:
        params["mem_gb"] = slurm.mem_gb
    if cluster == "slurm":
        params["slurm_array_parallelism"] = table.jobs if table.jobs > 1 else 256
        for key in ("partition", "account", "qos"):
            value = getattr(slurm, key)
            if value:
                params[f"slurm_{key}"] = value
    ex.update_parameters(**params)
    return ex


def submit(sweep: Any, table: Any) -> list[tuple[Any, Any]]:
    """Submit the cells that are not completed as one job array; ``[(cell, job)]``."""
    from ptl_cli.sweep import to_run

    cells = to_run(sweep)
    if not cells:
        return []
    ex = executor(sweep, table)
    task = CellTask(threads=table.slurm.cpus_per_task)
    jobs = ex.map_array(task, [str(sweep.path)] * len(cells), [c.id for c in cells])
    for cell in cells:
        cell.status = "running"
    sweep.save()
    return list(zip(cells, jobs, strict=True))


def wait(sweep: Any, submitted: list[tuple[Any, Any]], progress: Any) -> None:
    """Follow the jobs until each ends; record each cell's outcome from its run directory."""
    from ptl_cli.sweep import finish_cell

    for cell, _ in submitted:
        progress.started(cell)
    pending = dict((cell.id, (cell, job)) for cell, job in submitted)
    while pending:
        for ident, (cell, job) in list(pending.items()):
            if not job.done():
                continue
            del pending[ident]
            try:
                code = int(job.result())
            except Exception as exc:  # noqa: BLE001 - a job that died (killed, node failure)
                code = 1
                cell.error = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            finish_cell(sweep, cell, code)
            sweep.save()
            progress.finished(cell)
        progress.update({ident: None for ident in pending})
        time.sleep(0.5)


def run_submitit(sweep: Any, table: Any, progress: Any) -> None:
    wait(sweep, submit(sweep, table), progress)
