"""Evaluate a trained VAE: `python scripts/evaluate.py model=<run dir | artifact dir | .ckpt | Hub id> [key=value ...]`.

Prints a table and writes evaluation.json (next to the model, or `out=`): ELBO, distortion, rate, IWAE log p(x)
with its standard error, bits/dim, SSIM/PSNR/MSE of reconstructions, active units, KL per latent dimension.
"""

import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from vae_lab.cli import CONFIG_DIR
from vae_lab.cli.errors import report_user_errors

SPLITS = ("val", "test")
DEVICES = ("auto", "cpu", "cuda")


def _check(cfg: DictConfig) -> None:
    """One clear ConfigError for the first bad evaluation value."""
    from vae_lab.config import Rule
    from vae_lab.errors import ConfigError

    rules = [
        Rule("split", "choice", choices=lambda: SPLITS),
        Rule("iwae_samples", "int", lo=1),
        Rule("batch_size", "int", lo=1),
        Rule("max_decoded", "int", lo=1),
        Rule("max_examples", "int", lo=1, nullable=True),
        Rule("seed", "int", lo=0),
        Rule("data_seed", "int", lo=0, nullable=True),
        Rule("device", "choice", choices=lambda: DEVICES),
        Rule("progress", "bool"),
    ]
    for rule in rules:
        value = OmegaConf.select(cfg, rule.key)
        if not rule.ok(value):
            raise ConfigError(f"{rule.key}={value!r} is invalid: must be {rule.describe()}")


def data_config(cfg: DictConfig, run_cfg: DictConfig | None, model_ref: str) -> DictConfig:
    """The config build_datamodule needs: the run's data settings with this command's non-null overrides."""
    from vae_lab.data import DATASETS
    from vae_lab.errors import ConfigError, choices_error

    if run_cfg is not None:
        dataset = OmegaConf.to_container(run_cfg.dataset, resolve=True)
        data_dir, seed = run_cfg.paths.data_dir, run_cfg.seed
    else:
        name = cfg.dataset.name
        if name is None:
            raise ConfigError(f"{model_ref} has no run config (.hydra/config.yaml): name its data with dataset.name=...")
        preset = Path(CONFIG_DIR) / "dataset" / f"{name}.yaml"
        if name not in DATASETS or not preset.is_file():
            raise choices_error("dataset.name", name, DATASETS)
        dataset = OmegaConf.to_container(OmegaConf.load(preset))  # the preset's defaults, as train.py would
        data_dir = OmegaConf.load(Path(CONFIG_DIR) / "paths" / "default.yaml").data_dir
        seed = OmegaConf.load(Path(CONFIG_DIR) / "train.yaml").seed
    for key, value in OmegaConf.to_container(cfg.dataset).items():
        if key == "options":
            dataset[key] = {**(dataset.get(key) or {}), **value}
        elif value is not None:
            dataset[key] = value
    return OmegaConf.create({
        "dataset": dataset,
        "paths": {"data_dir": cfg.paths.data_dir if cfg.paths.data_dir is not None else data_dir},
        "schedule": {"batch_size": cfg.batch_size},
        "seed": cfg.data_seed if cfg.data_seed is not None else seed,
    })


def _output_path(cfg: DictConfig, run_dir: Path | None) -> Path:
    if cfg.out is not None:
        out = Path(cfg.out).expanduser()
        return out / "evaluation.json" if out.is_dir() else out
    return (run_dir if run_dir is not None else Path.cwd()) / "evaluation.json"


def _print_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    k = report["iwae_samples"]
    table = Table(title=f"{report['model']}  |  {report['dataset']} {report['split']}, {report['num_examples']} examples")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("ELBO (nats)", f"{report['elbo_nats']:.3f} ± {report['elbo_stderr_nats']:.3f}"),
        ("  distortion -E_q log p(x|z) (nats)", f"{report['distortion_nats']:.3f}"),
        ("  rate KL(q||p) (nats)", f"{report['rate_nats']:.3f}"),
        (f"log p(x), IWAE k={k} (nats)", f"{report['iwae_nats']:.3f} ± {report['iwae_stderr_nats']:.3f}"),
        *([("ELBO bits/dim", f"{report['elbo_bits_per_dim']:.4f}"),
           (f"IWAE k={k} bits/dim", f"{report['iwae_bits_per_dim']:.4f}")] if "elbo_bits_per_dim" in report else
          [("not a normalised log-likelihood", report["log_likelihood"]["note"])]),
        ("SSIM", f"{report['ssim']:.4f}"),
        ("PSNR (dB)", f"{report['psnr_db']:.2f}"),
        ("MSE", f"{report['mse']:.5f}"),
        (f"active units (Cov > {report['active_unit_threshold']})", f"{report['active_units']} / {report['latent_dim']}"),
        ("KL per latent dim (nats)", " ".join(f"{v:.2f}" for v in report["kl_per_dim_nats"])),
    ]
    for name, value in rows:
        table.add_row(name, value)
    Console().print(table)


def evaluate_model(cfg: DictConfig) -> tuple[dict, Path]:
    """Load the model, rebuild its data, evaluate; returns the report and where it was written."""
    import torch

    from vae_lab.build import build_datamodule
    from vae_lab.errors import DataError
    from vae_lab.evaluation import evaluate
    from vae_lab.io import atomic_write_json
    from vae_lab.loading import load_model
    from vae_lab.units import likelihood_status

    started = time.time()
    _check(cfg)
    loaded = load_model(cfg.model)
    datamodule = build_datamodule(data_config(cfg, loaded.cfg, str(cfg.model)))
    datamodule.prepare_data()
    datamodule.setup("test")
    spec, model = datamodule.spec, loaded.model
    if tuple(spec.shape) != tuple(model.in_shape):
        raise DataError(f"the data are {tuple(spec.shape)} images but the model takes {tuple(model.in_shape)}")
    if model.conditional and not spec.num_classes:
        raise DataError("the model is conditional but these data have no labels: evaluate it on labelled data")
    batches = datamodule.val_dataloader() if cfg.split == "val" else datamodule.test_dataloader()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device

    h = datamodule.hparams
    status = likelihood_status(model.likelihood.name, binary_data=spec.binary, dequantize=h.dequantize)
    torch.manual_seed(cfg.seed)
    results = evaluate(model, batches, iwae_samples=cfg.iwae_samples, max_decoded=cfg.max_decoded,
                       max_examples=cfg.max_examples, device=device, progress=cfg.progress, total=len(batches.x),
                       status=status)
    report = {
        "model": str(cfg.model), "source": str(loaded.source), "split": cfg.split, "dataset": h.name,
        "binarize": h.binarize, "data_dir": h.data_dir, "data_seed": h.seed, "seed": cfg.seed, "device": device,
        "likelihood": model.likelihood.name, **results, "wall_time_s": round(time.time() - started, 2),
    }
    out = _output_path(cfg, loaded.run_dir)
    atomic_write_json(out, report)
    return report, out


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="evaluate")
@report_user_errors
def main(cfg: DictConfig) -> None:
    report, out = evaluate_model(cfg)
    _print_table(report)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
