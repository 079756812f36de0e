"""`python scripts/sweep_report.py <sweep dir> [metric=val/elbo_nats] [mode=auto] [axes=[a,b]]`: a sweep's report."""

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from vae_lab.cli import CONFIG_DIR
from vae_lab.cli.errors import hydra_errors_in_one_line, report_user_errors


def positional_sweep_dir(argv: list[str]) -> list[str]:
    """argv with a bare path argument turned into the override `sweep_dir='<path>'` (Hydra takes key=value only)."""
    out = [argv[0]]
    for arg in argv[1:]:
        if "=" in arg or arg.startswith("-") or any(a.startswith("sweep_dir=") for a in argv[1:]):
            out.append(arg)
        else:
            quoted = arg.replace("\\", "\\\\").replace("'", "\\'")
            out.append(f"sweep_dir='{quoted}'")
    return out


@hydra_errors_in_one_line
@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="sweep_report")
@report_user_errors
def _main(cfg: DictConfig) -> None:
    from vae_lab.sweep_report import write_report

    axes = OmegaConf.to_container(cfg.axes) if OmegaConf.is_list(cfg.axes) else cfg.axes
    report = write_report(cfg.sweep_dir, metric=cfg.metric, mode=cfg.mode, axes=axes)
    failed = sum(job.status != "ok" for job in report.jobs)
    print(f"{len(report.jobs)} jobs ({failed} did not finish); swept: {', '.join(report.axes) or 'nothing'}")
    print(report.best_line)
    for path in report.files:
        print(f"wrote {path}")


def main() -> None:
    sys.argv = positional_sweep_dir(sys.argv)
    _main()
