"""From a formula to a result: design matrices, the engine registry, results, diagnostics."""
