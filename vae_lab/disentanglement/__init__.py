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
                           num_train: int = 10000, num_test: int = 5000, metrics: tuple[str, ...] = METRICS) -> dict:
    """The `metrics` of `model`'s encoder mean on `factors_source`; each metric draws from its own seeded stream.

    `num_train` / `num_test` are disentanglement_lib's sizes (points for the BetaVAE and FactorVAE scores,
    examples for MIG, SAP and DCI); smaller values trade precision for time (DCI's boosted trees dominate).
    Returns flat numbers, plus `mi_matrix` ((D, F) I(z_d; v_f) / H(v_f)) and `factor_names` with MIG.
    """
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise ValueError(f"unknown disentanglement metric {unknown[0]!r}; valid: {', '.join(METRICS)}")
    represent = encoder_mean(model.to(device), device)
    streams = dict(zip(METRICS, np.random.SeedSequence(seed).spawn(len(METRICS))))
    rng = {name: np.random.default_rng(stream) for name, stream in streams.items()}
    out: dict = {"seed": seed, "num_train": num_train, "num_test": num_test}
    if "beta_vae_score" in metrics:
        out["beta_vae_score"] = beta_vae_score(factors_source, represent, rng["beta_vae_score"], num_train=num_train,
                                               num_eval=num_test)["eval_accuracy"]
    if "factor_vae_score" in metrics:
        factor = factor_vae_score(factors_source, represent, rng["factor_vae_score"], num_train=num_train,
                                  num_eval=num_test, num_variance_estimate=num_train)
        out.update(factor_vae_score=factor["eval_accuracy"], factor_vae_active_dims=factor["num_active_dims"])
    if "mig" in metrics:
        gap = mig(factors_source, represent, rng["mig"], num_train=num_train)
        out.update(mig=gap["mig"], mi_matrix=gap["normalized_mi"], factor_names=list(factors_source.names))
    if "sap" in metrics:
        out["sap"] = sap(factors_source, represent, rng["sap"], num_train=num_train, num_test=num_test)["sap"]
    if "dci" in metrics:
        scores = dci(factors_source, represent, rng["dci"], num_train=num_train, num_test=num_test)
        out.update(dci_disentanglement=scores["disentanglement"], dci_completeness=scores["completeness"],
                   dci_informativeness=scores["informativeness_test"])
    return out


__all__ = ["METRICS", "beta_vae_score", "dci", "disentanglement_scores", "factor_vae_score", "mig", "sap"]
