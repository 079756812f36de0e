"""The hierarchical family through the CLI: resume exact, bf16, a sweep, sampling and its bad input (in-process:
tests/integration/test_hierarchical_training.py)."""

import json

import pytest
import torch

import driver

QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "print_config=false",
         "callbacks=no_images"]


def cli(*args: str, tool: str = "train", ok: bool = True):
    return driver.run(tool, *args, timeout=900, ok=True if ok else None)


def _same(a, b, where: str) -> None:
    """a == b, tensors bit for bit, through nested dicts and lists."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (u, v) in enumerate(zip(a, b)):
            _same(u, v, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.slow  # three CLI runs (~1 min)
def test_resume_is_exact_with_ema_and_gradient_skips(tmp_path):
    """40 steps straight, or 20 then resume= to 40: the same weights, EMA and skip count, bit for bit."""
    run = ["architecture=hierarchical", "trainer.max_epochs=-1", "trainer.val_check_interval=10",
           "trainer.check_val_every_n_epoch=null", "callbacks.periodic_checkpoint.every_n_train_steps=10",
           "ema.decay=0.9", "guard.skip_grad_norm_above=150", *QUIET]
    cli(*run, "trainer.max_steps=40", f"hydra.run.dir={tmp_path / 'straight'}")
    cli(*run, "trainer.max_steps=20", f"hydra.run.dir={tmp_path / 'split'}")
    cli(*run, "trainer.max_steps=40", f"resume={tmp_path / 'split'}")
    a = torch.load(tmp_path / "straight" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    b = torch.load(tmp_path / "split" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert a["global_step"] == b["global_step"] == 40
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    states = [key for key in a["callbacks"] if "ModelCheckpoint" not in key]  # those name their run's paths
    assert any("EMA" in key for key in states) and any("NonFiniteGuard" in key for key in states), states
    for key in states:  # the EMA weights and the guard's counters (skips) among them
        _same(a["callbacks"][key], b["callbacks"][key], key)
    metrics = json.loads((tmp_path / "split" / "metrics.json").read_text())
    assert metrics["weights"].startswith("ema") and "val/rate_nats/group_00" in metrics["val"]


@pytest.mark.slow  # a 2-job sweep and bf16 through the CLI (~1 min)
def test_a_sweep_over_a_hierarchical_knob_and_bf16_on_cpu(tmp_path):
    cli("-m", "architecture=hierarchical", "model.groups_per_resolution=1,2", "trainer.fast_dev_run=true", *QUIET,
        f"hydra.sweep.dir={tmp_path / 'sweep'}")
    groups = [len([k for k in json.loads((tmp_path / "sweep" / str(job) / "metrics.json").read_text())["val"]
                   if k.startswith("val/rate_nats/")]) for job in (0, 1)]
    assert groups == [2, 4]
    cli("architecture=hierarchical", "hardware=cpu", "trainer.precision=bf16-mixed", "trainer.max_steps=5",
        "trainer.max_epochs=-1", *QUIET, f"hydra.run.dir={tmp_path / 'bf16'}")
    val = json.loads((tmp_path / "bf16" / "metrics.json").read_text())["val"]
    assert all(torch.isfinite(torch.tensor(v)) for v in val.values())
    out = tmp_path / "samples"
    proc = cli(f"model={tmp_path / 'bf16'}", "temperature=[0.6,1.0]", f"out={out}", tool="sample")
    assert sorted(p.name for p in out.iterdir()) == ["samples_t0.6.png", "samples_t1.png"], proc.stdout
    bad = cli(f"model={tmp_path / 'bf16'}", "temperature=0", f"out={out}", tool="sample", ok=False)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("error: temperature=0 is invalid")
    flat = cli(f"model={tmp_path / 'bf16'}", "mode=traverse", f"out={out}", tool="sample", ok=False)
    assert flat.returncode == 2 and "needs one flat latent code" in flat.stderr
