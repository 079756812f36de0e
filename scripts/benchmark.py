"""`python scripts/benchmark.py [key=value ...]`: vae_lab's training throughput against the loop a user writes by hand.

Every side runs in its own process, one after the other, `repeats` times (interleaved, so a change in machine load
hits every side alike), on the same data, VAE (built by vae_lab from one composed config and seed: identical
weights and FLOPs), batch size, optimizer and number of steps:

  a        vae_lab as a user runs it: `python train.py ...` (default callbacks, TensorBoard, progress bar); a timing
           callback is the only addition
  b        a hand-written loop on a pre-loaded float tensor: the floor
  l        b's loop body as a LightningModule's training_step, run by a bare lightning.Trainer (no logger, progress
           bar, checkpoint or summary) on b's batches: what the Trainer alone costs, so a/l is vae_lab's own share
  c        the seeds' pipeline (seed 002): torchvision dataset -> PIL -> ToTensor + Normalize -> DataLoader
  imports  `import torch, lightning, torchvision` and nothing else: the floor for start-up time

then IWAE log p(x) evaluation: vae_lab's evaluation against a straightforward loop. Prints images/s, the ratios
a/b and a/c, peak resident memory and time from process start to first optimizer step (medians over repeats), with
the load average, and writes the same as JSON to `out`. Each side also reports its median step time, which a
passing stall of the machine (another tenant, CPU steal) hardly moves; ratios of those are printed beside. See
configs/benchmark.yaml for every option.

Only the standard library is imported at the top: the children import what their side needs and nothing more.
"""

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_ENV = "VAE_LAB_BENCH_LAUNCH"  # wall-clock time at which the parent launched this process
SIDES = ("a", "b", "c", "l")
DEVICES = {"cpu": "cpu", "cuda": "gpu"}  # benchmark device -> configs/hardware option of side a
PRECISIONS = {"32-true": None, "bf16-mixed": "bfloat16"}  # Lightning precision -> autocast dtype of the loops
# The seeds' side reads real data through torchvision's own class (a synthetic array goes through PIL alike).
SEED_DATASETS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "CIFAR10"}


# ---------------------------------------------------------------- timing (every side)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _since_launch() -> float:
    return time.time() - float(os.environ.get(LAUNCH_ENV, time.time()))


def _sync(device: str) -> None:
    """Wait for queued GPU work before a clock reads: twice per timed run, never per step."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


class StepClock:
    """Counts optimizer steps: time from launch to the first one, then images/s over `steps` steps after `warmup`.

    Wall time is what the issue's targets use; the process's CPU time is kept too (see `report`).
    """

    def __init__(self, warmup: int, steps: int, device: str = "cpu"):
        self.warmup, self.steps, self.device = warmup, steps, device
        self.count = 0
        self.images = 0
        self.first_step_s: float | None = None
        self.started: tuple[float, float] | None = None  # (wall, process CPU) when the clock started
        self.elapsed: tuple[float, float] | None = None  # (wall, CPU) seconds of the timed steps
        self.paused = (0.0, 0.0)
        self._pause_at: tuple[float, float] | None = None
        self.step_s: list[float] = []  # each timed step's wall time (a step spanning a pause is left out)
        self._last: float | None = None

    @property
    def done(self) -> bool:
        return self.elapsed is not None

    def _sync(self) -> None:
        _sync(self.device)

    @staticmethod
    def _now() -> tuple[float, float]:
        return time.perf_counter(), time.process_time()

    def stepped(self, num_images: int) -> None:
        """Call after every optimizer step with the batch's number of images."""
        self.count += 1
        if self.count == 1:
            self.first_step_s = _since_launch()
        if self.count > self.warmup and not self.done:
            self.images += num_images
        if self.count == self.warmup:
            self._sync()
            self.started = self._now()
            self._last = self.started[0]
        elif self.warmup < self.count <= self.warmup + self.steps:
            # Per-step times on the CPU only, which runs synchronously: on a GPU they would need a sync per step.
            now = time.perf_counter()
            if self._last is not None and self.device == "cpu":
                self.step_s.append(now - self._last)
            self._last = now
            if self.count == self.warmup + self.steps:
                self._sync()
                self.elapsed = tuple(now - start - paused for now, start, paused in zip(self._now(), self.started,
                                                                                         self.paused))

    def pause(self) -> None:
        """Stop counting time (side a's validation: work the other sides do not do)."""
        if self.started is not None and not self.done:
            self._pause_at = self._now()
            self._last = None

    def resume(self) -> None:
        if self._pause_at is not None:
            self.paused = tuple(p + now - at for p, now, at in zip(self.paused, self._now(), self._pause_at))
            self._pause_at = None

    def report(self, **extra) -> dict:
        if not self.done:
            raise RuntimeError(f"only {self.count} of {self.warmup + self.steps} optimizer steps ran")
        import torch

        wall, cpu = self.elapsed
        return {
            "images_per_s": self.images / wall,
            # per CPU second of the whole process: on a machine shared with other jobs, less sensitive to their load
            "images_per_cpu_s": self.images / cpu,
            "first_step_s": self.first_step_s,
            "peak_rss_mb": _peak_rss_mb(),
            "timed_steps": self.steps,
            "timed_images": self.images,
            "timed_s": wall,
            "median_step_s": statistics.median(self.step_s) if self.step_s else None,
            "torch_threads": torch.get_num_threads(),
            **extra,
        }


