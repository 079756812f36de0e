"""Helpers that write small datasets in the on-disk formats the loaders read (import them in any test)."""

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED_DATA = Path(os.environ.get("VAE_LAB_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def copy_mnist(tmp_path: Path, name: str = "MNIST") -> Path:
    """Copy the shared `<name>/raw/*.gz` archives (MNIST or FashionMNIST) into tmp_path; returns the data root.

    torchvision extracts next to the archives, so tests never point it at the shared, read-only folder.
    """
    src = SHARED_DATA / name / "raw"
    if not src.is_dir():
        pytest.skip(f"{src} is not available")
    shutil.copytree(src, Path(tmp_path) / name / "raw")
    return Path(tmp_path)


def cifar10_pattern(n: int, offset: int = 0) -> np.ndarray:
    """A known uint8 pattern (n, 3, 32, 32) that differs per image, channel, row and column."""
    i, c, h, w = np.meshgrid(np.arange(n) + offset, np.arange(3), np.arange(32), np.arange(32), indexing="ij")
    return ((i * 31 + c * 89 + h * 7 + w * 3) % 256).astype(np.uint8)


def write_cifar10(root: Path, n_train: int = 10, n_test: int = 4) -> dict[str, np.ndarray]:
    """Write `<root>/cifar-10-batches-py/` in the official pickle format with a known pattern.

    Files: data_batch_1..5 (n_train images split across them), test_batch, batches.meta. Each batch is a dict with
    "data" (N, 3072) uint8 rows holding the R, G, B planes row-major, and "labels"; the meta dict has
    "label_names". The official files are Python 2 pickles whose str keys torchvision reads back as str (it loads
    with encoding="latin1"), hence str keys here, not bytes. torchvision's CIFAR10 checks the md5s of these files,
    so call `trust_cifar10_files(monkeypatch)` before loading them.
    Returns the expected arrays: train_x, test_x (N, 3, 32, 32) uint8 and train_y, test_y (N,) int.
    """
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    train_x, test_x = cifar10_pattern(n_train), cifar10_pattern(n_test, offset=n_train)
    train_y, test_y = np.arange(n_train) % 10, (np.arange(n_test) * 3) % 10
    chunks = np.array_split(np.arange(n_train), 5)
    batches = [(f"data_batch_{k + 1}", train_x[idx], train_y[idx]) for k, idx in enumerate(chunks)]
    for filename, x, y in batches + [("test_batch", test_x, test_y)]:
        entry = {"batch_label": filename, "data": x.reshape(len(x), 3072), "labels": [int(v) for v in y]}
        with open(folder / filename, "wb") as f:
            pickle.dump(entry, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CIFAR10_CLASSES, "num_vis": 3072}, f)
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}


def trust_cifar10_files(monkeypatch) -> None:
    """Let torchvision's CIFAR10 accept generated files: their md5s cannot match the official ones.

    CIFAR10 checks the batch files in `_check_integrity` and batches.meta in `_load_meta`, both through the name
    `torchvision.datasets.cifar.check_integrity`; replacing it with an existence check covers both (patching only
    `CIFAR10._check_integrity` would still fail on batches.meta) and keeps missing files detectable.
    """
    import torchvision.datasets.cifar as cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))


def write_image_folder(
    root: Path,
    classes: tuple[str, ...] | None = ("cat", "dog"),
    per_class: int = 3,
    size: tuple[int, int] = (6, 8),
    mode: str = "RGB",
) -> list[Path]:
    """Write small PNGs (size is (H, W)) into root/<class>/ (or directly into root when classes is None)."""
    rng = np.random.default_rng(0)
    root = Path(root)
    paths = []
    for folder in [root / c for c in classes] if classes is not None else [root]:
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            shape = (size[0], size[1], 3) if mode == "RGB" else size
            pixels = rng.integers(0, 256, shape, dtype=np.uint8)
            paths.append(folder / f"img_{k}.png")
            Image.fromarray(pixels).save(paths[-1])  # (H, W) -> L, (H, W, 3) -> RGB
    return paths


def write_array_file(
    path: Path, x: np.ndarray, y: np.ndarray | None = None, key: str = "x", label_key: str = "y"
) -> Path:
    """Save images (and labels) as .npz under the given keys, or as a bare .npy array (labels ignored)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".npy":
        np.save(path, x)
    else:
        np.savez(path, **{key: x, **({label_key: y} if y is not None else {})})
    return path


def numbered_images(n: int, size: tuple[int, int] = (6, 5)) -> np.ndarray:
    """n grey-level RGB images (n, H, W, 3) whose first two pixels spell their index (pixel 0: i % 251, 1: i // 251)."""
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (n, size[0], size[1], 3), dtype=np.uint8)
    x[:, 0, 0, 0] = np.arange(n) % 251
    x[:, 0, 1, 0] = np.arange(n) // 251
    return x


def image_index(x) -> list[int]:
    """Inverse of numbered_images for float batches in [0, 1] (B, C, H, W) or uint8 ones."""
    import torch

    u8 = x if x.dtype == torch.uint8 else (x * 255).round().to(torch.uint8)
    return (u8[:, 0, 0, 0].long() + 251 * u8[:, 0, 0, 1].long()).tolist()


def write_hf_dataset(root: Path, n_train: int = 40, n_test: int = 10, size=(6, 5), mixed: bool = False) -> dict:
    """A Hugging Face image dataset (PNG images + ClassLabel labels) saved with save_to_disk and as Parquet.

    Returns the paths ("disk": DatasetDict dir, "parquet": train file, "parquet_dir": train + test files) and
    the arrays it holds. `mixed`: the last training image has another size.
    """
    import io

    import datasets

    root = Path(root)
    splits, arrays = {}, {}
    for split, n, offset in (("train", n_train, 0), ("test", n_test, 1000)):
        x = numbered_images(n + offset, size)[offset:]
        y = np.arange(n) % 3
        images = []
        for i, a in enumerate(x):
            if mixed and split == "train" and i == n - 1:
                a = np.zeros((size[0] + 2, size[1], 3), dtype=np.uint8)
            buf = io.BytesIO()
            Image.fromarray(a).save(buf, format="PNG")
            images.append({"bytes": buf.getvalue(), "path": None})
        features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"]),
                                      "note": datasets.Value("string")})
        splits[split] = datasets.Dataset.from_dict({"image": images, "label": y.tolist(), "note": ["x"] * n},
                                                   features=features)
        arrays[split] = (x, y)
    ds = datasets.DatasetDict(splits)
    ds.save_to_disk(str(root / "disk"))
    (root / "parquet").mkdir(parents=True, exist_ok=True)
    for split, d in splits.items():
        d.to_parquet(str(root / "parquet" / f"{split}-00000-of-00001.parquet"))
    return {"disk": root / "disk", "parquet": root / "parquet" / "train-00000-of-00001.parquet",
            "parquet_dir": root / "parquet", "arrays": arrays}
