"""Dataset loaders: each decodes a dataset once into uint8 (N, C, H, W) tensors, looked up by name in DATASETS."""

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torchvision import datasets as tv

from vae_lab.data.array_file import load_array_file
from vae_lab.data.files import IMAGE_EXTENSIONS, _labels, _uint8_nchw, _wrong_source
from vae_lab.data.hf import load_hf
from vae_lab.data.inspection import (GREY_TOLERANCE, background_option, data_levels, grey_tolerance_option,
                                     image_pixels, is_grey, resize, to_channels, upright)
from vae_lab.data.raw import RawData, image_size_option as _image_size, storage_dtype  # noqa: F401 (RawData re-exported)
from vae_lab.data.stream import StreamSource, size_mismatch
from vae_lab.errors import ConfigError, DataError, choices_error


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


def _extract_local_archives(cls, root: Path) -> None:
    """Extract MNIST-style `<Name>/raw/*.gz` archives that are present and pass their md5 (no network touched).

    torchvision only extracts inside `download()`, so with download=false the archives a user put in place (and that
    the not-found message names) would be refused; a file whose md5 fails is left for `_md5_mismatch` to name.
    """
    import hashlib

    from torchvision.datasets.utils import extract_archive

    raw = root / cls.__name__ / "raw"
    for filename, md5 in getattr(cls, "resources", []):
        archive = raw / filename
        target = raw / Path(filename).stem
        if target.is_file() or not archive.is_file():
            continue
        if hashlib.md5(archive.read_bytes(), usedforsecurity=False).hexdigest() != md5:
            continue
        try:
            extract_archive(str(archive), str(raw))
        except OSError as err:
            raise DataError(f"cannot extract {archive} into {raw} ({err.strerror or err}); copy the archives to a "
                            f"writable folder and set paths.data_dir to it") from err


def _torchvision_loader(cls, expected_files: Callable, layout: str, doc: str) -> Callable:
    """A loader for a torchvision dataset class whose `.data` already holds every decoded image."""

    def load(root: Path, download: bool) -> RawData:
        root = Path(root).expanduser().resolve()
        if not download:
            _extract_local_archives(cls, root)
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


def _hidden(path: Path, folder: Path) -> bool:
    """A file or folder under `folder` whose own name or any folder's between starts with '.' (.ipynb_checkpoints)."""
    return any(part.startswith(".") for part in path.relative_to(folder).parts)


def _images_below(folder: Path) -> tuple[list[Path], int]:
    """(visible image files at any depth under `folder`, sorted; image files skipped as hidden)."""
    found, hidden = [], 0
    for p in folder.rglob("*"):
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file():
            if _hidden(p, folder):
                hidden += 1
            else:
                found.append(p)
    return sorted(found), hidden


