"""The disentanglement table (scripts/disentanglement_table.py, configs/disentanglement_table.yaml): score trained
runs on their data's ground-truth factors, write <run>/disentanglement.json, and give a markdown table of mean +- std
over the runs of each objective (the table of docs/disentanglement.md)."""

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

COLUMNS = {"mig": "MIG", "dci_disentanglement": "DCI-D", "dci_completeness": "DCI-C",
           "dci_informativeness": "DCI-I", "factor_vae_score": "FactorVAE score", "beta_vae_score": "BetaVAE score",
           "sap": "SAP"}


def score_run(run_dir: Path, seed: int, num_train: int, num_test: int, metrics: tuple[str, ...]) -> dict:
    """The scores of one run's model (its best checkpoint) on its own data's factors."""
    from vae_lab.build import build_datamodule
    from vae_lab.disentanglement import disentanglement_scores
    from vae_lab.loading import load_model

    loaded = load_model(run_dir)
    datamodule = build_datamodule(loaded.cfg)
    grid = datamodule.factor_grid()
    if grid is None:
        return {"skipped": f"{loaded.cfg.dataset.name} has no ground-truth factors"}
    return disentanglement_scores(loaded.model, grid, seed, "cpu", num_train, num_test, metrics)


def markdown(rows: dict[str, list[dict]], metrics: list[str]) -> str:
    """One row per objective: mean +- std (over its runs) of each score."""
    keys = [k for k in COLUMNS if any(k == m or k.startswith(m + "_") for m in metrics)]
    lines = ["| objective | runs | " + " | ".join(COLUMNS[k] for k in keys) + " |",
             "|---" * (len(keys) + 2) + "|"]
    for name, runs in rows.items():
        cells = [f"{np.mean([r[k] for r in runs]):.3f} ± {np.std([r[k] for r in runs]):.3f}" for k in keys]
        lines.append(f"| {name} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def objective_label(run_dir: Path) -> str:
    """The table's row of a run: its objective as its training config names it (beta_vae: elbo with beta != 1)."""
    from omegaconf import OmegaConf

    loss = OmegaConf.load(run_dir / ".hydra" / "config.yaml").loss
    if loss.name != "elbo":
        return loss.name
    return "elbo (vanilla)" if loss.beta == 1 else f"beta_vae (beta={loss.beta:g})"


def check_settings(cfg) -> None:
    """The tool's keys: one line naming a bad value and what it may be (before any run is scored)."""
    from omegaconf import OmegaConf

    from vae_lab.disentanglement import METRICS
    from vae_lab.errors import ConfigError, choices_error
    from vae_lab.rules import Rule, check_rules

    check_rules(cfg, [Rule("seed", "int", lo=0), Rule("num_train", "int", lo=1), Rule("num_test", "int", lo=1)])
    for key in ("runs", "metrics"):
        if not OmegaConf.is_list(cfg[key]) or not cfg[key]:
            raise ConfigError(f"{key}={cfg[key]!r} is invalid: must be a non-empty list, e.g. {key}=[a,b]")
    for metric in cfg.metrics:
        if metric not in METRICS:
            raise choices_error("metrics", metric, METRICS)


def disentanglement_table(cfg) -> str:
    """Score each finished run of cfg.runs (unfinished ones, without metrics.json, are passed over), write its
    disentanglement.json, print its scores; returns the markdown table."""
    check_settings(cfg)
    metrics = tuple(cfg.metrics)
    rows: dict[str, list[dict]] = defaultdict(list)
    for run in (Path(str(r)).expanduser() for r in cfg.runs):
        if not (run / "metrics.json").is_file():
            continue  # unfinished
        scores = score_run(run, int(cfg.seed), int(cfg.num_train), int(cfg.num_test), metrics)
        (run / "disentanglement.json").write_text(json.dumps(scores, indent=2))
        if "skipped" not in scores:
            rows[objective_label(run)].append(scores)
            print(run, {k: round(v, 3) for k, v in scores.items() if isinstance(v, float)}, flush=True)
    return markdown(rows, list(metrics))
