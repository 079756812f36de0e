"""Tiny trained runs that many tests share read-only (the `trained_run` fixture of tests/conftest.py).

Each is a real run directory written by `train()` in-process from a config composed with Hydra's compose API and
saved as Hydra saves it (.hydra/config.yaml), so every tool that reads a run (evaluate, sample, score, encode,
push, from_pretrained) reads it as it reads a user's. Built on first use, once per test session: an xdist worker
that finds another building it waits on the lock and then reads the finished run.
"""

from pathlib import Path

from filelock import FileLock

# name -> the overrides of configs/train.yaml (on top of QUICK)
RUNS = {
    "plain": ["model.latent_dim=3"],
    "plain2": ["model.latent_dim=2"],
    "cond": ["model.latent_dim=5", "model.conditional=true"],
}
QUICK = ["print_config=false", "callbacks=no_images", "logger=none", "trainer.max_epochs=1",
         "trainer.limit_train_batches=5", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


def train_run(run: Path, *overrides: str) -> Path:
    """Train a tiny run into `run` (configs/train.yaml + QUICK + overrides); returns `run`."""
    import torch
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from vae_lab.cli import CONFIG_DIR
    from vae_lab.cli.train import train

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.output_dir={run}", *QUICK, *overrides])
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(cfg)
    finally:
        torch.set_num_threads(threads)
    return run


def shared_run(shared: Path, name: str) -> Path:
    """The run `name` of RUNS under `shared`, trained by whichever process asks first."""
    shared.mkdir(parents=True, exist_ok=True)
    run, done = shared / name, shared / f"{name}.done"
    with FileLock(str(shared / f"{name}.lock")):
        if not done.exists():
            if run.exists():  # a build that died half-way: start it again
                import shutil

                shutil.rmtree(run)
            train_run(run, *RUNS[name])
            done.touch()
    return run
