"""The benchmark's parent process: check the options, prepare the data once, launch every side, summarise.

Every side runs in its own process, one after the other, `repeats` times (interleaved, so a change in machine load
hits every side alike), on the same data, VAE (built by vae_lab from one composed config and seed: identical
weights and FLOPs), batch size, optimizer and number of steps. Side a is `python train.py` with a timing callback;
the others are `python -m vae_lab.bench.worker SPEC.json`. See configs/benchmark.yaml for every option.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from vae_lab.bench.clock import LAUNCH_ENV
from vae_lab.bench.report import summary
from vae_lab.bench.sides import HARDWARE_OF_DEVICE, PRECISIONS, SEED_DATASETS, SIDES

ROOT = Path(__file__).resolve().parents[2]  # the checkout: train.py (side a) lives here


# configs/architecture options the sides can build from nothing: the flat nets and the model families (the VQ-VAE's
# stage-2 prior needs a trained stage 1, `model.prior_of`, so it is not one of them)
BENCH_ARCHS = ("mlp", "conv", "conv_deep", "resnet", "hierarchical", "vqvae")


def check(cfg) -> None:
    """Every option of configs/benchmark.yaml, checked before anything is launched: one clear line per mistake."""
    from omegaconf import OmegaConf

    from vae_lab.errors import ConfigError, choices_error

    for key, value, valid in (
        ("device", cfg.device, HARDWARE_OF_DEVICE),
        ("precision", cfg.precision, PRECISIONS),
    ):
        if value not in valid:
            raise choices_error(key, value, valid)
    if not cfg.synthetic.enabled and cfg.dataset.name not in SEED_DATASETS:
        raise ConfigError(f"dataset={cfg.dataset.name} has no torchvision class for the seeds' pipeline; "
                          f"valid choices: {', '.join(sorted(SEED_DATASETS))} (or synthetic.enabled=true)")
    for side in cfg.sides:
        if side not in SIDES:
            raise choices_error("sides", side, SIDES)
    if cfg.evaluation.families != "auto" and not OmegaConf.is_list(cfg.evaluation.families):
        raise ConfigError(f"evaluation.families={cfg.evaluation.families} is invalid: must be auto or a list of "
                          "train.py overrides, one model family each (e.g. [prior=vamp, posterior=iaf])")
    positive = ["batch_size", "steps_per_call", "steps", "warmup_steps", "repeats", "evaluation.iwae_samples",
                "evaluation.num_images", "evaluation.batch_size", "evaluation.max_decoded", "evaluation.family_images"]
    for key in positive:
        value = OmegaConf.select(cfg, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{key}={value!r} is invalid: must be an integer >= 1")
    if "s" in cfg.sides:
        _check_whole_call("s", cfg.steps_per_call, cfg.steps, "(steps_per_call)")
    if cfg.arch not in BENCH_ARCHS:
        raise choices_error("arch", cfg.arch, BENCH_ARCHS)
    if cfg.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("device=cuda but torch.cuda.is_available() is false here; use device=cpu")


def _check_whole_call(side: str, n: int, steps: int, source: str) -> None:
    """Sides a and s time whole calls (their clock starts and stops at call ends): the timed window holds one."""
    from vae_lab.errors import ConfigError

    if steps < n:
        raise ConfigError(f"steps={steps} is invalid for side {side}, which takes {n} optimizer steps per call "
                          f"{source}: steps must be at least {n} (or leave {side} out of sides)")


def _prepare_data(cfg, scratch: Path) -> dict:
    """Data every side reads: the real archives linked into a scratch dir and decoded once, or a synthetic array."""
    import shutil

    import numpy as np

    from vae_lab.data.registry import load_dataset
    from vae_lab.errors import DataError

    if cfg.synthetic.enabled:
        channels, height, width = cfg.synthetic.shape
        rng = np.random.default_rng(cfg.seed)
        x = rng.integers(0, 256, (cfg.synthetic.num_examples, height, width, channels), dtype=np.uint8)
        path = scratch / "synthetic.npz"
        scratch.mkdir(parents=True, exist_ok=True)
        np.savez(path, x=x[..., 0] if channels == 1 else x, y=rng.integers(0, 10, len(x)))
        name, options = "array_file", {"path": str(path)}
    else:
        source = Path(cfg.paths.data_dir).expanduser().resolve()
        if not source.is_dir():
            raise DataError(f"paths.data_dir={cfg.paths.data_dir} is not a directory (of {cfg.dataset.name} files)")
        # torchvision extracts next to its archives: link them into a scratch dir so data_dir is never written.
        shutil.copytree(source, scratch, copy_function=os.symlink)
        name, options = cfg.dataset.name, {}
    raw = load_dataset(name, scratch, True, **options)  # extracts/decodes once here, so no side pays for it
    return {
        "name": name,
        "root": str(scratch),
        "options": options,
        "seed_class": None if cfg.synthetic.enabled else SEED_DATASETS[name],
        "shape": list(raw.train_x.shape[1:]),
        "num_classes": len(raw.class_names) if raw.class_names else int(raw.train_y.max()) + 1,
        "train_examples": len(raw.train_x),
    }


def _train_overrides(cfg, data: dict) -> list[str]:
    """train.py overrides shared by side a and the composed config of sides b and c."""
    overrides = [
        f"dataset={data['name']}",
        f"architecture={cfg.arch}",
        f"schedule.batch_size={cfg.batch_size}",
        f"seed={cfg.seed}",
        f"hardware={HARDWARE_OF_DEVICE[cfg.device]}",
        f"trainer.precision={cfg.precision}",
        f"paths.data_dir={data['root']}",
    ]
    overrides += [f"dataset.options.{key}={value}" for key, value in data["options"].items()]
    return overrides + list(cfg.after_training) + list(cfg.train_overrides)


def _launch(cmd: list[str], log: Path, report: Path) -> dict:
    """Run one child (its output to `log`) and return the report it wrote."""
    with open(log, "w") as out:
        env = {**os.environ, LAUNCH_ENV: repr(time.time())}
        proc = subprocess.run(cmd, cwd=ROOT if (ROOT / "pyproject.toml").is_file() else None, env=env, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0 or not report.is_file():
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-25:])
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed (exit {proc.returncode}); end of {log}:\n{tail}")
    result = json.loads(report.read_text())
    result["log"] = str(log)
    return result


def _model_spec(train_cfg) -> dict:
    """The composed model, prior and posterior configs: what every side needs to build side a's VAE."""
    from omegaconf import OmegaConf

    return {key: OmegaConf.to_container(train_cfg[key], resolve=True) for key in ("model", "prior", "posterior")}


