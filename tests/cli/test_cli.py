"""The ``syndesmo`` command line: discovery, help, one-line errors, and the
``simulate`` and ``describe`` commands.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from panel_tables import make_tables  # tests/panel_tables.py

import syndesmo
import syndesmo.cli.commands
from syndesmo.cli import app as cli
from syndesmo.panel.tables import load_panel

SRC = Path(syndesmo.__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m syndesmo ARGS`` in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "syndesmo", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def call(capsys, *args: str) -> subprocess.CompletedProcess:
    """Run ``main(ARGS)`` in this process, captured like a subprocess."""
    capsys.readouterr()
    rc = cli.main(list(args))
    cap = capsys.readouterr()
    return subprocess.CompletedProcess(["syndesmo", *args], rc, cap.out, cap.err)


def assert_one_line_error(proc: subprocess.CompletedProcess, prog: str, *words: str) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"{prog}: error: "), lines[0]
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


# --------------------------------------------------------------------------- framework


def test_top_level_help_lists_commands(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "examples:" in out
    for name, cmd in cli.discover_commands().items():
        assert name in out
        if cmd.module is not None:
            assert cmd.module.HELP[:30] in " ".join(out.split())


def test_every_command_module_is_usable():
    """A broken command module must not hide behind 'unavailable'."""
    commands = cli.discover_commands()
    assert {"simulate", "describe"} <= set(commands)
    for name, cmd in commands.items():
        assert cmd.module is not None, f"{name}: {cmd.problem}"
        assert "\n" not in cmd.module.HELP.strip()
        assert "example" in cmd.module.DESCRIPTION


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


@pytest.mark.parametrize("name", sorted(cli.discover_commands()))
def test_each_command_help_is_complete(name, capsys):
    assert cli.main([name, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: syndesmo {name}")
    sub = _subparsers(cli.build_parser())[name]
    for action in sub._actions:
        for opt in action.option_strings:
            assert opt in out, f"{name} --help does not mention {opt}"
        if action.help and action.help != argparse.SUPPRESS:
            assert action.help.split()[0] in out


def test_no_command(capsys):
    assert_one_line_error(call(capsys), "syndesmo", "choose a command", "simulate")


def test_unknown_command(capsys):
    assert_one_line_error(call(capsys, "fitt"), "syndesmo", "fitt")


def test_bad_argument_is_one_line(capsys):
    proc = call(capsys, "simulate", "--spec", "x.toml", "--seed", "abc")
    assert_one_line_error(proc, "syndesmo simulate", "--seed", "'abc'")
    proc = call(capsys, "simulate")
    assert_one_line_error(proc, "syndesmo simulate", "--spec")


def test_bad_input_in_a_real_process(tmp_path):
    """``python -m syndesmo``: exit status 2, one line on stderr, no traceback; and
    ``python -m syndesmo.cli.app --version``."""
    proc = run_cli("simulate", "--spec", str(tmp_path / "missing.toml"), "--seed", "1")
    assert_one_line_error(proc, "syndesmo simulate", "missing.toml")
    proc = subprocess.run(
        [sys.executable, "-m", "syndesmo.cli.app", "--version"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and proc.stdout.strip() == f"syndesmo {syndesmo.__version__}"


@pytest.fixture
def fake_commands(tmp_path, monkeypatch):
    """Extra command modules in a temporary directory added to syndesmo.cli.commands."""
    pkg_dir = tmp_path / "cmds"
    pkg_dir.mkdir()
    monkeypatch.setattr(
        syndesmo.cli.commands, "__path__", [*syndesmo.cli.commands.__path__, str(pkg_dir)]
    )
    added = []

    def add(name: str, source: str) -> None:
        (pkg_dir / f"{name}.py").write_text(textwrap.dedent(source))
        added.append(f"syndesmo.cli.commands.{name}")

    yield add
    for mod in added:
        sys.modules.pop(mod, None)


GOOD = """
    import argparse
    from syndesmo.errors import ModelError
    NAME = "zz-demo"
    HELP = "a demonstration command"
    DESCRIPTION = "Demo.\\n\\nexample:\\n  syndesmo zz-demo --fail user\\n"
    def add_arguments(parser):
        parser.add_argument("--fail", choices=["no", "user", "bug", "file"], default="no")
    def run(args):
        if args.fail == "user":
            raise ModelError("term 'mri:arm' is not in the frame\\nsecond line")
        if args.fail == "bug":
            raise RuntimeError("a bug")
        if args.fail == "file":
            open("/nonexistent/dir/x.csv")
        print("ran")
        return 0
