"""Data out of a model: synthetic data sets (samples, per class for conditional models) that dataset=array_file
or dataset=image_folder read back, and posterior codes with their scales and labels."""

import io
from pathlib import Path

import numpy as np
import torch

from vae_lab.distributions.kl import is_diagonal_gaussian
from vae_lab.errors import ConfigError, DataError
from vae_lab.io import atomic_write, atomic_write_bytes

FLAT_CODE = ("{what} needs a flat latent code (one vector per example); the {family} family has none: its "
             "per-example scores come from scripts/score.py")


def need_flat_code(model, what: str) -> None:
    if not model.flat_code:
        raise ConfigError(FLAT_CODE.format(what=what, family=model.family))


def to_levels(x: torch.Tensor, levels: int | None) -> np.ndarray:
    """Images (N, C, H, W) in [0, 1] -> the stored scale array_file reads back: uint8 k for 8-bit (and binary, as
    0/255), uint16 for 16-bit, float32 in [0, 1] for continuous data; (N, H, W) grey or (N, H, W, C) colour."""
    x = x.detach().cpu().clamp(0, 1)
    if levels is None:
        a = x.float().numpy()
    elif levels <= 256:
        a = (x * 255).round().to(torch.uint8).numpy() if levels in (2, 256) else None
        if a is None:
            raise DataError(f"export writes 8-bit, 16-bit or continuous images; this model has {levels} levels")
    elif levels == 65536:
        a = (x.double() * 65535).round().numpy().astype(np.uint16)
    else:
        raise DataError(f"export writes 8-bit, 16-bit or continuous images; this model has {levels} levels")
    return a[:, 0] if a.shape[1] == 1 else np.transpose(a, (0, 2, 3, 1))


def sample_labels(model, n: int, classes: str | int | None) -> torch.Tensor | None:
    """The labels to generate: None (unconditional), n of one class, or n of each class (classes='all')."""
    if classes is None:
        if model.conditional:
            raise ConfigError("a conditional model generates classes: give class=all (n per class) or class=<k>")
        return None
    if not model.conditional:
        raise ConfigError(f"class={classes} needs a conditional model (trained with model.conditional=true) and "
                          "labelled data; this model is unconditional: drop class=")
    if classes == "all":
        return torch.arange(model.num_classes).repeat_interleave(n)
    if not 0 <= int(classes) < model.num_classes:
        raise ConfigError(f"class={classes} is invalid: must be an integer in [0, {model.num_classes - 1}] or all")
    return torch.full((n,), int(classes))


@torch.no_grad()
def generate(model, n: int, labels: torch.Tensor | None, seed: int, mean: bool = True, temperature: float = 1.0,
             batch_size: int = 1000) -> torch.Tensor:
    """Samples (N, C, H, W) in [0, 1]: N = n, or len(labels) for a conditional model; seeded."""
    device = next(model.parameters()).device
    total = n if labels is None else len(labels)
    out = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in range(0, total, batch_size):
            count = min(batch_size, total - start)
            y = None if labels is None else labels[start:start + count].to(device)
            out.append(model.sample(count, y, temperature=temperature, mean=mean).cpu())
    return torch.cat(out)


def write_samples(images: np.ndarray, labels: torch.Tensor | None, out: Path,
                  class_names: tuple[str, ...] | None = None) -> Path:
    """An .npz (x, and y when labelled) or, for a path without suffix, an image folder (class subfolders)."""
    if out.suffix == ".npz":
        arrays = {"x": images} | ({"y": labels.numpy().astype(np.int64)} if labels is not None else {})
        return atomic_write(out, lambda f: np.savez(f, **arrays))
    if out.suffix:
        raise ConfigError(f"out={out} is invalid for mode=export: an .npz file or a folder (no suffix)")
    if images.dtype != np.uint8:
        raise DataError("an image folder holds 8-bit PNGs; these samples are not 8-bit: write an .npz")
    from PIL import Image

    width = len(str(len(images) - 1))
    for i, image in enumerate(images):
        folder = out if labels is None else out / (class_names[int(labels[i])] if class_names else str(int(labels[i])))
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG")
        atomic_write_bytes(folder / f"{i:0{width}d}.png", buf.getvalue())
    return out


