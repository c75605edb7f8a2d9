"""A long trial export and its equivalent wide files, for tests (shared by the panel
and CLI tests): MRI at weeks 0/12/52 read once, x-rays at 0/104 read by two readers,
the trial's own column names and level spellings."""

from __future__ import annotations

import numpy as np
import pandas as pd

from syndesmo.panel.spine import MSASSS_VUS

MRI_WEEKS = (0, 12, 52)
XRAY_WEEKS = (0, 104)
READERS = ("R1", "R2")
#: The trial's spelling of each level (odd, as exports write them).
SPELLING = {
    "C2/3": "C2-C3",
    "C3/4": "c3/4",
    "C4/5": "C4/C5 ",
    "C5/6": "C5-6",
    "C6/7": " c6 - c7",
    "C7/T1": "C7-T1",
    "T6/7": "T6-T7",
    "T12/L1": "t12/l1",
    "L1/2": "L1-L2",
    "L2/3": "L2/L3",
    "L3/4": "l3-4",
    "L4/5": "L4/5",
    "L5/S1": "L5-S1",
}


def make_cohort(n_patients: int = 40, seed: int = 3):
    """Scores of a small cohort: MRI at weeks 0/12/52 read once, x-rays at 0/104 read by
    two readers who disagree now and then; inflamed VUs form new bone more often."""
    rng = np.random.default_rng(seed)
    patients = pd.DataFrame(
        {
            "subject": [f"S{i:03d}" for i in range(n_patients)],
            "treatment": rng.choice(["Placebo", "IFX"], n_patients),
            "age": rng.integers(20, 60, n_patients).astype(float),
        }
    )
    mri, xray = [], []
    for p in patients["subject"]:
        frailty = rng.normal(0, 1)
        for vu in SPELLING:
            scores = np.minimum(rng.poisson(0.6 + 0.3 * frailty**2, 3), 6).astype(float)
            if rng.random() < 0.03:
                scores[1] = np.nan  # an MRI not taken at week 12
            for w, s in zip(MRI_WEEKS, scores, strict=True):
                mri.append((p, vu, w, s))
            if vu not in MSASSS_VUS:
                continue
            base = rng.choice([0, 1, 2], 2, p=[0.7, 0.2, 0.1])
            risk = 0.08 + 0.25 * (scores[0] >= 1)
            grow = base + (rng.random(2) < risk) * 2
            for r in READERS:
                b = np.clip(base + (rng.random(2) < 0.05), 0, 3)
                f = np.clip(np.maximum(grow, b) + (rng.random(2) < 0.05), 0, 3)
                xray.append((p, vu, 0, r, *b))
                xray.append((p, vu, 104, r, *f))
    mri = pd.DataFrame(mri, columns=["subject", "vu", "week", "asspimri"])
    xray = pd.DataFrame(xray, columns=["subject", "vu", "week", "reader", "up", "lo"])
    return patients, mri, xray


def long_export(mri: pd.DataFrame, xray: pd.DataFrame) -> pd.DataFrame:
    """The trial's long table: MRI rows without a reader, x-ray rows per reader, the
    trial's column names and level spellings, rows shuffled."""
    m = mri.rename(columns={"week": "visit_wk"}).assign(reader_id=np.nan, up=np.nan, lo=np.nan)
    x = xray.rename(columns={"week": "visit_wk", "reader": "reader_id"}).assign(asspimri=np.nan)
    long = pd.concat([m, x], ignore_index=True)
    long["level"] = long.pop("vu").map(SPELLING)
    long = long.rename(columns={"subject": "subj", "up": "msasss_up", "lo": "msasss_lo"})
    return long.sample(frac=1.0, random_state=1).reset_index(drop=True)


def wide_tables(patients, mri: pd.DataFrame, xray: pd.DataFrame):
    """The equivalent wide files: one row per patient × VU × reader, the MRI on the
    first reader's rows only (as a wide export of a single MRI reading holds it)."""
    m = mri.pivot(index=["subject", "vu"], columns="week", values="asspimri")
    m.columns = [f"mri_w{w}" for w in m.columns]
    parts = []
    for corner, col in (("upper", "up"), ("lower", "lo")):
        x = xray.pivot(index=["subject", "vu", "reader"], columns="week", values=col)
        x.columns = [f"msasss_{corner}_w{w}" for w in x.columns]
        parts.append(x)
    x = pd.concat(parts, axis=1).reset_index()
    units = m.reset_index()[["subject", "vu"]]
    rows = units.merge(pd.DataFrame({"reader": READERS}), how="cross")
    wide = rows.merge(x, on=["subject", "vu", "reader"], how="left")
    wide = wide.merge(m.reset_index(), on=["subject", "vu"], how="left")
    second = wide["reader"].ne(READERS[0]).to_numpy()
    for w in MRI_WEEKS:
        wide.loc[second, f"mri_w{w}"] = np.nan
    wide = wide.rename(columns={"subject": "patient"})
    pat = patients.rename(columns={"subject": "patient", "treatment": "arm"})
    return wide, pat
