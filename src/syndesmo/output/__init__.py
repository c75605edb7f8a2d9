"""Output: text, files (atomic), report.md and figures. Reads results, fits nothing."""
