"""dSprites-like images generated from their factors (no download), and the real dSprites archive when present.

Factors (dSprites order, Matthey et al. 2017): shape (square, ellipse, heart), scale (6 values in [0.5, 1]),
orientation (40 angles in [0, 2 pi)), pos_x and pos_y (32 positions each): 3 * 6 * 40 * 32 * 32 = 737,280 binary
64x64 images, every combination once, row-major in that order (pos_y fastest).
"""

import hashlib
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from vae_lab.errors import ConfigError, DataError

FACTOR_NAMES = ("shape", "scale", "orientation", "pos_x", "pos_y")
FACTOR_SIZES = (3, 6, 40, 32, 32)
SHAPE_NAMES = ("square", "ellipse", "heart")
DSPRITES_FILE = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
DSPRITES_MD5 = "7da33b31b13a06f4b04a70402ce90c2e"
IMAGE_SIZE = 64
PATCH = 32  # every sprite fits a 32x32 patch; the 32 positions are its 32 integer offsets on the 64x64 canvas
HALF_SIZE = 10.0  # pixels from the centre to the side of the scale-1 square


def factor_values(stride: Mapping[str, int] | None = None) -> list[np.ndarray]:
    """The kept class indices of each factor: every `stride[name]`-th value (all when absent)."""
    stride = dict(stride or {})
    unknown = sorted(set(stride) - set(FACTOR_NAMES))
    if unknown:
        raise ConfigError(f"dataset.options.stride has unknown factor {unknown[0]!r}: valid factors: "
                          f"{', '.join(FACTOR_NAMES)}")
    for name, step in stride.items():
        size = FACTOR_SIZES[FACTOR_NAMES.index(name)]
        if isinstance(step, bool) or not isinstance(step, int) or not 1 <= step <= size:
            raise ConfigError(f"dataset.options.stride.{name}={step!r} is invalid: must be an integer in [1, {size}]")
    return [np.arange(0, size, stride.get(name, 1)) for name, size in zip(FACTOR_NAMES, FACTOR_SIZES)]


def _inside(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether object-frame points (u right, v up; the unit is the half-size) are inside the shape."""
    if shape == 0:  # square
        return np.maximum(np.abs(u), np.abs(v)) <= 1.0
    if shape == 1:  # ellipse, semi-axes 1 and 0.5
        return u**2 + (v / 0.5) ** 2 <= 1.0
    # heart: (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0, which spans x in [-1.14, 1.14], y in [-1, 1.23]; shrunk to fit
    x, y = u * 1.15, v * 1.15 + 0.12
    return (x**2 + y**2 - 1.0) ** 3 - x**2 * y**3 <= 0.0


def sprite_patches(shapes: np.ndarray, scales: np.ndarray, orientations: np.ndarray) -> np.ndarray:
    """Binary 32x32 patches (S, Sc, O, 32, 32) uint8 of each (shape, scale, orientation) class index, centred."""
    centre = PATCH / 2  # pixel j covers [j, j + 1): the centre lies between pixels 15 and 16
    rows, cols = np.meshgrid(np.arange(PATCH) + 0.5 - centre, np.arange(PATCH) + 0.5 - centre, indexing="ij")
    scale = np.linspace(0.5, 1.0, 6)[scales]  # (Sc,)
    angle = 2 * math.pi * orientations / 40  # (O,)
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    # rotate the pixel grid back by the orientation (counter-clockwise on screen: rows grow downwards)
    x, y = cols[None], -rows[None]
    u, v = cos * x + sin * y, -sin * x + cos * y  # (O, 32, 32)
    out = np.empty((len(shapes), len(scales), len(orientations), PATCH, PATCH), np.uint8)
    for i, shape in enumerate(shapes):
        for j, s in enumerate(scale):
            out[i, j] = _inside(int(shape), u / (HALF_SIZE * s), v / (HALF_SIZE * s))
    return out


def render_sprites(stride: Mapping[str, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 1, 64, 64) uint8 in {0, 255} and factor class indices (N, 5) int64 of the (sub)grid, row-major."""
    values = factor_values(stride)
    shapes, scales, orientations, xs, ys = values
    patches = sprite_patches(shapes, scales, orientations) * np.uint8(255)  # (S, Sc, O, 32, 32)
    grid = np.zeros((*patches.shape[:3], len(xs), len(ys), IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    for a, px in enumerate(xs):  # a translation is a slice: one vectorised copy per position
        for b, py in enumerate(ys):
            grid[:, :, :, a, b, py : py + PATCH, px : px + PATCH] = patches
    images = torch.from_numpy(grid.reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE))
    mesh = np.meshgrid(*values, indexing="ij")
    factors = torch.from_numpy(np.stack([m.reshape(-1) for m in mesh], axis=1).astype(np.int64))
    return images, factors


def file_md5(path: Path) -> str:
    """The md5 hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_dsprites(path: Path, md5: str | None, stride: Mapping[str, int] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 1, 64, 64) uint8 and factor classes (N, 5) of the real dSprites archive, md5-checked."""
    if not path.is_file():
        raise DataError(f"dSprites not found: expected {path} (set paths.data_dir to the folder holding "
                        f"{DSPRITES_FILE}, from github.com/google-deepmind/dsprites-dataset), or use dataset=sprites")
    if md5:
        found = file_md5(path)
        if found != md5:
            raise DataError(f"{path} fails its md5 check (expected {md5}, found {found}): a corrupted or "
                            f"unofficial file (dataset.options.md5=null skips the check)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            imgs, classes = archive["imgs"], archive["latents_classes"]
    except (OSError, ValueError, KeyError) as err:
        raise DataError(f"cannot read {path} as a dSprites archive (imgs, latents_classes): {err}") from err
    sizes = (1, *FACTOR_SIZES)  # latents_classes has a constant colour column first
    if imgs.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE) or classes.shape != (len(imgs), 6):
        raise DataError(f"{path}: imgs {imgs.shape} / latents_classes {classes.shape}; expected "
                        f"(N, 64, 64) and (N, 6)")
    factors = classes[:, 1:].astype(np.int64)
    keep = np.ones(len(factors), bool)
    for column, kept in enumerate(factor_values(stride)):
        keep &= np.isin(factors[:, column], kept)
    if not keep.any() or (factors.max(0) >= np.array(sizes[1:])).any():
        raise DataError(f"{path}: latents_classes outside the dSprites grid {sizes}")
    images = torch.from_numpy(imgs[keep].astype(np.uint8) * np.uint8(255)).unsqueeze(1)
    return images, torch.from_numpy(factors[keep])
