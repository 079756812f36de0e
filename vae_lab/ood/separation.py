"""How well a score separates out-of-distribution (positives) from in-distribution examples (scikit-learn)."""

import numpy as np


def separation(in_scores, out_scores) -> dict[str, float]:
    """AUROC, AUPRC (out-of-distribution as the positive class) and FPR at 95 % TPR; higher score = more OOD.

    FPR@95TPR: the share of in-distribution examples flagged at the lowest threshold that flags >= 95 % of the
    out-of-distribution ones (Hendrycks & Gimpel 2017's convention).
    """
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    s_in, s_out = np.asarray(in_scores, dtype=np.float64), np.asarray(out_scores, dtype=np.float64)
    if not len(s_in) or not len(s_out):
        raise ValueError("separation needs in- and out-of-distribution examples")
    labels = np.concatenate([np.zeros(len(s_in)), np.ones(len(s_out))])
    scores = np.concatenate([s_in, s_out])
    fpr, tpr, _ = roc_curve(labels, scores)
    return {
        "auroc": float(roc_auc_score(labels, scores)),
        "auprc": float(average_precision_score(labels, scores)),
        "fpr_at_95_tpr": float(fpr[np.searchsorted(tpr, 0.95, side="left")]),
    }
