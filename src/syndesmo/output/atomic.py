"""Writing output all at once, never over files syndesmo did not write.

Two ways to write, one rule for what may be replaced:

* ``atomic_output_dir(out)``: a whole directory (``describe``, ``fit``,
  ``reproduce``). Files go to a hidden temporary directory beside ``out``, which is
  renamed into place when everything was written; an existing ``out`` is replaced only
  if it is empty or every file in it was written by syndesmo and is unchanged since.
* ``atomic_files(directory, names)``: a few named files in a directory that may hold
  other things, e.g. the current directory (``simulate``, ``power``). The files are
  written into a hidden temporary directory inside ``directory`` and renamed into
  place one by one; an existing file of that name is replaced only if syndesmo wrote
  it and it is unchanged since.

"Written by syndesmo" is recorded in the marker file ``MARKER`` of the directory: one
line per file with its SHA-256, so a file edited by hand afterwards counts as the
user's. A directory marked by an older syndesmo (the marker without a list) is
trusted as a whole, as before.

Faults: an exception (or Ctrl-C) before the renames removes the temporary directory
and leaves the destination as it was; SIGINT and SIGTERM arriving during the renames
are held back until the renames are done, so the destination never mixes two runs.
A ``kill -9`` can leave a hidden temporary behind: the next run removes those it can
prove abandoned (its own prefix and owner file, and the owner process gone or the
temporary older than ``STALE_AFTER`` seconds). Runs writing the same destination at
the same time are serialised by a lock file; one that waits longer than
``LOCK_TIMEOUT`` seconds fails with ``OutputError``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from syndesmo.errors import SyndesmoError

try:  # POSIX; elsewhere runs are not serialised
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

#: File that marks what syndesmo wrote in a directory (safe to replace).
MARKER = ".syndesmo-output"
_MARKER_HEAD = "Written by syndesmo; the files listed here are replaced by the next run."
_LEGACY_HEAD = "Written by syndesmo"
#: Hidden temporaries are named ``.<name>.syndesmo-tmp-<host>-<pid>-<random>``.
_TMP_TAG = ".syndesmo-tmp-"
_OLD_TAG = ".syndesmo-old-"
#: The owner file inside a temporary: host and process id of the run that made it.
_OWNER = ".syndesmo-owner"
_LOCK_TAG = ".syndesmo-lock"
#: Seconds after which a temporary whose owner cannot be checked counts as abandoned.
STALE_AFTER = 24 * 3600.0
#: Seconds a run waits for another run writing the same destination.
LOCK_TIMEOUT = 120.0


class OutputError(SyndesmoError):
    """The output directory cannot be written or would overwrite foreign files."""


# --------------------------------------------------------------------------- the marker


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_marker(directory: Path) -> dict[str, str] | None:
    """File name → SHA-256 from the marker; ``None`` without a marker; ``{"*": ""}`` for
    an older marker that lists nothing (the whole directory is syndesmo's)."""
    path = directory / MARKER
    if not path.is_file():
        return None
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    entries: dict[str, str] = {}
    for line in lines[1:]:
        digest, sep, name = line.partition("  ")
        if sep and name:
            entries[name] = digest
    if not entries and lines and lines[0].startswith(_LEGACY_HEAD) and lines[0] != _MARKER_HEAD:
        return {"*": ""}
    return entries


def _write_marker(directory: Path, entries: dict[str, str]) -> None:
    text = _MARKER_HEAD + "\n" + "".join(f"{d}  {n}\n" for n, d in sorted(entries.items()))
    tmp = directory / f"{MARKER}.{os.getpid()}.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, directory / MARKER)


def _ours(directory: Path, name: str, entries: dict[str, str] | None) -> bool:
    """Whether ``directory/name`` is a file syndesmo wrote and nobody changed since."""
    if entries is None:
        return False
    if "*" in entries:
        return True
    path = directory / name
    return name in entries and path.is_file() and _sha256(path) == entries[name]


def _is_bookkeeping(name: str) -> bool:
    return name == MARKER or name.startswith((f"{MARKER}.", _TMP_TAG, _LOCK_TAG))


def _foreign(directory: Path, names: Sequence[str] | None = None) -> list[str]:
    """Entries of ``directory`` (or of ``names`` in it) syndesmo may not replace."""
    entries = _read_marker(directory)
    if names is None:
        names = [p.name for p in directory.iterdir() if not _is_bookkeeping(p.name)]
    else:
        names = [n for n in names if (directory / n).exists() or (directory / n).is_symlink()]
    return sorted(n for n in names if not _ours(directory, n, entries))


def _listing(names: list[str]) -> str:
    return ", ".join(names[:3]) + (", …" if len(names) > 3 else "")


# --------------------------------------------------------------------------- checks


def _parent(out: Path) -> Path:
    return out.parent if str(out.parent) else Path(".")


def _check_writable(directory: Path, what: str) -> None:
    """OutputError unless a file can be made in ``directory`` (tried, not guessed:
    permission bits say nothing for root or on a read-only file system)."""
    try:
        probe = tempfile.mkdtemp(prefix=f"{_TMP_TAG}probe-", dir=directory)
    except OSError as exc:
        raise OutputError(
            f"cannot write {what}: {directory} is not writable ({exc.strerror or exc})"
        ) from None
    os.rmdir(probe)


def check_destination(out: str | os.PathLike) -> Path:
    """``out`` as a Path, after checking syndesmo may (re)place it as a directory.

    Raises ``OutputError`` when ``out`` is a file, holds files syndesmo did not write
    (or that changed since), or its parent is missing or not writable.
    """
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise OutputError(f"--out {out} exists and is not a directory")
        foreign = _foreign(out)
        if foreign:
            raise OutputError(
                f"--out {out} already holds files not written by syndesmo, or changed "
                f"since ({_listing(foreign)}); choose a new or empty directory"
            )
    parent = _parent(out)
    if not parent.is_dir():
        raise OutputError(f"cannot write {out}: the parent directory {parent} does not exist")
    _check_writable(parent, str(out))
    return out


def check_files(directory: str | os.PathLike, names: Sequence[str]) -> Path:
    """``directory`` as a Path, after checking ``names`` may be written into it.

    A missing directory is fine (it is created; its nearest existing parent must be
    writable). Raises ``OutputError`` for a file of one of ``names`` that syndesmo did
    not write (or that changed since).
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise OutputError(f"--out {directory} exists and is not a directory")
    if directory.is_dir():
        foreign = _foreign(directory, names)
        if foreign:
            where = "the current directory" if str(directory) == "." else str(directory)
            raise OutputError(
                f"--out {directory}: {_listing(foreign)} in {where} "
                f"{'was' if len(foreign) == 1 else 'were'} not written by syndesmo (or "
                "changed since) and would be overwritten; choose another --out, or move "
                f"{'it' if len(foreign) == 1 else 'them'}"
            )
        _check_writable(directory, str(directory))
    else:
        existing = next(p for p in [directory, *directory.parents] if p.exists())
        if not existing.is_dir():
            raise OutputError(f"cannot create {directory}: {existing} is not a directory")
        _check_writable(existing, str(directory))
    return directory


# --------------------------------------------------------------------------- temporaries


def _temp_dir(parent: Path, stem: str, tag: str = _TMP_TAG) -> Path:
    """A hidden temporary directory in ``parent`` with an owner file inside."""
    host = socket.gethostname().replace("-", "_") or "host"
    tmp = Path(tempfile.mkdtemp(prefix=f"{stem}{tag}{host}-{os.getpid()}-", dir=parent))
    (tmp / _OWNER).write_text(f"{host} {os.getpid()}\n", encoding="utf-8")
    return tmp


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _abandoned(path: Path, now: float) -> bool:
    """A temporary of ours whose owner is gone (same host, dead process) or that is old."""
    owner = path / _OWNER
    if not owner.is_file():
        return False  # not provably ours: never touched
    try:
        host, pid = owner.read_text(encoding="utf-8").split()
        pid_n = int(pid)
    except (OSError, ValueError):
        return False
    me = socket.gethostname().replace("-", "_") or "host"
    if host == me and pid_n != os.getpid() and not _pid_alive(pid_n):
        return True
    try:
        return now - path.stat().st_mtime > STALE_AFTER
    except OSError:
        return False


def clean_stale(parent: str | os.PathLike, stem: str = "") -> list[Path]:
    """Remove abandoned hidden temporaries ``<stem>.syndesmo-tmp-…`` in ``parent``.

    Only directories with syndesmo's name prefix and owner file are considered, and of
    those only the ones whose owner process is gone (same host) or that are older than
    ``STALE_AFTER`` seconds. Returns the directories removed.
    """
    parent = Path(parent)
    removed = []
    now = time.time()
    try:
        candidates = [
            p
            for p in parent.iterdir()
            if p.name.startswith((f"{stem}{_TMP_TAG}", f"{stem}{_OLD_TAG}")) and p.is_dir()
        ]
    except OSError:
        return removed
    for path in candidates:
        if _abandoned(path, now):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


# --------------------------------------------------------------------------- lock, signals


@contextlib.contextmanager
def _locked(lock_path: Path, what: str, timeout: float | None = None) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (created, removed when released)."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    timeout = LOCK_TIMEOUT if timeout is None else timeout
    deadline = time.monotonic() + timeout
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() > deadline:
                raise OutputError(
                    f"another syndesmo run is writing {what} (lock {lock_path}); waited "
                    f"{timeout:g} s — try again when it has finished"
                ) from None
            time.sleep(0.05)
            continue
        # the file may have been removed by the previous holder: lock the current one
        try:
            same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock_path)
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back for the duration (main thread only), then deliver."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def hold(signum, _frame) -> None:
        received.append(signum)

    saved = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        old = signal.getsignal(sig)
        if old is None:  # installed outside Python: leave it alone
            continue
        saved[sig] = old
        signal.signal(sig, hold)
    try:
        yield
    finally:
        for sig, old in saved.items():
            signal.signal(sig, old)
        if received:
            os.kill(os.getpid(), received[0])


# --------------------------------------------------------------------------- writers


def _marker_entries(directory: Path) -> dict[str, str]:
    return {
        p.name: _sha256(p)
        for p in sorted(directory.iterdir())
        if p.is_file() and not _is_bookkeeping(p.name) and p.name != _OWNER
    }


@contextlib.contextmanager
def atomic_output_dir(
    out: str | os.PathLike, *, lock_timeout: float | None = None
) -> Iterator[Path]:
    """Yield a temporary directory beside ``out``; on success it replaces ``out``.

    On any exception the temporary directory is removed and ``out`` is left as it
    was. The marker file ``MARKER`` (listing the files written) goes into the result.
    Another run writing the same ``out`` is waited for (up to ``lock_timeout``
    seconds, default ``LOCK_TIMEOUT``), then ``OutputError``.
    """
    out = Path(out)
    parent = _parent(out)
    check_destination(out)
    with _locked(parent / f".{out.name}{_LOCK_TAG}", str(out), lock_timeout):
        check_destination(out)  # again: a run we waited for may have written it
        clean_stale(parent, f".{out.name}")
        tmp = _temp_dir(parent, f".{out.name}")
        try:
            yield tmp
            (tmp / _OWNER).unlink()
            _write_marker(tmp, _marker_entries(tmp))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        old = None
        with _signals_held():
            try:
                if out.exists():
                    old = _temp_dir(parent, f".{out.name}", _OLD_TAG)
                    os.replace(out, old / "content")
                os.replace(tmp, out)
            except BaseException:
                if old is not None and not out.exists():
                    os.replace(old / "content", out)
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            finally:
                if old is not None:
                    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_files(
    directory: str | os.PathLike,
    names: Sequence[str],
    *,
    lock_timeout: float | None = None,
) -> Iterator[Path]:
    """Yield a temporary directory; on success its files ``names`` move into ``directory``.

    ``directory`` is created if needed and may hold other files: only ``names`` are
    replaced, and only if syndesmo wrote them (``check_files``). Every name must have
    been written into the temporary directory. The renames happen with Ctrl-C held
    back, so ``directory`` never holds files of two runs; on an exception before them
    nothing changes. The marker ``MARKER`` records the files written.
    """
    directory = check_files(directory, names)
    directory.mkdir(parents=True, exist_ok=True)
    with _locked(directory / _LOCK_TAG, str(directory), lock_timeout):
        check_files(directory, names)
        clean_stale(directory)
        tmp = _temp_dir(directory, "")
        try:
            yield tmp
            missing = [n for n in names if not (tmp / n).is_file()]
            if missing:
                raise OutputError(f"internal: {', '.join(missing)} were not written")
            digests = {n: _sha256(tmp / n) for n in names}
            entries = {
                n: d
                for n, d in (_read_marker(directory) or {}).items()
                if n != "*" and (directory / n).is_file()
            }
            entries.update(digests)
            with _signals_held():
                for n in names:
                    os.replace(tmp / n, directory / n)
                _write_marker(directory, entries)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
