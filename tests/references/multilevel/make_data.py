"""Write the simulated reference data (vu_readers/data.csv) for make_references.R.

Run from the repository root: ``python tests/references/multilevel/make_data.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from multilevel_cases import REFERENCES, simulate_vu_readers

if __name__ == "__main__":
    out = REFERENCES / "vu_readers"
    out.mkdir(parents=True, exist_ok=True)
    simulate_vu_readers().to_csv(out / "data.csv", index=False)
