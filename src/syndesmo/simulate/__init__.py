"""The data-generating model: cohorts with a known truth (``cohort``) and checks (``check``)."""
