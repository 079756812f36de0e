"""What a run's bound measures: a normalised log-likelihood of its data (and on which bins bits/dim counts), or not.

The one place that decides it, for the console line, metrics.json, evaluation.json, TensorBoard tags and the model
card. The data reach the model as 8-bit levels k/255, binarised to {0, 1} (dataset.binarize), or dequantised to
(k + u)/256 with u ~ U[0, 1) (dataset.dequantize=uniform).
"""

import math
from dataclasses import dataclass

DEQUANTIZE = ("none", "uniform")
DEQUANTIZE_BINS = 256  # uniform dequantisation y = (k + u) / 256: level k owns [k, k + 1) / 256


@dataclass(frozen=True)
class Status:
    """Whether the bound is a normalised log-likelihood of the data, why (or why not and the fix).

    `log_bin_width`: per dimension, what turns the bound into a log-probability of the discrete data for bits/dim:
    log(1/256) for a density on dequantised pixels (Theis et al. 2016, Sec. 3.1: log P(k) >= E_u log p((k + u)/256)
    - D ln 256), 0 for a probability mass.
    """

    normalised: bool
    note: str
    log_bin_width: float = 0.0

    def as_json(self) -> dict:
        """The `log_likelihood` entry of metrics.json and evaluation.json."""
        return {"normalised": self.normalised, "note": self.note}


def likelihood_status(likelihood: str, binary_data: bool, dequantize: str = "none") -> Status:
    """Status of `likelihood` (a model.likelihood name) on binary data (binarised, or every pixel 0 or 255) or on
    8-bit data, dequantised (`dequantize` in DEQUANTIZE) or not."""
    from vae_lab.distributions import build_likelihood

    kind = build_likelihood(likelihood).kind
    dequantized = dequantize == "uniform"
    if dequantized and (binary_data or kind != "density"):
        return Status(False, f"dataset.dequantize=uniform with {'binary data' if binary_data else likelihood}: "
                             "dequantise 8-bit data for a density only")
    if kind == "binary":
        if binary_data:
            return Status(True, f"{likelihood}: a probability mass on binary pixels")
        return Status(False, f"{likelihood} on grey levels is a cross-entropy: it gives grey pixels probability 0; "
                             "for a likelihood set dataset.binarize=dynamic")
    if kind == "discrete":
        return Status(True, f"{likelihood}: a probability mass on the 256 levels of 8-bit pixels")
    if binary_data:
        return Status(False, f"{likelihood} is a density evaluated at binary pixels, not their probability; for a "
                             "likelihood use model.likelihood=bernoulli")
    if dequantized:
        return Status(True, f"{likelihood}: a density on pixels dequantised to (k + u)/256, a lower bound on the "
                            "log-probability of the 8-bit data", log_bin_width=-math.log(DEQUANTIZE_BINS))
    return Status(False, f"{likelihood} is a density evaluated at 8-bit pixels, not their probability (it can exceed "
                         "1 per level); for a likelihood set dataset.dequantize=uniform or a discretized_* likelihood")
