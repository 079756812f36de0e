"""The mutual information gap (Chen et al. 2018, Eq. 5): per factor, the gap between the two code dimensions most
informative about it, normalised by its entropy, averaged over factors."""

import numpy as np
from sklearn.metrics import mutual_info_score

from vae_lab.disentanglement.sampling import FactorSource, Representation, sample_codes

NUM_BINS = 20  # histogram bins per code dimension, as disentanglement_lib


def discretize(codes: np.ndarray, num_bins: int = NUM_BINS) -> np.ndarray:
    """Each column of (N, D) codes to bin indices of an equal-width histogram over its own range."""
    out = np.zeros(codes.shape, np.int64)
    for d in range(codes.shape[1]):
        edges = np.histogram(codes[:, d], num_bins)[1]
        out[:, d] = np.digitize(codes[:, d], edges[:-1])
    return out


def mutual_information_matrix(codes: np.ndarray, factors: np.ndarray, num_bins: int = NUM_BINS) -> np.ndarray:
    """(D, F) I(z_d; v_f) in nats between discretised codes (N, D) and discrete factors (N, F)."""
    binned = discretize(codes, num_bins)
    return np.array([[mutual_info_score(factors[:, f], binned[:, d]) for f in range(factors.shape[1])]
                     for d in range(codes.shape[1])])


def factor_entropies(factors: np.ndarray) -> np.ndarray:
    """(F,) H(v_f) in nats of each discrete factor's empirical distribution."""
    return np.array([mutual_info_score(factors[:, f], factors[:, f]) for f in range(factors.shape[1])])


def mig_from(codes: np.ndarray, factors: np.ndarray, num_bins: int = NUM_BINS) -> dict:
    """MIG of given codes (N, D) and factors (N, F); also the MI matrix normalised by H(v_f)."""
    mi = mutual_information_matrix(codes, factors, num_bins)
    entropy = factor_entropies(factors)
    top = np.sort(mi, axis=0)[::-1]  # (D, F), largest first
    second = top[1] if len(top) > 1 else np.zeros_like(top[0])
    gaps = (top[0] - second) / entropy
    return {"mig": float(np.mean(gaps)), "per_factor": gaps.tolist(), "normalized_mi": (mi / entropy).tolist()}


def mig(source: FactorSource, represent: Representation, rng: np.random.Generator, num_train: int = 10000,
        num_bins: int = NUM_BINS) -> dict:
    """MIG over `num_train` random factor combinations (sizes as disentanglement_lib)."""
    factors, codes = sample_codes(source, represent, num_train, rng)
    return mig_from(codes, factors, num_bins)


def dominant_factors(normalized_mi, factor_names, min_share: float = 0.05) -> list[str]:
    """Per latent dimension, the factor it carries most information about ("pos_x 0.62"), or "-" below min_share."""
    mi = np.asarray(normalized_mi, dtype=np.float64)  # (D, F)
    labels = []
    for row in mi:
        f = int(np.argmax(row))
        labels.append(f"{factor_names[f]} {row[f]:.2f}" if row[f] >= min_share else "-")
    return labels
