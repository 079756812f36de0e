"""DCI (Eastwood & Williams 2018): disentanglement, completeness and informativeness from the feature importances
of gradient-boosted trees predicting each factor from the codes."""

import numpy as np
from scipy.stats import entropy
from sklearn.ensemble import GradientBoostingClassifier

from vae_lab.disentanglement.sampling import FactorSource, Representation, sample_codes


def importance_matrix(codes, factors, codes_test, factors_test, seed: int = 0):
    """(D, F) |feature importance| of code d for factor f, and the mean train / test accuracies."""
    matrix = np.zeros((codes.shape[1], factors.shape[1]))
    train_acc, test_acc = [], []
    for f in range(factors.shape[1]):
        model = GradientBoostingClassifier(random_state=seed).fit(codes, factors[:, f])
        matrix[:, f] = np.abs(model.feature_importances_)
        train_acc.append(np.mean(model.predict(codes) == factors[:, f]))
        test_acc.append(np.mean(model.predict(codes_test) == factors_test[:, f]))
    return matrix, float(np.mean(train_acc)), float(np.mean(test_acc))


def disentanglement(matrix: np.ndarray) -> float:
    """sum_d rho_d (1 - H_F(P_d.)), rho_d the share of importance of code d (Eastwood & Williams, Eq. 2)."""
    per_code = 1.0 - entropy(matrix.T + 1e-11, base=matrix.shape[1])  # (D,)
    total = matrix.sum()
    weight = matrix.sum(1) / total if total > 0 else np.ones(matrix.shape[0]) / matrix.shape[0]
    return float(np.sum(per_code * weight))


def completeness(matrix: np.ndarray) -> float:
    """sum_f rho_f (1 - H_D(P_.f)), the importance-weighted concentration of each factor on few codes."""
    per_factor = 1.0 - entropy(matrix + 1e-11, base=matrix.shape[0])  # (F,)
    total = matrix.sum()
    weight = matrix.sum(0) / total if total > 0 else np.ones(matrix.shape[1]) / matrix.shape[1]
    return float(np.sum(per_factor * weight))


def dci_from(codes, factors, codes_test, factors_test, seed: int = 0) -> dict[str, float]:
    matrix, train_acc, test_acc = importance_matrix(codes, factors, codes_test, factors_test, seed)
    return {"disentanglement": disentanglement(matrix), "completeness": completeness(matrix),
            "informativeness_train": train_acc, "informativeness_test": test_acc}


def dci(source: FactorSource, represent: Representation, rng: np.random.Generator, num_train: int = 10000,
        num_test: int = 5000) -> dict[str, float]:
    """DCI over random factor combinations (sizes and classifier as disentanglement_lib)."""
    factors, codes = sample_codes(source, represent, num_train, rng)
    factors_test, codes_test = sample_codes(source, represent, num_test, rng)
    return dci_from(codes, factors, codes_test, factors_test, seed=int(rng.integers(2**31)))