def _families(cfg, train_cfg) -> list[str]:
    """evaluation.families; `auto`: every prior and posterior of vae_lab's registries other than the run's own."""
    if cfg.evaluation.families != "auto":
        return list(cfg.evaluation.families)
    from vae_lab.distributions import POSTERIORS, PRIORS

    return [f"{group}={name}" for group, names in (("prior", PRIORS), ("posterior", POSTERIORS))
            for name in names if name != train_cfg[group].name]


def _run_side(side: str, repeat: int, cfg, base_spec: dict, overrides: list[str], work: Path,
              key: str | None = None) -> dict:
    """One child of `side` (key: its name in the report, a model family's evaluation rows: "eval_loop prior=vamp")."""
    stem = "".join(c if c.isalnum() or c in "_-" else "_" for c in (key or side))
    report, log = work / f"{stem}_r{repeat}.json", work / f"{stem}_r{repeat}.log"
    if side in ("a", "s"):  # vae_lab's train.py at its defaults (a) and with steps_per_call set (s)
        run_dir = work / f"{side}_r{repeat}"
        calls = [f"schedule.steps_per_call={cfg.steps_per_call}"] if side == "s" else []
        total = cfg.warmup_steps + cfg.steps
        cmd = [sys.executable, "-m", "vae_lab.cli.train", *overrides, *calls,
               f"hydra.run.dir={run_dir}", f"trainer.max_steps={total}", "trainer.max_epochs=-1",
               "+callbacks.benchmark_timer._target_=vae_lab.bench.clock.step_timer",
               f"+callbacks.benchmark_timer.report={report}",
               f"+callbacks.benchmark_timer.warmup={cfg.warmup_steps}",
               f"+callbacks.benchmark_timer.steps={cfg.steps}",
               f"+callbacks.benchmark_timer.device={cfg.device}",
               f"+callbacks.benchmark_timer.side={side}"]
        result = _launch(cmd, log, report)
        result["output_has_progress_bar"] = "Epoch 0" in log.read_text(errors="replace")
        return result
    spec_path = work / f"{side}_r{repeat}.spec.json"
    spec_path.write_text(json.dumps({**base_spec, "side": side, "report": str(report)}))
    return _launch([sys.executable, "-m", "vae_lab.bench.worker", str(spec_path)], log, report)


