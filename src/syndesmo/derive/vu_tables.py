"""Every VU of a panel, eligible for a model or not: exposure, MRI score, outcome.

The analysis frame of ``syndesmo.derive.frame`` keeps only the VUs a model uses. The
patient level and the spine profile need all of them: a patient's exposure sums
over every VU, and inflammation along the spine is shown where no VU is at risk.
``vu_exposures``, ``vu_scores`` and ``vu_outcomes`` give one row per VU with the
rules of ``syndesmo.derive.frame``; ``spine_profile`` sums them up per position along
the spine (C2/3 … L5/S1).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from syndesmo.derive import frame as derive
from syndesmo.panel.spine import VU_LABELS, VU_REGION


def vu_exposures(panel, exposure: str, threshold: float = 1) -> pd.DataFrame:
    """The exposure of every VU of the panel (all VUs, eligible or not), readers averaged.

    Columns ``patient``, ``vu``, ``x`` (NaN where a needed MRI week is missing); the
    rules are those of ``syndesmo.derive.frame`` (``exposure_values`` on the readers' mean).
    """

    arrays = derive.panel_arrays(panel)
    units = derive.combine_readers(arrays, "mean")
    x = derive.exposure_values(units["mri"], panel.mri_weeks, exposure, threshold)
    rows = panel.vu.iloc[units["row"]]
    return pd.DataFrame(
        {"patient": rows["patient"].to_numpy(), "vu": rows["vu"].to_numpy(), "x": x}
    )


def vu_scores(panel, week: int) -> pd.DataFrame:
    """ASspiMRI-a at ``week`` of every VU (mean over readers): patient, vu, x."""

    arrays = derive.panel_arrays(panel)
    units = derive.combine_readers(arrays, "mean")
    j = list(panel.mri_weeks).index(week)
    rows = panel.vu.iloc[units["row"]]
    return pd.DataFrame(
        {
            "patient": rows["patient"].to_numpy(),
            "vu": rows["vu"].to_numpy(),
            "x": np.asarray(units["mri"], dtype=float)[:, j],
        }
    )


def vu_outcomes(panel, outcome: str = "new_syndesmophyte", readers: str = "mean") -> pd.DataFrame:
    """At-risk status and event of every VU for ``outcome``, whatever its MRI.

    Columns ``patient``, ``vu``, ``region``, ``at_risk`` (eligible: scored by the
    mSASSS, at risk at baseline, both x-rays present) and ``event`` (0/1, NaN where
    not at risk). Uses ``derive.derive_arrays`` with the MRI set aside, because a
    VU's outcome does not depend on its MRI.
    """

    arrays = dict(derive.panel_arrays(panel))
    arrays["mri"] = np.zeros_like(arrays["mri"])
    d = derive.derive_arrays(arrays, outcome, f"w{panel.mri_weeks[0]}", 1, readers)
    rows = panel.vu.iloc[d["row"]]
    return pd.DataFrame(
        {
            "patient": rows["patient"].to_numpy(),
            "vu": rows["vu"].to_numpy(),
            "region": [derive.REGIONS[r] for r in d["region"]],
            "at_risk": d["eligible"],
            "event": d["y"],
        }
    )


def spine_profile(panel, threshold: float = 1, readers: str = "mean") -> pd.DataFrame:
    """Per VU along the spine (all 23, C2/3 … L5/S1): inflammation and new bone.

    Columns: ``vu``, ``region``, ``inflamed_w{week}`` (share of the VU's scored MRIs
    with ASspiMRI-a >= ``threshold``, readers averaged; NaN where not scored),
    ``n_mri_w{week}``, ``at_risk`` (VUs at risk of a new syndesmophyte), ``new`` and
    ``new_rate`` (NaN for VUs without x-ray scores: the thoracic spine).
    """

    out = pd.DataFrame({"vu": list(VU_LABELS), "region": [VU_REGION[v] for v in VU_LABELS]})
    for week in panel.mri_weeks:
        scores = vu_scores(panel, week)
        flag = (scores["x"] >= threshold).astype(float).where(scores["x"].notna())
        g = flag.groupby(scores["vu"])
        out[f"inflamed_w{week}"] = out["vu"].map(g.mean())
        out[f"n_mri_w{week}"] = out["vu"].map(g.count()).fillna(0).astype(int)
    outcomes = vu_outcomes(panel, "new_syndesmophyte", readers)
    risk = outcomes[outcomes["at_risk"]]
    at_risk = risk.groupby("vu")["event"].size()
    new = risk.groupby("vu")["event"].sum()
    out["at_risk"] = out["vu"].map(at_risk).fillna(0).astype(int)
    out["new"] = out["vu"].map(new).fillna(0).astype(int)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = out["new"] / out["at_risk"].where(out["at_risk"] > 0)
    out["new_rate"] = rate
    return out
