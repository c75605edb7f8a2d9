"""Small valid VU and patient tables for tests (shared by the panel and CLI tests)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from syndesmo.panel.spine import MSASSS_VUS, VU_LABELS

MRI_WEEKS = (0, 24, 102)
XRAY_WEEKS = (0, 102)


def make_tables(
    patients=("P1", "P2", "P3"),
    vus=VU_LABELS,
    readers=None,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A valid VU table and patient table with random scores (x-rays NaN on thoracic VUs)."""
    rng = np.random.default_rng(seed)
    keys = pd.MultiIndex.from_product(
        [list(patients), list(vus)] + ([list(readers)] if readers else []),
        names=["patient", "vu"] + (["reader"] if readers else []),
    ).to_frame(index=False)
    n = len(keys)
    for w in MRI_WEEKS:
        keys[f"mri_w{w}"] = rng.integers(0, 7, n).astype(float)
    covered = keys["vu"].isin(MSASSS_VUS).to_numpy()
    for w in XRAY_WEEKS:
        for corner in ("upper", "lower"):
            keys[f"msasss_{corner}_w{w}"] = np.where(covered, rng.integers(0, 4, n), np.nan)
    pat = pd.DataFrame(
        {
            "patient": list(patients),
            "arm": ["placebo", "infliximab", "infliximab", "placebo"][: len(patients)]
            + ["placebo"] * max(0, len(patients) - 4),
            "age": rng.normal(40, 10, len(patients)),
            "sex": ["m", "f"] * (len(patients) // 2) + ["m"] * (len(patients) % 2),
            "hla_b27": rng.integers(0, 2, len(patients)),
        }
    )
    return keys, pat
