"""The speed features of a power run keep its results: ``workers="auto"``, the
engine and calibration loaded before forking, and a power run's imports (no
scipy.stats)."""

from __future__ import annotations

import multiprocessing
import platform
import subprocess
import sys

import pytest

from syndesmo.powersim import executors

needs_fork = pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods() or executors.usable_cpus() < 2,
    reason="workers='auto' runs in-process on a machine without fork or 2 CPUs",
)


def last_line_of(code: str) -> str:
    """Run ``code`` in a fresh interpreter (other tests leave Dask threads behind, and
    "auto" does not fork a process that runs threads); the last line it printed."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


def test_resolve_workers_auto_and_explicit(monkeypatch):
    monkeypatch.setattr(executors, "_live_pool", lambda workers: False)
    assert executors.resolve_workers(3, None, 10) == 3
    assert executors.resolve_workers(None, None, 10_000) is None
    assert executors.resolve_workers("auto", None, executors.AUTO_MIN_SIMS - 1) is None
    assert executors.resolve_workers("auto", "tcp://h:1", 10_000) is None
    monkeypatch.setattr(executors, "usable_cpus", lambda: 1)
    assert executors.resolve_workers("auto", None, 10_000) is None
    monkeypatch.setattr(executors, "usable_cpus", lambda: 64)
    monkeypatch.setattr(executors, "start_method", lambda: "fork")
    assert executors.resolve_workers("auto", None, 10_000) == executors.AUTO_MAX_WORKERS
    monkeypatch.setattr(executors, "start_method", lambda: "spawn")
    monkeypatch.setattr(executors, "_live_pool", lambda workers: False)
    assert executors.resolve_workers("auto", None, 10_000) is None
    # the session's pool (whose own thread rules out fork) is used once it exists
    monkeypatch.setattr(executors, "_live_pool", lambda workers: True)
    assert executors.resolve_workers("auto", None, 10_000) == executors.AUTO_MAX_WORKERS


@needs_fork
def test_auto_workers_give_the_in_process_results():
    """Forked workers give the in-process results exactly, and the next call uses the
    same pool again."""
    code = (
        "import pandas as pd, syndesmo as sy\n"
        "from syndesmo.powersim import executors\n"
        "executors.AUTO_MIN_SIMS = 10\n"
        "spec = sy.CohortSpec(n_patients=40)\n"
        "kw = dict(n_sims=100, seed=5, progress=False, analysis=['vu', 'logit'])\n"
        "here = sy.power(spec, workers=None, **kw)\n"
        "auto = sy.power(spec, **kw)\n"
        "again = sy.power(spec, **kw)\n"
        "assert again.backend == auto.backend, (auto.backend, again.backend)\n"
        "pd.testing.assert_frame_equal(here.replicates, auto.replicates, check_exact=True)\n"
        "cols = [c for c in here.table.columns if c != 'seconds']\n"
        "pd.testing.assert_frame_equal(here.table[cols], auto.table[cols], check_exact=True)\n"
        "print(here.backend, '|', auto.backend)\n"
    )
    here, auto = last_line_of(code).split(" | ")
    assert here == "in-process" and auto.startswith("processes("), (here, auto)


@needs_fork
def test_the_cli_curves_and_searches_take_auto_workers_with_the_same_results(tmp_path):
    """``syndesmo power`` forks workers by default ("auto"); its tables equal those of
    ``--workers 1`` (in this process), and ``sample_size(workers="auto")`` equals the
    in-process search."""
    code = (
        "import pandas as pd, syndesmo as sy\n"
        "from syndesmo.cli.app import main\n"
        "from syndesmo.cli.commands.power import AUTO_WORKERS\n"
        "from syndesmo.powersim import executors\n"
        "assert AUTO_WORKERS == executors.AUTO\n"
        "executors.AUTO_MIN_SIMS = 10\n"
        f"out = {str(tmp_path)!r}\n"
        "args = ['power', '--patients', '40,60', '--sims', '40', '--seed', '3',\n"
        "        '--analysis', 'vu,logit', '--no-progress']\n"
        "assert main([*args, '--workers', '1', '--out', out + '/one']) == 0\n"
        "assert not executors._POOLS\n"
        "assert main([*args, '--out', out + '/auto']) == 0\n"
        "assert executors._POOLS, 'the default did not fork workers'\n"
        "one, auto = (pd.read_csv(out + f'/{d}/power.csv').drop(columns='seconds')\n"
        "             for d in ('one', 'auto'))\n"
        "pd.testing.assert_frame_equal(one, auto, check_exact=True)\n"
        "spec = sy.CohortSpec(n_patients=40)\n"
        "kw = dict(target=0.3, n_sims=40, seed=4, progress=False, step=20, max_patients=120)\n"
        "here = sy.sample_size(spec, workers=None, **kw)\n"
        "there = sy.sample_size(spec, workers='auto', **kw)\n"
        "pd.testing.assert_frame_equal(here.table, there.table, check_exact=True)\n"
        "cols = [c for c in here.evaluated.columns if c != 'seconds']\n"
        "pd.testing.assert_frame_equal(here.evaluated[cols], there.evaluated[cols])\n"
        "print('ok', len(here.evaluated))\n"
    )
    assert last_line_of(code).startswith("ok")


def test_a_power_run_does_not_import_scipy_stats():
    code = (
        "import sys, syndesmo as sy\n"
        "sy.power(sy.CohortSpec(n_patients=20), n_sims=50, seed=1, progress=False)\n"
        "print('scipy.stats' in sys.modules)\n"
    )
    assert last_line_of(code) == "False"


def test_workers_reuse_freed_memory():
    """A worker's allocator keeps freed arrays for reuse: allocating four 8 MB arrays
    and freeing them again costs no page faults from the second round on (by default
    glibc returns the freed heap and every round faults in ~8000 pages again)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")
    code = (
        "import resource, sys, numpy as np\n"
        "from syndesmo.powersim import executors\n"
        "if sys.argv[1] == 'keep':\n"
        "    assert executors.keep_freed_memory()\n"
        "def faults():\n"
        "    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "def work():\n"
        "    arrays = [np.ones(2**20) for _ in range(4)]\n"
        "    return sum(a.sum() for a in arrays)\n"
        "work()\n"
        "before = faults()\n"
        "for _ in range(10):\n"
        "    work()\n"
        "print(faults() - before)\n"
    )
    got = {}
    for mode in ("keep", "default"):
        out = subprocess.run(
            [sys.executable, "-c", code, mode], capture_output=True, text=True, check=True
        )
        got[mode] = int(out.stdout.split()[-1])
    assert got["keep"] < 200 and got["default"] > 10_000, got