def _write(path: str, obj: dict) -> None:
    from vae_lab.io import atomic_write_json

    atomic_write_json(path, obj)


def _weights(model) -> dict:
    """A fingerprint of the initial weights: every side must start from the same model."""
    params = list(model.parameters())
    return {
        "num_params": sum(p.numel() for p in params),
        "weights_checksum": float(sum(p.detach().double().sum().item() for p in params)),
    }


def step_timer(report: str, warmup: int, steps: int, device: str = "cpu"):
    """Side a's timing callback (Hydra `_target_` of `+callbacks.benchmark_timer`); Lightning imported lazily."""
    from lightning.pytorch import Callback

    class StepTimer(Callback):
        def __init__(self):
            self.clock = StepClock(warmup, steps, device)
            self.extra: dict = {}

        def on_fit_start(self, trainer, pl_module):
            self.extra = _weights(pl_module.model)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.clock.stepped(len(batch[0]))

        def on_validation_start(self, trainer, pl_module):
            self.clock.pause()

        def on_validation_end(self, trainer, pl_module):
            self.clock.resume()

        def on_train_end(self, trainer, pl_module):
            _write(report, self.clock.report(side="a", **self.extra))

    return StepTimer()


# ---------------------------------------------------------------- sides b and c (hand-written loops)


def _no_lightning_globals() -> None:
    """Undo the one process-wide setting Lightning makes at import: a hand-written script never imports it.

    The loops import vae_lab's data and model code, which imports Lightning; Lightning sets
    PYTORCH_NVML_BASED_CUDA_CHECK=1, which makes Adam's per-step torch.cuda.is_available() reload NVML.
    """
    os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)


def _locate(target: str):
    """`torch.optim.Adam` -> the class, without importing Hydra in the hand-written sides."""
    import importlib

    module, name = target.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def _raw_data(spec: dict):
    """vae_lab's decoded uint8 dataset (N, C, H, W) for the tensor side and the evaluation."""
    from vae_lab.data.registry import load_dataset

    data = spec["data"]
    return load_dataset(data["name"], data["root"], True, **data["options"])


def _model(spec: dict, shape, num_classes: int):
    """The VAE exactly as side a builds it: same config, same seed right before construction."""
    import torch
    from omegaconf import OmegaConf

    from vae_lab.build import model_kwargs
    from vae_lab.data import DataSpec
    from vae_lab.model import VAE

    torch.manual_seed(spec["seed"])
    data_spec = DataSpec(shape=tuple(shape), num_classes=num_classes or None, class_names=None, has_test=False)
    model = VAE(**model_kwargs(OmegaConf.create({"model": spec["model"]}), data_spec))
    return model.to(spec["device"])


