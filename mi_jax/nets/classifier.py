"""A small MLP classifier (Flax NNX): flattened input -> width -> feature_width -> classes.

Its penultimate activations are the feature space of the digits Frechet distance (a stand-in for
Inception features, which would need a download and a far larger network).
"""

from __future__ import annotations

import jax
from flax import nnx


class MLPClassifier(nnx.Module):
    def __init__(self, dim: int, num_classes: int, width: int, feature_width: int,
                 rngs: nnx.Rngs):
        self.fc1 = nnx.Linear(dim, width, rngs=rngs)
        self.fc2 = nnx.Linear(width, feature_width, rngs=rngs)
        self.out = nnx.Linear(feature_width, num_classes, rngs=rngs)

    def features(self, x):
        h = jax.nn.gelu(self.fc1(x.reshape(x.shape[0], -1)))
        return jax.nn.gelu(self.fc2(h))

    def __call__(self, x):
        return self.out(self.features(x))
