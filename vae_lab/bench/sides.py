"""The benchmark's training sides b, c and l (and the start-up floor), each run in its own child process.

  b        a hand-written loop on a pre-loaded float tensor: the floor
  l        b's loop body as a LightningModule's training_step, run by a bare lightning.Trainer (no logger, progress
           bar, checkpoint or summary) on b's batches: what the Trainer alone costs, so a/l is vae_lab's own share
  c        the seeds' pipeline (seed 002): torchvision dataset -> PIL -> ToTensor + Normalize -> DataLoader
  imports  `import torch, lightning, torchvision` and nothing else: the floor for start-up time

Side a is `python train.py` itself with `clock.step_timer` as an extra callback (see runner.py).
Only the standard library at the top: each side imports what it needs and nothing more.
"""

import os
import time

from vae_lab.bench.clock import StepClock, peak_rss_mb, since_launch, weights_fingerprint

SIDES = ("a", "s", "b", "c", "l")  # s: side a with schedule.steps_per_call = the benchmark's steps_per_call
HARDWARE_OF_DEVICE = {"cpu": "cpu", "cuda": "gpu"}  # benchmark device= -> configs/hardware option of side a
PRECISIONS = {"32-true": None, "bf16-mixed": "bfloat16"}  # Lightning precision -> autocast dtype of the loops
# The seeds' side reads real data through torchvision's own class (a synthetic array goes through PIL alike).
SEED_DATASETS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "CIFAR10"}


def no_lightning_globals() -> None:
    """Undo the one process-wide setting Lightning makes at import: a hand-written script never imports it.

    The loops import vae_lab's data and model code, which imports Lightning; Lightning sets
    PYTORCH_NVML_BASED_CUDA_CHECK=1, which makes Adam's per-step torch.cuda.is_available() reload NVML.
    """
    os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)


def raw_data(spec: dict):
    """vae_lab's decoded uint8 dataset (N, C, H, W) for the tensor side and the evaluation."""
    from vae_lab.data.registry import load_dataset

    data = spec["data"]
    return load_dataset(data["name"], data["root"], True, **data["options"])


def build_model(spec: dict, shape, num_classes: int):
    """The model exactly as side a builds it: same config, same seed right before construction."""
    import torch
    from omegaconf import OmegaConf

    from vae_lab.build import model_kwargs
    from vae_lab.data import DataSpec
    from vae_lab.model import build_model as build_family

    torch.manual_seed(spec["seed"])
    data_spec = DataSpec(shape=tuple(shape), num_classes=num_classes or None, class_names=None, has_test=False)
    model_cfg = OmegaConf.create({key: spec[key] for key in ("model", "prior", "posterior") if key in spec})
    model = build_family(model_kwargs(model_cfg, data_spec))
    return model.to(spec["device"])


def num_classes(raw) -> int:
    if raw.class_names is not None:
        return len(raw.class_names)
    return int(raw.train_y.max()) + 1 if raw.train_y is not None else 0


def autocast(device: str, precision: str):
    """The loops' autocast context for a Lightning precision name (disabled for 32-true)."""
    import torch

    dtype = PRECISIONS[precision]
    return torch.autocast(torch.device(device).type, dtype=getattr(torch, dtype or "float32"), enabled=dtype is not None)


class _Trainee:
    """Model, objective and optimizer of a hand-written loop: one call = one optimizer step."""

    def __init__(self, spec: dict, shape, classes: int):
        from vae_lab.objectives import build_objective, objective_named
        from vae_lab.schedules import optimizer_class  # the class as train.py finds it, without Hydra

        self.model = build_model(spec, shape, classes)
        no_lightning_globals()
        self.weights = weights_fingerprint(self.model)
        self.model.train()
        loss = dict(spec["loss"])
        self.num_samples = int(loss.pop("num_samples", 1))
        self.objective = build_objective(**loss)
        self.log_q = objective_named(loss["name"]).log_q
        optimizer = dict(spec["optimizer"])
        self.optimizer = optimizer_class(optimizer.pop("_target_"))(self.model.parameters(), **optimizer)
        self.autocast = autocast(spec["device"], spec["precision"])

    def loss(self, x, y):
        """The same computation as VAEModule's step: the family's terms (K reparameterised samples), objective."""
        model = self.model
        y = model.labels(y)
        with self.autocast:  # forward only, as Lightning's mixed precision does
            return self.objective(model.terms(x, y, self.num_samples, with_log_q=self.log_q)).loss

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


