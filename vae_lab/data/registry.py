"""Dataset loaders: each decodes a dataset once into uint8 (N, C, H, W) tensors, looked up by name in DATASETS."""

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torchvision import datasets as tv

from vae_lab.data.hf import load_hf
from vae_lab.data.raw import RawData, image_size_option as _image_size  # noqa: F401 (RawData re-exported)
from vae_lab.data.stream import StreamSource, read_image, size_mismatch
from vae_lab.errors import ConfigError, DataError, choices_error

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _uint8_nchw(images: np.ndarray, layout: str) -> torch.Tensor:
    """(N, H, W), (N, H, W, C) or (N, C, H, W) uint8 array -> contiguous uint8 tensor (N, C, H, W)."""
    x = torch.from_numpy(np.ascontiguousarray(images))
    if layout == "NHW":
        return x.unsqueeze(1)
    if layout == "NHWC":
        return x.permute(0, 3, 1, 2).contiguous()
    return x


def _labels(values) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values), dtype=torch.int64)


# ---------------------------------------------------------------- digits


def load_digits(root: Path, download: bool) -> RawData:
    """scikit-learn's bundled 8x8 digits (1797 images, values 0..16); no official test split."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)  # (N, 8, 8)
    return RawData(
        train_x=_uint8_nchw(images, "NHW"),
        train_y=_labels(bunch.target),
        class_names=tuple(str(name) for name in bunch.target_names),
    )


# ---------------------------------------------------------------- torchvision


def _beside(folder: Path, names: list[str]) -> str:
    return f"{folder / names[0]} and {', '.join(names[1:])} beside it"


def _mnist_files(cls, root: Path) -> str:
    return _beside(root / cls.__name__ / "raw", [filename for filename, _ in cls.resources])


def _cifar_files(cls, root: Path) -> str:
    names = [name for name, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    return f"{_beside(root / cls.base_folder, names)} (or the archive {root / cls.filename} with download=true)"


def _md5_mismatch(cls, root: Path) -> str | None:
    """A one-line error for the first file torchvision checks by md5 that is present but has the wrong md5."""
    import hashlib

    batches = getattr(cls, "train_list", []) + getattr(cls, "test_list", [])  # CIFAR: the extracted batch files
    listed = [(root / cls.base_folder / name, md5) for name, md5 in batches]
    listed += [(root / cls.__name__ / "raw" / name, md5) for name, md5 in getattr(cls, "resources", [])]
    for path, md5 in listed:
        if md5 and path.is_file():
            digest = hashlib.md5(usedforsecurity=False)
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
            if digest.hexdigest() != md5:
                return (f"{cls.__name__}: {path} fails its md5 check (expected {md5}, found {digest.hexdigest()}): "
                        f"a corrupted or unofficial file; replace it with the official one (or delete it and run "
                        f"with network access and dataset.download=true)")
    return None


def _torchvision_loader(cls, expected_files: Callable, layout: str, doc: str) -> Callable:
    """A loader for a torchvision dataset class whose `.data` already holds every decoded image."""

    def load(root: Path, download: bool) -> RawData:
        root = Path(root).expanduser().resolve()
        splits = []
        for train in (True, False):
            try:
                ds = cls(str(root), train=train, download=download)
            except (RuntimeError, OSError) as err:  # "Dataset not found or corrupted", URLError when offline
                reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                mismatch = _md5_mismatch(cls, root)
                if mismatch:
                    raise DataError(mismatch) from err
                raise DataError(
                    f"{cls.__name__} not found or corrupted under {root} (torchvision said: {reason}); "
                    f"it expects {expected_files(cls, root)}; set paths.data_dir=<dir with the archives> "
                    f"or run once with network access and dataset.download=true"
                ) from err
            splits.append((_uint8_nchw(np.asarray(ds.data), layout), _labels(ds.targets), tuple(ds.classes)))
        (train_x, train_y, class_names), (test_x, test_y, _) = splits
        return RawData(train_x, train_y, test_x, test_y, class_names)

    load.__doc__ = doc
    return load


load_mnist = _torchvision_loader(tv.MNIST, _mnist_files, "NHW", "MNIST via torchvision: 60000 + 10000 images 28x28.")
load_fashion_mnist = _torchvision_loader(
    tv.FashionMNIST, _mnist_files, "NHW", "Fashion-MNIST via torchvision: 60000 + 10000 images 28x28."
)
load_cifar10 = _torchvision_loader(
    tv.CIFAR10, _cifar_files, "NHWC", "CIFAR-10 via torchvision: 50000 + 10000 RGB images 32x32."
)


# ---------------------------------------------------------------- image folder


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def load_image_folder(
    root: Path, download: bool, path: str, image_size: int | Sequence[int] | None = None, channels: int = 3,
    in_memory: bool = True, num_workers: int = 2, shuffle_buffer: int = 10_000,
) -> RawData | StreamSource:
    """Images under `path`: one class per subfolder (sorted names), or unlabelled when they sit directly in it.

    `in_memory=false` leaves the files on disk: DataLoader workers decode them batch by batch (vae_lab.data.stream).
    """
    folder = Path(path).expanduser().resolve()
    if channels not in (1, 3):
        raise ConfigError(f"dataset.options.channels={channels!r}: expected 1 or 3")
    size = _image_size(image_size)
    if not folder.is_dir():
        raise DataError(f"image folder {folder} does not exist (dataset.options.path)")
    loose = sorted(p for p in folder.iterdir() if _is_image(p))
    classes = {
        d.name: sorted(p for p in d.rglob("*") if _is_image(p))
        for d in sorted(folder.iterdir())
        if d.is_dir() and not d.name.startswith(".")
    }
    classes = {name: files for name, files in classes.items() if files}
    if loose and classes:
        raise DataError(
            f"{folder} has images both directly inside ({loose[0].name}, ...) and in class subfolders "
            f"({', '.join(classes)}); keep one layout"
        )
    if not loose and not classes:
        raise DataError(f"no images found in {folder} or its subfolders (looked for {' '.join(IMAGE_EXTENSIONS)})")

    if not isinstance(in_memory, bool):
        raise ConfigError(f"dataset.options.in_memory={in_memory!r}: expected true or false")
    files = loose or [f for names in classes.values() for f in names]
    labels = None if loose else [k for k, names in enumerate(classes.values()) for _ in names]
    class_names = None if loose else tuple(classes)
    mode = "L" if channels == 1 else "RGB"
    if not in_memory:
        from vae_lab.data.hf import file_rows, make_decoder

        rows = file_rows(files, labels)
        decoder = make_decoder(rows, "image", "label" if labels else None, channels, size, str(folder))
        return StreamSource(rows, None, decoder, class_names, num_workers, shuffle_buffer)
    arrays = [read_image(f, mode, size, str(f)) for f in files]
    for f, a in zip(files, arrays):
        if a.shape != arrays[0].shape:
            raise DataError(size_mismatch(str(files[0]), arrays[0].shape, str(f), a.shape))
    images = np.stack(arrays)  # (N, H, W) or (N, H, W, 3)
    x = _uint8_nchw(images, "NHW" if channels == 1 else "NHWC")
    return RawData(train_x=x, train_y=None if loose else _labels(labels), class_names=class_names)


# ---------------------------------------------------------------- array file (hf: vae_lab/data/hf.py)


def _layout(shape: tuple[int, ...], source: str) -> str:
    if len(shape) == 3:
        return "NHW"
    if len(shape) == 4:
        last, first = shape[3] in (1, 3), shape[1] in (1, 3)
        if last != first:
            return "NHWC" if last else "NCHW"
        hint = "ambiguous channel axis" if last else "no channel axis of size 1 or 3"
    else:
        hint = f"{len(shape)} dims"
    raise DataError(
        f"{source} has shape {shape} ({hint}); expected (N,H,W), (N,H,W,C) or (N,C,H,W) with C in {{1, 3}}"
    )


def _to_uint8(a: np.ndarray, source: str) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    if np.issubdtype(a.dtype, np.floating) and a.size:
        lo, hi = float(np.min(a)), float(np.max(a))
        if 0.0 <= lo and hi <= 1.0:  # NaN fails both comparisons
            return np.rint(a * 255.0).astype(np.uint8)
        found = f"{a.dtype} values in [{lo:g}, {hi:g}]"
    else:
        found = f"dtype {a.dtype}"
    raise DataError(f"{source} holds {found}; expected uint8 (0..255) or float in [0, 1]")


def load_array_file(
    root: Path, download: bool, path: str, key: str | None = None, label_key: str | None = None
) -> RawData:
    """Images from a .npy array or a .npz archive (images under `key`, default x or images; labels under y)."""
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise DataError(f"array file {file} does not exist (dataset.options.path)")
    try:
        loaded = np.load(file, allow_pickle=False)  # never unpickle user files
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read array file {file}: {err}") from err
    labels = None
    if isinstance(loaded, np.ndarray):
        images, source = loaded, str(file)
    else:
        with loaded:
            present = list(loaded.files)
            image_key = key or next((k for k in ("x", "images") if k in present), "x")
            if image_key not in present:
                raise DataError(f"{file} has no array {image_key!r}; keys present: {', '.join(present) or 'none'}")
            wanted_labels = label_key or next((k for k in ("y", "labels") if k in present), None)
            if label_key is not None and label_key not in present:
                raise DataError(f"{file} has no array {label_key!r}; keys present: {', '.join(present)}")
            images, source = loaded[image_key], f"{file}[{image_key!r}]"
            if wanted_labels is not None:
                labels = loaded[wanted_labels]
    x = _uint8_nchw(_to_uint8(images, source), _layout(images.shape, source))
    y = None
    if labels is not None:
        integers = np.issubdtype(labels.dtype, np.integer)
        if labels.shape != (len(x),) or not integers or (labels.size and labels.min() < 0):
            raise DataError(
                f"labels in {file} must be non-negative integers of shape ({len(x)},); "
                f"found {labels.dtype} of shape {labels.shape}"
            )
        y = _labels(labels)
    return RawData(train_x=x, train_y=y)


# ---------------------------------------------------------------- factor datasets


def _factor_data(images: torch.Tensor, factors: torch.Tensor) -> RawData:
    from vae_lab.data.sprites import FACTOR_NAMES, SHAPE_NAMES

    return RawData(train_x=images, train_y=factors[:, 0].clone(), class_names=SHAPE_NAMES, factors=factors,
                   factor_names=FACTOR_NAMES)


def load_sprites(root: Path, download: bool, stride: dict | None = None) -> RawData:
    """dSprites-like images generated from their factors (vae_lab.data.sprites); labels: the shape."""
    from vae_lab.data.sprites import render_sprites

    return _factor_data(*render_sprites(stride))


def load_dsprites(root: Path, download: bool, stride: dict | None = None, md5: str | None = "default") -> RawData:
    """The real dSprites archive from `root` (md5-checked; never downloaded); labels: the shape."""
    from vae_lab.data.sprites import DSPRITES_FILE, DSPRITES_MD5, read_dsprites

    return _factor_data(*read_dsprites(Path(root) / DSPRITES_FILE, DSPRITES_MD5 if md5 == "default" else md5, stride))


DATASETS: dict[str, Callable[..., RawData]] = {
    "digits": load_digits,
    "mnist": load_mnist,
    "fashion_mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
    "image_folder": load_image_folder,
    "array_file": load_array_file,
    "hf": load_hf,
    "sprites": load_sprites,
    "dsprites": load_dsprites,
}


def load_dataset(name: str, root: str | Path, download: bool = True, **options) -> RawData | StreamSource:
    """Look `name` up in DATASETS and call its loader; unknown names or options are a ConfigError."""
    if name not in DATASETS:
        raise choices_error("dataset", name, DATASETS)
    loader = DATASETS[name]
    try:
        inspect.signature(loader).bind(root, download, **options)
    except TypeError as err:
        accepted = [p for p in inspect.signature(loader).parameters if p not in ("root", "download")]
        raise ConfigError(
            f"dataset {name!r}: {err} in dataset.options {sorted(options)}; "
            f"accepted options: {', '.join(accepted) or 'none'}"
        ) from err
    return loader(Path(root), download, **options)
