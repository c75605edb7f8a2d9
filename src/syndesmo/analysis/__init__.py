"""Analyses of a panel: the ladder, specs, the patient level, the reproduction."""
