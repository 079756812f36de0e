"""`python train.py [overrides]`: compose the config, build everything, fit, evaluate, write metrics.json."""

import gc
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from vae_lab.cli import CONFIG_DIR
from vae_lab.cli.errors import hydra_errors_in_one_line, one_line_thread_errors, printable, report_user_errors
from vae_lab.cli.hydra_callbacks import multirun_job
from vae_lab.cli.interrupts import Interrupted, Phases


def _final_metrics(cfg: DictConfig, trainer, module, datamodule, phases: Phases) -> dict:
    """Validation (and test, when the dataset has a test split) metrics of the best checkpoint, if any, and the
    disentanglement scores when the data has ground-truth factors (cfg.disentanglement)."""
    from vae_lab.run_dir import relative_name

    ckpt = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
    results = {"best_checkpoint": relative_name(Path(cfg.paths.output_dir), ckpt),  # the run's own, relocatable
               "rate_estimator": module.model.rate_estimator}
    phases.enter("validation")
    results["val"] = trainer.validate(module, datamodule=datamodule, ckpt_path=ckpt, verbose=False)[0]
    if datamodule.spec.has_test:
        phases.enter("test")
        results["test"] = trainer.test(module, datamodule=datamodule, ckpt_path=ckpt, verbose=False)[0]
    scores = cfg.get("disentanglement")
    if getattr(datamodule.spec, "factor_names", None) and scores and scores.enabled and not trainer.fast_dev_run \
            and trainer.is_global_zero:
        from vae_lab.evaluation import disentanglement_report

        phases.enter("disentanglement")
        results["disentanglement"] = disentanglement_report(
            module.model, datamodule, seed=int(cfg.seed), device=module.device, num_train=int(scores.num_train),
            num_test=int(scores.num_test))
        _mi_heatmap(results["disentanglement"], Path(cfg.paths.output_dir))
    return results


def _mi_heatmap(scores: dict, run_dir: Path) -> None:
    """<run dir>/images/mi_heatmap.png of the latent-factor mutual information (a picture: a failure only warns)."""
    if "mi_matrix" not in scores:
        return
    import numpy as np

    from vae_lab import plots
    from vae_lab.callbacks.images import guarded

    scores["mi_matrix"] = np.asarray(scores["mi_matrix"], dtype=float).tolist()  # plain JSON in metrics.json
    guarded("mi_heatmap", lambda: plots.save_png(plots.mi_heatmap(scores["mi_matrix"], scores["factor_names"]),
                                                 run_dir / "images" / "mi_heatmap.png"))


def final_line(val: dict, status) -> str:
    """'Final validation ELBO: ... nats/example' with bits/dim, or saying why it is not a log-likelihood."""
    line = f"Final validation ELBO: {val['val/elbo_nats']:.2f} nats/example"
    if status.normalised:
        return f"{line} ({val['val/bits_per_dim']:.4f} bits/dim)"
    return f"{line}, not a normalised log-likelihood ({status.note})"


