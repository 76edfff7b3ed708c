"""Training the small feature classifier of the digits Frechet distance (Adam, lax.scan)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mi_jax.evaluation.frechet import frechet_distance, gaussian_stats
from mi_jax.nets import Classifier, make_classifier
from mi_jax.validation import check, check_int


def train_classifier(classifier: Classifier, x, y, key, steps: int = 2000, batch_size: int = 256,
                     learning_rate: float = 1e-3):
    """Params after `steps` Adam steps of softmax cross-entropy on (x, y) (one jitted scan)."""
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32)
    check(len(x) == len(y) and len(x) > 0, "x, y", (len(x), len(y)), "must be non-empty, same length")
    steps = check_int(steps, "steps", low=1)
    opt = optax.adam(learning_rate)
    k_init, k_data = jax.random.split(key)
    params = classifier.init(k_init)

    @jax.jit
    def run(params):
        def step(carry, i):
            p, s = carry
            idx = jax.random.randint(jax.random.fold_in(k_data, i), (batch_size,), 0, len(x))

            def loss_fn(p):
                logits = classifier.logits(p, x[idx])
                return optax.softmax_cross_entropy_with_integer_labels(logits, y[idx]).mean()

            loss, g = jax.value_and_grad(loss_fn)(p)
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), loss

        (p, _), losses = jax.lax.scan(step, (params, opt.init(params)), jnp.arange(steps))
        return p, losses

    return run(params)


LOW_CONFIDENCE = 0.5  # max softmax probability below this: the classifier cannot name the digit


def _batched(fn, params, x, batch: int = 4096) -> np.ndarray:
    f = jax.jit(fn)
    x = np.asarray(x, np.float32)
    return np.concatenate([np.asarray(f(params, jnp.asarray(x[i:i + batch])))
                           for i in range(0, len(x), batch)])


@dataclasses.dataclass
class FeatureJudge:
    """A trained classifier plus the real data's feature statistics: judges generated sets by
    Frechet distance and by the distribution of predicted labels (mode dropping)."""

    classifier: Classifier
    params: object
    real_mu: np.ndarray
    real_cov: np.ndarray
    num_classes: int
    test_accuracy: float

    def features(self, x) -> np.ndarray:
        return _batched(self.classifier.features, self.params, x)

    def evaluate(self, x) -> dict:
        x = np.asarray(x, np.float32)
        finite = np.all(np.isfinite(x.reshape(len(x), -1)), axis=1)
        x = x[finite]
        logits = _batched(self.classifier.logits, self.params, x)
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        hist = np.bincount(probs.argmax(1), minlength=self.num_classes) / max(len(x), 1)
        nz = hist[hist > 0]
        return {"frechet": frechet_distance(*gaussian_stats(self.features(x)), self.real_mu,
                                            self.real_cov),
                "label_hist": hist.tolist(),
                "label_entropy": float(-(nz * np.log(nz)).sum()),
                "classes_covered": int((hist >= 0.25 / self.num_classes).sum()),
                "confidence": float(probs.max(1).mean()) if len(x) else 0.0,
                # Ambiguous images, the digits' analogue of a between-modes sample.
                "low_confidence": float((probs.max(1) < LOW_CONFIDENCE).mean()) if len(x) else 0.0,
                "num_nonfinite": int((~finite).sum())}


def fit_judge(x_train, y_train, x_test, y_test, key, num_classes: int = 10, steps: int = 2000,
              reference=None) -> FeatureJudge:
    """Train the classifier on (x_train, y_train), report its accuracy on (x_test, y_test), and
    fit the reference feature Gaussian on `reference` (default: x_test, held-out real data)."""
    dim = int(np.prod(np.shape(x_train)[1:]))
    clf = make_classifier(dim, num_classes)
    params, _ = train_classifier(clf, x_train, y_train, key, steps)
    pred = _batched(clf.logits, params, x_test).argmax(1)
    acc = float((pred == np.asarray(y_test)).mean())
    ref = x_test if reference is None else reference
    mu, cov = gaussian_stats(_batched(clf.features, params, ref))
    return FeatureJudge(clf, params, mu, cov, num_classes, acc)


__all__ = ["train_classifier", "FeatureJudge", "fit_judge", "make_classifier"]