def _num_classes(raw) -> int:
    if raw.class_names is not None:
        return len(raw.class_names)
    return int(raw.train_y.max()) + 1 if raw.train_y is not None else 0


class _Trainee:
    """Model, objective and optimizer of a hand-written loop: one call = one optimizer step."""

    def __init__(self, spec: dict, shape, num_classes: int):
        import torch

        from vae_lab.objectives import build_objective

        self.model = _model(spec, shape, num_classes)
        _no_lightning_globals()
        self.weights = _weights(self.model)
        self.model.train()
        loss = dict(spec["loss"])
        self.num_samples = int(loss.pop("num_samples", 1))
        self.objective = build_objective(**loss)
        optimizer = dict(spec["optimizer"])
        self.optimizer = _locate(optimizer.pop("_target_"))(self.model.parameters(), **optimizer)
        dtype = PRECISIONS[spec["precision"]]
        self.autocast = torch.autocast(
            torch.device(spec["device"]).type, dtype=getattr(torch, dtype or "float32"), enabled=dtype is not None
        )

    def loss(self, x, y):
        """The same computation as VAEModule's step: encode, K reparameterised samples, decode, objective."""
        model = self.model
        y = y if model.conditional else None
        with self.autocast:  # forward only, as Lightning's mixed precision does
            q_z = model.encode(x, y)
            z = q_z.rsample((self.num_samples,))  # (K, B, D)
            p_x = model.decode(z, y)
            return self.objective(q_z, model.prior(), z, p_x, x).loss

    def __call__(self, x, y):
        loss = self.loss(x, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss

    def flops_per_image(self, x, y) -> float:
        """FLOPs of one forward + backward pass, per image (torch's FLOP counter: matmuls and convolutions)."""
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            self.loss(x, y).backward()
        self.optimizer.zero_grad(set_to_none=True)
        return counter.get_total_flops() / len(x)


def _matmul_tflops(device: str, precision: str) -> float:
    """A large matmul's FLOP/s at this precision: what the device reaches at best, as a yardstick."""
    import torch

    dtype = getattr(torch, PRECISIONS[precision] or "float32")
    n, reps = (8192, 20) if device == "cuda" else (2048, 4)
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    a @ b  # warm-up (and cuBLAS handle creation)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync()
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e12


class _TensorBatches:
    """Batches of a pre-loaded float tensor (on the device), reshuffled every pass: the input of sides b and l."""

    def __init__(self, spec: dict):
        import torch

        raw = _raw_data(spec)
        device = spec["device"]
        self.x = raw.train_x.to(device).float().div_(255)  # (N, C, H, W) in [0, 1], decoded once
        y = raw.train_y if raw.train_y is not None else torch.zeros(len(self.x), dtype=torch.int64)
        self.y = y.to(device)
        self.batch_size = spec["batch_size"]
        self.num_classes = _num_classes(raw)

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def __iter__(self):
        import torch

        perm = torch.randperm(len(self.x), device=self.x.device)
        for start in range(0, len(self.x), self.batch_size):
            idx = perm[start : start + self.batch_size]
            yield self.x[idx], self.y[idx]


def side_b(spec: dict) -> dict:
    """The floor: a hand-written loop over a pre-loaded float tensor (on the device), reshuffled every epoch."""
    import torch

    batches = _TensorBatches(spec)
    trainee = _Trainee(spec, batches.x.shape[1:], batches.num_classes)
    clock = StepClock(spec["warmup"], spec["steps"], spec["device"])
    while not clock.done:
        for x, y in batches:
            trainee(x, y)
            clock.stepped(len(x))
            if clock.done:
                break
    result = clock.report(side="b", **trainee.weights)
    idx = torch.arange(batches.batch_size, device=batches.x.device) % len(batches.x)
    result["flops_per_image"] = trainee.flops_per_image(batches.x[idx], batches.y[idx])
    result["matmul_tflops"] = _matmul_tflops(spec["device"], spec["precision"])
    return result


def side_l(spec: dict) -> dict:
    """What the Trainer alone costs: b's loop body as a LightningModule, run by a bare lightning.Trainer.

    The same batches, model, objective and optimizer as b; no logger, progress bar, checkpoint, model summary or
    callback. Lightning's automatic optimization does what b's loop does: zero_grad, backward, optimizer.step.
    """
    import lightning as L

    batches = _TensorBatches(spec)
    trainee = _Trainee(spec, batches.x.shape[1:], batches.num_classes)
    clock = StepClock(spec["warmup"], spec["steps"], spec["device"])

    class Floor(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = trainee.model

        def training_step(self, batch, batch_idx):
            return trainee.loss(*batch)

        def configure_optimizers(self):
            return trainee.optimizer

        def on_train_batch_end(self, outputs, batch, batch_idx):
            clock.stepped(len(batch[0]))

    trainer = L.Trainer(
        accelerator=DEVICES[spec["device"]], devices=1, precision=spec["precision"],
        max_steps=spec["warmup"] + spec["steps"], max_epochs=-1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
    )
    trainer.fit(Floor(), train_dataloaders=batches)
    return clock.report(side="l", **trainee.weights)


class _ArrayImages:
    """A uint8 (N, H, W[, C]) array served the way torchvision's CIFAR10 serves its own: PIL image, then transform."""

    def __init__(self, path: str, transform):
        import numpy as np

        with np.load(path) as arrays:
            self.images, self.labels = arrays["x"], arrays["y"]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def side_c(spec: dict) -> dict:
    """The seeds' pipeline as seed 002 writes it: per-image PIL -> ToTensor -> Normalize, DataLoader(shuffle=True)."""
    import torch
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    data, device = spec["data"], spec["device"]
    channels = data["shape"][0]
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize([0.5] * channels, [0.5] * channels)])
    if data["seed_class"] is not None:
        seed_class = getattr(datasets, data["seed_class"])
        dataset = seed_class(root=data["root"], train=True, transform=transform, download=True)
    else:
        dataset = _ArrayImages(data["options"]["path"], transform)
    dataloader = DataLoader(dataset, batch_size=spec["batch_size"], shuffle=True)
    trainee = _Trainee(spec, data["shape"], data["num_classes"])
    clock, train_loss = StepClock(spec["warmup"], spec["steps"], device), 0.0
    while not clock.done:
        for x, y in dataloader:
            x = ((x + 1) / 2).to(device)  # the seed's loss maps Normalize's [-1, 1] back to [0, 1]
            train_loss += trainee(x, y.to(device)).item()  # the seed sums loss.item() every step
            clock.stepped(len(x))
            if clock.done:
                break
    return clock.report(side="c", **trainee.weights)


