"""The ledger: every row left out of an analysis, with the step and the reason."""

from __future__ import annotations

from typing import Any

import pandas as pd

LEDGER_COLUMNS = ["step", "reason", "n_rows", "n_patients"]


class Ledger:
    """Counts of rows left out of an analysis, with the step and the reason.

    Nothing is dropped silently: every function that removes rows adds an entry
    here, and reports print it. ``notes`` hold what was done to rows that stayed
    (e.g. an MRI read once carried to each x-ray reader's row); they count no row.
    """

    def __init__(
        self, entries: list[dict[str, Any]] | None = None, notes: list[str] | None = None
    ) -> None:
        self._entries: list[dict[str, Any]] = list(entries or [])
        self._notes: list[str] = list(notes or [])

    def note(self, text: str) -> None:
        """Record what was done to rows that stayed in (once per distinct text)."""
        if text not in self._notes:
            self._notes.append(text)

    @property
    def notes(self) -> list[str]:
        """What was done to rows that stayed in (a copy)."""
        return list(self._notes)

    def add(self, step: str, reason: str, n_rows: int, n_patients: int | None = None) -> None:
        """Record that ``n_rows`` rows (from ``n_patients`` patients) left at ``step``."""
        if n_rows <= 0:
            return
        self._entries.append(
            {
                "step": step,
                "reason": reason,
                "n_rows": int(n_rows),
                "n_patients": None if n_patients is None else int(n_patients),
            }
        )

    def extend(self, other: Ledger) -> Ledger:
        """Append all entries of ``other`` and return ``self``."""
        self._entries.extend(other._entries)
        for text in other._notes:
            self.note(text)
        return self

    def copy(self) -> Ledger:
        """An independent copy."""
        return Ledger([dict(e) for e in self._entries], self._notes)

    def __add__(self, other: Ledger) -> Ledger:
        return self.copy().extend(other)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Ledger):
            return NotImplemented
        return self._entries == other._entries

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self):
        return iter(self._entries)

    @property
    def n_excluded(self) -> int:
        """Total number of rows left out across all entries."""
        return sum(e["n_rows"] for e in self._entries)

    def to_frame(self) -> pd.DataFrame:
        """The ledger as a table with columns step, reason, n_rows, n_patients."""
        return pd.DataFrame(self._entries, columns=LEDGER_COLUMNS)

    def __repr__(self) -> str:
        notes = "".join(f"\nnote: {n}" for n in self._notes)
        if not self._entries:
            return f"Ledger(nothing excluded{notes})"
        return "Ledger(\n" + self.to_frame().to_string(index=False) + notes + "\n)"
