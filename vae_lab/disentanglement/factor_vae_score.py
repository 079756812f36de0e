"""The FactorVAE score (Kim & Mnih 2018, Sec. 4): a majority-vote classifier from the code dimension of least
normalised variance, over batches with one factor fixed, to that factor."""

import numpy as np

from vae_lab.disentanglement.sampling import FactorSource, Representation, sample_codes

PRUNE_STD = 0.05  # dimensions whose codes vary less than this (std over the data) are collapsed: never voted for


def votes(source: FactorSource, represent: Representation, scale: np.ndarray, active: np.ndarray, num: int,
          batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """(D, F) counts: how often dimension d had the least normalised variance when factor f was fixed."""
    counts = np.zeros((len(scale), len(source.sizes)), np.int64)
    active_dims = np.flatnonzero(active)
    for _ in range(num):
        k = rng.integers(len(source.sizes))
        factors = source.sample_factors(batch_size, rng)
        factors[:, k] = factors[0, k]
        codes = represent(source.observations(factors)) / scale  # codes in units of their global std
        local = np.var(codes, axis=0, ddof=1)
        counts[active_dims[np.argmin(local[active])], k] += 1
    return counts


def factor_vae_score(source: FactorSource, represent: Representation, rng: np.random.Generator,
                     batch_size: int = 64, num_train: int = 10000, num_eval: int = 5000,
                     num_variance_estimate: int = 10000) -> dict[str, float]:
    """{train_accuracy, eval_accuracy, num_active_dims}; chance is 1 / num_factors (sizes as disentanglement_lib)."""
    _, codes = sample_codes(source, represent, num_variance_estimate, rng)
    std = np.std(codes, axis=0, ddof=1)
    active = std >= PRUNE_STD
    if not active.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0}
    train = votes(source, represent, std, active, num_train, batch_size, rng)
    classifier = np.argmax(train, axis=1)  # each dimension votes for its most frequent factor
    rows = np.arange(len(classifier))
    evals = votes(source, represent, std, active, num_eval, batch_size, rng)
    return {"train_accuracy": float(train[rows, classifier].sum() / train.sum()),
            "eval_accuracy": float(evals[rows, classifier].sum() / evals.sum()),
            "num_active_dims": int(active.sum())}
