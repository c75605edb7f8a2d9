"""Check that a change leaves power results as they were: save the replicates of a few
power runs with one version of the code, then compare with another.

Not a test. Run from the repository root, once per version (e.g. a ``git worktree`` of
the commit before the change, then this one)::

    PYTHONPATH=<old tree>/src python benchmarks/power_identity.py save old.pkl
    PYTHONPATH=src python benchmarks/power_identity.py save new.pkl
    python benchmarks/power_identity.py compare old.pkl new.pkl

Runs: the default ``CohortSpec`` (1000 studies, seed 1); 60 patients adjusted for arm,
age and CRP with the VU, patient and crude analyses; two readers with missing MRIs and
x-rays over all VUs; growth with exposure ``any``. The comparison prints whether the
power and every rejection are identical and the largest difference in the estimates,
SEs and SDs of fits not flagged for separation (and, apart, of those that are: their
estimates are ill-determined, so their last digits move with any change of arithmetic).
"""

from __future__ import annotations

import pickle
import sys

import numpy as np


def runs() -> dict:
    import syndesmo as sy
    from syndesmo.panel.spine import VU_LABELS

    return {
        "default": {"spec": sy.CohortSpec(), "n_sims": 1000, "seed": 1},
        "adjusted": {
            "spec": sy.CohortSpec(n_patients=60),
            "n_sims": 150,
            "seed": 3,
            "adjust": ("arm", "age", "crp"),
            "analysis": ("vu", "patient", "logit"),
        },
        "readers": {
            "spec": sy.CohortSpec(
                n_patients=40,
                n_readers=2,
                mri_missing_rate=0.1,
                xray_missing_rate=0.1,
                vus=tuple(VU_LABELS),
            ),
            "n_sims": 100,
            "seed": 4,
            "analysis": ("vu", "logit"),
        },
        "growth": {
            "spec": sy.CohortSpec(n_patients=80),
            "n_sims": 100,
            "seed": 5,
            "outcome": "growth",
            "exposure": "any",
        },
    }


def save(path: str) -> None:
    import syndesmo as sy

    out = {}
    for name, kw in runs().items():
        res = sy.power(progress=False, **kw)
        out[name] = (res.table, res.replicates)
        print(name, res.power)
    with open(path, "wb") as fh:
        pickle.dump(out, fh)


def compare(old_path: str, new_path: str) -> bool:
    with open(old_path, "rb") as fh:
        old = pickle.load(fh)
    with open(new_path, "rb") as fh:
        new = pickle.load(fh)
    same = True
    for name in old:
        (t_a, r_a), (t_b, r_b) = old[name], new[name]
        power = all(
            np.array_equal(t_a[c].to_numpy(), t_b[c].to_numpy())
            for c in ("power", "power_lower", "power_upper")
        )
        reject = r_a["reject"].equals(r_b["reject"])
        ok = ~r_a["separation"].to_numpy()
        diffs = []
        for col in ("log_or", "se", "sigma"):
            d = np.abs(r_a[col].to_numpy() - r_b[col].to_numpy())[ok]
            diffs.append(f"{col} {np.nanmax(d) if d.size else 0.0:.1e}")
        sep = ""
        if (~ok).any():
            d = np.abs(r_a["log_or"].to_numpy() - r_b["log_or"].to_numpy())[~ok]
            sep = f"; {int((~ok).sum())} fits flagged for separation: log_or {np.nanmax(d):.1e}"
        print(
            f"{name}: power identical {power}; rejections identical {reject}; "
            f"max |difference| {', '.join(diffs)}{sep}"
        )
        same &= power and reject
    return same


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "save":
        save(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        sys.exit(0 if compare(sys.argv[2], sys.argv[3]) else 1)
    else:
        sys.exit(__doc__)
