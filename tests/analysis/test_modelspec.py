"""Analysis specs (TOML): the shipped reproduction set loads; bad specs fail clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from syndesmo.analysis.specs import (
    KEYS,
    default_spec_dir,
    load_spec,
    load_specs,
    validate,
)
from syndesmo.errors import SpecError
from syndesmo.vocabulary import available_exposures

ASSERT_DIR = Path(__file__).resolve().parents[2] / "models" / "assert"


def write(tmp_path: Path, text: str, name: str = "spec.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_reproduction_specs_load_and_cover_both_levels():
    specs = load_specs(ASSERT_DIR)
    assert default_spec_dir() == ASSERT_DIR
    levels = {(s.level, s.outcome) for s in specs}
    assert ("vu", "new_syndesmophyte") in levels
    assert ("vu", "growth") in levels
    assert any(level == "patient" for level, _ in levels)
    new = next(s for s in specs if s.outcome == "new_syndesmophyte")
    assert new.name == "new_syndesmophyte"
    assert new.engine == "native" and new.beside == ("gee",)
    assert "arm" in new.covariates and "arm" not in new.confounders
    assert set(new.exposures) <= set(available_exposures([0, 24, 102]))


def test_defaults_of_a_minimal_spec(tmp_path):
    spec = load_spec(write(tmp_path, 'outcome = "growth"\nexposure = "w24"\n', "mine.toml"))
    assert spec.name == "mine"
    assert spec.level == "vu" and spec.engine == "native" and spec.nagq == 1
    assert spec.exposures == ("w24",) and spec.covariates == ("arm",)
    assert spec.threshold == 1 and spec.readers == "mean"


def test_unknown_key_names_the_key_and_the_allowed_ones(tmp_path):
    path = write(tmp_path, 'outcome = "growth"\nexposure = "w0"\nexposures = ["w24"]\n')
    with pytest.raises(SpecError) as err:
        load_spec(path)
    msg = str(err.value)
    assert str(path) in msg and "'exposures'" in msg
    for key in KEYS:
        assert key in msg


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ('exposure = "w0_then_w24"', ["exposure", "'w0_then_w24'", "w0_and_w24"]),
        ('engine = "glmer"', ["engine", "'glmer'", "native", "lme4", "gee"]),
        ('readers = "both"', ["readers", "'both'", "mean", "agree"]),
        ("threshold = 7", ["threshold", "7", "(0, 6]"]),
        ("nagq = 0", ["nagq", "0"]),
        ('level = "corner"', ["level", "'corner'", "vu", "patient"]),
        ('covariates = ["mri"]', ["covariates", "reserved"]),
        # a covariate becomes formula text: one column (or a transform of one) per item
        ('covariates = "arm, age"', ["covariates", "'arm, age'", "separate list items"]),
    ],
)
def test_bad_values_name_the_key_and_value(tmp_path, line, words):
    base = {"outcome": 'outcome = "new_syndesmophyte"', "exposure": 'exposure = ["w0"]'}
    key = line.split("=")[0].strip()
    base[key] = line
    path = write(tmp_path, "\n".join(base.values()) + "\n")
    with pytest.raises(SpecError) as err:
        load_spec(path)
    for w in words:
        assert w in str(err.value)


def test_level_specific_rules():
    with pytest.raises(SpecError, match="outcome"):
        validate({"level": "patient", "outcome": "growth", "exposure": "w0"})
    with pytest.raises(SpecError, match="engine"):
        validate({"level": "patient", "outcome": "any_new", "exposure": "w0", "engine": "native"})
    with pytest.raises(SpecError, match="summary"):
        validate({"outcome": "growth", "exposure": "w0", "summary": "any"})
    with pytest.raises(SpecError, match="single weeks"):
        validate({"level": "patient", "outcome": "any_new", "exposure": "any", "summary": "total"})
    with pytest.raises(SpecError, match="nagq"):
        validate({"outcome": "growth", "exposure": "w0", "engine": "gee", "nagq": 5})
    with pytest.raises(SpecError, match="required"):
        validate({"exposure": "w0"})


def test_with_options_revalidates():
    spec = validate({"outcome": "growth", "exposure": ["w0", "w24"]}, source="s.toml")
    assert spec.with_options(engine="lme4", nagq=10).nagq == 10
    assert spec.with_options(exposures=["w24"]).exposures == ("w24",)
    assert spec.with_options(engine=None) == spec
    with pytest.raises(SpecError, match="engine"):
        spec.with_options(engine="stan")


def test_invalid_toml_and_missing_file(tmp_path):
    with pytest.raises(SpecError, match="not valid TOML"):
        load_spec(write(tmp_path, "outcome = \n"))
    with pytest.raises(SpecError, match="no such spec file"):
        load_spec(tmp_path / "absent.toml")
    with pytest.raises(SpecError, match="no such spec directory"):
        load_specs(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpecError, match=r"no \*\.toml"):
        load_specs(tmp_path / "empty")