def side_imports(spec: dict) -> dict:
    """Start-up floor: the time to `import torch, lightning, torchvision` and nothing else."""
    import lightning  # noqa: F401
    import torch  # noqa: F401
    import torchvision  # noqa: F401

    return {"side": "imports", "import_s": _since_launch(), "peak_rss_mb": _peak_rss_mb()}


# ---------------------------------------------------------------- evaluation: IWAE log p(x)


def _iwae_loop(model, batches, num_samples: int, max_decoded: int) -> float:
    """A straightforward IWAE-k estimate of log p(x) (Burda et al. 2016, Eq. 8): mean over examples, nats."""
    import math

    import torch

    estimates = []
    for x, _ in batches:
        q_z, p_z = model.encode(x), model.prior()
        per_chunk = max(1, max_decoded // len(x))  # samples per decoder pass, as vae_lab chunks them
        log_w = []
        for start in range(0, num_samples, per_chunk):
            z = q_z.sample((min(per_chunk, num_samples - start),))  # (S, B, D)
            log_w.append(model.decode(z).log_prob(x) + p_z.log_prob(z) - q_z.log_prob(z))  # (S, B)
        estimates.append(torch.logsumexp(torch.cat(log_w), dim=0) - math.log(num_samples))  # (B,)
    return float(torch.cat(estimates).mean())


def _vae_lab_iwae(model, batches, num_samples: int, max_decoded: int) -> float:
    """vae_lab's evaluation (what scripts/evaluate.py runs): IWAE, ELBO terms, SSIM, active units ..."""
    from vae_lab.evaluation import evaluate

    device = batches[0][0].device
    return evaluate(model, batches, iwae_samples=num_samples, max_decoded=max_decoded, device=device)["iwae_nats"]


def _eval_side(spec: dict, estimate, name: str) -> dict:
    """Images/s of `estimate` on the first `num_images` test images, after an untimed warm-up on a few."""
    import torch

    raw = _raw_data(spec)
    ev, device = spec["evaluation"], spec["device"]
    images = raw.test_x if raw.test_x is not None else raw.train_x
    x = images[: ev["num_images"]].to(device).float().div_(255)  # (N, C, H, W) in [0, 1]
    y = torch.zeros(len(x), dtype=torch.int64, device=device)
    batches = [(x[i : i + ev["batch_size"]], y[i : i + ev["batch_size"]]) for i in range(0, len(x), ev["batch_size"])]
    model = _model(spec, x.shape[1:], _num_classes(raw)).eval()
    _no_lightning_globals()
    dtype = PRECISIONS[spec["precision"]]
    autocast = torch.autocast(x.device.type, dtype=getattr(torch, dtype or "float32"), enabled=dtype is not None)
    with torch.no_grad(), autocast:
        estimate(model, batches[:1], 1, ev["max_decoded"])  # warm-up, untimed
        _sync(device)
        wall, cpu = StepClock._now()
        log_px = estimate(model, batches, ev["iwae_samples"], ev["max_decoded"])
        _sync(device)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "side": name,
        "images_per_s": len(x) / wall,
        "images_per_cpu_s": len(x) / cpu,
        "timed_s": wall,
        "iwae_nats": log_px,
        "peak_rss_mb": _peak_rss_mb(),
        **_weights(model),
    }


