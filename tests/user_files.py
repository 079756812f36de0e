"""Writers of a user's files in their official formats (np.save / np.savez, PNG, zip), for the user-data tests of
the unit tier (tests/unit/test_user_data.py) and the CLI tier (tests/cli/test_user_data_cli.py)."""

import zipfile
from pathlib import Path

import numpy as np
from PIL import Image


def npy(tmp: Path, x, name="x.npy") -> Path:
    np.save(tmp / name, x)
    return tmp / name


def npz(tmp: Path, name="x.npz", **arrays) -> Path:
    np.savez(tmp / name, **arrays)
    return tmp / name


def raw_bytes(data: bytes, name: str):
    """A writer (tmp -> path) of a file holding exactly `data`."""

    def write(tmp: Path) -> Path:
        (tmp / name).write_bytes(data)
        return tmp / name

    return write


def zip_of_pngs(tmp: Path, image: np.ndarray) -> Path:
    """imgs.zip holding a.png (a user who zipped a folder of images)."""
    Image.fromarray(image).save(tmp / "a.png")
    with zipfile.ZipFile(tmp / "imgs.zip", "w") as z:
        z.write(tmp / "a.png", "a.png")
    return tmp / "imgs.zip"


def pngs(folder: Path, arrays, mode=None) -> Path:
    """Save each array as folder/NN.png (mode None: PIL's default for the dtype and shape)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(arrays):
        Image.fromarray(a, mode).save(folder / f"{i:02d}.png")
    return folder
