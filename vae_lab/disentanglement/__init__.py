"""Disentanglement metrics on data with ground-truth factors (definitions and sizes as disentanglement_lib,
Locatello et al. 2019): BetaVAE score, FactorVAE score, MIG, SAP, DCI. numpy + scikit-learn, seeded."""

import numpy as np
import torch

from vae_lab.disentanglement.beta_vae_score import beta_vae_score
from vae_lab.disentanglement.dci import dci
from vae_lab.disentanglement.factor_vae_score import factor_vae_score
from vae_lab.disentanglement.mig import mig
from vae_lab.disentanglement.sampling import FactorSource, encoder_mean
from vae_lab.disentanglement.sap import sap

METRICS = ("beta_vae_score", "factor_vae_score", "mig", "sap", "dci")


def disentanglement_scores(model, factors_source: FactorSource, seed: int = 0, device: str | torch.device = "cpu",
                           num_train: int = 10000, num_test: int = 5000) -> dict:
    """Every metric of `model`'s encoder mean on `factors_source`; each metric draws from its own seeded stream.

    `num_train` / `num_test` are disentanglement_lib's sizes (points for the BetaVAE and FactorVAE scores,
    examples for MIG, SAP and DCI); smaller values trade precision for time (DCI's boosted trees dominate).
    Returns flat numbers plus `mi_matrix` ((D, F) I(z_d; v_f) / H(v_f)) and `factor_names`.
    """
    represent = encoder_mean(model.to(device), device)
    streams = np.random.SeedSequence(seed).spawn(len(METRICS))
    rng = {name: np.random.default_rng(s) for name, s in zip(METRICS, streams)}
    beta = beta_vae_score(factors_source, represent, rng["beta_vae_score"], num_train=num_train, num_eval=num_test)
    factor = factor_vae_score(factors_source, represent, rng["factor_vae_score"], num_train=num_train,
                              num_eval=num_test, num_variance_estimate=num_train)
    gap = mig(factors_source, represent, rng["mig"], num_train=num_train)
    dci_scores = dci(factors_source, represent, rng["dci"], num_train=num_train, num_test=num_test)
    return {
        "beta_vae_score": beta["eval_accuracy"],
        "factor_vae_score": factor["eval_accuracy"],
        "factor_vae_active_dims": factor["num_active_dims"],
        "mig": gap["mig"],
        "sap": sap(factors_source, represent, rng["sap"], num_train=num_train, num_test=num_test)["sap"],
        "dci_disentanglement": dci_scores["disentanglement"],
        "dci_completeness": dci_scores["completeness"],
        "dci_informativeness": dci_scores["informativeness_test"],
        "mi_matrix": gap["normalized_mi"],
        "factor_names": list(factors_source.names),
        "seed": seed,
        "num_train": num_train,
        "num_test": num_test,
    }


__all__ = ["METRICS", "beta_vae_score", "dci", "disentanglement_scores", "factor_vae_score", "mig", "sap"]
