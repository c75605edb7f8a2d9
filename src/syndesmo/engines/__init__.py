"""Ways of fitting a model; every engine returns a ``syndesmo.results.FitResult``."""
