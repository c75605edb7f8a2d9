"""Validated input: the VU table and the patient table (``tables``), spine labels (``spine``)."""