"""


def test_discovered_command_runs_and_errors(fake_commands, capsys):
    fake_commands("zz_demo", GOOD)
    assert cli.main(["zz-demo"]) == 0
    assert capsys.readouterr().out == "ran\n"

    assert cli.main(["zz-demo", "--fail", "user"]) == 2
    err = capsys.readouterr().err
    assert err == "syndesmo zz-demo: error: term 'mri:arm' is not in the frame second line\n"

    assert cli.main(["zz-demo", "--fail", "file"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("syndesmo zz-demo: error: No such file or directory: /nonexistent")

    with pytest.raises(RuntimeError, match="a bug"):  # bugs keep their traceback
        cli.main(["zz-demo", "--fail", "bug"])
    with pytest.raises(Exception, match="not in the frame"):  # --traceback re-raises
        cli.main(["--traceback", "zz-demo", "--fail", "user"])


def test_broken_command_module_does_not_break_others(fake_commands, capsys):
    fake_commands("zz_broken", "import no_such_module_xyz\n")
    fake_commands("zz_partial", "NAME = 'zz-partial'\n")
    commands = cli.discover_commands()
    assert "cannot import" in commands["zz_broken"].problem
    assert "lacks HELP" in commands["zz_partial"].problem
    assert cli.main(["simulate", "--help"]) == 0
    capsys.readouterr()
    assert cli.main(["zz_broken"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("syndesmo zz_broken: error: this command is unavailable: cannot import")


# --------------------------------------------------------------------------- simulate


@pytest.fixture
def small_spec(tmp_path) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text("n_patients = 12\nn_readers = 2\nmri_missing_rate = 0.1\n")
    return path


def test_simulate_is_byte_for_byte_deterministic(small_spec, tmp_path, capsys):
    """Two separate processes (this one and a fresh one) write the same bytes."""
    from syndesmo.simulate.cohort import CohortSpec, simulate_cohort

    proc = run_cli("simulate", "--spec", str(small_spec), "--seed", "5", "--out", "a", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "12 patients" in proc.stdout
    proc = call(
        capsys, "simulate", "--spec", str(small_spec), "--seed", "5", "--out", str(tmp_path / "b")
    )
    assert proc.returncode == 0, proc.stderr
    for name in ("vu.csv", "patients.csv", "truth.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    # the files hold exactly the cohort simulate_cohort makes
    back = load_panel(tmp_path / "a" / "vu.csv", tmp_path / "a" / "patients.csv")
    direct = simulate_cohort(CohortSpec.from_toml(small_spec), seed=5)
    pd.testing.assert_frame_equal(back.vu, direct.vu, check_dtype=False)
    pd.testing.assert_frame_equal(back.patients, direct.patients, check_dtype=False)
    assert back.readers == [1, 2]
    truth = json.loads((tmp_path / "a" / "truth.json").read_text())
    assert truth["seed"] == 5 and truth["spec"]["n_patients"] == 12


def test_simulate_parquet_and_other_seed(small_spec, tmp_path, capsys):
    out = tmp_path / "pq"
    args = ["simulate", "--spec", str(small_spec), "--out", str(out)]
    proc = call(capsys, *args, "--seed", "6", "--format", "parquet")
    assert proc.returncode == 0 and "vu.parquet" in proc.stdout
    pq = load_panel(out / "vu.parquet", out / "patients.parquet")
    assert call(capsys, *args, "--seed", "7").returncode == 0
    csv = load_panel(out / "vu.csv", out / "patients.csv")
    assert not np.array_equal(pq.vu["mri_w0"].to_numpy(), csv.vu["mri_w0"].to_numpy())


def test_simulate_bad_input_one_line(small_spec, tmp_path, capsys):
    proc = call(capsys, "simulate", "--spec", str(tmp_path / "missing.toml"), "--seed", "1")
    assert_one_line_error(proc, "syndesmo simulate", "missing.toml")
    proc = call(capsys, "simulate", "--spec", str(small_spec))
    assert_one_line_error(proc, "syndesmo simulate", "spec.toml", "--seed")
    bad = tmp_path / "bad.toml"
    bad.write_text("n_patientz = 12\n")
    proc = call(capsys, "simulate", "--spec", str(bad), "--seed", "1")
    assert_one_line_error(proc, "syndesmo simulate", "bad.toml", "n_patientz")


# --------------------------------------------------------------------------- describe


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """A simulated cohort on disk: 40 patients, x-rays of some patient-weeks missing."""
    from syndesmo.simulate.cohort import CohortSpec, simulate_cohort

    spec = CohortSpec(n_patients=40, xray_missing_rate=0.1, risk_new=0.1)
    out = tmp_path_factory.mktemp("cohort")
    simulate_cohort(spec, seed=11).save(out / "vu.csv", out / "patients.csv")
    return out


def expected_counts(vu: pd.DataFrame, pat: pd.DataFrame, t: float) -> dict:
    """The descriptive counts computed directly from the raw tables (independent of
    syndesmo.derive.frame): at risk = both baseline corners < 2; new = a corner >= 2 at
    week 102; VUs with a missing x-ray are not counted. (The simulated cohort has
    all MRI scores, and x-rays missing for both corners of a patient-week.)"""
    df = vu.merge(pat[["patient", "arm"]], on="patient")
    base = df[["msasss_upper_w0", "msasss_lower_w0"]]
    last = df[["msasss_upper_w102", "msasss_lower_w102"]]
    complete = base.notna().all(axis=1) & last.notna().all(axis=1)
    at_risk = complete & (base.max(axis=1) < 2)
    new = last.max(axis=1) >= 2
    out = {}
    for w in (0, 24, 102):
        infl = df[f"mri_w{w}"] >= t
        for arm in ("placebo", "infliximab"):
            out[("inflamed", w, arm)] = int((infl & (df["arm"] == arm)).sum())
        out[("events", w, "inflamed")] = (
            int((at_risk & infl).sum()),
            int((at_risk & infl & new).sum()),
        )
        out[("events", w, "not inflamed")] = (
            int((at_risk & ~infl).sum()),
            int((at_risk & ~infl & new).sum()),
        )
    never = (df[["mri_w0", "mri_w24", "mri_w102"]] < t).all(axis=1)
    out["n_events"] = int((at_risk & new).sum())
    out["never"] = int((at_risk & new & never).sum())
    # the ledger's order of reasons: a known baseline syndesmophyte first, then missing x-rays
    out["not_at_risk"] = int((base.max(axis=1) >= 2).sum())
    out["xray_missing"] = int((~complete & ~(base.max(axis=1) >= 2)).sum())
    return out


@pytest.mark.parametrize("threshold", [1, 2])
def test_describe_counts_match_a_direct_count(cohort, tmp_path, capsys, threshold):
    out = tmp_path / "desc"
    proc = call(
        capsys,
        "describe",
        "--vu",
        str(cohort / "vu.csv"),
        "--patients",
        str(cohort / "patients.csv"),
        "--threshold",
        str(threshold),
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    exp = expected_counts(
        pd.read_csv(cohort / "vu.csv"), pd.read_csv(cohort / "patients.csv"), threshold
    )
    assert exp["n_events"] > 5 and exp["xray_missing"] > 0  # the data exercise every count

    infl = pd.read_csv(out / "inflammation.csv")
    for (_, w, arm), n in ((k, v) for k, v in exp.items() if k[0] == "inflamed"):
        row = infl[(infl["week"] == w) & (infl["arm"] == arm)]
        assert int(row["n_vus_inflamed"].iloc[0]) == n, (w, arm)
    events = pd.read_csv(out / "events.csv")
    for w in (0, 24, 102):
        for label in ("inflamed", "not inflamed"):
            row = events[(events["exposure"] == f"w{w}") & (events["mri"] == label)].iloc[0]
            assert (int(row["n_vus"]), int(row["n_events"])) == exp[("events", w, label)]
    share = pd.read_csv(out / "share_uninflamed.csv").set_index("exposure")
    assert int(share.loc["never", "n_events"]) == exp["n_events"]
    assert int(share.loc["never", "n_events_uninflamed"]) == exp["never"]
    assert share.loc["never", "pct_events_uninflamed"] == pytest.approx(
        100 * exp["never"] / exp["n_events"], rel=1e-12
    )
    ledger = pd.read_csv(out / "ledger.csv")
    assert sorted(ledger["n_rows"]) == sorted([exp["not_at_risk"], exp["xray_missing"]])

    # printed: the same tables as Markdown, with the threshold in the titles
    text = proc.stdout
    assert text.startswith("# Descriptive counts of") and "40 patients" in text
    assert text.count(f"(ASspiMRI-a ≥ {threshold})") == 3
    assert "| week | arm |" in text and "never inflamed" in text
    assert (out / "describe.md").read_text() in text
    for name in ("inflammation", "events", "share_uninflamed", "ledger"):
        assert (out / f"{name}.md").read_text().startswith("## ")


def test_describe_one_file_form(cohort, tmp_path, capsys):
    from syndesmo.cli.commands.describe import TABLES  # noqa: F401 - the module imports

    load_panel(cohort / "vu.csv", cohort / "patients.csv").save(tmp_path / "all.parquet")
    two = call(
        capsys,
        "describe",
        "--vu",
        str(cohort / "vu.csv"),
        "--patients",
        str(cohort / "patients.csv"),
    )
    one = call(capsys, "describe", "--vu", str(tmp_path / "all.parquet"))
    assert one.returncode == 0 == two.returncode
    body = lambda s: s.split("\n", 1)[1]  # noqa: E731 - the header names the files
    assert body(one.stdout) == body(two.stdout)


def test_describe_bad_input_one_line(cohort, tmp_path, capsys):
    vu, pat = make_tables()
    vu.loc[7, "mri_w24"] = 11
    vu.to_csv(tmp_path / "vu.csv", index=False)
    pat.to_csv(tmp_path / "patients.csv", index=False)
    proc = call(
        capsys,
        "describe",
        "--vu",
        str(tmp_path / "vu.csv"),
        "--patients",
        str(tmp_path / "patients.csv"),
    )
    assert_one_line_error(proc, "syndesmo describe", "vu.csv", "line 9 ", "'mri_w24'", "= 11")
    assert proc.stdout == ""

    args = ["describe", "--vu", str(cohort / "vu.csv"), "--patients", str(cohort / "patients.csv")]
    assert_one_line_error(call(capsys, *args, "--threshold", "0"), "syndesmo describe", "threshold")
    assert_one_line_error(call(capsys, *args, "--threshold", "x"), "syndesmo describe", "'x'")
    assert_one_line_error(
        call(capsys, "describe", "--vu", str(cohort / "nope.csv")), "syndesmo describe", "nope.csv"
    )
    assert_one_line_error(
        call(capsys, "describe", "--vu", str(cohort / "vu.csv")),
        "syndesmo describe",
        "'arm'",
        "--patients",
    )
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.docx").write_text("precious")
    proc = call(capsys, *args, "--out", str(tmp_path / "mine"))
    assert_one_line_error(proc, "syndesmo describe", "mine")
    assert proc.stdout == "" and (tmp_path / "mine" / "thesis.docx").read_text() == "precious"


def test_fit_reference_arm_option_is_case_insensitive(capsys):
    root = SRC.parent
    args = [
        "fit",
        str(root / "models/assert/new_syndesmophyte.toml"),
        "--vu",
        str(root / "data/synthetic/vu.csv"),
        "--patients",
        str(root / "data/synthetic/patients.csv"),
        "--exposure",
        "w0",
    ]
    assert cli.main([*args, "--reference-arm", "INFLIXIMAB"]) == 0
    flipped = capsys.readouterr().out
    assert "arm[T.placebo]" in flipped and "arm[T.infliximab]" not in flipped
    assert cli.main([*args, "--reference-arm", "nonesuch"]) == 2
    assert "nonesuch" in capsys.readouterr().err
