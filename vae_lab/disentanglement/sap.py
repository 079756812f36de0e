"""The SAP score (Kumar et al. 2018, Sec. 3): per factor, the gap between the two code dimensions that predict it
best, each alone, with a linear classifier; averaged over factors."""

import numpy as np
from sklearn.svm import LinearSVC

from vae_lab.disentanglement.sampling import FactorSource, Representation, sample_codes


def sap_matrix(codes: np.ndarray, factors: np.ndarray, codes_test: np.ndarray, factors_test: np.ndarray) -> np.ndarray:
    """(D, F) test accuracy of a linear SVM (C = 0.01, balanced classes) predicting factor f from code d alone."""
    scores = np.zeros((codes.shape[1], factors.shape[1]))
    for d in range(codes.shape[1]):
        for f in range(factors.shape[1]):
            if len(np.unique(factors[:, f])) < 2:
                continue  # a constant factor is predicted by nothing
            model = LinearSVC(C=0.01, class_weight="balanced").fit(codes[:, d : d + 1], factors[:, f])
            scores[d, f] = np.mean(model.predict(codes_test[:, d : d + 1]) == factors_test[:, f])
    return scores


def sap_from(codes, factors, codes_test, factors_test) -> float:
    """SAP = mean over factors of (best - second best) single-dimension accuracy."""
    top = np.sort(sap_matrix(codes, factors, codes_test, factors_test), axis=0)
    return float(np.mean(top[-1] - top[-2])) if len(top) > 1 else float(np.mean(top[-1]))


def sap(source: FactorSource, represent: Representation, rng: np.random.Generator, num_train: int = 10000,
        num_test: int = 5000) -> dict[str, float]:
    """{sap} over random factor combinations (sizes as disentanglement_lib)."""
    factors, codes = sample_codes(source, represent, num_train, rng)
    factors_test, codes_test = sample_codes(source, represent, num_test, rng)
    return {"sap": sap_from(codes, factors, codes_test, factors_test)}
