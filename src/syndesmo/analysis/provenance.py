"""Where a panel's data came from, and the truth when it is synthetic.

``data_provenance(panel)`` tells a report whether it is looking at the shipped
synthetic cohort (its two input files are byte for byte the shipped ``vu.csv`` and
``patients.csv``), at a cohort written by ``syndesmo simulate`` (a ``truth.json``
beside the VU file), at a panel simulated in memory (``panel.truth``), or at data
syndesmo knows nothing about. For synthetic data it carries the data-generating
model's true odds ratios (``syndesmo.simulate.cohort.CohortSpec``).

``PUBLISHED_2012`` holds what the abstract of the analysis the reproduction imitates
reports (van der Heijde et al., Ann Rheum Dis 2012;71:369–373): significant odds
ratios from 1.51 to 2.26 for a new syndesmophyte in VUs with MRI activity, after
adjustment for within-patient correlation, treatment and confounders; no
association for growth; only a trend at the patient level. The abstract gives the
range, not one OR per exposure.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from syndesmo.resources import shipped_cohort_candidates
from syndesmo.simulate.cohort import CohortSpec

#: The reference analysis, as cited everywhere in the report.
CITATION_2012 = "van der Heijde et al., Ann Rheum Dis 2012;71:369–373"
#: Its published results per VU-level outcome, from the abstract (CITATION_2012):
#: (lowest OR, highest OR, words). ``None`` ORs: the abstract gives no number.
PUBLISHED_2012: dict[str, tuple[float | None, float | None, str]] = {
    "new_syndesmophyte": (
        1.51,
        2.26,
        "significant ORs 1.51–2.26 (range over exposures, adjusted for within-patient "
        "correlation, treatment and confounders)",
    ),
    "growth": (None, None, "not associated (no OR given)"),
}
#: The file ``syndesmo simulate`` writes beside the cohort (its CLI's ``TRUTH_FILE``).
TRUTH_FILE = "truth.json"
#: The spec file of the shipped cohort, beside its CSV files.
SHIPPED_SPEC = "assert_like.toml"

SHIPPED = "shipped synthetic cohort"
SIMULATED = "simulated cohort"
OBSERVED = "data"


@dataclass(frozen=True)
class Provenance:
    """Where a panel came from.

    Attributes
    ----------
    kind : str
        ``SHIPPED``, ``SIMULATED`` or ``OBSERVED`` (data syndesmo did not make).
    evidence : str
        How this was recognised (e.g. which files matched), for the report.
    truth : dict
        For synthetic data: the true conditional ORs, ``exposure`` (the derived
        exposure that carries them), ``threshold``, ``seed``, ``sd_patient`` (SD of the
        patient syndesmophyte propensity, logit scale) and ``spec_file`` when known;
        empty otherwise.
    """

    kind: str
    evidence: str = ""
    truth: dict[str, Any] = field(default_factory=dict)

    @property
    def synthetic(self) -> bool:
        """Whether the data were made by syndesmo's simulator (truth known)."""
        return self.kind != OBSERVED


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _truth_from_spec(spec: CohortSpec, spec_file: str = "") -> dict[str, Any]:
    return {
        "exposure": spec.exposure,
        "threshold": float(spec.threshold),
        "or_new": float(spec.odds_ratio_new),
        "or_growth": float(spec.odds_ratio_growth),
        "or_arm_new": float(spec.odds_ratio_arm_new),
        "or_arm_growth": float(spec.odds_ratio_arm_growth),
        "sd_patient": float(spec.sd_syndesmophyte),
        "seed": spec.seed,
        "spec_file": spec_file,
    }


def _truth_from_dict(truth: dict[str, Any], spec_file: str = "") -> dict[str, Any]:
    spec = truth.get("spec")
    if isinstance(spec, dict):
        out = _truth_from_spec(CohortSpec.from_dict(spec, source=spec_file or "truth"), spec_file)
    else:
        out = {k: truth[k] for k in ("exposure", "threshold", "or_new", "or_growth") if k in truth}
        out["spec_file"] = spec_file
    if truth.get("seed") is not None:
        out["seed"] = truth["seed"]
    return out


def _same_patients(panel, shipped: Path) -> bool:
    """Whether the panel's patient table holds the shipped ``patients.csv`` values."""
    import pandas as pd

    theirs = pd.read_csv(shipped, dtype=str, keep_default_na=False)
    ours = panel.patients
    if list(ours.columns) != list(theirs.columns) or len(ours) != len(theirs):
        return False
    for col in ours.columns:
        a = ours[col].reset_index(drop=True)
        b = theirs[col].replace("", None)
        if pd.api.types.is_numeric_dtype(a):
            b = pd.to_numeric(b)
            if not ((a == b) | (a.isna() & b.isna())).all():
                return False
        elif not ((a.astype(str) == b.astype(str)) | (a.isna() & b.isna())).all():
            return False
    return True


def _shipped_match(panel, vu: Path, patients: Path | None) -> Path | None:
    """The shipped cohort directory whose files equal the panel's input files.

    The VU file is compared byte for byte; so is the patient file when its path is
    known, else the panel's patient table is compared value by value with it.
    """
    for directory in shipped_cohort_candidates():
        ship_vu, ship_pat = directory / "vu.csv", directory / "patients.csv"
        if not (ship_vu.is_file() and ship_pat.is_file()):
            continue
        if vu.stat().st_size != ship_vu.stat().st_size or _sha256(vu) != _sha256(ship_vu):
            continue
        if patients is not None and patients != vu:
            if _sha256(patients) == _sha256(ship_pat):
                return directory
        elif _same_patients(panel, ship_pat):
            return directory
    return None


def data_provenance(panel, patients_path: str | Path | None = None) -> Provenance:
    """Recognise the shipped synthetic cohort, a simulated cohort, or other data.

    Parameters
    ----------
    panel : VUPanel
        The panel; its ``source`` and ``patients_source`` name the files it was read
        from (``load_panel``), its ``truth`` is set when it was simulated in memory.

    Returns
    -------
    Provenance
        ``SHIPPED`` when both input files are byte for byte the shipped
        ``data/synthetic`` files (a copy elsewhere counts); ``SIMULATED`` when the panel
        carries a truth or a ``truth.json`` written by ``syndesmo simulate`` sits beside
        the VU file; else ``OBSERVED``.
    patients_path : str or path, optional
        The patient file, when known (the panel does not keep its path); without it
        the panel's patient table is compared with the shipped one value by value.
    """
    vu = Path(str(panel.source)) if panel.source else None
    patients = Path(patients_path) if patients_path else None
    if vu is not None and vu.is_file() and (patients is None or patients.is_file()):
        shipped = _shipped_match(panel, vu, patients)
        if shipped is not None:
            spec_path = shipped / SHIPPED_SPEC
            truth = (
                _truth_from_spec(CohortSpec.from_toml(spec_path), str(spec_path))
                if spec_path.is_file()
                else {}
            )
            return Provenance(
                SHIPPED,
                f"the input files hold the shipped files of {shipped} unchanged",
                truth,
            )
    if getattr(panel, "truth", None):
        return Provenance(SIMULATED, "simulated in memory", _truth_from_dict(panel.truth))
    if vu is not None and (vu.parent / TRUTH_FILE).is_file():
        path = vu.parent / TRUTH_FILE
        try:
            truth = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            truth = None
        if isinstance(truth, dict) and truth:
            return Provenance(
                SIMULATED,
                f"{path} (written by `syndesmo simulate`) sits beside the VU file",
                _truth_from_dict(truth, str(path)),
            )
    return Provenance(OBSERVED)