def side_eval_vae_lab(spec: dict) -> dict:
    return _eval_side(spec, _vae_lab_iwae, "eval_vae_lab")


def side_eval_loop(spec: dict) -> dict:
    return _eval_side(spec, _iwae_loop, "eval_loop")


WORKERS = {
    "b": side_b,
    "l": side_l,
    "c": side_c,
    "imports": side_imports,
    "eval_vae_lab": side_eval_vae_lab,
    "eval_loop": side_eval_loop,
}


def worker(spec_path: str) -> None:
    """A child process: run one side as `spec` says and write its report."""
    spec = json.loads(Path(spec_path).read_text())
    _write(spec["report"], WORKERS[spec["side"]](spec))


# ---------------------------------------------------------------- the parent: prepare, launch, summarise


def _check(cfg) -> None:
    """Every option of configs/benchmark.yaml, checked before anything is launched: one clear line per mistake."""
    from omegaconf import OmegaConf

    from vae_lab.errors import ConfigError, choices_error

    for key, value, valid in (
        ("device", cfg.device, DEVICES),
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
    positive = ["batch_size", "steps", "warmup_steps", "repeats", "evaluation.iwae_samples",
                "evaluation.num_images", "evaluation.batch_size", "evaluation.max_decoded"]
    for key in positive:
        value = OmegaConf.select(cfg, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{key}={value!r} is invalid: must be an integer >= 1")
    from vae_lab.nets import NETS  # imports torch: after the cheap checks

    if cfg.arch not in NETS:
        raise choices_error("arch", cfg.arch, NETS)
    if cfg.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("device=cuda but torch.cuda.is_available() is false here; use device=cpu")


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
        f"hardware={DEVICES[cfg.device]}",
        f"trainer.precision={cfg.precision}",
        f"paths.data_dir={data['root']}",
    ]
    overrides += [f"dataset.options.{key}={value}" for key, value in data["options"].items()]
    return overrides + list(cfg.after_training) + list(cfg.train_overrides)


def _launch(cmd: list[str], log: Path, report: Path, env: dict | None = None) -> dict:
    """Run one child (its output to `log`) and return the report it wrote."""
    with open(log, "w") as out:
        env = {**os.environ, **(env or {}), LAUNCH_ENV: repr(time.time())}
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0 or not report.is_file():
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-25:])
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed (exit {proc.returncode}); end of {log}:\n{tail}")
    result = json.loads(report.read_text())
    result["log"] = str(log)
    return result


