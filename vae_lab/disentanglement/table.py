"""`python -m vae_lab.disentanglement.table RUN_DIR... [--num-train N --num-test M --metrics mig,dci,...]`:
score trained runs on their data's ground-truth factors, write <run>/disentanglement.json, print a markdown table
of mean +- std over the runs of each objective (the table of docs/disentanglement.md)."""

import argparse
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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-train", type=int, default=10000)
    parser.add_argument("--num-test", type=int, default=5000)
    parser.add_argument("--metrics", default="mig,dci,factor_vae_score")
    args = parser.parse_args(argv)
    metrics = tuple(args.metrics.split(","))
    rows: dict[str, list[dict]] = defaultdict(list)
    for run in args.runs:
        if not (run / "metrics.json").is_file():
            continue  # unfinished
        scores = score_run(run, args.seed, args.num_train, args.num_test, metrics)
        (run / "disentanglement.json").write_text(json.dumps(scores, indent=2))
        if "skipped" not in scores:
            from omegaconf import OmegaConf

            loss = OmegaConf.load(run / ".hydra" / "config.yaml").loss
            label = "elbo (vanilla)" if loss.name == "elbo" and loss.beta == 1 else (
                f"beta_vae (beta={loss.beta:g})" if loss.name == "elbo" else loss.name)
            rows[label].append(scores)
            print(run, {k: round(v, 3) for k, v in scores.items() if isinstance(v, float)}, flush=True)
    print(markdown(rows, list(metrics)))


if __name__ == "__main__":
    main()
