"""TensorBoard HPARAMS: the overridden values a run records (tests/cli/test_sweep_cli.py reads a real sweep's
HPARAMS back from its events)."""

from vae_lab.callbacks.hparams import overridden_params


def test_overridden_params_parse_values_and_skip_hydra_keys(tmp_path):
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text(
        "- loss.beta=4\n- +model.extra=[1,2]\n- dataset=mnist\n- hydra.job.name=x\n- schedule.lr=3e-4\n")
    assert overridden_params(tmp_path) == {"loss.beta": 4, "model.extra": "[1, 2]", "dataset": "mnist",
                                           "schedule.lr": 3e-4}
    assert overridden_params(tmp_path / "nowhere") == {}
