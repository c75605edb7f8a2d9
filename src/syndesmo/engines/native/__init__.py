"""The native maximum-likelihood GLMM engine (Laplace and adaptive quadrature)."""