def _run_side(side: str, repeat: int, cfg, base_spec: dict, overrides: list[str], work: Path) -> dict:
    report, log = work / f"{side}_r{repeat}.json", work / f"{side}_r{repeat}.log"
    if side == "a":
        run_dir = work / f"a_r{repeat}"
        total = cfg.warmup_steps + cfg.steps
        cmd = [sys.executable, str(ROOT / "train.py"), *overrides,
               f"hydra.run.dir={run_dir}", f"trainer.max_steps={total}", "trainer.max_epochs=-1",
               "+callbacks.benchmark_timer._target_=benchmark.step_timer",
               f"+callbacks.benchmark_timer.report={report}",
               f"+callbacks.benchmark_timer.warmup={cfg.warmup_steps}",
               f"+callbacks.benchmark_timer.steps={cfg.steps}",
               f"+callbacks.benchmark_timer.device={cfg.device}"]
        # `benchmark.step_timer` resolves to this file: put scripts/ on the child's import path.
        path = os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))
        result = _launch(cmd, log, report, {"PYTHONPATH": path})
        result["output_has_progress_bar"] = "Epoch 0" in log.read_text(errors="replace")
        return result
    spec_path = work / f"{side}_r{repeat}.spec.json"
    spec_path.write_text(json.dumps({**base_spec, "side": side, "report": str(report)}))
    return _launch([sys.executable, str(Path(__file__).resolve()), "--worker", str(spec_path)], log, report)


def _median(reports: list[dict], key: str) -> float | None:
    values = [r[key] for r in reports if r.get(key) is not None]
    return statistics.median(values) if values else None


# ratio name: (numerator side, denominator side, its threshold in cfg.targets or None: shown, not judged):
# throughput, higher is better
RATIOS = {
    "a_over_b": ("a", "b", "min_a_over_b"),
    "a_over_c": ("a", "c", "min_a_over_c"),
    "eval_vae_lab_over_loop": ("eval_vae_lab", "eval_loop", "min_eval_ratio"),
    "a_over_l": ("a", "l", None),  # vae_lab's own cost: against b's body run by a bare Trainer
    "l_over_b": ("l", "b", None),  # the bare Trainer's cost against the hand loop
}
MEDIANS = ("images_per_s", "images_per_cpu_s", "median_step_s", "first_step_s", "import_s", "peak_rss_mb",
           "flops_per_image", "matmul_tflops")


def _targets(cfg) -> dict:
    """cfg.targets with each null throughput threshold taken from issue_targets[device][arch] (else the fallback)."""
    from omegaconf import OmegaConf

    targets = OmegaConf.to_container(cfg.targets, resolve=True)
    issue = OmegaConf.to_container(cfg.issue_targets, resolve=True)
    defaults = dict(zip(("min_a_over_b", "min_a_over_c"), issue.get(cfg.device, {}).get(cfg.arch, issue["fallback"])))
    return {key: defaults[key] if value is None and key in defaults else value for key, value in targets.items()}


