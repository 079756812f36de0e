"""The Hub around training, in-process: log sync survives a network failure mid-training; a run starts from a Hub id's
weights (init_from, strict shapes) or from a checkpoint loaded with weights_only (ckpt_path), the latter two on the
shared plain run (latent_dim 3, 5 steps), read-only. train.py pushing as a process: tests/cli/test_hub_cli.py."""

import time

import pytest
import torch
from huggingface_hub import HfApi

from hub_fixtures import TOKEN, fake_hub, read_tensors, stage_in_cache  # noqa: F401
from vae_lab.errors import CheckpointError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def compose_cfg(compose):
    def composed(out_dir, *overrides):
        return compose(f"paths.output_dir={out_dir}", "print_config=false", *overrides)

    return composed


@pytest.mark.parametrize("failure", ["connection refused", "hub down"])
def test_log_sync_survives_a_network_failure(tmp_path, fake_hub, capsys, failure):
    import socket

    import lightning as L
    from lightning.pytorch.loggers import TensorBoardLogger
    from torch.utils.data import DataLoader, TensorDataset

    from vae_lab.callbacks.hub_sync import HubLogSync
    from vae_lab.lit_module import VAEModule

    if failure == "connection refused":  # nothing listens on this port once the block ends
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
    else:  # the repo is created, then every commit gets a 503
        endpoint, fake_hub.fail_commits = fake_hub.url, lambda summary: True

    class WaitForACommit(L.Callback):
        """Mid-training, wait until the sync has tried (and failed) to commit; training must then go on."""

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            for _ in range(400 if failure == "hub down" and trainer.global_step == 3 else 0):
                if any("/commit/" in r["path"] for r in fake_hub.requests):
                    break
                time.sleep(0.05)
    sync = HubLogSync("me/vae-sync", every_minutes=0.005, api=HfApi(endpoint=endpoint, token=TOKEN), final_wait_s=20)
    module = VAEModule(model={"in_shape": [1, 8, 8], "latent_dim": 2, "net": {"hidden_dims": [8]}},
                       objective={"name": "elbo"}, optimizer={"_target_": "torch.optim.Adam", "lr": 1e-3})
    data = DataLoader(TensorDataset(torch.rand(32, 1, 8, 8), torch.zeros(32, dtype=torch.long)), batch_size=8)
    trainer = L.Trainer(max_steps=8, logger=TensorBoardLogger(tmp_path, name="tensorboard", version=""),
                        callbacks=[sync, WaitForACommit()], enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, default_root_dir=tmp_path)
    trainer.fit(module, data, data)
    assert trainer.global_step == 8 and not fake_hub.commits
    if failure == "connection refused":
        assert sync.scheduler is None and sync.failures
        assert "hub log sync to me/vae-sync is not running" in capsys.readouterr().err
    else:
        assert sync.scheduler is not None and any("/commit/" in r["path"] for r in fake_hub.requests)
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))  # the local logs are untouched


def test_init_from_hub_id_and_strict_shapes(trained_run, compose_cfg, tmp_path, monkeypatch):
    import huggingface_hub.constants

    from vae_lab.cli.train import train

    source = trained_run("plain") / "artifact"
    stage_in_cache(tmp_path / "cache", "me/vae-cli", source, "c" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "finetune"
    # no training batches: the new run's model is exactly its init weights, saved to its own artifact
    train(compose_cfg(out, f"init_from=me/vae-cli@{'c' * 40}", "model.latent_dim=3", "trainer.limit_train_batches=0",
                      "logger=none", "callbacks=none", "trainer.enable_model_summary=false"))
    got, want = read_tensors(out / "artifact" / "model.safetensors"), read_tensors(source / "model.safetensors")
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)

    with pytest.raises(CheckpointError, match="does not fit this model .*wrong shape"):
        train(compose_cfg(tmp_path / "bad", f"init_from={source}", "model.latent_dim=4", "logger=none",
                          "callbacks=none"))


def test_resume_from_ckpt_loads_with_weights_only(trained_run, compose_cfg, tmp_path):
    from vae_lab.cli.train import train

    last = trained_run("plain") / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, map_location="cpu", weights_only=True)  # primitives and tensors only
    assert ckpt["global_step"] == 5  # the shared run: 1 epoch of 5 batches
    metrics = train(compose_cfg(tmp_path, f"ckpt_path={last}", "model.latent_dim=3", "trainer.max_steps=7",
                                "trainer.max_epochs=-1", "logger=none", "callbacks=none",
                                "trainer.enable_model_summary=false"))
    assert metrics["global_step"] == 7
