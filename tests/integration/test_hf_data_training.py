"""dataset=hf through train(): a streamed dataset trains end to end; a Hub id offline is one line saying how to work
offline (the loaders themselves: tests/unit/test_hf_data.py)."""

import numpy as np
import pytest
from datasets_fixtures import write_hf_dataset

from vae_lab.cli.train import train
from vae_lab.errors import VaeLabError

QUIET = ["print_config=false", "callbacks=none", "logger=none", "trainer.enable_progress_bar=false",
         "trainer.enable_model_summary=false"]


def test_hub_id_offline_says_how_to_work_offline(tmp_path, compose, one_torch_thread):
    """HF_HUB_OFFLINE=1 (set for every test process by tests/conftest.py) and a Hub id: one line naming the id, that
    the Hub is offline and save_to_disk; no run is written (train.py turns the error into exit 2: tests/cli)."""
    run = tmp_path / "run"
    cfg = compose(f"paths.output_dir={run}", "dataset=hf", "dataset.options.path=someone/faces",
                  f"paths.data_dir={tmp_path}", *QUIET)
    with pytest.raises(VaeLabError) as err:
        train(cfg)
    line = str(err.value)
    assert "\n" not in line and "someone/faces" in line and "offline" in line and "save_to_disk" in line
    assert not (run / "checkpoints").exists() and not (run / "metrics.json").exists()


def test_train_on_a_streamed_hf_dataset(tmp_path, compose, one_torch_thread):
    data = write_hf_dataset(tmp_path / "hf", n_train=40, n_test=10)
    cfg = compose(f"paths.output_dir={tmp_path / 'run'}", "dataset=hf", f"dataset.options.path={data['parquet_dir']}",
                  "dataset.options.in_memory=false", "dataset.options.num_workers=1", f"paths.data_dir={tmp_path}",
                  "architecture=conv", "trainer.max_steps=6", "trainer.max_epochs=-1", "schedule.batch_size=8",
                  *QUIET)
    metrics = train(cfg)
    assert metrics["global_step"] == 6 and np.isfinite(metrics["test"]["test/elbo_nats"])
