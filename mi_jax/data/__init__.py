"""Data: Gaussian mixtures (with exact diffusion quantities) and their ground-truth support."""
