"""The likelihood-ratio table of ``sy.anova`` as Markdown and CSV files."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from syndesmo.numbers import fmt_p
from syndesmo.output.atomic import atomic_files
from syndesmo.output.report import markdown_table, write_table


def anova_markdown(table: pd.DataFrame, digits: int = 3) -> str:
    """``sy.anova``'s table as Markdown, p-values as the package prints them.

    Parameters
    ----------
    table : pandas.DataFrame
        The result of ``sy.anova``.
    digits : int
        Decimals of the other numbers.

    Returns
    -------
    str
        The table, then one line per note (the boundary-corrected p).
    """
    shown = table.reset_index()
    for col in ("Pr(>Chisq)", "Pr(>Chisq) boundary"):
        shown[col] = [fmt_p(p) if pd.notna(p) else "" for p in shown[col]]
    notes = [n for n in shown.pop("note") if n]
    numeric = [
        c not in ("model", "formula", "engine")
        and (pd.api.types.is_numeric_dtype(shown[c]) or c.startswith("Pr("))
        for c in shown.columns
    ]
    text = markdown_table(shown, digits, numeric=numeric)
    if notes:
        text += "\n\n" + "\n".join(f"Note: {n}." for n in dict.fromkeys(notes))
    return text


def write_anova(
    table: pd.DataFrame, directory: str | os.PathLike, name: str = "anova"
) -> list[Path]:
    """Write ``name.csv`` (full precision) and ``name.md`` atomically into ``directory``.

    Parameters
    ----------
    table : pandas.DataFrame
        The result of ``sy.anova``.
    directory : path
        Where to write; files there that syndesmo did not write are never replaced.
    name : str
        The file stem.

    Returns
    -------
    list of Path
        The files written.
    """
    names = [f"{name}.csv", f"{name}.md"]
    with atomic_files(directory, names) as tmp:
        write_table(table.reset_index(), tmp, name)
        (tmp / f"{name}.md").write_text(anova_markdown(table) + "\n", encoding="utf-8")
    return [Path(directory) / n for n in names]