def _class_folders(folder: Path) -> tuple[dict[str, list[Path]], int]:
    """Class subfolders (top level only) with their images at any depth; numeric names in numeric order (2 before
    10), others as text; and the images under hidden files and folders, skipped at every depth."""
    dirs = [d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")]
    numeric = bool(dirs) and all(d.name.isdigit() for d in dirs)
    dirs.sort(key=(lambda d: (int(d.name), d.name)) if numeric else (lambda d: d.name))
    below = {d.name: _images_below(d) for d in dirs}
    hidden = sum(h for _, h in below.values())
    hidden += sum(1 for d in folder.iterdir() if d.name.startswith(".") and d.is_dir()
                  for p in d.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    hidden += sum(1 for p in folder.iterdir() if p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS)
    return {name: files for name, (files, _) in below.items() if files}, hidden


def _read_file(f: Path, background: int, size) -> tuple[np.ndarray, int, str | None]:
    from PIL import UnidentifiedImageError

    from vae_lab.data.untrusted import open_image

    try:
        with open_image(f, str(f)) as img:  # a regular file, its pixel count checked before decoding
            img.load()  # decodes the whole file, so truncated files fail here
            upright(img)  # EXIF orientation: phone photos are stored sideways
            a, depth, alpha = image_pixels(img, background)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
        raise DataError(f"cannot read image {f}: {err}") from err
    except DataError as err:
        raise DataError(f"{f}: {err}") from err
    return (a if size is None else resize(a, size)), depth, alpha


def _images_in_memory(files: list[Path], channels, background: int, size, tolerance: int = 0,
                      levels="auto") -> tuple[torch.Tensor, int, str]:
    """Every file decoded: (N, C, H, W) on one scale (uint8 up to 8-bit, int32 above: data_levels), and what was
    seen."""
    decoded = [_read_file(f, background, size) for f in files]
    for f, (a, _, _) in zip(files, decoded):
        if a.shape[:2] != decoded[0][0].shape[:2]:
            raise DataError(size_mismatch(str(files[0]), decoded[0][0].shape, str(f), a.shape))
    depth = max(d for _, d, _ in decoded)
    grey = all(is_grey(a, tolerance) for a, _, _ in decoded)
    near = sum(not is_grey(a) for a, _, _ in decoded) if grey else 0  # grey only within the tolerance
    chosen = (1 if grey else 3) if channels == "auto" else channels
    how = f"auto: {'all images grey' if grey else 'colour images'}" if channels == "auto" else "dataset.options"
    if channels == "auto" and near:
        how += f", {near} of them within ±{tolerance} (dataset.options.grey_tolerance)"
    # 8-bit images beside 16-bit ones: k * 257 maps 0..255 exactly onto 0..65535.
    arrays = [to_channels(a, chosen).astype(np.int32) * (257 if d < depth else 1) if depth == 16
              else to_channels(a, chosen) for a, d, _ in decoded]
    x = _uint8_nchw(np.stack(arrays), "NHW" if chosen == 1 else "NHWC")
    lo, hi = int(x.min()), int(x.max())
    levels, said = data_levels(hi, depth, levels)
    x = x.to(storage_dtype(levels))  # 12-bit in 16-bit PNGs stays int32; 16-bit PNGs of 8-bit values become uint8
    mixed = depth == 16 and min(d for _, d, _ in decoded) < 16
    seen = f"{depth}-bit" + (" (8-bit images scaled x257)" if mixed else "") + f", values {lo}..{hi}"
    seen += "" if said == f"{depth}-bit" or said == f"{depth}-bit ({1 << depth} levels)" else f" -> {said}"
    bg = "white" if background else "black"
    for use, said in (("alpha", "alpha used as the image (colour constant)"),
                      ("composited", f"composited on {bg} (dataset.options.background)")):
        count = sum(alpha == use for _, _, alpha in decoded)
        seen += f", {count} {said}" if count else ""
    return x, levels, f"{seen} -> {chosen} channel{'s' if chosen == 3 else ''} ({how})"


def load_image_folder(
    root: Path, download: bool, path: str, image_size: int | Sequence[int] | None = None, channels="auto",
    background: str = "white", in_memory: bool = True, num_workers: int = 2, shuffle_buffer: int = 10_000,
    grey_tolerance: int = GREY_TOLERANCE, levels="auto",
) -> RawData | StreamSource:
    """Images under `path`: one class per top-level subfolder (numeric names in numeric order; images deeper down
    belong to it), or unlabelled when loose; hidden files and folders are skipped at every depth.

    `in_memory=false` leaves the files on disk: DataLoader workers decode them batch by batch (vae_lab.data.stream).
    """
    folder = Path(path).expanduser().resolve()
    if channels not in ("auto", 1, 3) or isinstance(channels, bool):
        raise ConfigError(f"dataset.options.channels={channels!r} is invalid: must be auto, 1 or 3")
    bg = background_option(background)
    tolerance = grey_tolerance_option(grey_tolerance)
    size = _image_size(image_size)
    if folder.is_file():
        raise _wrong_source(folder, "a folder of images")
    if not folder.is_dir():
        raise DataError(f"image folder {folder} does not exist (dataset.options.path)")
    loose = sorted(p for p in folder.iterdir() if _is_image(p))
    classes, hidden = _class_folders(folder)
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
    order = " (numeric order)" if classes and all(c.isdigit() for c in classes) else ""
    said = "unlabelled" if loose else f"{len(classes)} class{'es' if len(classes) > 1 else ''} from subfolders{order}"
    if len(classes) == 1:
        said += " (1 class: no more than unlabelled)"
    deeper = sum(len(f.relative_to(folder).parts) > 2 for f in files) if classes else 0
    if deeper:  # class/sub/x.png: labelled by `class`, said so nobody expects the inner folders to be classes
        said += f" (labels from the top-level folders; {deeper} images sit in their subfolders)"
    if hidden:
        said += f"; {hidden} images in hidden files/folders (.name) skipped"
    if not in_memory:
        from vae_lab.data.hf import file_rows, make_decoder

        rows = file_rows(files, labels)
        decoder = make_decoder(rows, "image", "label" if labels else None, None if channels == "auto" else channels,
                               size, str(folder), grey_tolerance=tolerance, root=folder)
        summary = (f"data: image_folder {folder} {len(files)} images, streamed, {decoder.channels} channel"
                   f"{'s' if decoder.channels == 3 else ''} ({decoder.rule or 'dataset.options'}); {said}")
        return StreamSource(rows, None, decoder, class_names, num_workers, shuffle_buffer, summary=summary)
    x, levels, seen = _images_in_memory(files, channels, bg, size, tolerance, levels)
    n = f"{len(files)} image{'s' if len(files) > 1 else ''}"
    summary = f"data: image_folder {folder} {n} {x.shape[2]}x{x.shape[3]} (HxW) {seen}; {said}"
    return RawData(train_x=x, train_y=None if loose else _labels(labels), class_names=class_names, levels=levels,
                   summary=summary)


# ---------------------------------------------------------------- array file (hf: vae_lab/data/hf.py)


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
