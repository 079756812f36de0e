"""Short runs whose numbers were pinned before the model-family interface (tests/fixtures/pinned_runs.json):
training curves, metrics.json and evaluate's ELBO / IWAE stay bit-identical for today's VAE family.

train() and evaluate_model() run in-process on composed configs: the files they write (metrics.csv, metrics.json and
every number of the evaluation) were checked to be byte-for-byte those of `python train.py` + `scripts/evaluate.py`
with the same overrides, in either order and after another run in the same process (the seeds are set by train and
evaluate themselves); that the command lines reach these functions is tests/cli's business."""

import csv
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from pinned import PINNED, same_cpu_as_pinned

EXACT = same_cpu_as_pinned()
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _run(compose, tmp_path: Path, name: str, overrides: list[str]) -> Path:
    """train.py's run of `overrides` (csv logger, 30 steps) and evaluate.py's IWAE-20 on 64 validation examples."""
    from vae_lab.cli.train import train
    from vae_lab.evaluation import evaluate_model

    run = tmp_path / name
    cfg = compose(f"paths.output_dir={run}", "trainer.max_steps=30", "trainer.log_every_n_steps=5", "logger=csv",
                  "callbacks=no_images", "trainer.enable_progress_bar=false", "print_config=false",
                  f"paths.data_dir={tmp_path / 'data'}", *overrides)
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")  # as Hydra saves it: evaluate reads the run's data from it
    train(cfg)
    evaluate_model(compose(f"model={run}", "iwae_samples=20", "max_examples=64", "progress=false", "split=val",
                           f"out={run / 'eval.json'}", config="evaluate"))
    return run


def _curves(run: Path) -> dict:
    curves: dict = {}
    for row in csv.DictReader(open(run / "csv" / "metrics.csv")):
        for key, value in row.items():
            if value not in ("", None) and key not in ("epoch", "step"):
                curves.setdefault(key, []).append([int(row["step"]), float(value)])
    return curves


def _same(actual, expected, where: str) -> None:
    if EXACT:
        assert actual == expected, where
    else:
        flat = lambda v: [float(u) for w in v for u in (w if isinstance(w, list) else [w])] if isinstance(v, list) \
            else v  # noqa: E731  (curves are [step, value] pairs; approx compares flat sequences)
        assert flat(actual) == pytest.approx(flat(expected), rel=1e-5, abs=1e-6), where


@pytest.mark.parametrize("name", [pytest.param("mlp_elbo"), pytest.param("conv_iaf_vamp_iwae"),
                                  pytest.param("mlp_freebits", marks=pytest.mark.slow),
                                  pytest.param("mlp_mog_cond", marks=pytest.mark.slow)])
def test_short_run_numbers_are_the_pinned_ones(compose, tmp_path, name):
    pinned = PINNED["runs"][name]
    run = _run(compose, tmp_path, name, pinned["overrides"])
    metrics = json.loads((run / "metrics.json").read_text())
    _same(metrics["val"], pinned["val"], f"{name}: metrics.json val")
    curves = _curves(run)
    assert sorted(curves) == sorted(pinned["curves"]), name
    for key, values in pinned["curves"].items():
        _same(curves[key], values, f"{name}: curve {key}")
    evaluation = json.loads((run / "eval.json").read_text())
    for key, value in pinned["evaluation"].items():
        _same(evaluation[key], value, f"{name}: evaluation {key}")
