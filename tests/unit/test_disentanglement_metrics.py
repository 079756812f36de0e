"""Disentanglement metrics against oracles: codes = factors (+ noise) near the maximum, random codes near 0 or
chance, a rotation mixing two factors lower; MIG and DCI against hand-written references on tiny examples."""

import math

import numpy as np
import pytest
import torch

from vae_lab.disentanglement import beta_vae_score, dci, disentanglement_scores, factor_vae_score, mig, sap
from vae_lab.disentanglement.dci import completeness, disentanglement
from vae_lab.disentanglement.mig import discretize, mig_from


class Factors:
    """A factor source whose 'images' are the factor codes themselves (the representation decides the codes)."""

    def __init__(self, sizes):
        self.sizes, self.names = tuple(sizes), tuple(f"f{i}" for i in range(len(sizes)))

    def sample_factors(self, num, rng):
        return np.stack([rng.integers(0, k, num) for k in self.sizes], axis=1)

    def observations(self, codes):
        return torch.as_tensor(np.asarray(codes), dtype=torch.float32)


def representation(kind, sizes, noise=0.01, seed=1):
    rng = np.random.default_rng(seed)

    def represent(x):
        z = x.numpy() / np.array(sizes)  # factors scaled to [0, 1)
        if kind == "random":
            return rng.standard_normal(z.shape)
        z = z + noise * rng.standard_normal(z.shape)
        if kind == "rotated":  # factors 0 and 1 mixed by 45 degrees
            a, b = z[:, 0].copy(), z[:, 1].copy()
            z[:, 0], z[:, 1] = (a - b) / math.sqrt(2), (a + b) / math.sqrt(2)
        return z

    return represent


SIZES = (4, 5, 3)


def _scores(kind, sizes=SIZES):
    src, rep, rng = Factors(sizes), representation(kind, sizes), lambda: np.random.default_rng(0)  # noqa: E731
    return {
        "beta": beta_vae_score(src, rep, rng(), batch_size=16, num_train=150, num_eval=100)["eval_accuracy"],
        "factor": factor_vae_score(src, rep, rng(), batch_size=16, num_train=150, num_eval=100,
                                   num_variance_estimate=500)["eval_accuracy"],
        "mig": mig(src, rep, rng(), num_train=1500)["mig"],
        "dci": dci(src, rep, rng(), num_train=300, num_test=200)["disentanglement"],
    }


@pytest.fixture(scope="module")
def scores():
    return {kind: _scores(kind) for kind in ("identity", "random", "rotated")}


def test_codes_equal_to_the_factors_score_near_the_maximum(scores):
    s = scores["identity"]
    assert s["beta"] > 0.95 and s["factor"] > 0.95 and s["mig"] > 0.9 and s["dci"] > 0.9, s


def test_random_codes_score_near_zero_or_chance(scores):
    s, chance = scores["random"], 1 / len(SIZES)
    assert s["mig"] < 0.05 and s["dci"] < 0.15, s
    assert abs(s["beta"] - chance) < 0.2 and abs(s["factor"] - chance) < 0.2, s


def test_a_rotation_mixing_two_factors_lowers_mig_and_dci_d(scores):
    ident, rot = scores["identity"], scores["rotated"]
    assert rot["mig"] < ident["mig"] - 0.2 and rot["dci"] < ident["dci"] - 0.1, (ident, rot)


def test_sap_is_near_its_maximum_for_codes_equal_to_binary_factors_and_near_zero_for_random_codes():
    # SAP is a gap of accuracies: for a binary factor the runner-up code is at chance (0.5), so the maximum is 0.5
    sizes = (2, 2, 2)
    src = Factors(sizes)
    good = sap(src, representation("identity", sizes), np.random.default_rng(0), num_train=400, num_test=200)
    bad = sap(src, representation("random", sizes), np.random.default_rng(0), num_train=400, num_test=200)
    rotated = sap(src, representation("rotated", sizes), np.random.default_rng(0), num_train=400, num_test=200)
    assert good["sap"] > 0.4 and bad["sap"] < 0.1 and rotated["sap"] < good["sap"] - 0.2, (good, bad, rotated)


