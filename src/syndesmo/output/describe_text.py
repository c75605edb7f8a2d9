"""The descriptive counts of ``syndesmo describe`` as Markdown: tables, ledger, document."""

from __future__ import annotations

import pandas as pd

from syndesmo.analysis.describe import CountTable
from syndesmo.output.report import markdown_table


def ledger_table(tables: dict):
    """The ledgers of the event tables as one ``CountTable``: exposures, step, reason,
    counts.

    Entries that are the same for several exposures (the usual case: the same VUs
    are not at risk whatever the exposure) are listed once with those exposures.
    """

    ledgers: dict = {}
    for name in ("events", "share_uninflamed"):
        for exposure, ledger in tables[name].ledgers.items():
            ledgers.setdefault(exposure, ledger)
    columns = ["step", "reason", "n_rows", "n_patients"]
    parts = []
    for exposure, ledger in ledgers.items():
        frame = ledger.to_frame()
        frame.insert(0, "exposure", exposure)
        parts.append(frame)
    if not parts or not sum(len(p) for p in parts):
        out = pd.DataFrame(columns=["exposures", *columns])
    else:
        long = pd.concat(parts, ignore_index=True)
        long["n_patients"] = long["n_patients"].astype("Int64")
        out = (
            long.groupby(columns, sort=False, dropna=False)["exposure"]
            .agg(", ".join)
            .rename("exposures")
            .reset_index()
        )[["exposures", *columns]]
    return CountTable("VUs left out of the event tables, and why", out)


#: Decimals shown for columns of the printed tables (CSV files keep full precision).
_DECIMALS = {"pct_": 1, "risk_ratio": 2, "odds_ratio": 2}


def display(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` with percentages and ratios as fixed-decimal text ("—" if undefined)."""
    out = df.copy()
    for col in out.columns:
        digits = next((d for key, d in _DECIMALS.items() if str(col).startswith(key)), None)
        if digits is not None:
            out[col] = [
                "—" if pd.isna(v) else f"{float(v):.{digits}f}" for v in out[col].to_numpy()
            ]
    return out


def table_markdown(counts) -> str:
    """One ``CountTable`` as Markdown under its title."""
    df = counts.table
    if not len(df):
        return f"## {counts.title}\n\n(none)\n"
    # numbers shown as fixed-decimal text stay right-aligned like the other numbers
    numeric = [pd.api.types.is_numeric_dtype(df[c]) for c in df.columns]
    body = markdown_table(display(df), numeric=numeric)
    return f"## {counts.title}\n\n{body}\n"


def render(tables: dict, header: str, order: tuple[str, ...]) -> str:
    """All tables as one Markdown document with a heading per table."""
    return f"# {header}\n\n" + "\n".join(table_markdown(tables[name]) for name in order)
