"""Ways of fitting a model; every engine returns a ``syndesmo.fitting.results.FitResult``."""
