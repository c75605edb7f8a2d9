"""Reading a CSV table field by field, so that every problem is named by line and column.

``pandas.read_csv`` guesses silently where a panel must not: a row with a field
missing is padded with NaN, a repeated column name becomes ``crp.1``, a header name
with a space before it is a different column, one decimal comma turns a numeric
column into text, and ``-99`` is a number like any other. ``read_csv_table`` reads
the file itself (Python's ``csv`` module, strict quoting) and either returns a typed
table with the line number of every row, what it changed (``notes``) and the rows it
left out (``empty_lines``), or raises ``PanelError`` naming the file, the line, the
column and the value.

What it does with each kind of input:

* header names with surrounding spaces are stripped (a note); a name repeated in the
  header (also after stripping) is an error naming the names as the file has them; a
  column without a name is left out with a note when it holds no value (a trailing
  comma on every line), else an error;
* a line with more or fewer fields than the header (a field missing, a line cut short,
  a trailing comma on the data lines only) is an error naming the lines;
* a row whose every field is blank is left out and counted (``empty_lines``); blank
  lines are skipped, as ``pandas`` skips them;
* a column is numeric when every value is a number or missing (empty, ``NA``, ``NaN``
  and the other tokens of ``NA_TOKENS``); integers stay ``int64`` when nothing is
  missing, else the column is ``float64``; ``True``/``False`` columns are booleans.
  A column that should be numeric — a score, a column of ``numeric_columns`` (the
  known covariates of ``syndesmo.panel.tables.PLAUSIBLE_RANGES``) or a column whose
  values are mostly numbers — and holds text is an error naming the values, with a
  hint for a decimal comma (``decimal=","``) or a missing-value code;
* ``missing_codes`` (e.g. ``["-99", "."]``) are read as missing, with a note per
  column; without it they stay values (and the panel's range checks refuse them);
* text values are stripped of surrounding spaces, and labels that differ only in case
  (``placebo``, ``Placebo``) are merged into the most frequent spelling, with a note;
  ``vu`` labels are matched to the spine's labels regardless of case;
* ``patient`` and ``reader`` ids are read as text: ids that are the same number
  written differently (``12``, ``0012``) or differ only in case are an error; ids that
  are all plain whole numbers become integers (as ``pandas`` reads them), ids with
  leading zeros stay text.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from syndesmo.errors import PanelError
from syndesmo.panel.spine import vu_label_changes

#: Field values read as missing (those of ``pandas.read_csv``; R writes ``NA``).
NA_TOKENS = frozenset(
    {
        "",
        "#N/A",
        "#N/A N/A",
        "#NA",
        "-1.#IND",
        "-1.#QNAN",
        "-NaN",
        "-nan",
        "1.#IND",
        "1.#QNAN",
        "<NA>",
        "N/A",
        "NA",
        "NULL",
        "NaN",
        "None",
        "n/a",
        "nan",
        "null",
    }
)
#: Missing-value codes of SAS, SPSS and Stata exports, read as missing only on request.
COMMON_MISSING_CODES: tuple[str, ...] = ("-99", "-9", "999", ".")
#: Columns that hold ids: read as text, checked for two spellings of one id.
ID_COLUMNS = ("patient", "reader")
_SCORE_RE = re.compile(r"^(mri_w\d+|msasss_(upper|lower)_w\d+)$")
_NUMBER_RE = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_COMMA_NUMBER_RE = r"[+-]?(?:\d+,\d*|,\d+)(?:[eE][+-]?\d+)?"
_INT_RE = r"[+-]?\d+"
_BOOL = {"True": True, "TRUE": True, "true": True, "False": False, "FALSE": False, "false": False}
#: How many offending lines a message lists before "and N more".
_SHOWN = 5


@dataclass
class CsvTable:
    """A CSV file read and typed: the table, the file line of each row and what changed."""

    frame: pd.DataFrame
    lines: np.ndarray
    notes: list[str] = field(default_factory=list)
    empty_lines: list[int] = field(default_factory=list)


def read_csv_table(
    path: Path,
    *,
    decimal: str = ".",
    missing_codes: Iterable[str] = (),
    numeric_columns: Sequence[str] = (),
) -> CsvTable:
    """Read ``path`` as a CSV table (see the module docstring for the rules).

    Parameters
    ----------
    path
        The file; UTF-8, with or without a byte-order mark.
    decimal
        ``"."`` (default) or ``","``: the decimal mark of numbers. With ``","`` the
        fields are separated by ``";"`` when the header holds one (the usual European
        export), else by ``","`` with the numbers quoted.
    missing_codes
        Field values (e.g. ``"-99"``, ``"."``) read as missing in every column other
        than the ids; numbers match by value (``-99.0`` is ``-99``).
    numeric_columns
        Columns that must be numeric besides the score columns.

    Returns
    -------
    CsvTable
        The typed table, line numbers (header = line 1), notes and empty rows.

    Raises
    ------
    PanelError
        For anything that cannot be read unambiguously, naming file, line, column and
        value.
    """
    if decimal not in (".", ","):
        raise PanelError(f"decimal must be '.' or ',', got {decimal!r}")
    codes = [str(c).strip() for c in missing_codes]
    name = str(path)
    text = _decode(path)
    sep = sniff_separator(text, decimal)
    header, header_line, rows, lines, empty, one_per_line = _records(text, name, sep)
    notes: list[str] = []
    names = _header_names(header, header_line, name, notes)
    ncols = len(header)
    _check_field_counts(rows, lines, ncols, name, sep, text)
    keep_cols = _unnamed_columns(names, rows, lines, name, notes)
    if not rows:
        extra = f" and {len(empty)} empty row(s)" if empty else ""
        raise PanelError(f"{name}: no data rows, only the header{extra}")
    keys = {k: names.index(k) for k in ("patient", "vu", "reader") if k in names}
    where = _Lines(np.asarray(lines, dtype=np.int64), rows, keys)
    typed = (
        _pandas_typed(text, sep, decimal, names, header_line, rows, empty) if one_per_line else None
    )
    data: dict[str, pd.Series] = {}
    for j in keep_cols:
        col = names[j]
        quick = None if typed is None else typed[j]
        if quick is not None and col not in ID_COLUMNS and _is_plain(quick):
            if codes and quick.dtype.kind in "iuf":
                quick = _numeric_codes(quick, col, where, name, codes, notes)
            data[col] = quick
            continue
        data[col] = _type_column(
            [r[j] for r in rows], col, where, name, decimal, codes, col in numeric_columns, notes
        )
    frame = pd.DataFrame(data)
    return CsvTable(frame=frame, lines=where.lines, notes=notes, empty_lines=empty)


#: Field separators recognised, in order of preference when the header holds several.
SEPARATORS: tuple[str, ...] = (",", ";", "\t", "|")
SEPARATOR_WORDS: dict[str, str] = {",": "comma", ";": "semicolon", "\t": "tab", "|": "bar"}


def sniff_separator(text: str, decimal: str = ".") -> str:
    """The field separator of a CSV text: the one of ``,`` ``;`` tab ``|`` that occurs
    most often in the header line, outside quotes (``,`` when none does).

    With ``decimal=","`` a comma cannot separate fields when another separator is
    present (a European export: ``;`` between fields, ``,`` in numbers).
    """
    first = text.lstrip("\r\n").split("\n", 1)[0].rstrip("\r")
    unquoted = re.sub(r'"[^"]*"', "", first)
    counts = {s: unquoted.count(s) for s in SEPARATORS}
    if decimal == "," and any(counts[s] for s in SEPARATORS if s != ","):
        counts[","] = 0
    best = max(SEPARATORS, key=lambda s: (counts[s], -SEPARATORS.index(s)))
    return best if counts[best] else ","


def _is_plain(values: pd.Series) -> bool:
    """A column pandas typed as numbers or booleans (nothing to look at field by field)."""
    return values.dtype.kind in "iufb"


def _pandas_typed(
    text: str,
    sep: str,
    decimal: str,
    names: list[str],
    header_line: int,
    rows: list[list[str]],
    empty: list[int],
) -> list[pd.Series] | None:
    """The columns as ``pandas.read_csv`` types them, when its rows are provably ours.

    The quick path for large files: pandas' C parser types the numeric bulk. It is used
    only when the file has one record per line (``_records`` checked that), with the
    header and empty rows skipped by line number; column 0 is read as text as well and
    compared with our own fields, so a disagreement about where rows start (quoting
    pandas reads more leniently) falls back to typing every column ourselves.
    """
    placeholders = [f"c{j}" for j in range(len(names))]
    text_cols = {f"c{j}": str for j, n in enumerate(names) if j == 0 or n in (*ID_COLUMNS, "vu")}
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            sep=sep,
            decimal=decimal,
            header=None,
            names=placeholders,
            skiprows=sorted({header_line - 1, *(n - 1 for n in empty)}),
            dtype=text_cols,
            skip_blank_lines=True,
            engine="c",
            quoting=csv.QUOTE_MINIMAL,
        )
    except Exception:  # any disagreement: type the columns ourselves
        return None
    if len(frame) != len(rows):
        return None
    ours = np.array([r[0] for r in rows], dtype=object)
    theirs = frame["c0"].to_numpy(dtype=object)
    na = pd.isna(theirs)
    if not all(v in NA_TOKENS for v in ours[na]) or not np.array_equal(ours[~na], theirs[~na]):
        return None
    return [frame[c].reset_index(drop=True) for c in placeholders]


# --------------------------------------------------------------------------- bytes → records


def _decode(path: Path) -> str:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise PanelError(
            f"{path}: line {line}: byte 0x{data[exc.start]:02x} is not UTF-8 text; "
            "save the file as UTF-8 (in Excel: CSV UTF-8)"
        ) from None
    if not text.strip():
        raise PanelError(f"{path}: cannot be read as CSV: the file is empty (no header line)")
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise PanelError(f"{path}: line {line}: a NUL byte; this is not a text (CSV) file")
    return text


def _is_blank(record: list[str]) -> bool:
    """A blank line: no field, or one field of spaces only (``pandas`` skips these)."""
    return not record or (len(record) == 1 and not record[0].strip())


def _records(
    text: str, name: str, sep: str
) -> tuple[list[str], int, list[list[str]], list[int], list[int], bool]:
    """Header, its line, the data records with their first line, the lines of empty
    rows, and whether every record is one physical line."""
    records, starts, one_per_line = _parse(text, name, sep)
    header: list[str] | None = None
    header_line = 0
    rows: list[list[str]] = []
    lines: list[int] = []
    empty: list[int] = []
    for record, start in zip(records, starts, strict=True):
        if len(record) <= 1 and _is_blank(record):
            continue
        if header is None:
            header, header_line = record, start
            continue
        if not "".join(record).strip():
            empty.append(start)
            continue
        rows.append(record)
        lines.append(start)
    if header is None:  # only blank lines: caught by _decode, kept for safety
        raise PanelError(f"{name}: cannot be read as CSV: the file is empty (no header line)")
    return header, header_line, rows, lines, empty, one_per_line


def _parse(text: str, name: str, sep: str) -> tuple[list[list[str]], list[int], bool]:
    """All records with the line each starts on; quick when each is one line."""
    try:
        records = list(csv.reader(io.StringIO(text, newline=""), delimiter=sep, strict=True))
    except csv.Error:
        records = None  # find the line below
    n_lines = text.count("\n") + (0 if text.endswith("\n") else 1)
    if records is not None and len(records) == n_lines and "\r" not in text.replace("\r\n", ""):
        return records, list(range(1, n_lines + 1)), True
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, strict=True)
    records, starts = [], []
    while True:
        start = reader.line_num + 1
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise PanelError(
                f"{name}: line {max(reader.line_num, start)}: malformed CSV ({exc}); check "
                "the quotes on that line"
            ) from None
        records.append(record)
        starts.append(start)
    return records, starts, False


def _header_names(header: list[str], line: int, name: str, notes: list[str]) -> list[str]:
    """Names stripped of spaces (with a note); a repeated name is an error."""
    names = [h.strip() for h in header]
    seen: dict[str, list[int]] = {}
    for j, n in enumerate(names):
        if n:
            seen.setdefault(n, []).append(j)
    repeated = {n: js for n, js in seen.items() if len(js) > 1}
    if repeated:
        parts = [
            " and ".join(f"{header[j]!r} (column {j + 1})" for j in js) for js in repeated.values()
        ]
        raise PanelError(
            f"{name}: line {line}: column name(s) repeated in the header: {'; '.join(parts)}; "
            "each column needs its own name"
        )
    for j, (raw, n) in enumerate(zip(header, names, strict=True)):
        if n and raw != n:
            notes.append(
                f"{name}: header name {raw!r} (column {j + 1}) has spaces around it; read as {n!r}"
            )
    return names


def _check_field_counts(
    rows: list[list[str]], lines: list[int], ncols: int, name: str, sep: str, text: str
) -> None:
    bad = [i for i, r in enumerate(rows) if len(r) != ncols]
    if not bad:
        return
    shown = ", ".join(f"line {lines[i]} has {len(rows[i])}" for i in bad[:_SHOWN])
    more = f", and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else ""
    longer = [i for i in bad if len(rows[i]) > ncols]
    trailing = [i for i in longer if all(not f.strip() for f in rows[i][ncols:])]
    sep_word = SEPARATOR_WORDS[sep]
    if trailing and len(trailing) == len(bad):
        hint = (
            f"the data lines end with an extra {sep_word} that the header does not have, "
            "so the columns would shift; remove it (or add it to the header)"
        )
    elif longer:
        hint = (
            f"a value holds an unquoted {sep_word} (a decimal comma? quote it, or give "
            "decimal=',' / --decimal , with ';' between fields)"
            if sep == ","
            else f"a value holds an unquoted {sep_word}"
        )
    else:
        last_cut = bad[-1] == len(rows) - 1 and not text.endswith(("\n", "\r"))
        hint = "a field is missing" + (
            "; the last line is cut short (the file does not end with a line end)"
            if last_cut
            else " or the line is cut short"
        )
    lines_word = "line" if len(bad) == 1 else "lines"
    raise PanelError(
        f"{name}: {len(bad)} {lines_word} without the header's {ncols} fields "
        f"({shown}{more}): {hint}"
    )


def _unnamed_columns(
    names: list[str], rows: list[list[str]], lines: list[int], name: str, notes: list[str]
) -> list[int]:
    """Indices of the named columns; an unnamed one is dropped (with a note) if empty."""
    keep = []
    for j, n in enumerate(names):
        if n:
            keep.append(j)
            continue
        filled = [i for i, r in enumerate(rows) if r[j].strip()]
        if filled:
            i = filled[0]
            raise PanelError(
                f"{name}: column {j + 1} has no name in the header but holds values "
                f"(line {lines[i]} = {rows[i][j]!r}); name it or remove it"
            )
        notes.append(
            f"{name}: column {j + 1} has no name and no values (a trailing separator on "
            "every line?); left out"
        )
    return keep


# --------------------------------------------------------------------------- typing


class _Lines:
    """File line of each row, and the key fields (patient, vu, reader) as written."""

    def __init__(
        self, lines: np.ndarray, rows: list[list[str]], keys: dict[str, int] | None = None
    ) -> None:
        self.lines = lines
        self._rows = rows
        self._keys = keys or {}

    def __getitem__(self, i: int) -> int:
        return int(self.lines[i])

    def row(self, i: int) -> str:
        ctx = [f"{k} {self._rows[i][j].strip()!r}" for k, j in self._keys.items()]
        return f"line {int(self.lines[i])}" + (f" ({', '.join(ctx)})" if ctx else "")


def _lines_text(lines: _Lines, values: np.ndarray, mask: np.ndarray) -> str:
    idx = np.flatnonzero(mask)
    parts = [f"{lines.row(i)} = {values[i]!r}" for i in idx[:_SHOWN]]
    more = f"; and {len(idx) - _SHOWN} more" if len(idx) > _SHOWN else ""
    return "; ".join(parts) + more


def _fast_numbers(fields: Sequence[str], decimal: str) -> np.ndarray | None:
    """The column as floats when every field is a plain number or blank, else ``None``.

    The quick path for the numeric bulk of a panel (numpy parses the text); anything
    unusual (text, ``NA`` tokens, a decimal comma, ``inf``, ``1_000``) goes the slow way.
    """
    joined = "".join(fields)
    if "_" in joined or (decimal == "," and "," in joined):
        return None
    try:
        values = np.array([f if f.strip() else "nan" for f in fields], dtype=float)
    except ValueError:
        return None
    if np.isinf(values).any() or "n" in joined.lower().replace("nan", ""):
        return None
    return values


class _Column:
    """One column's fields, analysed once per distinct value and expanded to the rows."""

    def __init__(self, fields: Sequence[str]) -> None:
        self.idx, uniq = pd.factorize(np.asarray(fields, dtype=object), use_na_sentinel=False)
        self.raw = np.asarray(uniq, dtype=object)
        self.text = np.array([u.strip() for u in self.raw], dtype=object)
        self.missing = np.array([t in NA_TOKENS for t in self.text], dtype=bool)

    def rows(self, per_value: np.ndarray) -> np.ndarray:
        """A per-distinct-value array expanded to one entry per row."""
        return per_value[self.idx]

    def match(self, pattern: str) -> np.ndarray:
        rx = re.compile(pattern)
        return np.array([bool(rx.fullmatch(t)) for t in self.text], dtype=bool)


