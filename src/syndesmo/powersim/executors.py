"""Where the replicates of a power simulation run: in-process, local processes or Dask.

``run_tasks(fn, tasks, ...)`` calls ``fn(task)`` for every task and returns the
results in task order, whatever backend ran them:

* in-process (default): a plain loop, nothing to start;
* ``workers=N`` (N > 1): a ``concurrent.futures.ProcessPoolExecutor`` with N worker
  processes. It is in the standard library, starts in well under a second and
  needs no optional extra, whereas a Dask ``LocalCluster`` takes a few seconds to
  start (scheduler, nannies, workers) and brings nothing a single machine needs
  here: the tasks are independent, coarse (one chunk of replicates each) and
  return small arrays, so there is no data to share between them;
* ``scheduler="tcp://host:port"`` or a ``dask.distributed.Client``: the tasks run
  as Dask tasks on that cluster (its workers must have ``syndesmo`` installed).
  A client made here from an address is closed here; a client passed in is left
  open for its owner.

Worker processes are forked where the platform allows it and the calling process
runs no other thread at that moment (the pool is started before the progress bar,
whose monitor is a thread); otherwise they are started with ``spawn``, as Dask's
nannies are, because forking a process that runs threads (a Dask client, a
progress monitor) can deadlock. Forking lets a plain script call ``power(...,
workers=2)`` without an ``if __name__ == "__main__":`` guard; under ``spawn`` (and
with a Dask ``LocalCluster``) the usual multiprocessing rule applies and the guard
is needed. Each task is the same pure function of its inputs, so the results do
not depend on the backend, the start method or how many workers there are.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

from syndesmo.checks import check_int
from syndesmo.errors import ModelError

#: Environment for worker processes: one BLAS/OpenMP thread each, so N workers use
#: N cores instead of oversubscribing them (the matrices per replicate are small).
_SINGLE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


def check_backend(workers: int | None, scheduler: Any) -> None:
    """Raise ``ModelError`` for a ``workers`` / ``scheduler`` combination that cannot run."""
    if workers is not None:
        check_int(workers, "workers", low=1)
    if scheduler is not None:
        if workers not in (None, 1):
            raise ModelError(
                "give either workers=N (local processes) or scheduler= (a Dask cluster), "
                "not both: the cluster decides how many workers run"
            )
        if not isinstance(scheduler, str) and not _is_dask_client(scheduler):
            raise ModelError(
                "scheduler must be an address like 'tcp://host:8786' or a "
                f"dask.distributed.Client, got {type(scheduler).__name__}"
            )
        if isinstance(scheduler, str):
            _check_address(scheduler)


def _check_address(address: str) -> None:
    """ModelError unless a TCP-like address has a host and a numeric port; checked
    here because distributed's ValueError comes from a half-made Client that then
    hangs for a minute while it closes."""
    scheme, sep, rest = address.partition("://")
    if not sep:
        scheme, rest = "tcp", address
    if not rest or (
        scheme in ("tcp", "tls", "ws", "wss") and not re.fullmatch(r"[^\s/]+:\d+", rest)
    ):
        raise ModelError(
            f"scheduler address {address!r} needs a host and a port, like 'tcp://host:8786'"
        )


def backend_name(workers: int | None, scheduler: Any) -> str:
    """A short description of where the tasks run, for tables and logs."""
    if scheduler is not None:
        address = scheduler if isinstance(scheduler, str) else scheduler.scheduler.address
        return f"dask({address})"
    if workers is not None and workers > 1:
        return f"processes({workers})"
    return "in-process"


def run_tasks(
    fn: Callable[[Any], Any],
    tasks: Sequence[Any],
    *,
    workers: int | None = None,
    scheduler: Any = None,
    progress: bool = True,
    desc: str = "replicates",
    unit_sizes: Sequence[int] | None = None,
) -> list[Any]:
    """Run ``fn`` on every task and return the results in the order of ``tasks``.

    ``unit_sizes`` (e.g. the number of replicates in each chunk) lets the progress
    bar count replicates rather than tasks.
    """
    check_backend(workers, scheduler)
    sizes = list(unit_sizes) if unit_sizes is not None else [1] * len(tasks)
    total = sum(sizes)
    if scheduler is not None:
        return _run_dask(fn, tasks, scheduler, sizes, progress, desc)
    if workers is not None and workers > 1 and len(tasks) > 1:
        return _run_processes(fn, tasks, workers, sizes, progress, desc)
    results = []
    with _progress_bar(progress, total=total, desc=desc) as bar:
        for task, size in zip(tasks, sizes, strict=True):
            results.append(fn(task))
            bar.update(size)
    return results


def start_method() -> str:
    """``fork`` where available and no other thread runs, else ``spawn`` (see above)."""
    if "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1:
        return "fork"
    return "spawn"


def _run_processes(fn, tasks, workers: int, sizes, progress: bool, desc: str) -> list[Any]:
    context = multiprocessing.get_context(start_method())
    saved = {k: os.environ.get(k) for k in _SINGLE_THREAD_ENV}
    os.environ.update(_SINGLE_THREAD_ENV)  # read by spawned interpreters at start
    try:
        with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=context) as ex:
            # submitting starts the workers; only then the progress bar (a thread)
            futures = {ex.submit(fn, task): i for i, task in enumerate(tasks)}
            results: list[Any] = [None] * len(tasks)
            with _progress_bar(progress, total=sum(sizes), desc=desc) as bar:
                for fut in as_completed(futures):
                    i = futures[fut]
                    results[i] = fut.result()
                    bar.update(sizes[i])
            return results
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _is_dask_client(obj: Any) -> bool:
    try:
        from distributed import Client
    except ImportError:
        return False
    return isinstance(obj, Client)


def _run_dask(fn, tasks, scheduler, sizes, progress: bool, desc: str) -> list[Any]:
    try:
        from distributed import Client
        from distributed import as_completed as dask_as_completed
    except ImportError as exc:
        raise ImportError(
            "running on a Dask cluster needs dask[distributed] (pip install 'syndesmo[dask]')"
        ) from exc
    own = isinstance(scheduler, str)
    client = Client(scheduler, set_as_default=False) if own else scheduler
    try:
        # pure=False: two identical tasks are still two tasks (no result sharing).
        futures = client.map(fn, list(tasks), pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        results: list[Any] = [None] * len(tasks)
        with _progress_bar(progress, total=sum(sizes), desc=desc) as bar:
            for fut in dask_as_completed(futures):
                i = index[fut.key]
                results[i] = fut.result()
                bar.update(sizes[i])
                fut.release()
        return results
    finally:
        if own:
            client.close()


def _progress_bar(enabled: bool, total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="rep", disable=not enabled, leave=False)