def run(cfg, work: Path) -> dict:
    """Prepare the data, run every side `repeats` times (interleaved), write the summary to cfg.out and return it.

    Call inside a Hydra app (scripts/benchmark.py): the sides' model is composed from configs/train.yaml.
    """
    from hydra import compose
    from omegaconf import OmegaConf

    from vae_lab.config import steps_per_call
    from vae_lab.io import atomic_write_json
    from vae_lab.schedules import optimizer_options

    check(cfg)
    if "a" in cfg.sides:  # its steps per call (auto) as the options set it, before any data is prepared
        n = steps_per_call(compose("train", overrides=[*cfg.after_training, *cfg.train_overrides]))
        _check_whole_call("a", n, cfg.steps, "(train.py's schedule.steps_per_call)")
    work.mkdir(parents=True, exist_ok=True)
    load_before = [round(v, 2) for v in os.getloadavg()]
    data = _prepare_data(cfg, work / "data")
    overrides = _train_overrides(cfg, data)
    train_cfg = compose("train", overrides=overrides)  # what side a composes, for the models of b and c
    base_spec = {
        "data": data,
        **_model_spec(train_cfg),
        # what training does to each batch (binarise, dequantise): the loops do the same work as side a
        "pixels": {key: str(train_cfg.dataset.get(key, "none")) for key in ("binarize", "dequantize")},
        "loss": OmegaConf.to_container(train_cfg.loss, resolve=True),
        # `fused: auto` resolved as train.py resolves it: the loops build the same torch optimizer
        "optimizer": optimizer_options(OmegaConf.to_container(train_cfg.schedule.optimizer, resolve=True),
                                       cfg.precision),
        "seed": cfg.seed,
        "batch_size": cfg.batch_size,
        "steps": cfg.steps,
        "warmup": cfg.warmup_steps,
        "device": cfg.device,
        "precision": cfg.precision,
        "evaluation": OmegaConf.to_container(cfg.evaluation, resolve=True),
    }
    order = [*cfg.sides, "imports"]
    if cfg.evaluation.enabled:
        order += ["eval_vae_lab", "eval_loop"]
    jobs = [(side, side, base_spec) for side in order]  # (name in the report, side, spec)
    for family in _families(cfg, train_cfg) if cfg.evaluation.enabled else []:  # "prior=vamp": its own model
        spec = {**base_spec, **_model_spec(compose("train", overrides=[*overrides, *family.split()]))}
        spec["evaluation"] = {**spec["evaluation"], "num_images": cfg.evaluation.family_images}
        jobs += [(f"{side} {family}", side, spec) for side in ("eval_vae_lab", "eval_loop")]
    runs: dict[str, list[dict]] = {key: [] for key, _, _ in jobs}
    for repeat in range(cfg.repeats):
        for key, side, spec in jobs:
            report = _run_side(side, repeat, cfg, spec, overrides, work, key)
            runs[key].append(report)
            ips = report.get("images_per_s")
            shown = f"{ips:.1f} images/s" if ips is not None else f"{report['import_s']:.2f} s to import"
            print(f"repeat {repeat + 1}/{cfg.repeats} side {key}: {shown}", flush=True)

    import torch

    plain = OmegaConf.to_container(cfg, resolve=True)
    result = {
        "settings": {
            **{k: plain[k] for k in ("arch", "batch_size", "steps", "warmup_steps", "device", "precision", "repeats",
                                     "seed", "train_overrides")},
            "dataset": "synthetic" if cfg.synthetic.enabled else cfg.dataset.name,
            "data_shape": data["shape"],
            "side_a_overrides": overrides,
            "evaluation": base_spec["evaluation"],
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
        },
        "load_before": load_before,
        "load_after": [round(v, 2) for v in os.getloadavg()],
        "summary": summary(cfg, runs),
        "runs": runs,
        "out": str(Path(cfg.out).resolve()),
    }
    atomic_write_json(cfg.out, result)
    return result