def test_mig_matches_a_hand_count_on_a_tiny_example():
    factors = np.array([[0, 0], [0, 1], [1, 0], [1, 1], [0, 0], [1, 1]])
    codes = np.array([[0.0, 5.0], [0.1, 5.0], [1.0, 5.0], [0.9, 6.0], [0.05, 6.0], [1.0, 6.0]])
    binned = discretize(codes, num_bins=20)

    def entropy(values):
        _, counts = np.unique(values, return_counts=True, axis=0)
        p = counts / counts.sum()
        return -np.sum(p * np.log(p))

    def mutual_information(a, b):
        return entropy(a) + entropy(b) - entropy(np.stack([a, b], 1))

    mi = np.array([[mutual_information(binned[:, d], factors[:, f]) for f in range(2)] for d in range(2)])
    h = np.array([entropy(factors[:, f]) for f in range(2)])
    top = np.sort(mi, axis=0)[::-1]
    assert mig_from(codes, factors, num_bins=20)["mig"] == pytest.approx(np.mean((top[0] - top[1]) / h))


def test_dci_disentanglement_and_completeness_match_hand_formulas():
    assert disentanglement(np.eye(3)) == pytest.approx(1.0) and completeness(np.eye(3)) == pytest.approx(1.0)
    assert disentanglement(np.ones((3, 3))) == pytest.approx(0.0, abs=1e-6)
    m = np.array([[0.6, 0.2], [0.0, 0.2]])  # code 0 splits 3:1 between the factors, code 1 serves factor 1 only
    h0 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(2)
    assert disentanglement(m) == pytest.approx(0.8 * (1 - h0) + 0.2 * 1.0, abs=1e-6)
    hf1 = 1.0  # factor 1: importance 0.2 / 0.2 over two codes, base-2 entropy 1
    assert completeness(m) == pytest.approx(0.6 * 1.0 + 0.4 * (1 - hf1), abs=1e-6)


def test_scores_are_seeded_and_skip_nothing_asked_for():
    class Encoder(torch.nn.Module):  # a "model" whose posterior mean is its input: the identity representation
        def encode(self, x):
            return torch.distributions.Normal(x, torch.ones_like(x))

    src = Factors((2, 3))
    kwargs = dict(num_train=200, num_test=100, metrics=("mig", "sap", "beta_vae_score"))
    a = disentanglement_scores(Encoder(), src, seed=3, **kwargs)
    b = disentanglement_scores(Encoder(), src, seed=3, **kwargs)
    assert a == b and a["mig"] > 0.9 and np.array(a["mi_matrix"]).shape == (2, 2)
    with pytest.raises(ValueError, match="unknown disentanglement metric 'nope'"):
        disentanglement_scores(Encoder(), src, metrics=("nope",))


def test_the_table_has_one_row_per_objective_with_mean_and_std_of_the_asked_metrics():
    from vae_lab.disentanglement.table import markdown

    rows = {"elbo (vanilla)": [{"mig": 0.1, "dci_disentanglement": 0.2, "dci_completeness": 0.3,
                                "dci_informativeness": 0.4, "sap": 9.0}, {"mig": 0.3, "dci_disentanglement": 0.2,
                                                                          "dci_completeness": 0.5,
                                                                          "dci_informativeness": 0.6, "sap": 9.0}]}
    lines = markdown(rows, ["mig", "dci"]).splitlines()
    assert lines[0] == "| objective | runs | MIG | DCI-D | DCI-C | DCI-I |"  # dci: its three columns; sap not asked
    assert lines[2] == "| elbo (vanilla) | 2 | 0.200 ± 0.100 | 0.200 ± 0.000 | 0.400 ± 0.100 | 0.500 ± 0.100 |"


def test_the_table_tool_gathers_bare_paths_into_runs_and_passes_over_unfinished_runs(tmp_path):
    from hydra import compose, initialize_config_dir

    from vae_lab.cli import CONFIG_DIR
    from vae_lab.cli.disentanglement_table import positional_runs
    from vae_lab.disentanglement.table import disentanglement_table

    argv = positional_runs(["t.py", "out/a", "num_test=5", "out/it's b"])
    assert argv == ["t.py", "num_test=5", "runs=['out/a','out/it\\'s b']"]
    assert positional_runs(["t.py", "runs=[x]"]) == ["t.py", "runs=[x]"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("disentanglement_table", overrides=argv[1:2] + [f"runs=['{tmp_path}']"])
    assert disentanglement_table(cfg).splitlines()[0].startswith("| objective | runs | MIG | DCI-D")
    assert not (tmp_path / "disentanglement.json").exists()  # no metrics.json: unfinished, not scored