def matmul_tflops(device: str, precision: str) -> float:
    """A large matmul's FLOP/s at this precision: what the device reaches at best, as a yardstick."""
    import torch

    # On a CPU the yardstick stays float32: bf16 matmuls there are emulated on most CPUs (a 2048^3 product takes
    # minutes), and autocast on CPU gains nothing over float32 matmuls either.
    dtype = getattr(torch, PRECISIONS[precision] or "float32") if device == "cuda" else torch.float32
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


class _Pixels:
    """What training does to the pixels, as the dataset config says (`pixels` of the spec), written by hand:
    binarize static: once, before the loop; dynamic: every batch re-sampled as bernoulli(x) (Burda et al. 2016),
    drawn as u < x as training draws it; dequantize uniform: (k + u) / 256 every batch. So the loops do the same
    work per step as side a."""

    def __init__(self, spec: dict):
        pixels = spec.get("pixels", {})
        self.binarize, self.dequantize = pixels.get("binarize", "none"), pixels.get("dequantize", "none")

    def once(self, x):
        """x in [0, 1], the whole split, before the loop."""
        import torch

        return torch.bernoulli(x) if self.binarize == "static" else x

    def __call__(self, x):
        """One training batch in [0, 1] (8-bit levels k / 255 when dequantised)."""
        import torch

        if self.dequantize == "uniform":
            x = (x * 255 + torch.rand_like(x)) / 256
        return torch.rand_like(x).lt_(x) if self.binarize == "dynamic" else x  # bernoulli(x) in one vectorised draw


class _TensorBatches:
    """Batches of a pre-loaded float tensor (on the device), reshuffled every pass: the input of sides b and l."""

    def __init__(self, spec: dict):
        import torch

        from vae_lab.data.batches import to_unit

        raw = raw_data(spec)
        device = spec["device"]
        self.pixels = _Pixels(spec)
        # (N, C, H, W) in [0, 1] as training serves it, once
        self.x = self.pixels.once(to_unit(raw.train_x.to(device), raw.levels))
        y = raw.train_y if raw.train_y is not None else torch.zeros(len(self.x), dtype=torch.int64)
        self.y = y.to(device)
        self.batch_size = spec["batch_size"]
        self.num_classes = num_classes(raw)

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def __iter__(self):
        import torch

        perm = torch.randperm(len(self.x), device=self.x.device)
        for start in range(0, len(self.x), self.batch_size):
            idx = perm[start : start + self.batch_size]
            yield self.pixels(self.x[idx]), self.y[idx]


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
    result["matmul_tflops"] = matmul_tflops(spec["device"], spec["precision"])
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
        accelerator=HARDWARE_OF_DEVICE[spec["device"]], devices=1, precision=spec["precision"],
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
    pixels = _Pixels(spec)  # static binarisation is per batch here: the seeds' dataset has no binarised copy
    pixels.binarize = "dynamic" if pixels.binarize == "static" else pixels.binarize
    clock, train_loss = StepClock(spec["warmup"], spec["steps"], device), 0.0
    while not clock.done:
        for x, y in dataloader:
            x = pixels(((x + 1) / 2).to(device))  # the seed's loss maps Normalize's [-1, 1] back to [0, 1]
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

    return {"side": "imports", "import_s": since_launch(), "peak_rss_mb": peak_rss_mb()}
