"""`python scripts/benchmark.py [key=value ...]`: vae_lab's training throughput against the loop a user writes by hand.

Sides a (train.py), b (hand loop), c (the seeds' pipeline), l (a bare Lightning Trainer), then IWAE log p(x)
evaluation against a straightforward loop; medians over repeats, ratios with the issue's targets, a JSON report.
The library is vae_lab/bench/; every option is in configs/benchmark.yaml (`--help` lists them).
"""

from pathlib import Path

import hydra

from vae_lab.cli import CONFIG_DIR
from vae_lab.cli.errors import hydra_errors_in_one_line, report_user_errors


def run(cfg) -> None:
    from hydra.core.hydra_config import HydraConfig

    from vae_lab.bench.report import table
    from vae_lab.bench.runner import run as run_benchmark

    data = cfg.get("data_throughput")
    if data is not None and data.enabled:  # the data path alone: streamed vs in-memory
        from vae_lab.bench.data_throughput import throughput_table

        print(throughput_table(data.path, data.n, data.size, data.batch_size, list(data.workers)))
        return
    print(table(run_benchmark(cfg, Path(HydraConfig.get().runtime.output_dir))))


def main() -> None:
    app = hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="benchmark")(report_user_errors(run))
    hydra_errors_in_one_line(app)()
