"""Dataset loaders: each decodes a dataset once into uint8 (N, C, H, W) tensors, looked up by name in DATASETS."""

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torchvision import datasets as tv

from vae_lab.data.hf import load_hf
from vae_lab.data.inspection import (IMAGE_KEYS, LABEL_KEYS, array_layout, background_option, file_kind, image_pixels,
                                     is_grey, pick_key, pixel_scale, read_labels, resize, to_channels)
from vae_lab.data.raw import RawData, image_size_option as _image_size  # noqa: F401 (RawData re-exported)
from vae_lab.data.stream import StreamSource, size_mismatch
from vae_lab.data.untrusted import check_npz_members
from vae_lab.errors import ConfigError, DataError, choices_error

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _uint8_nchw(images: np.ndarray, layout: str) -> torch.Tensor:
    """(N, H, W), (N, H, W, C) or (N, C, H, W) array -> contiguous tensor (N, C, H, W) of the same dtype."""
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


def _class_folders(folder: Path) -> dict[str, list[Path]]:
    """Class subfolders with their images; numeric names in numeric order (2 before 10), others as text."""
    dirs = [d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")]
    numeric = bool(dirs) and all(d.name.isdigit() for d in dirs)
    dirs.sort(key=(lambda d: (int(d.name), d.name)) if numeric else (lambda d: d.name))
    classes = {d.name: sorted(p for p in d.rglob("*") if _is_image(p)) for d in dirs}
    return {name: files for name, files in classes.items() if files}


def _read_file(f: Path, background: int, size) -> tuple[np.ndarray, int, str | None]:
    from PIL import UnidentifiedImageError

    from vae_lab.data.untrusted import open_image

    try:
        with open_image(f, str(f)) as img:  # a regular file, its pixel count checked before decoding
            img.load()  # decodes the whole file, so truncated files fail here
            a, depth, alpha = image_pixels(img, background)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
        raise DataError(f"cannot read image {f}: {err}") from err
    except DataError as err:
        raise DataError(f"{f}: {err}") from err
    return (a if size is None else resize(a, size)), depth, alpha


def _images_in_memory(files: list[Path], channels, background: int, size) -> tuple[torch.Tensor, int, str]:
    """Every file decoded: (N, C, H, W) on one scale (uint8, or int32 when any image is 16-bit), and what was seen."""
    decoded = [_read_file(f, background, size) for f in files]
    for f, (a, _, _) in zip(files, decoded):
        if a.shape[:2] != decoded[0][0].shape[:2]:
            raise DataError(size_mismatch(str(files[0]), decoded[0][0].shape, str(f), a.shape))
    depth = max(d for _, d, _ in decoded)
    grey = all(is_grey(a) for a, _, _ in decoded)
    chosen = (1 if grey else 3) if channels == "auto" else channels
    how = f"auto: {'all images grey' if grey else 'colour images'}" if channels == "auto" else "dataset.options"
    # 8-bit images beside 16-bit ones: k * 257 maps 0..255 exactly onto 0..65535.
    arrays = [to_channels(a, chosen).astype(np.int32) * (257 if d < depth else 1) if depth == 16
              else to_channels(a, chosen) for a, d, _ in decoded]
    x = _uint8_nchw(np.stack(arrays), "NHW" if chosen == 1 else "NHWC")
    mixed = depth == 16 and min(d for _, d, _ in decoded) < 16
    seen = f"{depth}-bit" + (" (8-bit images scaled x257)" if mixed else "")
    bg = "white" if background else "black"
    for use, said in (("alpha", "alpha used as the image (colour constant)"),
                      ("composited", f"composited on {bg} (dataset.options.background)")):
        count = sum(alpha == use for _, _, alpha in decoded)
        seen += f", {count} {said}" if count else ""
    return x, 65536 if depth == 16 else 256, f"{seen} -> {chosen} channel{'s' if chosen == 3 else ''} ({how})"


def load_image_folder(
    root: Path, download: bool, path: str, image_size: int | Sequence[int] | None = None, channels="auto",
    background: str = "white", in_memory: bool = True, num_workers: int = 2, shuffle_buffer: int = 10_000,
) -> RawData | StreamSource:
    """Images under `path`: one class per subfolder (numeric names in numeric order), or unlabelled when loose.

    `in_memory=false` leaves the files on disk: DataLoader workers decode them batch by batch (vae_lab.data.stream).
    """
    folder = Path(path).expanduser().resolve()
    if channels not in ("auto", 1, 3) or isinstance(channels, bool):
        raise ConfigError(f"dataset.options.channels={channels!r} is invalid: must be auto, 1 or 3")
    bg = background_option(background)
    size = _image_size(image_size)
    if folder.is_file():
        raise _wrong_source(folder, "a folder of images")
    if not folder.is_dir():
        raise DataError(f"image folder {folder} does not exist (dataset.options.path)")
    loose = sorted(p for p in folder.iterdir() if _is_image(p))
    classes = _class_folders(folder)
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
    if not in_memory:
        from vae_lab.data.hf import file_rows, make_decoder

        if channels == "auto":
            channels = 1 if is_grey(_read_file(files[0], bg, size)[0]) else 3
        rows = file_rows(files, labels)
        decoder = make_decoder(rows, "image", "label" if labels else None, channels, size, str(folder), root=folder)
        summary = (f"data: image_folder {folder} {len(files)} images, streamed, {channels} channel(s) "
                   f"(from the first image); {said}")
        return StreamSource(rows, None, decoder, class_names, num_workers, shuffle_buffer, summary=summary)
    x, levels, seen = _images_in_memory(files, channels, bg, size)
    n = f"{len(files)} image{'s' if len(files) > 1 else ''}"
    summary = f"data: image_folder {folder} {n} {x.shape[2]}x{x.shape[3]} (HxW) {seen}; {said}"
    return RawData(train_x=x, train_y=None if loose else _labels(labels), class_names=class_names, levels=levels,
                   summary=summary)


# ---------------------------------------------------------------- array file (hf: vae_lab/data/hf.py)


def _open_arrays(file: Path):
    """np.load of a checked file: an ndarray (.npy) or an NpzFile; anything else refused with what it is."""
    if file.is_dir():
        raise _wrong_source(file, "an array file")
    if not file.is_file():
        raise DataError(f"array file {file} does not exist (dataset.options.path)")
    if file.stat().st_size == 0:
        raise DataError(f"array file {file} is empty (0 bytes); save the images with numpy.save or numpy.savez")
    kind = file_kind(file)
    if kind == "zip":
        import zipfile

        try:
            with zipfile.ZipFile(file) as z:
                names = z.namelist()
        except zipfile.BadZipFile as err:
            raise DataError(f"cannot read array file {file}: a damaged zip/.npz archive ({err})") from err
        check_npz_members(file)  # an object array under any key: one line now, not a traceback when it is read
        if names and not any(n.endswith(".npy") for n in names):
            kind = f"a zip archive of {names[0]}, ...; unzip it and use dataset=image_folder for image files"
    if kind not in ("npy", "zip"):
        raise DataError(f"{file} is not a .npy/.npz file (found {kind or 'unrecognised data'}): convert it with "
                        f"numpy.save / numpy.savez, or use dataset=image_folder for image files")
    try:
        return np.load(file, allow_pickle=False)  # never unpickle user files
    except (OSError, ValueError, EOFError) as err:
        hint = "object arrays (dtype=object) cannot be read: save numeric arrays" if "pickle" in str(err) else err
        raise DataError(f"cannot read array file {file}: {hint}") from err


def load_array_file(
    root: Path, download: bool, path: str, key: str | None = None, label_key: str | None = None
) -> RawData:
    """Images from a .npy array or a .npz archive (images under `key`, default x or images; labels under y, ...)."""
    file = Path(path).expanduser().resolve()
    loaded = _open_arrays(file)
    labels, said = None, "unlabelled"
    if isinstance(loaded, np.ndarray):
        images, source, where = loaded, file.name, str(file)
    else:
        with loaded:
            present = list(loaded.files)
            if not present:
                raise DataError(f"{file} holds no arrays; save the images with numpy.savez(path, x=images, y=labels)")
            image_key = pick_key(present, key, IMAGE_KEYS)
            if image_key not in present:
                what = (f"no array {key!r} (dataset.options.key)" if key
                        else f"no array 'x' (nor {', '.join(IMAGE_KEYS[1:])})")
                stacks = [k for k in present if loaded[k].ndim >= 3]
                raise DataError(f"{file} has {what}; keys present: {', '.join(present)}; "
                                f"set dataset.options.key={stacks[0] if stacks else '<the images key>'}")
            images, source, where = loaded[image_key], f"{file.name}[{image_key!r}]", f"{file}[{image_key!r}]"
            if label_key is not None and label_key not in present:
                raise DataError(f"{file} has no array {label_key!r} (dataset.options.label_key); "
                                f"keys present: {', '.join(present)}")
            others = [k for k in present if k != image_key]
            wanted = pick_key(others, label_key, LABEL_KEYS)
            if wanted is not None:
                labels, said = read_labels(loaded[wanted], len(images), f"{wanted!r} in {file}")
                said = f"y {wanted!r} {said}"
            else:
                ids = [k for k in others if loaded[k].shape == (len(images),) and loaded[k].dtype.kind in "iu"]
                if ids:
                    said += f"; found {ids[0]!r} ({len(images)},) ints: set dataset.options.label_key={ids[0]}"
    layout = array_layout(images.shape, where)
    pixels = pixel_scale(images, where)
    x = _uint8_nchw(pixels.values, layout)
    c = x.shape[1]
    summary = (f"data: array_file {source} {tuple(images.shape)} {pixels.note}, {c} channel{'s' if c > 1 else ''}; "
               f"{said}")
    return RawData(train_x=x, train_y=None if labels is None else torch.from_numpy(labels), levels=pixels.levels,
                   summary=summary)


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