def _type_column(
    fields: Sequence[str],
    col: str,
    lines: _Lines,
    name: str,
    decimal: str,
    codes: list[str],
    must_be_numeric: bool,
    notes: list[str],
) -> pd.Series:
    """One column from its text fields to numbers, booleans, ids or tidy labels."""
    if col not in ID_COLUMNS:
        fast = _fast_numbers(fields, decimal)
        if fast is not None:
            out = _as_numbers(fast, fields)
            return _numeric_codes(out, col, lines, name, codes, notes) if codes else out
    c = _Column(fields)
    spaced = (c.text != c.raw) & ~c.missing
    if col in ID_COLUMNS:
        _note_spaces(c, spaced, col, lines, name, notes)
        return _id_column(c, col, lines, name)
    if codes:
        hit = np.isin(c.text, codes) & ~c.missing
        numeric_codes = [float(x) for x in codes if re.fullmatch(_NUMBER_RE, x)]
        if numeric_codes:
            numbers = c.match(_NUMBER_RE)
            as_float = np.full(len(c.text), np.nan)
            as_float[numbers] = [float(t) for t in c.text[numbers]]
            hit |= np.isin(as_float, numeric_codes)
        if hit.any():
            _note_codes(c.rows(c.text), c.rows(hit), col, lines, name, notes)
            c.missing = c.missing | hit
    present = ~c.missing
    number_text = c.text
    if decimal == ",":
        comma = c.match(_COMMA_NUMBER_RE) & present
        number_text = np.where(comma, [t.replace(",", ".") for t in c.text], c.text)
    rx = re.compile(_NUMBER_RE)
    is_num = np.array([bool(rx.fullmatch(t)) for t in number_text], dtype=bool) & present
    is_text = present & ~is_num
    if present.any() and not is_text.any():
        values = np.full(len(c.text), np.nan)
        values[is_num] = [float(t) for t in number_text[is_num]]
        row_text = c.rows(number_text)
        return _as_numbers(
            c.rows(values), [t if m else "" for t, m in zip(row_text, c.rows(is_num), strict=True)]
        )
    if present.any() and all(t in _BOOL for t in c.text[present]):
        out = pd.Series(c.rows(np.array([_BOOL.get(t, np.nan) for t in c.text], dtype=object)))
        return out.astype(bool) if not c.missing.any() else out
    is_score = bool(_SCORE_RE.match(col))
    counts = np.bincount(c.idx, minlength=len(c.text))
    if is_score or must_be_numeric or counts[is_num].sum() > counts[is_text].sum():
        _text_in_numbers(c.rows(c.text), c.rows(is_text), col, lines, name, decimal, is_score)
    _note_spaces(c, spaced, col, lines, name, notes)
    return _labels(c, counts, col, lines, name, notes)


