"""What every file-based loader shares: image suffixes, the uint8 (N, C, H, W) layout, labels as a tensor, and the
one line for a file given where a folder belongs (or the reverse)."""

from pathlib import Path

import numpy as np
import torch

from vae_lab.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _uint8_nchw(images: np.ndarray, layout: str, copy: bool = True) -> torch.Tensor:
    """(N, H, W), (N, H, W, C) or (N, C, H, W) array -> tensor (N, C, H, W) of the same dtype; contiguous unless
    `copy` is False (a memory-mapped file stays a view: batches gather their rows from it)."""
    x = torch.from_numpy(np.ascontiguousarray(images) if copy else images)
    if layout == "NHW":
        return x.unsqueeze(1)
    if layout == "NHWC":
        x = x.permute(0, 3, 1, 2)
        return x.contiguous() if copy else x
    return x


def _labels(values) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values), dtype=torch.int64)


# ---------------------------------------------------------------- digits


def _wrong_source(path: Path, wanted: str) -> DataError:
    """The one line for a file given to image_folder or a folder given to array_file: which dataset to use."""
    if path.is_dir():
        hf = any((path / f).is_file() for f in ("dataset_info.json", "dataset_dict.json", "state.json"))
        use = "dataset=hf (a saved Hugging Face dataset)" if hf else "dataset=image_folder"
        return DataError(f"{path} is a folder, not {wanted}: use {use} dataset.options.path={path}")
    suffix = path.suffix.lower()
    if suffix in (".npy", ".npz"):
        use = "dataset=array_file"
    elif suffix == ".zip":
        use = f"unzip it (python -m zipfile -e {path.name} DIR) and use dataset=image_folder dataset.options.path=DIR"
    elif suffix in (".parquet", ".arrow"):
        use = "dataset=hf"
    elif suffix in IMAGE_EXTENSIONS:
        use = f"one image; point dataset.options.path at its folder {path.parent}"
    else:
        use = "point dataset.options.path at the folder holding the images"
    return DataError(f"{path} is a file, not {wanted}: {use}")
