"""DDP on 2 CPU processes through the CLI: one rank writes, validation metrics are exact sums and counts over ranks.

`strategy=ddp` re-runs the command line for rank 1, so it only works from a real script (never inside pytest).
Validation draws z with noise seeded per (stage, rank, batch) (VAEModule._sample_z), so the logged ELBO can be
replayed exactly in one process: the same checkpoint, the same validation shards, the same noise. What is left to
compare is the reduction across batches and ranks, which must be sum / count over all validation examples.
"""

import json
from pathlib import Path
from types import SimpleNamespace

import driver
import pytest
import torch

from vae_lab.model.interface import flat_terms
from omegaconf import OmegaConf

from vae_lab.build import build_datamodule
from vae_lab.data.batches import stream_seed
from vae_lab.loading import model_from_checkpoint
from vae_lab.objectives.elbo import elbo

WORLD_SIZE = 2
TOL = 2e-6  # relative: float32 sums of a few dozen values of ~30 nats, replayed in float64


def _replay_validation(run_dir: Path, ckpt: Path) -> dict[str, list[torch.Tensor]]:
    """Per-example ELBO terms of every validation shard, and each batch's, evaluated in this one process."""
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    model = model_from_checkpoint(ckpt).eval()
    per_batch = {"elbo": [], "distortion": [], "rate": [], "rank": []}
    for rank in range(WORLD_SIZE):
        # the datamodule's own sharding, as rank `rank` of 2 sees it
        datamodule.trainer = SimpleNamespace(global_rank=rank, world_size=WORLD_SIZE,
                                             strategy=SimpleNamespace(root_device=torch.device("cpu")))
        with torch.no_grad():
            for batch_idx, (x, _) in enumerate(datamodule.val_dataloader()):
                q_z = model.encode(x)
                generator = torch.Generator().manual_seed(stream_seed("val", rank, batch_idx))
                eps = torch.randn((1, *q_z.mean.shape), generator=generator)
                z = q_z.mean + eps * q_z.stddev  # (1, B, D)
                terms = elbo(flat_terms(q_z, model.prior(), z, model.decode(z), x)).terms
                for name in ("elbo", "distortion", "rate"):
                    per_batch[name].append(terms[name].double())
                per_batch["rank"].append(torch.full_like(terms["elbo"], rank, dtype=torch.long))
    datamodule.trainer = None
    return per_batch


@pytest.mark.slow  # two DDP processes: ~25 s
def test_ddp_on_two_cpu_processes_reduces_exactly_and_writes_once(tmp_path):
    run_dir = tmp_path / "run"
    proc = driver.run(
        "train", "hardware=ddp_cpu", "trainer.devices=2", f"hydra.run.dir={run_dir}",
        # 17 validation examples: shards of 9 and 8, batches of 4 (4+4+1 and 4+4), so a mean of batch or
        # rank means would be far from the mean over examples
        "dataset.val_fraction=0.01", "schedule.batch_size=4",
        "trainer.max_steps=16", "trainer.max_epochs=-1", "trainer.val_check_interval=8",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false", "print_config=false", "logger=csv", timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    # both ranks share this stdout: rank zero alone reports, writes metrics.json, run_info.json and the artifacts
    assert proc.stdout.count("Run directory:") == 1, proc.stdout[-3000:]
    assert proc.stdout.count("data: digits") == 1
    assert "MEMBER: 2/2" in proc.stdout + proc.stderr  # really two processes
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert (run_dir / "run_info.json").is_file()
    assert metrics["global_step"] == 16
    ckpt = run_dir / metrics["best_checkpoint"]
    assert ckpt.is_file()

    per_batch = _replay_validation(run_dir, ckpt)
    examples = {name: torch.cat(values) for name, values in per_batch.items()}
    assert len(examples["elbo"]) == 17  # every validation example exactly once, over both ranks
    assert set(examples["rank"].tolist()) == {0, 1}
    val = metrics["val"]
    for name in ("elbo", "distortion", "rate"):
        assert val[f"val/{name}_nats"] == pytest.approx(examples[name].mean().item(), rel=TOL), name

    # The same number was logged during fit, when the best checkpoint was chosen (same seeded noise).
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["callbacks"]
    best_score = next(v["best_model_score"] for k, v in state.items() if k.startswith("ModelCheckpoint"))
    assert float(best_score) == pytest.approx(examples["elbo"].mean().item(), rel=TOL)

    # The test can fail: a mean of batch means or of rank means is measurably different here.
    exact = examples["elbo"].mean().item()
    batch_means = torch.stack([b.mean() for b in per_batch["elbo"]]).mean().item()
    rank_means = torch.stack([examples["elbo"][examples["rank"] == r].mean() for r in range(WORLD_SIZE)])
    assert abs(batch_means - exact) > 10 * TOL * abs(exact)
    assert abs(rank_means.mean().item() - exact) > 10 * TOL * abs(exact)


@pytest.mark.slow  # two DDP runs of two CPU processes each
def test_ddp_with_four_steps_per_call_trains_exactly_as_one(tmp_path):
    """schedule.steps_per_call=4 under DDP: every rank takes the same steps per call, gradients all-reduced per step."""
    weights = {}
    for n in (1, 4):
        run_dir = tmp_path / f"n{n}"
        proc = driver.run(
            "train", "hardware=ddp_cpu", "trainer.devices=2", f"hydra.run.dir={run_dir}",
            "schedule.batch_size=4", f"schedule.steps_per_call={n}", "schedule.gradient_clip_val=0.5",
            "trainer.max_steps=18", "trainer.max_epochs=-1", "callbacks=no_images",
            "callbacks.periodic_checkpoint.every_n_train_steps=8", "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false", "print_config=false", "logger=csv", timeout=400,
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert json.loads((run_dir / "metrics.json").read_text())["global_step"] == 18
        weights[n] = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert weights[1]["global_step"] == weights[4]["global_step"] >= 16  # last.ckpt: periodic (16) or at the end
    for name, value in weights[1]["state_dict"].items():
        assert torch.equal(value, weights[4]["state_dict"][name]), name
