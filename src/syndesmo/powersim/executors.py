"""Where the replicates of a power simulation run: in-process, local processes or Dask.

``run_tasks(fn, tasks, ...)`` calls ``fn(task)`` for every task and returns the
results in task order, whatever backend ran them:

* in-process (default): a plain loop, nothing to start;
* ``workers=N`` (N > 1): a ``concurrent.futures.ProcessPoolExecutor`` with N worker
  processes, **kept alive for the session**: the first call with N workers starts
  the pool, later calls reuse its warm workers (their imports, caches and
  calibrations), and an ``atexit`` hook shuts it down when the interpreter exits
  (``shutdown_pools`` does it at once). A pool that broke or was stopped by Ctrl-C is
  dropped and a new one starts on the next call. The pool is in the standard
  library, starts in well under a second and needs no optional extra, whereas a
  Dask ``LocalCluster`` takes a few seconds to start (scheduler, nannies, workers)
  and brings nothing a single machine needs here: the tasks are independent,
  coarse (one chunk of replicates each) and return small arrays, so there is no
  data to share between them;
* ``scheduler="tcp://host:port"`` or a ``dask.distributed.Client``: the tasks run
  as Dask tasks on that cluster (its workers must have ``syndesmo`` installed).
  A client made here from an address is closed here; a client passed in is left
  open for its owner.

Worker processes are forked where the platform allows it and the calling process
runs no other thread at that moment (the pool is started before the progress bar,
whose monitor is a thread, and no bar is made at all when progress is off); a forked
worker starts in milliseconds because it inherits the imported package. Otherwise
they are started with ``spawn``, as Dask's
nannies are, because forking a process that runs threads (a Dask client, a
progress monitor) can deadlock. Forking lets a plain script call ``power(...,
workers=2)`` without an ``if __name__ == "__main__":`` guard; under ``spawn`` (and
with a Dask ``LocalCluster``) the usual multiprocessing rule applies and the guard
is needed. Each task is the same pure function of its inputs, so the results do
not depend on the backend, the start method or how many workers there are.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import multiprocessing
import os
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

from syndesmo.checks import check_int
from syndesmo.errors import ModelError

#: Seconds to connect to a Dask scheduler and hear its greeting before giving up.
CONNECT_TIMEOUT = 5.0

#: Environment for worker processes: one BLAS/OpenMP thread each, so N workers use
#: N cores instead of oversubscribing them (the matrices per replicate are small).
_SINGLE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}

#: glibc's ``mallopt`` parameters (``<malloc.h>``) and the values set in worker processes:
#: blocks up to 32 MiB (glibc's largest mmap threshold on 64-bit) come from the heap, and
#: up to 512 MiB of freed heap is kept rather than returned to the kernel.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_WORKER_MALLOPT = {_M_MMAP_THRESHOLD: 32 * 2**20, _M_TRIM_THRESHOLD: 512 * 2**20}


def keep_freed_memory() -> bool:
    """Let this process's C allocator reuse freed memory instead of returning it to
    the kernel (glibc only; elsewhere nothing happens and False is returned).

    A chunk of replicates allocates and frees the same few-megabyte arrays over and
    over; by default glibc serves each from a fresh ``mmap`` and unmaps it when freed, so
    every array is paid for again in page faults (measured on the default power run:
    ~10% of the workers' CPU time). Called in the pool's worker processes, which exist
    only to run chunks; the calling process is left as it is.
    """
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):  # the parameters below are glibc's
            return False
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError, ValueError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return all(mallopt(param, value) == 1 for param, value in _WORKER_MALLOPT.items())


def _worker_start() -> None:
    """Run once in every worker process of the pool, before its first task."""
    keep_freed_memory()


#: ``workers=AUTO`` lets ``resolve_workers`` choose between in-process and a pool.
AUTO = "auto"
#: Fewest replicates for which ``AUTO`` starts worker processes: below this a run takes
#: well under a second in-process, less than starting a pool would save.
AUTO_MIN_SIMS = 400
#: Most worker processes ``AUTO`` starts.
AUTO_MAX_WORKERS = 8


def check_backend(workers: int | str | None, scheduler: Any) -> None:
    """Raise ``ModelError`` for a ``workers`` / ``scheduler`` combination that cannot run."""
    if workers == AUTO:
        workers = None
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


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of a ``tcp://`` address; ``None`` for other schemes."""
    scheme, sep, rest = address.partition("://")
    if not sep:
        scheme, rest = "tcp", address
    if scheme != "tcp":
        return None
    host, _, port = rest.rpartition(":")
    host = host.strip("[]")  # IPv6 literals
    if not 0 < int(port) < 65536:
        raise ModelError(f"scheduler address {address!r}: port {port} is out of range")
    return host, int(port)


def _recv_exactly(sock: socket.socket, n: int, deadline: float) -> bytes:
    data = b""
    while len(data) < n:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def probe_scheduler(address: str, timeout: float | None = None) -> None:
    """Check within ``timeout`` seconds (default ``CONNECT_TIMEOUT``) that ``address``
    is a Dask scheduler.

    A Dask server greets every new connection with a handshake message (an 8-byte
    length, a frame count and frame sizes, then msgpack naming e.g. its pickle
    protocol) before reading anything, so this connects, reads that greeting and
    hangs up, without sending a byte. A closed port, a host that does not answer, a
    server that never speaks (an HTTP server waits for a request) or one that speaks
    something else each give a ``ModelError`` of one line. Addresses of other schemes
    (``tls://``, ``ws://``) are left to Dask's own connection timeout.
    """
    timeout = CONNECT_TIMEOUT if timeout is None else float(timeout)
    target = _host_port(address)
    if target is None:
        return
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection(target, timeout=timeout)
    except socket.gaierror as exc:
        raise ModelError(
            f"Dask scheduler {address}: cannot resolve host {target[0]!r} ({exc})"
        ) from None
    except TimeoutError:
        raise ModelError(
            f"Dask scheduler {address}: no answer to the connection within {timeout:g} s"
        ) from None
    except OSError as exc:
        raise ModelError(
            f"Dask scheduler {address}: cannot connect ({exc.strerror or exc})"
        ) from None
    with sock:
        try:
            head = _recv_exactly(sock, 8, deadline)
        except (TimeoutError, OSError):
            head = b""
        if len(head) < 8:
            raise ModelError(
                f"Dask scheduler {address}: the server accepted the connection but sent no "
                f"Dask greeting within {timeout:g} s; is this a Dask scheduler's address "
                "(not e.g. its dashboard's HTTP port)?"
            )
        (total,) = struct.unpack("<Q", head)
        body = b""
        if 16 <= total <= 1 << 20:
            try:
                body = _recv_exactly(sock, total, deadline)
            except (TimeoutError, OSError):
                body = b""
        if not _dask_greeting(body):
            raise ModelError(
                f"Dask scheduler {address}: the server answers, but not in Dask's protocol "
                f"(it began with {head!r}); is this a Dask scheduler's address?"
            )


def _dask_greeting(body: bytes) -> bool:
    """Whether ``body`` is framed as Dask frames and names Dask's handshake keys."""
    if len(body) < 16:
        return False
    (nframes,) = struct.unpack("<Q", body[:8])
    if not 1 <= nframes <= 64 or len(body) < 8 * (nframes + 1):
        return False
    sizes = struct.unpack(f"<{nframes}Q", body[8 : 8 * (nframes + 1)])
    if sum(sizes) > len(body):
        return False
    return b"pickle-protocol" in body or b"compression" in body


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the platform has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def resolve_workers(workers: int | str | None, scheduler: Any, n_sims: int) -> int | None:
    """The number of worker processes for ``workers`` (``None``: in-process).

    ``AUTO`` picks worker processes — one per usable CPU, at most
    ``AUTO_MAX_WORKERS`` — when there are at least 2 CPUs, at least
    ``AUTO_MIN_SIMS`` replicates and the workers can be forked (no other thread
    runs: a forked worker inherits the imported package and starts in
    milliseconds, whereas ``spawn`` would import it again in every worker and
    needs the ``__main__`` guard); otherwise in-process. A kept-alive pool is
    reused: later calls keep using it (its own thread would rule out forking a new
    one). Measured on 2 cores (``benchmarks/README.md``
    § Power): 1000 replicates ran faster on 2 forked workers than in-process,
    cold and warm, idle or shared. Any other value is returned as it is.
    """
    if workers != AUTO:
        return workers
    cpus = min(usable_cpus(), AUTO_MAX_WORKERS)
    if scheduler is not None or n_sims < AUTO_MIN_SIMS or cpus < 2:
        return None
    # the session's pool runs a thread of its own, so once it exists fork is ruled out
    # for new pools but the pool itself is there to be used
    if _live_pool(cpus) or start_method() == "fork":
        return cpus
    return None


def _live_pool(workers: int) -> bool:
    """Whether the session holds a working pool of ``workers`` processes."""
    with _POOLS_LOCK:
        ex = _POOLS.get(workers)
    return ex is not None and not getattr(ex, "_broken", False)


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


#: The session's worker pools, by number of workers (see the module docstring).
_POOLS: dict[int, ProcessPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def shutdown_pools() -> None:
    """Shut down the session's worker pools (also run at interpreter exit)."""
    with _POOLS_LOCK:
        pools = list(_POOLS.values())
        _POOLS.clear()
    for ex in pools:
        ex.shutdown(wait=True, cancel_futures=True)


atexit.register(shutdown_pools)


def _pool(workers: int) -> ProcessPoolExecutor:
    """The session's pool of ``workers`` processes, started on first use."""
    with _POOLS_LOCK:
        ex = _POOLS.get(workers)
        if ex is not None and not getattr(ex, "_broken", False):
            return ex
        context = multiprocessing.get_context(start_method())
        ex = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_start)
        _POOLS[workers] = ex
        return ex


def pool_processes(workers: int) -> list[int]:
    """Process ids of the session's pool of ``workers`` (empty if none is running)."""
    with _POOLS_LOCK:
        ex = _POOLS.get(workers)
        return sorted(getattr(ex, "_processes", None) or {}) if ex is not None else []


def _drop_pool(ex: ProcessPoolExecutor) -> None:
    with _POOLS_LOCK:
        for k, v in list(_POOLS.items()):
            if v is ex:
                del _POOLS[k]


def _run_processes(fn, tasks, workers: int, sizes, progress: bool, desc: str) -> list[Any]:
    saved = {k: os.environ.get(k) for k in _SINGLE_THREAD_ENV}
    os.environ.update(_SINGLE_THREAD_ENV)  # read by workers as they start
    ex = _pool(workers)
    try:
        # submitting starts the workers; only then the progress bar (a thread)
        futures = {ex.submit(fn, task): i for i, task in enumerate(tasks)}
        results: list[Any] = [None] * len(tasks)
        with _progress_bar(progress, total=sum(sizes), desc=desc) as bar:
            for fut in as_completed(futures):
                i = futures[fut]
                results[i] = fut.result()
                bar.update(sizes[i])
        return results
    except BaseException:
        # Ctrl-C or a failed task: drop the queued tasks and stop the running ones
        # instead of waiting for them (shutdown(wait=True) would finish the queue);
        # the next call starts a fresh pool.
        _drop_pool(ex)
        _stop_pool(ex)
        raise
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _stop_pool(ex: ProcessPoolExecutor) -> None:
    """Cancel what has not started, terminate the workers, do not wait for the queue."""
    processes = list(getattr(ex, "_processes", {}).values())  # private, but stable
    ex.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        if proc.is_alive():
            proc.terminate()
    for proc in processes:
        proc.join(timeout=2.0)


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
    if own:
        probe_scheduler(scheduler)
        try:
            client = Client(scheduler, set_as_default=False, timeout=f"{CONNECT_TIMEOUT * 2}s")
        except (OSError, TimeoutError) as exc:
            raise ModelError(f"Dask scheduler {scheduler}: cannot connect ({exc})") from None
    else:
        client = scheduler
    futures: list[Any] = []
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
    except BaseException:
        # Ctrl-C or a failed task: the cluster should not go on with this run's work
        with contextlib.suppress(Exception):
            client.cancel(futures)
        raise
    finally:
        if own:
            client.close(timeout=CONNECT_TIMEOUT)


class _NoBar:
    """What the loops need of a progress bar, doing nothing."""

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int = 1) -> None:
        pass


def _progress_bar(enabled: bool, total: int, desc: str):
    """A tqdm bar, or an inert stand-in when progress is off (tqdm starts its monitor
    thread even for a disabled bar, which would rule out forking workers later)."""
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="rep", leave=False)