@torch.no_grad()
def encode(model, batches, max_examples: int | None = None) -> dict[str, np.ndarray]:
    """Posterior codes E_q[z|x] (N, D), scales (N, D) where q is a diagonal Gaussian, labels (N,) (-1: none)."""
    need_flat_code(model, "the code export")
    device = next(model.parameters()).device
    codes, scales, labels, seen = [], [], [], 0
    limit = max_examples if max_examples is not None else float("inf")
    for x, y in batches:
        if seen >= limit:
            break
        keep = int(min(len(x), limit - seen))
        x, y = x[:keep].to(device), y[:keep].to(device)
        q_z = model.encode(x, model.labels(y))
        codes.append(q_z.code().cpu())
        if is_diagonal_gaussian(q_z):
            scales.append(q_z.base_dist.scale.cpu())
        labels.append(y.cpu())
        seen += keep
    if not seen:
        raise DataError("no examples to encode")
    out = {"codes": torch.cat(codes).float().numpy(), "labels": torch.cat(labels).numpy().astype(np.int64),
           "index": np.arange(seen)}
    if len(scales) == len(codes):
        out["scales"] = torch.cat(scales).float().numpy()
    return out


def encode_model(cfg, data_overrides: list[str] = ()) -> Path:
    """scripts/encode.py: load, check, encode the split, write the .npz; returns its path."""
    from vae_lab.loading import datamodule_for, load_model
    from vae_lab.rules import DATA_SPLITS, DEVICES, Rule, check_rules

    check_rules(cfg, [Rule("split", "choice", choices=lambda: DATA_SPLITS),
                      Rule("max_examples", "int", lo=1, nullable=True), Rule("batch_size", "int", lo=1),
                      Rule("device", "choice", choices=lambda: DEVICES),
                      Rule("data_seed", "int", lo=0, nullable=True)])
    loaded = load_model(cfg.model)
    need_flat_code(loaded.model, "scripts/encode.py")
    out = Path(cfg.out).expanduser() if cfg.out is not None else loaded.default_output(f"codes_{cfg.split}.npz")
    if out.suffix != ".npz":
        raise ConfigError(f"out={cfg.out} is invalid: must name an .npz file")
    datamodule = datamodule_for(loaded, list(data_overrides), stage=None, data_dir=cfg.paths.data_dir,
                                seed=cfg.data_seed, batch_size=cfg.batch_size)
    if cfg.split == "test" and not datamodule.spec.has_test:
        raise ConfigError(f"split=test is invalid: dataset {datamodule.hparams.name!r} has no test split; "
                          "use split=val")
    batches = getattr(datamodule, f"{cfg.split}_dataloader")()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    arrays = encode(loaded.model.to(device).eval(), batches, cfg.max_examples)
    atomic_write(out, lambda f: np.savez(f, **arrays))
    scales = "scales, " if "scales" in arrays else "(no scales: q(z|x) is not a diagonal Gaussian), "
    print(f"wrote {out}: codes {arrays['codes'].shape}, {scales}labels, index of {cfg.split}")
    return out


def export_samples(cfg, loaded) -> Path:
    """scripts/sample.py mode=export: n samples (n per class with class=all) as an .npz or an image folder."""
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    model = loaded.model.to(device).eval()
    n = cfg.n or 64
    labels = sample_labels(model, n, cfg["class"])
    out = Path(cfg.out).expanduser() if cfg.out is not None else loaded.default_output("samples.npz")
    if out.suffix not in ("", ".npz"):
        raise ConfigError(f"out={cfg.out} is invalid for mode=export: an .npz file or a folder (no suffix)")
    from omegaconf import OmegaConf

    from vae_lab.model.interface import check_temperature

    if OmegaConf.is_list(cfg.temperature):
        raise ConfigError(f"mode=export draws at one temperature; temperature={list(cfg.temperature)} is a list")
    temperature = check_temperature(cfg.temperature)
    images = to_levels(generate(model, n, labels, cfg.seed, cfg.mean, temperature), model.likelihood_levels)
    path = write_samples(images, labels, out)  # class folders named by index: image_folder sorts them numerically
    what = f"{len(images)} samples" + ("" if labels is None else f" ({n} per class)" if cfg["class"] == "all"
                                       else f" of class {cfg['class']}")
    print(f"wrote {path}: {what}, {images.dtype} {images.shape[1:]}"
          f"{', labels y' if labels is not None else ''}; read back with "
          f"{'dataset=array_file' if path.suffix else 'dataset=image_folder'} dataset.options.path={path}")
    return path
