"""Outcomes and exposures derived from the scores of a panel (``frame``, ``vu_tables``)."""