def _as_numbers(values: np.ndarray, fields: Sequence[str]) -> pd.Series:
    """Floats as ``int64`` when every field is a whole number written without a point,
    as ``pandas.read_csv`` types them; else ``float64``."""
    if not np.isnan(values).any() and np.all(values == np.round(values)):
        joined = "".join(fields)
        if not any(ch in joined for ch in ".eE") and np.all(np.abs(values) < 2.0**53):
            return pd.Series(values.astype(np.int64))
    return pd.Series(values)


def _numeric_codes(
    values: pd.Series | np.ndarray,
    col: str,
    lines: _Lines,
    name: str,
    codes: list[str],
    notes: list[str],
) -> pd.Series:
    """A numeric column with the values equal to a numeric missing-value code as NaN."""
    values = pd.Series(values)
    numeric_codes = [float(x) for x in codes if re.fullmatch(_NUMBER_RE, x)]
    hit = values.isin(numeric_codes).to_numpy()
    if hit.any():
        text = np.array([f"{v:g}" for v in values.to_numpy(dtype=float)], dtype=object)
        _note_codes(text, hit, col, lines, name, notes)
        values = values.astype(float).mask(hit)
    return values


def _note_codes(
    text: np.ndarray, hit: np.ndarray, col: str, lines: _Lines, name: str, notes: list[str]
) -> None:
    found = sorted(set(text[hit]))
    notes.append(
        f"{name}: column {col!r}: {int(hit.sum())} value(s) {', '.join(map(repr, found))} "
        f"read as missing (missing-value codes; first {_lines_text(lines, text, hit)})"
    )


