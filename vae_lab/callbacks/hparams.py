"""TensorBoard HPARAMS: each run's overridden hyper-parameters with its final metrics, so sweep jobs line up."""

from pathlib import Path
from typing import Any

import lightning as L
import yaml
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn

PREFIX = "final/"  # final/val/elbo_nats: the best checkpoint's number, apart from the val/ curve logged in training


def overridden_params(run_dir: str | Path) -> dict[str, Any]:
    """key -> value of the command-line overrides Hydra recorded for this job (<run dir>/.hydra/overrides.yaml).

    In a sweep these are the swept values (each job's own) plus what the command fixed for all jobs; a group
    choice reads as its option name (`dataset=mnist` -> dataset: mnist).
    """
    path = Path(run_dir) / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    params = {}
    for override in yaml.safe_load(path.read_text()) or []:
        key, sep, value = str(override).partition("=")
        key = key.lstrip("+~")
        if not sep or key.startswith("hydra.") or key.startswith("hydra/"):
            continue
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            pass
        if isinstance(value, str):
            try:
                value = float(value)  # YAML 1.1 reads 3e-4 as a string; Hydra (and a sweep's axis) as a number
            except ValueError:
                pass
        # TensorBoard's hparams take numbers, strings and booleans only
        params[key] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return params


class HParams(L.Callback):
    """After the final evaluation (validate, then test when the data has a test split) write one HPARAMS entry.

    Validation inside fit is not final: only `trainer.validate` / `trainer.test` after training count (what
    train.py reports in metrics.json). Each metric is also logged as a scalar `final/<name>`, which the HPARAMS
    tab reads.
    """

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.metrics: dict[str, float] = {}
        self.written = False

    def _collect(self, trainer: "L.Trainer", split: str) -> None:
        for name, value in trainer.callback_metrics.items():
            if name.startswith(f"{split}/"):
                self.metrics[PREFIX + name] = float(value)

    def on_validation_end(self, trainer: "L.Trainer", pl_module: "L.LightningModule") -> None:
        if trainer.state.fn != TrainerFn.VALIDATING:
            return
        self._collect(trainer, "val")
        spec = getattr(trainer.datamodule, "spec", None)
        if not getattr(spec, "has_test", False):
            self._write(trainer)

    def on_test_end(self, trainer: "L.Trainer", pl_module: "L.LightningModule") -> None:
        self._collect(trainer, "test")
        self._write(trainer)

    def _write(self, trainer: "L.Trainer") -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if not loggers or not self.metrics:
            return
        params = overridden_params(self.run_dir)
        for logger in loggers:
            logger.log_hyperparams(params, metrics=self.metrics, step=trainer.global_step)
            logger.experiment.flush()
        self.written = True