def _summary(cfg, runs: dict[str, list[dict]]) -> dict:
    """Medians per side, the ratios the issue asks for, and each target with its verdict."""
    sides = {side: {k: m for k in MEDIANS if (m := _median(reports, k)) is not None} for side, reports in runs.items()}
    ratios, targets, t = {}, {}, _targets(cfg)
    for name, (top, bottom, threshold) in RATIOS.items():
        if top not in sides or bottom not in sides:
            continue
        ratios[name] = sides[top]["images_per_s"] / sides[bottom]["images_per_s"]  # the ratio of the medians
        ratios[f"{name}_per_repeat"] = [a["images_per_s"] / b["images_per_s"] for a, b in zip(runs[top], runs[bottom])]
        ratios[f"{name}_cpu"] = sides[top]["images_per_cpu_s"] / sides[bottom]["images_per_cpu_s"]
        if sides[top].get("median_step_s") and sides[bottom].get("median_step_s"):  # same batch size every side
            ratios[f"{name}_median_step"] = sides[bottom]["median_step_s"] / sides[top]["median_step_s"]
        if threshold is not None and t[threshold] is not None:
            targets[name] = (ratios[name], f">= {t[threshold]}", ratios[name] >= t[threshold])
    if "a" in sides and "imports" in sides:
        value = ratios["first_step_a_over_imports"] = sides["a"]["first_step_s"] / sides["imports"]["import_s"]
        limit = t["max_first_step_over_imports"]
        targets["first_step_a_over_imports"] = (value, f"<= {limit}", value <= limit)
    if "a" in sides and "b" in sides:
        limit = t["rss_factor"] * sides["b"]["peak_rss_mb"] + t["rss_margin_mb"]
        value = sides["a"]["peak_rss_mb"]
        rule = f"<= {t['rss_factor']} x b + {t['rss_margin_mb']} = {limit:.0f}"
        targets["peak_rss_a_mb"] = (value, rule, value <= limit)
    flops = sides.get("b", {}).get("flops_per_image")
    if flops:  # achieved training FLOP/s, against the datasheet peak if given, else the large-matmul yardstick
        peak = cfg.peak_tflops or sides["b"]["matmul_tflops"]
        for side in ("a", "b", "c", "l"):
            if side in sides:
                sides[side]["tflops"] = sides[side]["images_per_s"] * flops / 1e12
                sides[side]["share_of_peak"] = sides[side]["tflops"] / peak
    return {"sides": sides, "ratios": ratios,
            "targets": {k: {"value": v, "target": s, "met": ok} for k, (v, s, ok) in targets.items()}}


