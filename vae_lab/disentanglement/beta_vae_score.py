"""The BetaVAE score (Higgins et al. 2017, Sec. 3): accuracy of a linear classifier predicting which factor was
held fixed from the mean absolute code difference of pairs sharing that factor."""

import numpy as np
from sklearn.linear_model import LogisticRegression

from vae_lab.disentanglement.sampling import FactorSource, Representation


def _points(source: FactorSource, represent: Representation, num: int, batch_size: int,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`num` (feature (D,), fixed factor) pairs: each from `batch_size` pairs of images sharing one factor."""
    features, labels = [], []
    for _ in range(num):
        k = rng.integers(len(source.sizes))
        a, b = source.sample_factors(batch_size, rng), source.sample_factors(batch_size, rng)
        b[:, k] = a[:, k]
        features.append(np.abs(represent(source.observations(a)) - represent(source.observations(b))).mean(0))
        labels.append(k)
    return np.stack(features), np.array(labels)


def beta_vae_score(source: FactorSource, represent: Representation, rng: np.random.Generator,
                   batch_size: int = 64, num_train: int = 10000, num_eval: int = 5000) -> dict[str, float]:
    """{train_accuracy, eval_accuracy}; chance is 1 / num_factors (sizes as disentanglement_lib)."""
    x_train, y_train = _points(source, represent, num_train, batch_size, rng)
    x_eval, y_eval = _points(source, represent, num_eval, batch_size, rng)
    model = LogisticRegression(random_state=int(rng.integers(2**31)), max_iter=1000).fit(x_train, y_train)
    return {"train_accuracy": float(model.score(x_train, y_train)), "eval_accuracy": float(model.score(x_eval, y_eval))}
