"""The ``syndesmo`` command line: one subcommand per module of ``syndesmo.cli.commands``.

A command module defines ``NAME`` (the subcommand), ``HELP`` (one line for the
list of commands), ``DESCRIPTION`` (the full ``--help`` text, with an example),
``add_arguments(parser)`` and ``run(args) -> int``. Modules are discovered with
``pkgutil``, so adding a command is adding a file; heavy imports belong inside
``run`` so that ``--help`` stays fast and works even where a backend is missing.

Bad input never shows a traceback: ``SyndesmoError``, missing files, missing
optional modules (e.g. pyarrow for Parquet) and bad arguments print one line
``syndesmo <command>: error: <message>`` on stderr and exit with status 2.
Anything else is a bug and keeps its traceback (``--traceback`` shows it for
input errors too). What was changed in the input while reading it (a ``DataNote``:
names stripped, labels merged, missing-value codes) is printed as one line each,
``syndesmo <command>: note: <message>``.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType

from syndesmo import __version__
from syndesmo.errors import DataNote, SyndesmoError

PROG = "syndesmo"
#: Exit status for bad input or arguments (argparse's convention).
EXIT_USAGE = 2
#: Commands listed first, in workflow order; others follow alphabetically.
_ORDER = ("simulate", "import", "describe", "fit", "reproduce", "power")
_REQUIRED = ("NAME", "HELP", "DESCRIPTION", "add_arguments", "run")

DESCRIPTION = """\
Multilevel longitudinal models of vertebral-unit (VU) panels: spinal MRI activity
(ASspiMRI-a) at several time points and new bone (mSASSS syndesmophytes) at the
same VU two years later.

Input is a VU table (one row per patient x VU, columns patient, vu, mri_w{week},
msasss_upper_w{week}, msasss_lower_w{week}) and a patient table (patient, arm,
covariates), as CSV, Parquet, Stata, SAS, SPSS or Excel; see `syndesmo describe
--help`. A long trial export (one row per patient x level x visit) is turned into
these files by `syndesmo import`.

examples:
  syndesmo simulate --spec data/synthetic/assert_like.toml --seed 1 --out cohort/
  syndesmo describe --vu cohort/vu.csv --patients cohort/patients.csv
  syndesmo <command> --help
"""


class UsageError(Exception):
    """A bad command line, raised by the parser instead of exiting."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises ``UsageError`` so ``main`` prints one line."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(self.prog, message)


@dataclass(frozen=True)
class Command:
    """A discovered subcommand, or one whose module could not be used (``problem``)."""

    name: str
    module: ModuleType | None
    problem: str = ""


def discover_commands() -> dict[str, Command]:
    """All command modules of ``syndesmo.cli.commands``, keyed by command name.

    A module that fails to import or lacks part of the interface is listed with
    its problem instead of breaking every other command.
    """
    import syndesmo.cli.commands as package

    found: dict[str, Command] = {}
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_"):
            continue
        try:
            module = importlib.import_module(f"{package.__name__}.{info.name}")
        except Exception as exc:  # any failure: reported as an unusable command
            found[info.name] = Command(info.name, None, f"cannot import: {exc}")
            continue
        missing = [a for a in _REQUIRED if not hasattr(module, a)]
        if missing:
            found[info.name] = Command(info.name, None, f"module lacks {', '.join(missing)}")
            continue
        found[module.NAME] = Command(module.NAME, module)
    rank = {name: i for i, name in enumerate(_ORDER)}
    return dict(sorted(found.items(), key=lambda kv: (rank.get(kv[0], len(_ORDER)), kv[0])))


def build_parser(commands: dict[str, Command] | None = None) -> argparse.ArgumentParser:
    """The top-level parser with one subparser per discovered command."""
    commands = discover_commands() if commands is None else commands
    parser = _Parser(
        prog=PROG,
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument(
        "--traceback",
        action="store_true",
        help="show the full traceback for errors in the input (for debugging)",
    )
    sub = parser.add_subparsers(dest="command", metavar="<command>", title="commands")
    for name, cmd in commands.items():
        if cmd.module is None:
            sub.add_parser(
                name,
                help=f"(unavailable: {cmd.problem})",
                description=f"The command {name!r} is unavailable: {cmd.problem}",
            )
            continue
        p = sub.add_parser(
            name,
            help=cmd.module.HELP,
            description=cmd.module.DESCRIPTION,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        cmd.module.add_arguments(p)
    return parser


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _fail(prog: str, message: str) -> int:
    print(f"{prog}: error: {_one_line(message)}", file=sys.stderr)
    return EXIT_USAGE


def _os_message(exc: OSError) -> str:
    if exc.filename is not None and exc.strerror:
        return f"{exc.strerror}: {exc.filename}"
    return str(exc)


def _note_printer(prog: str, show: Callable[..., None]) -> Callable[..., None]:
    """``warnings.showwarning`` printing a ``DataNote`` as one line ``<prog>: note: …``."""

    def printer(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, DataNote):
            print(f"{prog}: note: {_one_line(str(message))}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    return printer


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 success, 2 bad input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = discover_commands()
    parser = build_parser(commands)
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        return _fail(exc.prog, f"{exc} (see '{exc.prog} --help')")
    except SystemExit as exc:  # --help and --version exit here
        return int(exc.code or 0)
    args.argv = ["syndesmo", *argv]  # the command as typed, for reports that name it
    if args.command is None:
        return _fail(PROG, f"choose a command: {', '.join(commands)} (see '{PROG} --help')")
    prog = f"{PROG} {args.command}"
    cmd = commands[args.command]
    if cmd.module is None:
        return _fail(prog, f"this command is unavailable: {cmd.problem}")
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _note_printer(prog, warnings.showwarning)
            return int(cmd.module.run(args) or 0)
    except (SyndesmoError, OSError, ImportError) as exc:
        if args.traceback:
            raise
        if isinstance(exc, OSError):
            message = _os_message(exc)
        elif isinstance(exc, ImportError) and not isinstance(exc, SyndesmoError):
            message = f"a module this command needs is missing: {exc}"
        else:
            message = str(exc)
        return _fail(prog, message)
    except UsageError as exc:
        return _fail(prog, str(exc))
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