def _print(result: dict) -> None:
    s = result["settings"]
    print(f"\nvae_lab benchmark: {s['arch']} on {s['dataset']} {s['data_shape']}, batch {s['batch_size']}, "
          f"{s['steps']} timed steps after {s['warmup_steps']}, {s['device']} {s['precision']}, "
          f"median of {s['repeats']}; torch threads {s['torch_threads']}")
    print(f"load average (1, 5, 15 min): before {result['load_before']}, after {result['load_after']}")
    names = {"a": "a  vae_lab train.py", "b": "b  hand loop, tensor", "c": "c  seeds' DataLoader",
             "l": "l  bare L.Trainer",
             "imports": "   import torch+L+tv", "eval_vae_lab": "   IWAE vae_lab", "eval_loop": "   IWAE plain loop"}
    print(f"{'side':<22}{'images/s':>10}{'per CPU-s':>11}{'step ms':>9}{'first step s':>14}{'peak RSS MB':>13}"
          f"{'TFLOP/s':>9}{'of peak':>9}")
    shown = lambda v, key, fmt: format(v[key], fmt) if key in v else "-"  # noqa: E731
    for side, v in result["summary"]["sides"].items():
        first = shown(v, "first_step_s", ".2f") if "first_step_s" in v else shown(v, "import_s", ".2f")
        share = f"{100 * v['share_of_peak']:.1f}%" if "share_of_peak" in v else "-"
        step = f"{1000 * v['median_step_s']:.2f}" if "median_step_s" in v else "-"
        print(f"{names[side]:<22}{shown(v, 'images_per_s', '.1f'):>10}{shown(v, 'images_per_cpu_s', '.1f'):>11}"
              f"{step:>9}{first:>14}{v['peak_rss_mb']:>13.0f}{shown(v, 'tflops', '.4f'):>9}{share:>9}")
    b = result["summary"]["sides"].get("b", {})
    if "flops_per_image" in b:
        print(f"training FLOPs per image: {b['flops_per_image'] / 1e6:.1f} M; large-matmul yardstick: "
              f"{b['matmul_tflops'] * 1000:.0f} GFLOP/s")
    ratios = result["summary"]["ratios"]

    def details(name: str) -> str:
        per_repeat = ", ".join(f"{r:.3f}" for r in ratios[f"{name}_per_repeat"])
        by_step = f"; by median step {ratios[f'{name}_median_step']:.3f}" if f"{name}_median_step" in ratios else ""
        return f"per repeat {per_repeat}; per CPU-s {ratios[f'{name}_cpu']:.3f}{by_step}"

    for name, target in result["summary"]["targets"].items():
        verdict = "ok  " if target["met"] else "MISS"
        extra = f"; {details(name)}" if name in RATIOS else ""
        print(f"  {verdict} {name:<26} {target['value']:.3f}  (target {target['target']}{extra})")
    for name in RATIOS:
        if name in ratios and name not in result["summary"]["targets"]:
            print(f"  info {name:<26} {ratios[name]:.3f}  ({details(name)})")
    per_repeat = {side: ", ".join(f"{r['images_per_s']:.0f}" for r in reports)
                  for side, reports in result["runs"].items() if reports and "images_per_s" in reports[0]}
    print("per-repeat images/s: " + "; ".join(f"{side} {values}" for side, values in per_repeat.items()))
    print(f"JSON: {result['out']}")


def run(cfg) -> dict:
    """Prepare the data, run every side `repeats` times (interleaved), print and write the summary."""
    from hydra import compose
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from vae_lab.io import atomic_write_json

    _check(cfg)
    work = Path(HydraConfig.get().runtime.output_dir)
    work.mkdir(parents=True, exist_ok=True)
    load_before = [round(v, 2) for v in os.getloadavg()]
    data = _prepare_data(cfg, work / "data")
    overrides = _train_overrides(cfg, data)
    train_cfg = compose("train", overrides=overrides)  # what side a composes, for the models of b and c
    base_spec = {
        "data": data,
        "model": OmegaConf.to_container(train_cfg.model, resolve=True),
        "loss": OmegaConf.to_container(train_cfg.loss, resolve=True),
        "optimizer": OmegaConf.to_container(train_cfg.schedule.optimizer, resolve=True),
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
    runs: dict[str, list[dict]] = {side: [] for side in order}
    for repeat in range(cfg.repeats):
        for side in order:
            report = _run_side(side, repeat, cfg, base_spec, overrides, work)
            runs[side].append(report)
            ips = report.get("images_per_s")
            shown = f"{ips:.1f} images/s" if ips is not None else f"{report['import_s']:.2f} s to import"
            print(f"repeat {repeat + 1}/{cfg.repeats} side {side}: {shown}", flush=True)

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
        "summary": _summary(cfg, runs),
        "runs": runs,
        "out": str(Path(cfg.out).resolve()),
    }
    atomic_write_json(cfg.out, result)
    _print(result)
    return result


def main() -> None:
    import hydra

    from vae_lab.cli import CONFIG_DIR
    from vae_lab.cli.errors import hydra_errors_in_one_line, report_user_errors

    app = hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="benchmark")(report_user_errors(run))
    hydra_errors_in_one_line(app)()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker(sys.argv[2])
    else:
        main()
