"""Distribution-level quality metrics: Frechet distance in a classifier's feature space, 2D
histogram KL, mode coverage (used per generation by the recursive-training study)."""
