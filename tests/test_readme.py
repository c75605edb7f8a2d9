"""The README's tour is code a user pastes: it must run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.r
def test_readme_tour_runs(r_lme4, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python tour"
    monkeypatch.chdir(README.parent)
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    fit, fit_r = namespace["fit"], namespace["fit_r"]
    # The tour's two engines fit the same model; they must agree as the tests of the
    # engines require (1e-4 on the estimates at nAGQ=15).
    assert (fit.params - fit_r.params).abs().max() < 1e-4
    assert namespace["res"].power > 0.5
