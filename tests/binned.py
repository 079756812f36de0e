"""The exact probability of an 8-bit level under a Gaussian density (tests/unit/test_likelihood_status.py checks the
dequantised bound against it; tests/integration/test_units.py, a trained model's bits/dim)."""

import numpy as np
from scipy.special import log_ndtr


def log_bin_mass_gaussian(level, loc, scale):
    """log of the N(loc, scale^2) mass on [k, k + 1)/256, float64 (the upper tail mirrored)."""
    a, b = (level / 256 - loc) / scale, ((level + 1) / 256 - loc) / scale
    lo, hi = np.where(a > 0, -b, a), np.where(a > 0, -a, b)
    return log_ndtr(hi) + np.log(-np.expm1(log_ndtr(lo) - log_ndtr(hi)))
