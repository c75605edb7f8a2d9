"""Shared helpers of the power tests."""

from __future__ import annotations

from pathlib import Path


def power_cli(out: Path, *args: str) -> int:
    """``syndesmo power ARGS --out OUT --no-progress``; its exit code."""
    from syndesmo.cli.app import main

    return main(["power", *args, "--out", str(out), "--no-progress"])


def refused_in_one_line(capsys, option: str, *args: str) -> bool:
    """``syndesmo power ARGS`` exits with 2 and one line on stderr naming ``option``."""
    from syndesmo.cli.app import main

    capsys.readouterr()
    code = main(["power", *args])
    err = capsys.readouterr().err.strip().splitlines()
    return code == 2 and len(err) == 1 and option in err[0]
