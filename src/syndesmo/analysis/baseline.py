"""Table 1: baseline characteristics of the patients, by arm.

``baseline_table(panel)`` describes every column of the patient table (except the
patient id and the arm) and the ASspiMRI-a at the first MRI week summed over the
VUs each patient has scored: binary columns (0/1, or two text values) as n (%),
text columns as n (%) per value, numbers as median [IQR] (the statistic is named in
its own column). Percentages are of the patients with the value recorded; a
variable with missing values gets a ``missing, n`` row.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from syndesmo.derive.vu_tables import vu_scores
from syndesmo.vocabulary import reference_first

#: Words for the patient-table columns the shipped cohort and ASSERT-like exports hold
#: (data/synthetic/DATA_DICTIONARY.md gives the units); other columns keep their names.
LABELS = {
    "age": "Age, years",
    "sex": "Sex",
    "symptom_duration": "Symptom duration, years",
    "hla_b27": "HLA-B27 positive",
    "crp": "CRP, mg/L",
    "basdai": "BASDAI (0–10)",
    "msasss_baseline": "mSASSS at baseline (0–72)",
}
ALL = "all"
N_PERCENT = "n (%)"
MEDIAN_IQR = "median [IQR]"


def _is_binary01(values: pd.Series) -> bool:
    v = values.dropna()
    return (
        pd.api.types.is_numeric_dtype(v)
        and len(v) > 0
        and bool(v.isin([0, 1]).all())
        and not pd.api.types.is_bool_dtype(v)
    ) or pd.api.types.is_bool_dtype(v)


def _n_pct(hit: pd.Series, known: pd.Series) -> str:
    n, d = int(hit.sum()), int(known.sum())
    return f"{n} ({100 * n / d:.1f}%)" if d else "0 (—)"


def _median_iqr(values: pd.Series) -> str:
    v = pd.to_numeric(values, errors="coerce").dropna()
    if v.empty:
        return "—"
    q1, med, q3 = np.percentile(v.to_numpy(dtype=float), [25, 50, 75])
    return f"{med:.1f} [{q1:.1f}–{q3:.1f}]"


def _rows_for(name: str, label: str, data: pd.DataFrame, groups: dict[str, pd.Index]):
    col = data[name]
    rows = []
    if _is_binary01(col):
        cells = {g: _n_pct(col.loc[idx].eq(1), col.loc[idx].notna()) for g, idx in groups.items()}
        rows.append({"characteristic": label, "statistic": N_PERCENT, **cells})
    elif pd.api.types.is_numeric_dtype(col):
        cells = {g: _median_iqr(col.loc[idx]) for g, idx in groups.items()}
        rows.append({"characteristic": label, "statistic": MEDIAN_IQR, **cells})
    else:
        levels = sorted(col.dropna().astype(str).unique())
        for level in levels:
            cells = {
                g: _n_pct(
                    col.loc[idx].astype(str).eq(level) & col.loc[idx].notna(), col.loc[idx].notna()
                )
                for g, idx in groups.items()
            }
            rows.append({"characteristic": f"{label}: {level}", "statistic": N_PERCENT, **cells})
    if col.isna().any():
        cells = {g: str(int(col.loc[idx].isna().sum())) for g, idx in groups.items()}
        rows.append({"characteristic": f"{label}: missing", "statistic": "n", **cells})
    return rows


def baseline_data(panel) -> pd.DataFrame:
    """One row per patient: the patient table plus ``asspimri_a_w{first week}``, the
    ASspiMRI-a summed over the patient's VUs scored at the first MRI week (readers
    averaged; missing when no VU was scored)."""
    patients = panel.patients.copy()
    weeks = list(panel.mri_weeks)
    if weeks:
        scores = vu_scores(panel, weeks[0])
        total = scores.groupby("patient")["x"].sum(min_count=1)
        patients[f"asspimri_a_w{weeks[0]}"] = patients["patient"].map(total)
    return patients


def baseline_table(panel, reference_arm: object = None) -> pd.DataFrame:
    """Table 1: baseline characteristics by arm (and all patients).

    Parameters
    ----------
    panel : VUPanel
        The panel; every patient-table column is described.
    reference_arm : optional
        The arm shown first (default: the placebo-like arm, as the models use).

    Returns
    -------
    pandas.DataFrame
        Columns ``characteristic``, ``statistic`` (``n (%)``, ``median [IQR]`` or
        ``n``), one column per arm, then ``all``; the first row is the number of
        patients.
    """
    data = baseline_data(panel)
    arms = reference_first(data["arm"].dropna(), reference_arm)
    groups = {str(a): data.index[data["arm"].eq(a)] for a in arms}
    groups[ALL] = data.index
    rows = [
        {
            "characteristic": "Patients",
            "statistic": "n",
            **{g: str(len(idx)) for g, idx in groups.items()},
        }
    ]
    weeks = list(panel.mri_weeks)
    labels = dict(LABELS)
    if weeks:
        n_vus = int(panel.vu["vu"].nunique())
        when = "baseline" if weeks[0] == 0 else f"week {weeks[0]}"
        labels[f"asspimri_a_w{weeks[0]}"] = (
            f"ASspiMRI-a at {when}, sum over {n_vus} VUs (0–{6 * n_vus})"
        )
    for name in data.columns:
        if name in ("patient", "arm"):
            continue
        rows += _rows_for(name, labels.get(name, name), data, groups)
    return pd.DataFrame(rows)
