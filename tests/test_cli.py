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

import syndesmo
import syndesmo.commands
from syndesmo import cli
from syndesmo.panel import load_panel

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


def test_version():
    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"syndesmo {syndesmo.__version__}"


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


def test_no_command():
    proc = run_cli()
    assert_one_line_error(proc, "syndesmo", "choose a command", "simulate")


def test_unknown_command():
    proc = run_cli("fitt")
    assert_one_line_error(proc, "syndesmo", "fitt")


def test_bad_argument_is_one_line():
    proc = run_cli("simulate", "--spec", "x.toml", "--seed", "abc")
    assert_one_line_error(proc, "syndesmo simulate", "--seed", "'abc'")
    proc = run_cli("simulate")
    assert_one_line_error(proc, "syndesmo simulate", "--spec")


@pytest.fixture
def fake_commands(tmp_path, monkeypatch):
    """Extra command modules in a temporary directory added to syndesmo.commands."""
    pkg_dir = tmp_path / "cmds"
    pkg_dir.mkdir()
    monkeypatch.setattr(syndesmo.commands, "__path__", [*syndesmo.commands.__path__, str(pkg_dir)])
    added = []

    def add(name: str, source: str) -> None:
        (pkg_dir / f"{name}.py").write_text(textwrap.dedent(source))
        added.append(f"syndesmo.commands.{name}")

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


def test_simulate_is_byte_for_byte_deterministic(small_spec, tmp_path):
    from syndesmo.simulate import CohortSpec, simulate_cohort

    for out in ("a", "b"):
        proc = run_cli(
            "simulate", "--spec", str(small_spec), "--seed", "5", "--out", out, cwd=tmp_path
        )
        assert proc.returncode == 0, proc.stderr
        assert "12 patients" in proc.stdout
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
    assert (
        cli.main(
            [
                "simulate",
                "--spec",
                str(small_spec),
                "--seed",
                "6",
                "--out",
                str(out),
                "--format",
                "parquet",
            ]
        )
        == 0
    )
    assert "vu.parquet" in capsys.readouterr().out
    pq = load_panel(out / "vu.parquet", out / "patients.parquet")
    assert cli.main(["simulate", "--spec", str(small_spec), "--seed", "7", "--out", str(out)]) == 0
    csv = load_panel(out / "vu.csv", out / "patients.csv")
    assert not np.array_equal(pq.vu["mri_w0"].to_numpy(), csv.vu["mri_w0"].to_numpy())


def test_simulate_bad_input_one_line(small_spec, tmp_path):
    proc = run_cli("simulate", "--spec", str(tmp_path / "missing.toml"), "--seed", "1")
    assert_one_line_error(proc, "syndesmo simulate", "missing.toml")
    proc = run_cli("simulate", "--spec", str(small_spec))
    assert_one_line_error(proc, "syndesmo simulate", "spec.toml", "--seed")
    bad = tmp_path / "bad.toml"
    bad.write_text("n_patientz = 12\n")
    proc = run_cli("simulate", "--spec", str(bad), "--seed", "1")
    assert_one_line_error(proc, "syndesmo simulate", "bad.toml", "n_patientz")