def _text_in_numbers(
    values: np.ndarray,
    text: np.ndarray,
    col: str,
    lines: _Lines,
    name: str,
    decimal: str,
    is_score: bool,
) -> None:
    shown = _lines_text(lines, values, text)
    bad = set(values[text])
    hints = []
    if decimal == "." and any(re.fullmatch(_COMMA_NUMBER_RE, b) for b in bad):
        hints.append("a decimal comma: give decimal=',' (--decimal ,) for such a file")
    codes = [c for c in COMMON_MISSING_CODES if c in bad]
    if codes:
        hints.append(
            f"{codes[0]!r} looks like a missing-value code: give missing_codes="
            f"[{codes[0]!r}] (--missing-codes={codes[0]}) to read it as missing"
        )
    kind = "a score" if is_score else "a number"
    n = int(text.sum())
    rows = "row" if n == 1 else "rows"
    hint = f" ({'; '.join(hints)})" if hints else ""
    raise PanelError(
        f"{name}: {n} {rows} with a non-numeric value in column {col!r}, which needs "
        f"{kind}: {shown}{hint}"
    )


def _text_series(values: np.ndarray) -> pd.Series:
    """Text with NaN for missing, in the dtype ``pandas.read_csv`` gives text (``str``
    from pandas 3, ``object`` before)."""
    return pd.Series(values.tolist())


