"""Both VQ-VAE stages through real configs, in-process: fast_dev_run on every built-in dataset, prior_of= from a run,
resume exact, prior_of= a VAE refused (train.py's bad input, one line, exit 2, nothing written:
tests/cli/test_vqvae_cli.py)."""

import json
from pathlib import Path

import pytest
import torch

from vae_lab.cli.train import train
from vae_lab.errors import VaeLabError

SMALL = ["architecture=vqvae", "model.net.channels=[8,16]", "model.net.residual_hidden=8", "model.code_dim=4",
         "model.codebook_size=16"]
PRIOR = ["architecture=vqvae_prior", "model.pixelcnn_channels=8", "model.pixelcnn_layers=2"]
QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "logger=none"]


def run_cfg(compose, out_dir, *overrides):
    """configs/train.yaml + overrides (the integration tier's cached `compose`), written to out_dir."""
    return compose(f"paths.output_dir={out_dir}", "print_config=false", *overrides)


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["digits", "mnist", "fashion_mnist", "cifar10"])
def test_both_stages_fast_dev_run_on_every_builtin_dataset(tmp_path, compose, data_root, monkeypatch,
                                                          one_torch_thread, dataset):
    from datasets_fixtures import trust_cifar10_files

    trust_cifar10_files(monkeypatch)
    data = [f"dataset={dataset}", f"paths.data_dir={data_root}", "schedule.batch_size=8", "trainer.fast_dev_run=2",
            "callbacks=no_images", *QUIET]
    stage1 = train(run_cfg(compose, tmp_path / "s1", *data, *SMALL))
    val = stage1["val"]
    grid = 4 if dataset == "digits" else 49 if dataset != "cifar10" else 64  # image / 4 per side
    assert val["val/rate_nats"] == pytest.approx(grid * torch.log(torch.tensor(16.0)).item(), rel=1e-5)
    assert 0 < val["val/codes_used"] <= 1 and val["val/perplexity"] >= 1
    stage2 = train(run_cfg(compose, tmp_path / "s2", *data, *PRIOR, f"prior_of={tmp_path / 's1' / 'artifact'}"))
    val2 = stage2["val"]
    assert val2["val/distortion_nats"] == pytest.approx(val["val/distortion_nats"], rel=1e-5)  # stage 1's, frozen
    assert val2["val/rate_nats"] == pytest.approx(val2["val/code_nll_per_position_nats"] * grid, rel=1e-4)
    config = json.loads((tmp_path / "s2" / "artifact" / "config.json").read_text())
    assert config["_class_name"] == "VQPrior" and config["codebook_size"] == 16  # self-contained: stage 1 inside


def _weights(run_dir: Path) -> dict:
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return {k: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}


@pytest.mark.slow
def test_resume_is_exact_for_both_stages(tmp_path, compose, one_torch_thread):
    """A 20-step run's last.ckpt continued to step 40 (ckpt_path=: full state, new directory) ends with the weights
    and buffers (EMA codebook, usage, restart count; the prior) of an uninterrupted 40-step run, bit for bit."""
    run = ["trainer.max_epochs=-1", "callbacks=no_images", "schedule.batch_size=32", *QUIET]
    for stage, extra in (("s1", SMALL), ("s2", [*PRIOR, f"prior_of={tmp_path / 's1_full'}"])):
        train(run_cfg(compose, tmp_path / f"{stage}_full", *run, *extra, "trainer.max_steps=40"))
        train(run_cfg(compose, tmp_path / f"{stage}_half", *run, *extra, "trainer.max_steps=20"))
        train(run_cfg(compose, tmp_path / f"{stage}_resumed", *run, *extra, "trainer.max_steps=40",
                          f"ckpt_path={tmp_path / f'{stage}_half' / 'checkpoints' / 'last.ckpt'}"))
        full, resumed = _weights(tmp_path / f"{stage}_full"), _weights(tmp_path / f"{stage}_resumed")
        assert full.keys() == resumed.keys()
        assert all(torch.equal(full[k], resumed[k]) for k in full), stage
        if stage == "s1":
            assert int(full["model.quantizer.restart_count"]) > 0  # restarts happened and were replayed
            assert not torch.equal(full["model.quantizer.codebook"], _weights(tmp_path / "s1_half")[
                "model.quantizer.codebook"])  # the codebook moved after step 20


def test_prior_of_a_vae_is_one_config_error(tmp_path, compose, one_torch_thread):
    from vae_lab.model import VAE
    from vae_lab.publish import save_artifact

    save_artifact(tmp_path / "vae", VAE(in_shape=[1, 8, 8], latent_dim=2, net={"hidden_dims": [8]}))
    with pytest.raises(VaeLabError) as err:
        train(run_cfg(compose, tmp_path / "run", f"prior_of={tmp_path / 'vae'}", *QUIET))
    assert "holds a VAE, not a VQ-VAE" in str(err.value)
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())
