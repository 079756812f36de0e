"""`python scripts/evaluate.py model=<run dir | artifact dir | .ckpt | Hub id> [key=value ...] [dataset.*=...]`."""

import sys

import hydra
from omegaconf import DictConfig

from vae_lab.cli import CONFIG_DIR
from vae_lab.cli.data_args import split_data_overrides
from vae_lab.cli.errors import hydra_errors_in_one_line, report_user_errors

_DATA_OVERRIDES: list[str] = []


def print_table(report: dict) -> None:
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
        ("SSIM", f"{report['ssim']:.4f}" if report["ssim"] is not None else "absent (images under 3x3 pixels)"),
        ("PSNR (dB)", f"{report['psnr_db']:.2f}"),
        ("MSE", f"{report['mse']:.5f}"),
        ("rate estimator", report.get("rate_estimator", "analytic_kl")),
        (f"active units (Cov > {report['active_unit_threshold']})",
         "n/a (see notes)" if report["active_units"] is None else f"{report['active_units']} / {report['latent_dim']}"),
        ("KL per latent dim (nats)", " ".join(f"{v:.2f}" for v in report["kl_per_dim_nats"]) or "n/a (see notes)"),
        *((f"disentanglement {k}", f"{v:.4f}") for k, v in (report.get("disentanglement") or {}).items()
          if isinstance(v, float)),
        *(("note", note) for note in report.get("notes", [])),
        *_quality_rows(report.get("sample_quality")),
    ]
    for name, value in rows:
        table.add_row(name, value)
    Console().print(table)


def _quality_rows(q: dict | None) -> list[tuple[str, str]]:
    if not q:
        return []
    return [("FID samples / reconstructions", f"{q['fid_samples']:.3f} / {q['fid_reconstructions']:.3f}"),
            ("FID floor (real halves)", f"{q['fid_real_halves']:.3f}"),
            ("precision / recall, samples", f"{q['precision_samples']:.4f} / {q['recall_samples']:.4f}"),
            ("precision / recall, reconstructions",
             f"{q['precision_reconstructions']:.4f} / {q['recall_reconstructions']:.4f}"),
            ("FID features", q["features"])]


@hydra_errors_in_one_line
@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="evaluate")
@report_user_errors
def _main(cfg: DictConfig) -> None:
    from vae_lab.evaluation import evaluate_model

    report, out = evaluate_model(cfg, _DATA_OVERRIDES)
    print_table(report)
    print(f"wrote {out}")


def main() -> None:
    from vae_lab.startup import check_memory_limit

    check_memory_limit()  # before torch is imported: under a small ulimit -v it dies without a Python error
    sys.argv, data = split_data_overrides(sys.argv)
    _DATA_OVERRIDES[:] = data
    _main()