def _note_spaces(
    c: _Column, spaced: np.ndarray, col: str, lines: _Lines, name: str, notes: list[str]
) -> None:
    if spaced.any():
        rows = c.rows(spaced)
        notes.append(
            f"{name}: column {col!r}: {int(rows.sum())} value(s) with spaces around them "
            f"read without the spaces (first {_lines_text(lines, c.rows(c.raw), rows)})"
        )


def _labels(
    c: _Column, counts: np.ndarray, col: str, lines: _Lines, name: str, notes: list[str]
) -> pd.Series:
    """Text labels: stripped, and spellings differing only in case merged (notes)."""
    label = np.where(c.missing, np.nan, c.text).astype(object)
    if col == "vu":
        totals: dict[str, int] = {}
        for t, n, m in zip(c.text, counts, c.missing, strict=True):
            if not m:
                totals[t] = totals.get(t, 0) + int(n)
        changes, vu_notes = vu_label_changes(totals, name)
        notes.extend(vu_notes)
        fixed = np.array(
            [
                changes.get(t, t) if not m else np.nan
                for t, m in zip(c.text, c.missing, strict=True)
            ],
            dtype=object,
        )
        return _text_series(c.rows(fixed))
    # distinct stripped spellings with their row counts, grouped by case-folded form
    totals: dict[str, int] = {}
    for t, n, m in zip(c.text, counts, c.missing, strict=True):
        if not m:
            totals[t] = totals.get(t, 0) + int(n)
    groups: dict[str, list[str]] = {}
    for t in totals:
        groups.setdefault(t.casefold(), []).append(t)
    merged: dict[str, str] = {}
    for spellings in groups.values():
        if len(spellings) < 2:
            continue
        best = max(spellings, key=lambda s: (totals[s], -spellings.index(s)))
        described = ", ".join(
            f"{s!r} ({totals[s]} row{'s' if totals[s] != 1 else ''})"
            for s in spellings
            if s != best
        )
        notes.append(
            f"{name}: column {col!r}: {described} read as {best!r} (labels that differ "
            "only in case)"
        )
        merged.update({s: best for s in spellings})
    if merged:
        label = np.array(
            [merged.get(v, v) if isinstance(v, str) else v for v in label], dtype=object
        )
    return _text_series(c.rows(label))


