"""What a run's bound measures: a normalised log-likelihood of its data (and on which bins bits/dim counts), or not.

The one place that decides it, for the console line, metrics.json, evaluation.json, TensorBoard tags and the model
card, and the one place that picks `model.likelihood=auto` from the data. The data reach the model as levels k/(L-1)
(L = 256 for 8-bit data, up to 65536 for 16-bit), binarised to {0, 1} (dataset.binarize), dequantised to (k + u)/L
with u ~ U[0, 1) (dataset.dequantize=uniform), or as continuous values in [0, 1] (float data, L = None).
"""

import math
from dataclasses import dataclass

DEQUANTIZE = ("none", "uniform")
AUTO = "auto"  # model.likelihood=auto: chosen from the data by auto_likelihood


@dataclass(frozen=True)
class Status:
    """Whether the bound is a normalised log-likelihood of the data, why (or why not and the fix).

    `log_bin_width`: per dimension, what turns the bound into a log-probability of the discrete data for bits/dim:
    log(1/L) for a density on dequantised pixels (Theis et al. 2016, Sec. 3.1: log P(k) >= E_u log p((k + u)/L)
    - D ln L), 0 for a probability mass or a density of continuous data.
    """

    normalised: bool
    note: str
    log_bin_width: float = 0.0

    def as_json(self) -> dict:
        """The `log_likelihood` entry of metrics.json and evaluation.json."""
        return {"normalised": self.normalised, "note": self.note}


def _grid(levels: int | None) -> str:
    """'8-bit' / '16-bit' / '12-level' / 'continuous': how the data's pixels are stored, for messages."""
    if levels is None:
        return "continuous"
    bits = math.log2(levels)
    return f"{bits:.0f}-bit" if bits.is_integer() else f"{levels}-level"


def likelihood_status(likelihood: str, binary_data: bool, dequantize: str = "none", levels: int | None = 256) -> Status:
    """Status of `likelihood` (a model.likelihood name) on binary data (binarised, or only the two extreme levels) or
    on data of `levels` grey levels (None: continuous float data), dequantised (`dequantize` in DEQUANTIZE) or not."""
    from vae_lab.distributions import build_likelihood

    kind = build_likelihood(likelihood).kind
    dequantized = dequantize == "uniform"
    grid = _grid(levels)
    if dequantized and (binary_data or kind != "density" or levels is None):
        what = "binary data" if binary_data else "continuous data" if levels is None else likelihood
        return Status(False, f"dataset.dequantize=uniform with {what}: dequantise discrete data for a density only")
    if kind == "binary":
        if binary_data:
            return Status(True, f"{likelihood}: a probability mass on binary pixels")
        pixels = "continuous pixels" if levels is None else "grey levels"
        return Status(False, f"{likelihood} on {pixels} is a cross-entropy: it gives grey pixels probability 0; for a "
                             "likelihood set dataset.binarize=dynamic (or model.likelihood=auto)")
    if kind == "discrete":
        if levels is None:
            return Status(False, f"{likelihood} binned continuous pixels: use model.likelihood=gaussian_learned")
        return Status(True, f"{likelihood}: a probability mass on the {levels} levels of {grid} pixels")
    if binary_data:
        return Status(False, f"{likelihood} is a density evaluated at binary pixels, not their probability; for a "
                             "likelihood use model.likelihood=bernoulli")
    if levels is None:
        return Status(True, f"{likelihood}: a density of continuous pixels (its bits/dim may be negative)")
    if dequantized:
        return Status(True, f"{likelihood}: a density on pixels dequantised to (k + u)/{levels}, a lower bound on the "
                            f"log-probability of the {grid} data", log_bin_width=-math.log(levels))
    return Status(False, f"{likelihood} is a density evaluated at {grid} pixels, not their probability (it can exceed "
                         "1 per level); for a likelihood set dataset.dequantize=uniform or a discretized_* likelihood")


def auto_likelihood(binary_data: bool, levels: int | None, dequantize: str = "none") -> tuple[str, str]:
    """The likelihood `model.likelihood=auto` means for these data, and why: (name, reason).

    Each choice is a normalised log-likelihood of the data as they reach the model (likelihood_status says so):
    a mass on {0, 1} for binary pixels, a mass on the L bins for discrete ones (PixelCNN++'s mixture, Salimans et al.
    2017), a density for continuous values or for discrete ones the user dequantised.
    """
    if binary_data:
        return "bernoulli", "binary data"
    if levels is None:
        return "gaussian_learned", "continuous data"
    if dequantize == "uniform":
        return "gaussian_learned", f"{_grid(levels)} data dequantised to (k + u)/{levels}"
    return "discretized_logistic_mixture", f"{_grid(levels)} data, {levels} bins"