@contextmanager
def setup_frozen_for_gc() -> Iterator[None]:
    """The objects that exist before training (imports, config, data, model: ~500k in an MLP run) moved out of the
    cyclic garbage collector's sight while the body runs (`gc.freeze`), then given back.

    A full collection otherwise walks all of them: ~230 ms once every ~1,000 MLP steps on the dev CPU (~0.2 ms per
    step on average, and a visible stall), ~17 ms with them frozen. Reference counting still frees frozen objects;
    only cycles among them wait until the body ends.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def train(cfg: DictConfig) -> dict:
    """Train one model as `cfg` says; returns (and writes to <run dir>/metrics.json) the final metrics."""
    started = time.time()
    import lightning as L
    from lightning.pytorch.utilities import rank_zero_only

    from vae_lab import publish
    from vae_lab.build import (build_datamodule, build_module, build_trainer, hub_callbacks, reliability_callbacks,
                               run_model_kwargs)
    from vae_lab.callbacks.ema import weights_in_use
    from vae_lab.config import validate
    from vae_lab.io import atomic_write_json
    from vae_lab.loading import init_weights
    from vae_lab.resume import prepare_resume
    from vae_lab.run_dir import METRICS_NAME, record_run

    validate(cfg)
    publish.check_hub_config(cfg)
    one_line_thread_errors()  # TensorBoard's writer thread on a full disk
    run_dir = Path(cfg.paths.output_dir)
    if cfg.get("print_config"):
        rank_zero_only(print)(OmegaConf.to_yaml(cfg, resolve=True))
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    stage1 = None
    if cfg.get("prior_of"):  # stage 2 of a VQ-VAE: this run's model is a prior over that run's codes
        from vae_lab.vq_stage2 import adopt_stage1

        stage1 = adopt_stage1(cfg)
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    model = run_model_kwargs(cfg, datamodule.spec)  # once per run: the resume check and the module share them
    ckpt_path = prepare_resume(cfg, model)  # resume= / ckpt_path=, checked against the model
    module = build_module(cfg, datamodule.spec, model)
    if stage1 is not None:
        from vae_lab.vq_stage2 import copy_stage1

        copy_stage1(module.model, stage1)
        rank_zero_only(print)(f"prior_of: stage 1 from {cfg.prior_of} (frozen)")
    if cfg.get("init_from"):
        rank_zero_only(print)(f"init_from: weights of {init_weights(module.model, cfg.init_from)}")
    trainer = build_trainer(cfg, extra_callbacks=hub_callbacks(cfg) + reliability_callbacks(cfg), module=module)
    phases = Phases()
    trainer.callbacks.insert(0, phases)  # first: its on_train_end (the test hook) runs before the pictures
    phases.install()
    if trainer.is_global_zero:
        record_run(run_dir, ckpt_path)  # run_info.json (a resume appends to it)
        print(printable(f"data: {datamodule.describe()}"))
        if datamodule.summary:
            print("\n".join(printable(line) for line in datamodule.summary.splitlines()))

    with setup_frozen_for_gc():
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    try:
        if phases.received or trainer.received_sigterm:  # at the end of fit: no step left for Lightning to stop at
            raise Interrupted(phases.received or signal.SIGTERM, "pictures")
        metrics = _final_metrics(cfg, trainer, module, datamodule, phases)
        metrics.update(global_step=trainer.global_step, epochs=trainer.current_epoch, weights=weights_in_use(trainer),
                       wall_time_s=round(time.time() - started, 2), run_dir=str(run_dir.resolve()),
                       log_likelihood=module.status.as_json())
        if trainer.is_global_zero:
            phases.enter("metrics")
            atomic_write_json(run_dir / METRICS_NAME, metrics)
            print(f"\nRun directory: {run_dir.resolve()}")
            print(f"{final_line(metrics['val'], module.status)}  |  tensorboard --logdir {run_dir}")
            publish.finish_run(cfg, run_dir, module.model, on_phase=phases.enter)  # <run dir>/artifact (+ push)
    except Interrupted as stop:
        _stopped(stop, cfg, run_dir, trainer.global_step)
    return metrics


def _stopped(stop: Interrupted, cfg: DictConfig, run_dir: Path, step: int) -> None:
    """A signal after training: one line saying what is kept and what resume= redoes; exit 128 + the signal."""
    import sys

    from vae_lab import publish

    for signum in (signal.SIGTERM, signal.SIGINT):  # a second signal while exiting: ignored, the line still prints
        signal.signal(signum, signal.SIG_IGN)
    if stop.phase == "push":
        hub = cfg.hub
        retry = publish.retry_command(run_dir, hub.repo_id, private=bool(hub.private), revision=hub.revision,
                                      commit_message=hub.commit_message)
        after = f"metrics.json and {run_dir.resolve() / 'artifact'} are complete; push them with: {retry}"
    else:
        after = (f"training is complete (step {step}, checkpoints kept); resume={run_dir.resolve()} redoes the final "
                 "validation and test, metrics.json and the artifact (end-of-training pictures are not redrawn)")
    print(printable(f"{stop}: {after}"), file=sys.stderr, flush=True)
    sys.exit(stop.code)


@hydra_errors_in_one_line  # Hydra's own errors (unknown key/option) as one line too
@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
@report_user_errors
@multirun_job  # in a sweep: refuse relaunching DDP; a failed job writes failure.json and the others go on
def _main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    return metrics["val"].get("val/elbo_nats")


def main() -> float | None:
    """The `train.py` / `vae-lab-train` entry: Ctrl-C before training is one line and exit 130 (vae_lab.startup)."""
    from vae_lab.startup import check_memory_limit, exit_on_ctrl_c

    exit_on_ctrl_c()
    check_memory_limit()
    return _main()


if __name__ == "__main__":
    main()