def _id_column(c: _Column, col: str, lines: _Lines, name: str) -> pd.Series:
    """Ids as text; two spellings of one id are an error; plain whole numbers → int64."""
    _, first_row = np.unique(c.idx, return_index=True)  # first row of each distinct value
    present = ~c.missing
    is_int = c.match(_INT_RE) & present
    for key in ("number", "case"):
        groups: dict[object, list[int]] = {}
        for k in np.flatnonzero(is_int if key == "number" else present):
            t = c.text[k]
            groups.setdefault(int(t) if key == "number" else t.casefold(), []).append(k)
        for members in groups.values():
            spellings = list(dict.fromkeys(c.text[k] for k in members))
            if len(spellings) < 2:
                continue
            where = "; ".join(
                f"{c.text[k]!r} (line {lines[first_row[k]]})"
                for k in sorted(members, key=lambda k: first_row[k])[:_SHOWN]
                if c.text[k] in spellings
            )
            why = (
                "the same number written differently (leading zeros?)"
                if key == "number"
                else "ids that differ only in case"
            )
            raise PanelError(f"{name}: column {col!r} holds {why}: {where}; write each id one way")
    if not c.missing.any() and is_int.all() and all(str(int(t)) == t for t in c.text):
        return pd.Series(c.rows(np.array([int(t) for t in c.text], dtype=np.int64)))
    return _text_series(c.rows(np.where(c.missing, np.nan, c.text).astype(object)))
