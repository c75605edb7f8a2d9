"""Bad input and faults (issue 10, parts 2-4): each case builds its bad file here and
asserts its class — a clear error naming the problem and where, or correct handling
with a note — and a property test throws random malformed CSVs at ``load_panel``.
"""

from __future__ import annotations

import csv
import http.server
import io
import math
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import syndesmo as sy
from syndesmo.analysis.specs import load_spec
from syndesmo.cli import app as cli
from syndesmo.errors import DataNote, DeriveError, ModelError, PanelError, SpecError
from syndesmo.output import atomic
from syndesmo.output.atomic import OutputError, atomic_files, atomic_output_dir
from syndesmo.panel.spine import MSASSS_VUS
from syndesmo.powersim import executors
from syndesmo.simulate.cohort import CohortSpec

SRC = Path(sy.__file__).resolve().parents[1]

VU_HEADER = [
    "patient",
    "vu",
    "mri_w0",
    "mri_w24",
    "mri_w102",
    "msasss_upper_w0",
    "msasss_lower_w0",
    "msasss_upper_w102",
    "msasss_lower_w102",
]
PAT_HEADER = ["patient", "arm", "age", "crp", "basdai", "symptom_duration", "msasss_baseline"]


def vu_rows(patients=("P1", "P2", "P3", "P4")) -> list[list[str]]:
    """12 mSASSS VUs per patient with varied scores (a valid panel)."""
    rows = []
    for i, p in enumerate(patients):
        for j, vu in enumerate(MSASSS_VUS):
            k = i * 12 + j
            mri = [k % 3, (k + 1) % 2, k % 4 // 3]
            xr0 = [k % 2, 0]
            xr1 = [2 if k % 5 == 0 else k % 2, 0]
            rows.append([str(p), vu, *map(str, mri + xr0 + xr1)])
    return rows


def pat_rows(patients=("P1", "P2", "P3", "P4")) -> list[list[str]]:
    arms = ["placebo", "infliximab"]
    return [
        [str(p), arms[i % 2], str(40 + i), f"{5 + i}.5", "6.1", "12", str(10 + i)]
        for i, p in enumerate(patients)
    ]


def write_csv(path: Path, header: list[str], rows: list[list[str]], sep: str = ",") -> Path:
    path.write_text("\n".join(sep.join(r) for r in [header, *rows]) + "\n", encoding="utf-8")
    return path


def files(tmp_path: Path, vu=None, pat=None, vu_header=None, pat_header=None):
    v = write_csv(tmp_path / "vu.csv", vu_header or VU_HEADER, vu or vu_rows())
    p = write_csv(tmp_path / "patients.csv", pat_header or PAT_HEADER, pat or pat_rows())
    return v, p


def load_quiet(*args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        panel = sy.load_panel(*args, **kwargs)
    return panel, [str(w.message) for w in caught if issubclass(w.category, DataNote)]


def panel_error(*args, **kwargs) -> str:
    with pytest.raises(PanelError) as info:
        sy.load_panel(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def call(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = cli.main(list(args))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def one_line_error(rc: int, err: str, prog: str, *words: str) -> str:
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def set_field(rows: list[list[str]], i: int, header: list[str], col: str, value: str) -> None:
    rows[i][header.index(col)] = value


# =========================================================================== part 2


def test_valid_files_load_without_notes(tmp_path):
    panel, notes = load_quiet(*files(tmp_path))
    assert len(panel.vu) == 48 and panel.n_patients == 4 and notes == []
    assert len(panel.ledger) == 0


def test_simulate_default_out_never_overwrites_a_users_file(tmp_path, capsys, monkeypatch):
    spec = tmp_path / "spec.toml"
    spec.write_text("n_patients = 6\nseed = 3\n")
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "vu.csv"
    mine.write_text("my own data\n")
    rc, _, err = call(capsys, "simulate", "--spec", str(spec))  # default --out .
    one_line_error(rc, err, "syndesmo simulate", "vu.csv", "not written by syndesmo")
    assert mine.read_text() == "my own data\n"
    assert not (tmp_path / "patients.csv").exists()  # nothing written at all
    mine.unlink()
    assert call(capsys, "simulate", "--spec", str(spec))[0] == 0
    first = (tmp_path / "vu.csv").read_bytes()
    # a second run replaces what the first wrote ...
    assert call(capsys, "simulate", "--spec", str(spec), "--seed", "4")[0] == 0
    assert (tmp_path / "vu.csv").read_bytes() != first
    # ... but not once the user has edited it
    (tmp_path / "truth.json").write_text("{}\n")
    rc, _, err = call(capsys, "simulate", "--spec", str(spec))
    one_line_error(rc, err, "syndesmo simulate", "truth.json")
    assert (tmp_path / "truth.json").read_text() == "{}\n"
    assert not [p for p in tmp_path.iterdir() if "syndesmo-tmp" in p.name]


def test_power_refuses_a_foreign_power_csv_before_simulating(tmp_path, capsys, monkeypatch):
    out = tmp_path / "pw"
    out.mkdir()
    (out / "power.csv").write_text("not ours\n")
    import syndesmo.powersim.api as api

    monkeypatch.setattr(api, "power_curve", lambda *a, **k: pytest.fail("simulated"))
    rc, _, err = call(capsys, "power", "--sims", "5", "--out", str(out), "--no-progress")
    one_line_error(rc, err, "syndesmo power", "power.csv", "not written by syndesmo")
    assert (out / "power.csv").read_text() == "not ours\n"


def test_atomic_files_fault_before_the_renames_changes_nothing(tmp_path):
    out = tmp_path / "out"
    with atomic_files(out, ["a.csv", "b.csv"]) as tmp:
        (tmp / "a.csv").write_text("run 1\n")
        (tmp / "b.csv").write_text("run 1\n")
    with pytest.raises(KeyboardInterrupt), atomic_files(out, ["a.csv", "b.csv"]) as tmp:
        (tmp / "a.csv").write_text("run 2\n")
        raise KeyboardInterrupt  # Ctrl-C while writing
    assert (out / "a.csv").read_text() == (out / "b.csv").read_text() == "run 1\n"
    assert sorted(p.name for p in out.iterdir()) == [".syndesmo-output", "a.csv", "b.csv"]


def test_sigint_during_the_renames_is_held_until_all_files_are_in(tmp_path, monkeypatch):
    """A SIGINT arriving between two renames is delivered after the last one."""
    out = tmp_path / "out"
    with atomic_files(out, ["a.csv", "b.csv"]) as tmp:
        (tmp / "a.csv").write_text("run 1\n")
        (tmp / "b.csv").write_text("run 1\n")
    real_replace = os.replace
    calls = []

    def replace_then_interrupt(src, dst):
        real_replace(src, dst)
        calls.append(dst)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(atomic.os, "replace", replace_then_interrupt)
    with pytest.raises(KeyboardInterrupt), atomic_files(out, ["a.csv", "b.csv"]) as tmp:
        (tmp / "a.csv").write_text("run 2\n")
        (tmp / "b.csv").write_text("run 2\n")
    assert (out / "a.csv").read_text() == (out / "b.csv").read_text() == "run 2\n"


def test_sigint_in_a_power_run_while_writing_leaves_the_old_files(tmp_path, capsys, monkeypatch):
    out = tmp_path / "pw"
    args = ["power", "--patients", "30", "--sims", "4", "--out", str(out), "--no-progress"]
    assert call(capsys, *args)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    import matplotlib.figure

    def interrupted(self, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", interrupted)
    rc, _, err = call(capsys, *args, "--seed", "9")
    assert rc == 130 and "interrupted" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_decimal_comma_is_an_error_naming_file_line_column_value(tmp_path):
    pat = pat_rows()
    set_field(pat, 2, PAT_HEADER, "crp", '"17,3"')
    v, p = files(tmp_path, pat=pat)
    msg = panel_error(v, p)
    for words in ("patients.csv", "line 4", "'crp'", "'17,3'", "decimal=','"):
        assert words in msg


def test_decimal_comma_file_reads_with_decimal_option(tmp_path, capsys):
    pat = [[f.replace(".", ",") for f in r] for r in pat_rows()]
    v = write_csv(tmp_path / "vu.csv", VU_HEADER, vu_rows())
    p = write_csv(tmp_path / "patients.csv", PAT_HEADER, pat, sep=";")
    assert "'crp'" in panel_error(v, p)
    panel, _ = load_quiet(v, p, decimal=",")
    assert panel.patients["crp"].tolist() == [5.5, 6.5, 7.5, 8.5]
    rc, _, err = call(capsys, "describe", "--vu", str(v), "--patients", str(p), "--decimal", ",")
    assert rc == 0, err


@pytest.mark.parametrize("name", [" mri_w24", "mri_w24 "])
def test_header_name_with_spaces_is_stripped_with_a_note(tmp_path, name):
    header = [name if h == "mri_w24" else h for h in VU_HEADER]
    v, p = files(tmp_path, vu_header=header)
    panel, notes = load_quiet(v, p)
    assert panel.mri_weeks == [0, 24, 102]  # the column is used, not ignored
    assert any(repr(name) in n and "read as 'mri_w24'" in n for n in notes)
    frame = sy.analysis_frame(panel, exposure="any")
    assert len(frame) > 0


def test_cli_prints_each_note_on_one_line(tmp_path, capsys):
    header = [" mri_w24" if h == "mri_w24" else h for h in VU_HEADER]
    v, p = files(tmp_path, vu_header=header)
    rc, _, err = call(capsys, "describe", "--vu", str(v), "--patients", str(p))
    assert rc == 0
    assert err.strip().splitlines() == [
        f"syndesmo describe: note: {v}: header name ' mri_w24' (column 4) has spaces "
        "around it; read as 'mri_w24'"
    ]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ("missing", ("line 11 has 8", "a field is missing")),
        ("extra", ("line 11 has 10", "unquoted comma")),
        ("truncated", ("line 49 has 3", "the last line is cut short")),
    ],
)
def test_ragged_rows_are_errors_naming_the_line(tmp_path, change, words):
    rows = vu_rows()
    text_rows = [",".join(r) for r in rows]
    if change == "missing":
        text_rows[9] = ",".join(rows[9][:-1])
    elif change == "extra":
        text_rows[9] = ",".join([*rows[9][:4], "1", *rows[9][4:]])
    v = tmp_path / "vu.csv"
    text = "\n".join([",".join(VU_HEADER), *text_rows])
    if change == "truncated":
        text = text[: text.rindex("\n") + 10]  # the last line cut, no line end
    else:
        text += "\n"
    v.write_text(text)
    p = write_csv(tmp_path / "patients.csv", PAT_HEADER, pat_rows())
    msg = panel_error(v, p)
    assert "vu.csv" in msg and "without the header's 9 fields" in msg
    for w in words:
        assert w in msg


def test_trailing_comma_on_data_lines_only(tmp_path):
    v = tmp_path / "vu.csv"
    v.write_text("\n".join([",".join(VU_HEADER), *(",".join(r) + "," for r in vu_rows())]) + "\n")
    p = write_csv(tmp_path / "patients.csv", PAT_HEADER, pat_rows())
    msg = panel_error(v, p)
    assert "48 lines without the header's 9 fields (line 2 has 10" in msg
    assert "end with an extra comma that the header does not have" in msg


def test_trailing_comma_on_every_line_is_read_with_a_note(tmp_path):
    v = tmp_path / "vu.csv"
    v.write_text("\n".join(",".join(r) + "," for r in [VU_HEADER, *vu_rows()]) + "\n")
    p = write_csv(tmp_path / "patients.csv", PAT_HEADER, pat_rows())
    panel, notes = load_quiet(v, p)
    assert list(panel.vu.columns) == VU_HEADER
    assert any("column 10 has no name and no values" in n for n in notes)


@pytest.mark.parametrize(
    ("col", "value", "words"),
    [
        ("age", "-99", ("range of age is 0–120", "-99 looks like a missing-value code")),
        ("age", "150", ("range of age is 0–120",)),
        ("crp", "-1.5", ("range of crp is ≥ 0",)),
        ("basdai", "10.5", ("range of basdai is 0–10",)),
        ("basdai", "999", ("range of basdai is 0–10", "999 looks like a missing-value code")),
        ("msasss_baseline", "73", ("range of msasss_baseline is 0–72",)),
        ("symptom_duration", "-9", ("range of symptom_duration is ≥ 0", "-9 looks like")),
        ("crp", ".", ("non-numeric value", "'.' looks like a missing-value code")),
    ],
)
def test_implausible_values_and_missing_codes_are_refused(tmp_path, col, value, words):
    pat = pat_rows()
    set_field(pat, 1, PAT_HEADER, col, value)
    msg = panel_error(*files(tmp_path, pat=pat))
    assert "patients.csv" in msg and "line 3" in msg and f"'{col}'" in msg
    for w in words:
        assert w in msg


def test_missing_codes_in_a_score_are_refused(tmp_path):
    rows = vu_rows()
    set_field(rows, 5, VU_HEADER, "mri_w24", "-99")
    msg = panel_error(*files(tmp_path, vu=rows))
    assert "line 7" in msg and "'mri_w24'" in msg and "missing_codes=['-99']" in msg


def test_missing_codes_option_reads_them_as_missing_with_a_note(tmp_path, capsys):
    pat = pat_rows()
    set_field(pat, 1, PAT_HEADER, "age", "-99")
    set_field(pat, 2, PAT_HEADER, "crp", ".")
    set_field(pat, 3, PAT_HEADER, "basdai", "999")
    rows = vu_rows()
    set_field(rows, 5, VU_HEADER, "mri_w24", "-9")
    v, p = files(tmp_path, vu=rows, pat=pat)
    panel, notes = load_quiet(v, p, missing_codes=True)
    assert panel.patients["age"].isna().tolist() == [False, True, False, False]
    assert panel.patients["crp"].isna().sum() == 1 and panel.patients["basdai"].isna().sum() == 1
    assert np.isnan(panel.vu.loc[5, "mri_w24"])
    assert len(notes) == 4 and all("read as missing" in n for n in notes)
    # and the rows they leave out of an analysis are in its ledger
    frame = sy.analysis_frame(panel, covariates=["age"])
    assert any(e["reason"] == "covariate missing: age" for e in frame.ledger)
    rc, _, err = call(
        capsys, "describe", "--vu", str(v), "--patients", str(p), "--missing-codes=-99,-9,999,."
    )
    assert rc == 0 and err.count("note:") == 4


def test_na_is_missing_as_r_writes_it(tmp_path):
    """``NA`` and empty fields are missing (R and pandas write them), not codes."""
    pat = pat_rows()
    set_field(pat, 1, PAT_HEADER, "crp", "NA")
    set_field(pat, 2, PAT_HEADER, "crp", "")
    panel, notes = load_quiet(*files(tmp_path, pat=pat))
    assert panel.patients["crp"].isna().sum() == 2 and notes == []


def test_labels_differing_in_case_or_spaces_are_merged_with_a_note(tmp_path):
    pat = pat_rows()
    pat[0][1], pat[2][1] = "Placebo", "placebo "
    pat[1][1], pat[3][1] = "infliximab", "Infliximab"
    pat.append(["P5", "placebo", "50", "3", "2", "1", "0"])
    rows = vu_rows(("P1", "P2", "P3", "P4", "P5"))
    panel, notes = load_quiet(*files(tmp_path, vu=rows, pat=pat))
    assert sorted(set(panel.patients["arm"])) == ["infliximab", "placebo"]
    assert any("'Placebo' (1 row) read as 'placebo'" in n for n in notes)
    assert any("spaces around them" in n and "'placebo '" in n for n in notes)
    assert any("read as 'infliximab'" in n for n in notes)


def test_vu_labels_in_another_case_are_the_spines_labels(tmp_path):
    rows = vu_rows()
    rows[0][1] = "c2/3"
    panel, notes = load_quiet(*files(tmp_path, vu=rows))
    assert panel.vu.loc[0, "vu"] == "C2/3" and any("another case" in n for n in notes)


@pytest.mark.parametrize(
    ("header_change", "shown"),
    [
        (("crp", "crp"), "'crp' (column 4) and 'crp' (column 8)"),
        (("crp", " crp"), "'crp' (column 4) and ' crp' (column 8)"),
    ],
)
def test_repeated_column_names_are_named_as_the_file_has_them(tmp_path, header_change, shown):
    header = [*PAT_HEADER, header_change[1]]
    pat = [[*r, "1.0"] for r in pat_rows()]
    msg = panel_error(*files(tmp_path, pat=pat, pat_header=header))
    assert "repeated in the header" in msg and shown in msg and "crp.1" not in msg


def test_empty_exposure_list_and_bad_ladder_arguments_raise(tmp_path, capsys):
    spec = tmp_path / "s.toml"
    spec.write_text('outcome = "new_syndesmophyte"\nexposure = []\n')
    with pytest.raises(SpecError, match="exposure = \\[\\] names no exposure"):
        load_spec(spec)
    v, p = files(tmp_path)
    rc, _, err = call(capsys, "fit", str(spec), "--vu", str(v), "--patients", str(p))
    one_line_error(rc, err, "syndesmo fit", "names no exposure")
    panel, _ = load_quiet(v, p)
    with pytest.raises(ModelError, match="exposures is empty"):
        sy.ladder(panel, exposures=[])
    with pytest.raises(ModelError, match=r"unknown engine\(s\) \['foo'\]"):
        sy.ladder(panel, engine="foo")
    with pytest.raises(ModelError, match=r"unknown engine\(s\) \['bar'\]"):
        sy.ladder(panel, engines_beside=["bar"])


# =========================================================================== part 3


def test_power_sims_have_a_ceiling_with_an_override(capsys, tmp_path):
    t0 = time.monotonic()
    rc, _, err = call(capsys, "power", "--sims", "1000000000000", "--out", str(tmp_path))
    one_line_error(rc, err, "syndesmo power", "1,000,000,000,000 simulated studies", "--max-sims")
    rc, _, err = call(
        capsys, "power", "--sims", "600000", "--patients", "20,30", "--out", str(tmp_path)
    )
    one_line_error(rc, err, "syndesmo power", "x 2 grid point(s) = 1,200,000")
    assert time.monotonic() - t0 < 10
    assert not (tmp_path / "power.csv").exists()


class _Silent:
    """A TCP server that accepts connections and never says a word."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        for c in self.conns:
            c.close()
        self.sock.close()


class _Garbage(_Silent):
    """A TCP server that answers every connection with bytes that are not Dask's."""

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.sendall(b"\xff" * 64)  # an 8-byte length of 2**64 - 1: "allocate 16 EiB"
            self.conns.append(conn)


@pytest.fixture
def http_server():
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"tcp://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_scheduler_that_never_answers_fails_in_seconds(monkeypatch):
    monkeypatch.setattr(executors, "CONNECT_TIMEOUT", 1.0)
    server = _Silent()
    try:
        t0 = time.monotonic()
        with pytest.raises(ModelError, match="sent no Dask greeting within 1 s"):
            executors.run_tasks(abs, [1, 2], scheduler=f"tcp://127.0.0.1:{server.port}")
        assert time.monotonic() - t0 < 5
    finally:
        server.close()


def test_http_server_and_garbage_are_not_a_scheduler(monkeypatch, http_server):
    monkeypatch.setattr(executors, "CONNECT_TIMEOUT", 1.0)
    t0 = time.monotonic()
    with pytest.raises(ModelError, match="sent no Dask greeting"):
        executors.run_tasks(abs, [1], scheduler=http_server)
    garbage = _Garbage()
    try:
        with pytest.raises(ModelError, match="not in Dask's protocol"):
            executors.run_tasks(abs, [1], scheduler=f"tcp://127.0.0.1:{garbage.port}")
    finally:
        garbage.close()
    with pytest.raises(ModelError, match="cannot connect"):
        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        executors.run_tasks(abs, [1], scheduler=f"tcp://127.0.0.1:{port}")
    for bad in ("garbage", "tcp://host", "tcp://127.0.0.1:99999"):
        with pytest.raises(ModelError, match="port"):
            executors.run_tasks(abs, [1], scheduler=bad)
    assert time.monotonic() - t0 < 10


def test_cli_scheduler_error_is_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(executors, "CONNECT_TIMEOUT", 1.0)
    server = _Silent()
    try:
        rc, _, err = call(
            capsys,
            "power",
            "--sims",
            "2",
            "--patients",
            "20",
            "--scheduler",
            f"tcp://127.0.0.1:{server.port}",
            "--out",
            str(tmp_path),
            "--no-progress",
        )
    finally:
        server.close()
    one_line_error(rc, err, "syndesmo power", "no Dask greeting")


def test_ctrl_c_with_worker_processes_exits_promptly(tmp_path):
    script = textwrap.dedent(
        """
        import sys, time
        from syndesmo.powersim.executors import run_tasks
        print("started", flush=True)
        try:
            run_tasks(time.sleep, [30.0] * 6, workers=2, progress=False)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            sys.exit(130)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout.readline().strip() == "started"
    time.sleep(2.0)  # the workers are sleeping in their first tasks
    t0 = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)  # as the terminal sends Ctrl-C to the group
    try:
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert time.monotonic() - t0 < 10, err
    assert proc.returncode == 130 and "interrupted" in out


def _stale_temp(parent: Path, stem: str, pid: int, *, owner: bool = True) -> Path:
    host = atomic.socket.gethostname().replace("-", "_")
    tmp = parent / f"{stem}.syndesmo-tmp-{host}-{pid}-{'o' if owner else 'x'}"
    tmp.mkdir()
    (tmp / "half.csv").write_text("half\n")
    if owner:
        (tmp / ".syndesmo-owner").write_text(f"{host} {pid}\n")
    return tmp


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporaries_of_dead_runs_are_cleaned_and_no_others(tmp_path):
    dead = _dead_pid()
    stale = _stale_temp(tmp_path, ".out", dead)
    alive = _stale_temp(tmp_path, ".out", 1)  # pid 1 is alive: maybe another run's
    foreign = _stale_temp(tmp_path, ".out", dead, owner=False)  # not provably ours
    other = tmp_path / ".out.tmp-not-ours"
    other.mkdir()
    with atomic_output_dir(tmp_path / "out") as tmp:
        (tmp / "a.txt").write_text("a\n")
    assert not stale.exists()
    assert alive.exists() and foreign.exists() and other.exists()
    # a temporary whose owner cannot be checked is removed once it is old enough
    old = time.time() - atomic.STALE_AFTER - 60
    os.utime(alive, (old, old))
    atomic.clean_stale(tmp_path, ".out")
    assert not alive.exists() and foreign.exists()


def test_stale_temporaries_after_kill_9_are_cleaned(tmp_path):
    script = textwrap.dedent(
        f"""
        import os, signal
        from syndesmo.output.atomic import atomic_output_dir
        with atomic_output_dir({str(tmp_path / "out")!r}) as tmp:
            (tmp / "half.csv").write_text("half")
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], timeout=60)
    assert proc.returncode == -signal.SIGKILL
    left = [p for p in tmp_path.iterdir() if ".syndesmo-tmp-" in p.name]
    assert len(left) == 1
    with atomic_output_dir(tmp_path / "out") as tmp:
        (tmp / "a.txt").write_text("a\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_concurrent_atomic_output_dir_is_serialised(tmp_path):
    out = tmp_path / "out"
    errors: list[BaseException] = []

    def write(k: int) -> None:
        try:
            with atomic_output_dir(out) as tmp:
                for name in ("a.txt", "b.txt"):
                    (tmp / name).write_text(f"{k}\n")
                    time.sleep(0.05)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no hidden leftovers
    assert (out / "a.txt").read_text() == (out / "b.txt").read_text()  # one run's files


def test_a_run_waiting_too_long_for_another_fails_clearly(tmp_path):
    out = tmp_path / "out"
    inside, release = threading.Event(), threading.Event()

    def slow() -> None:
        with atomic_output_dir(out) as tmp:
            (tmp / "a.txt").write_text("a\n")
            inside.set()
            release.wait(10)

    t = threading.Thread(target=slow)
    t.start()
    inside.wait(10)
    try:
        with pytest.raises(OutputError, match="another syndesmo run is writing"):
            with atomic_output_dir(out, lock_timeout=0.3):
                pass
    finally:
        release.set()
        t.join()


def test_a_directory_with_a_users_file_added_is_not_replaced(tmp_path):
    out = tmp_path / "out"
    with atomic_output_dir(out) as tmp:
        (tmp / "a.txt").write_text("a\n")
    (out / "notes.txt").write_text("mine\n")
    with pytest.raises(OutputError, match=r"notes\.txt"), atomic_output_dir(out):
        pass
    (out / "notes.txt").unlink()
    (out / "a.txt").write_text("edited\n")
    with pytest.raises(OutputError, match=r"a\.txt"), atomic_output_dir(out):
        pass


# =========================================================================== part 4


def test_header_only_files(tmp_path):
    v = write_csv(tmp_path / "vu.csv", VU_HEADER, [])
    p = write_csv(tmp_path / "patients.csv", PAT_HEADER, [])
    assert panel_error(v, p).endswith("vu.csv: no data rows, only the header")


def test_ids_001_and_1_across_files_is_a_format_mismatch(tmp_path):
    ids = ("001", "002", "003", "004")
    vu = vu_rows(ids)
    pat = pat_rows(("1", "2", "3", "4"))
    msg = panel_error(*files(tmp_path, vu=vu, pat=pat))
    assert "a format mismatch" in msg and "'001' here and 1 in" in msg and "patients.csv" in msg
    panel, _ = load_quiet(*files(tmp_path, vu=vu, pat=pat_rows(ids)))
    assert panel.patient_ids == list(ids)  # kept as written, not turned into 1, 2, ...


def test_ids_of_different_types_in_parquet_is_a_type_mismatch(tmp_path):
    v, p = files(tmp_path, vu=vu_rows((1, 2, 3, 4)), pat=pat_rows((1, 2, 3, 4)))
    vu = pd.read_csv(v)
    pat = pd.read_csv(p).astype({"patient": str})
    vu.to_parquet(tmp_path / "vu.parquet")
    pat.to_parquet(tmp_path / "patients.parquet")
    msg = panel_error(tmp_path / "vu.parquet", tmp_path / "patients.parquet")
    assert "a type mismatch" in msg


def test_ids_12_and_0012_in_one_file_are_not_merged(tmp_path):
    ids = ("12", "0012", "3", "4")
    msg = panel_error(*files(tmp_path, vu=vu_rows(ids), pat=pat_rows(ids)))
    assert "the same number written differently" in msg and "'12' (line 2); '0012'" in msg


def test_one_file_patient_covariate_differing_between_rows(tmp_path):
    header = [*VU_HEADER, "arm", "crp", "weight"]
    rows = [[*r, "placebo", "5.0", str(60 + i % 2)] for i, r in enumerate(vu_rows())]
    rows[13][header.index("crp")] = "7.0"  # P2, second row
    msg = panel_error(write_csv(tmp_path / "all.csv", header, rows))
    assert "'crp' is not the same on all rows" in msg and "line 15" in msg and "= 7.0" in msg
    rows[13][header.index("crp")] = "5.0"
    panel, _ = load_quiet(write_csv(tmp_path / "all.csv", header, rows))
    with pytest.raises(DeriveError, match=r"'weight'.*VU-level columns"):
        sy.analysis_frame(panel, covariates=["weight"])


def _design_frame(n_groups: int, separated: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    x = rng.normal(size=120)
    y = (x > 0).astype(int) if separated else rng.integers(0, 2, 120)
    return pd.DataFrame({"y": y, "x": x, "g": np.arange(120) % n_groups})


def test_gee_with_one_cluster_is_refused():
    with pytest.raises(ModelError, match="two or more clusters of 'g'; the rows used hold 1"):
        sy.fit("y ~ x + (1|g)", _design_frame(1), engine="gee")


@pytest.mark.parametrize("engine", ["gee", "native", "logit"])
def test_no_numbers_from_a_fit_that_did_not_converge(engine):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = sy.fit("y ~ x + (1|g)", _design_frame(12, separated=True), engine=engine)
    assert not fit.converged and fit.convergence_message
    assert fit.params.isna().all() and fit.bse.isna().all()
    assert fit.conf_int().isna().all().all() and fit.pvalues.isna().all()
    assert fit.odds_ratios().isna().all().all()
    assert "NOT converged" in fit.summary()
    assert np.isfinite(fit.last_iterate["params"]).any() or engine == "gee"


@pytest.mark.r
def test_lme4_pwrssupdate_failure_is_a_model_error(r_lme4):
    with pytest.raises(ModelError) as info:
        sy.fit("y ~ x + (1|g)", _design_frame(12, separated=True), engine="lme4")
    msg = str(info.value)
    assert "pwrssUpdate" in msg and "perfectly predicted along" in msg and "x (separation)" in msg
    assert "\n" not in msg and "Timing stopped" not in msg


@pytest.mark.parametrize("engine", ["native", "gee", "logit"])
def test_a_constant_term_is_refused_by_every_engine(engine):
    df = _design_frame(12).assign(site=1.0)
    with pytest.raises(ModelError, match=r"rank deficient: 'site'"):
        sy.fit("y ~ x + site + (1|g)", df, engine=engine)


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_a_directory_or_fifo_named_csv(tmp_path, kind):
    _, p = files(tmp_path)
    bad = tmp_path / "bad.csv"
    if kind == "directory":
        bad.mkdir()
    else:
        os.mkfifo(bad)
    msg = panel_error(bad, p)
    assert ("is a directory" if kind == "directory" else "is a FIFO") in msg


def test_spec_files_with_a_byte_order_mark_are_read(tmp_path):
    spec = tmp_path / "bom.toml"
    spec.write_bytes(b'\xef\xbb\xbfoutcome = "new_syndesmophyte"\nexposure = ["w0"]\n')
    assert load_spec(spec).exposures == ("w0",)
    cohort = tmp_path / "cohort.toml"
    cohort.write_bytes(b"\xef\xbb\xbfn_patients = 7\n")
    assert CohortSpec.from_toml(cohort).n_patients == 7
    v = tmp_path / "vu.csv"
    v.write_bytes(
        b"\xef\xbb\xbf" + ("\n".join(",".join(r) for r in [VU_HEADER, *vu_rows()])).encode()
    )
    p = write_csv(tmp_path / "patients.csv", PAT_HEADER, pat_rows())
    assert load_quiet(v, p)[0].vu.columns[0] == "patient"


def test_reproduce_into_a_read_only_place_fails_before_fitting(tmp_path, capsys, monkeypatch):
    from syndesmo.analysis import reproduction

    monkeypatch.setattr(reproduction, "run_reproduction", lambda *a, **k: pytest.fail("fitted"))
    rc, _, err = call(capsys, "reproduce", "--out", "/proc/syndesmo-out", "--quiet")
    one_line_error(rc, err, "syndesmo reproduce", "/proc is not writable")
    if os.geteuid() != 0:  # permission bits bind only others than root
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        rc, _, err = call(capsys, "reproduce", "--out", str(ro / "out"), "--quiet")
        one_line_error(rc, err, "syndesmo reproduce", "not writable")


def test_dataframes_given_where_paths_or_panels_belong(tmp_path):
    v, p = files(tmp_path)
    with pytest.raises(PanelError, match="load_panel reads files"):
        sy.load_panel(pd.read_csv(v), pd.read_csv(p))
    with pytest.raises(PanelError, match="needs file paths, got int"):
        sy.load_panel(3)
    with pytest.raises(DeriveError, match="analysis_frame needs a VUPanel, got DataFrame"):
        sy.analysis_frame(pd.read_csv(v))


def test_empty_rows_are_left_out_and_counted(tmp_path):
    v = tmp_path / "vu.csv"
    lines = [",".join(r) for r in [VU_HEADER, *vu_rows()]]
    lines.insert(5, ",,,,,,,,")
    lines.append(" , ,,,,,,,")
    v.write_text("\n".join(lines) + "\n")
    p = write_csv(tmp_path / "patients.csv", PAT_HEADER, pat_rows())
    panel, _ = load_quiet(v, p)
    assert len(panel.vu) == 48 and panel.ledger.n_excluded == 2
    assert "line 6, 51" in panel.ledger.to_frame()["reason"][0]
    frame = sy.analysis_frame(panel)
    assert frame.ledger.to_frame()["step"].iloc[0] == "load"


# =========================================================================== property


_FIELD = st.one_of(
    st.sampled_from(
        [
            "",
            " ",
            "NA",
            ".",
            "-99",
            "999",
            "0",
            "1",
            "2",
            "3",
            "6",
            "7",
            "1.5",
            "17,3",
            "x",
            "P1",
            "P2",
            "C2/3",
            "L5/S1",
            "placebo",
            "Placebo ",
            "True",
            '"',
            "a\nb",
            "0012",
            "12",
        ]
    ),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=4),
)


@st.composite
def malformed_vu_csv(draw) -> str:
    """A VU table as CSV text with random damage: fields changed, dropped, added or
    blanked, header names spaced, repeated or emptied, the text cut anywhere."""
    header = list(VU_HEADER)
    if draw(st.booleans()):
        i = draw(st.integers(0, len(header) - 1))
        header[i] = draw(st.sampled_from([" " + header[i], header[0], "", header[i].upper()]))
    n = draw(st.one_of(st.just(0), st.integers(13, 24)))  # 13+: both patients have rows
    rows = [list(r) for r in vu_rows(("P1", "P2"))[:n]]
    for _ in range(draw(st.integers(0, 4))):
        if not rows:
            break
        r = draw(st.integers(0, len(rows) - 1))
        action = draw(st.sampled_from(["set", "set", "drop", "add", "blank", "blank"]))
        if action == "set":
            rows[r][draw(st.integers(0, len(rows[r]) - 1))] = draw(_FIELD)
        elif action == "drop" and len(rows[r]) > 1:
            rows[r].pop()
        elif action == "add":
            rows[r].append(draw(_FIELD))
        else:
            rows[r] = [""] * len(rows[r])
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    text = buf.getvalue()
    if draw(st.booleans()) and text:
        text = text[: draw(st.integers(0, len(text)))]  # cut anywhere
    return text


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(text=malformed_vu_csv())
def test_random_malformed_csv_is_an_error_or_accounted_for(tmp_path, text):
    v = tmp_path / "vu.csv"
    v.write_text(text, encoding="utf-8")
    p = write_csv(tmp_path / "patients.csv", PAT_HEADER, pat_rows(("P1", "P2")))
    try:
        panel, _ = load_quiet(v, p)
    except PanelError:
        return
    rows_in = [
        r for r in csv.reader(io.StringIO(text, newline="")) if len(r) > 1 or "".join(r).strip()
    ][1:]
    # VU rows left out while reading, besides patients of the patient table without VU
    # rows (counted per patient, kept in the patient table)
    left_out = panel.ledger.n_excluded - len(panel.patients_without_vu)
    assert len(panel.vu) + left_out == len(rows_in)
    assert set(panel.patients_without_vu) == {"P1", "P2"} - set(panel.vu["patient"])
    assert math.isfinite(float(panel.vu[panel.score_columns].fillna(0).to_numpy().sum()))


def test_a_fit_at_20000_patients_runs_without_a_dense_random_effects_matrix():
    """20 000 patients x 12 VUs: a dense rows x groups matrix would need ~48 GB; the
    design keeps grouping codes only, so the fit runs and recovers the truth."""
    import tracemalloc

    rng = np.random.default_rng(0)
    n_pat, beta, sigma = 20_000, 0.5, 1.0
    patient = np.repeat(np.arange(n_pat), 12)
    x = rng.normal(size=patient.size)
    eta = -1.0 + beta * x + sigma * rng.normal(size=n_pat)[patient]
    frame = pd.DataFrame(
        {
            "y": (rng.random(patient.size) < 1 / (1 + np.exp(-eta))).astype(int),
            "x": x,
            "patient": patient,
        }
    )
    tracemalloc.start()
    fit = sy.fit("y ~ x + (1|patient)", frame, engine="native")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert fit.converged
    assert peak < 2 * 2**30  # far below the 48 GB of a dense matrix
    assert abs(fit.params["x"] - beta) < 4 * fit.bse["x"]
    assert abs(fit.sigma - sigma) < 0.1
