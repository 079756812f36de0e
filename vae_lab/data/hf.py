"""Hugging Face `datasets` sources: a Hub id, a save_to_disk directory or Parquet/Arrow files, in memory or streamed."""

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from vae_lab.data import untrusted
from vae_lab.data.inspection import (GREY_TOLERANCE, LABEL_KEYS, grey_tolerance_option, image_is_grey, names_text,
                                     string_classes)
from vae_lab.data.stream import Decoder, StreamingBatches, StreamSource, is_table, num_rows, read_image
from vae_lab.errors import ConfigError, DataError

IN_MEMORY = ("auto", True, False)
FILE_BUILDERS = {".parquet": "parquet", ".arrow": "arrow"}  # packaged `datasets` builders by file suffix
MEMORY_SHARE = 0.5  # default limit of the in-memory path: this share of the RAM available at start
TEXT = ("string", "large_string")  # label columns of class names
CHANNEL_SAMPLE = 64  # images looked at to decide channels when not given (a later colour image is refused)


def available_memory_bytes() -> int:
    """RAM the OS could give this process now (MemAvailable), or the physical RAM where that is unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _offline_hint(path: str) -> str:
    return (f"dataset.options.path={path!r} is not a local path and the Hugging Face Hub cannot be reached "
            f"(offline or HF_HUB_OFFLINE=1). To work offline: once online, run python -c \"import datasets; "
            f"datasets.load_dataset('{path}').save_to_disk('DIR')\" and set dataset.options.path=DIR (or point it "
            f"at the dataset's Parquet files); a dataset already in the HF cache also loads with HF_HUB_OFFLINE=1")


def open_source(path: str, config_name: str | None, revision: str | None, streaming: bool, cache_dir: Path | None):
    """A Dataset / DatasetDict (memory-mapped Arrow) or, with `streaming`, an IterableDataset(Dict).

    cache_dir None: the `datasets` cache (HF_DATASETS_CACHE, ~/.cache/huggingface/datasets), an absolute place:
    a relative paths.data_dir would put converted copies wherever the run starts (inside a checkout).
    """
    import datasets

    local = Path(path).expanduser()
    untrusted.check_local_source(local, _glob(local) if local.suffix.lower() in FILE_BUILDERS else [])
    if local.is_dir() and any((local / f).is_file() for f in ("dataset_info.json", "dataset_dict.json", "state.json")):
        ds = datasets.load_from_disk(str(local))  # memory-mapped, no copy
        if streaming:
            ds = (datasets.IterableDatasetDict({k: v.to_iterable_dataset() for k, v in ds.items()})
                  if isinstance(ds, datasets.DatasetDict) else ds.to_iterable_dataset())
        return ds
    builder = FILE_BUILDERS.get(local.suffix.lower())
    if builder is not None or local.exists():
        if builder is not None and not any(Path(p).is_file() for p in _glob(local)):
            raise DataError(f"no file matches dataset.options.path={path!r}")
        args = (builder,) if builder else (str(local),)
        files = {"data_files": [str(p) for p in _glob(local)]} if builder else {}
        # Parquet/Arrow files are converted once into memory-mapped Arrow under cache_dir (the library's cache).
        return datasets.load_dataset(*args, **files, streaming=streaming, cache_dir=cache_dir and str(cache_dir))
    try:
        return datasets.load_dataset(path, config_name, revision=revision, streaming=streaming,
                                     cache_dir=cache_dir and str(cache_dir))
    except ConnectionError as err:
        raise DataError(_offline_hint(path)) from err
    except FileNotFoundError as err:  # DatasetNotFoundError is one
        raise DataError(f"dataset.options.path={path!r}: no such local path, and the Hub says: "
                        f"{str(err).splitlines()[0]}") from err


def _glob(pattern: Path) -> list[Path]:
    return sorted(pattern.parent.glob(pattern.name)) if any(c in pattern.name for c in "*?[") else [pattern]


def _pick_split(ds, split: str, what: str):
    import datasets

    if not isinstance(ds, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        return ds  # one split only (a save_to_disk of a Dataset)
    if split not in ds:
        raise DataError(f"{what}={split!r} is not a split of the dataset; splits: {', '.join(ds)}")
    return ds[split]


def _columns(rows, image_column: str, label_column: str | None, where: str) -> tuple[str | None, tuple | None]:
    """Check the columns; the label column (auto: `label` or `labels` when they hold class ids) and class names."""
    import datasets

    features = rows.features or {}
    columns = list(features)
    if image_column not in features:
        raise DataError(f"dataset.options.image_column={image_column!r} is not a column of {where}; "
                        f"columns: {', '.join(columns)}")
    image = features[image_column]
    if not (isinstance(image, datasets.Image) or getattr(image, "dtype", None) in ("binary", "large_binary",
                                                                                    "string", "large_string")):
        raise DataError(f"column {image_column!r} of {where} holds {image}, not images "
                        f"(expected an Image feature, image bytes or file paths)")
    def is_ids(feature) -> bool:  # class ids, or class names as text (mapped to sorted ids)
        dtype = str(getattr(feature, "dtype", ""))
        return isinstance(feature, datasets.ClassLabel) or dtype.startswith(("int", "uint")) or dtype in TEXT
    if label_column is None:
        lower = {c.lower(): c for c in features if c != image_column}  # y, label(s), target(s), class(es)
        label_column = next((lower[k] for k in LABEL_KEYS if k in lower and is_ids(features[lower[k]])), None)
        if label_column is None:
            return None, None
    elif label_column not in features:
        raise DataError(f"dataset.options.label_column={label_column!r} is not a column of {where}; "
                        f"columns: {', '.join(columns)}")
    elif not is_ids(features[label_column]):
        raise DataError(f"column {label_column!r} of {where} holds {features[label_column]}, not class ids or names")
    names = features[label_column].names if isinstance(features[label_column], datasets.ClassLabel) else None
    return label_column, tuple(names) if names else None


def _raw(rows, image_column: str, label_column: str | None):
    """Only the columns used, the image column left undecoded (bytes/paths travel to the workers)."""
    import datasets

    keep = [image_column] + ([label_column] if label_column else [])
    rows = rows.select_columns(keep)
    if isinstance(rows.features[image_column], datasets.Image):
        rows = rows.cast_column(image_column, datasets.Image(decode=False))
    return rows


def _first(rows) -> dict:
    return rows[0] if is_table(rows) else next(iter(rows.take(1)))


def make_decoder(rows, image_column, label_column, channels, size, where: str,
                 grey_tolerance: int = GREY_TOLERANCE, root: str | Path | None = None) -> Decoder:
    """A Decoder whose shape is the first image's (after resizing); channels, when not given, from the first
    CHANNEL_SAMPLE images: 3 if any is colour, else 1, and a later colour image is then refused (never made grey).
    Image paths are read only inside `root` (vae_lab.data.untrusted)."""
    first = _first(rows)
    if first is None:
        raise DataError(f"{where} has no examples")
    source = first[image_column]
    name = (source.get("path") if isinstance(source, dict) else None) or f"{where} row 0"
    rule = None
    if channels is None:
        sample = _sample(rows, image_column)
        grey = all(_open(src, root, image_is_grey, grey_tolerance) for src in sample)
        channels = 1 if grey else 3
        rule = f"auto: {'all' if grey else 'not all'} of the first {len(sample)} images grey"
    elif channels not in (1, 3):
        raise ConfigError(f"dataset.options.channels={channels!r}: expected 1, 3 or null (from the first "
                          f"{CHANNEL_SAMPLE} images)")
    a = read_image(source, "L" if channels == 1 else "RGB", size, name, root=root)
    return Decoder(image_column, label_column, channels, size, (channels, *a.shape[:2]), str(name), rule,
                   grey_tolerance, root=None if root is None else str(root))


def _sample(rows, image_column: str) -> list:
    """The image column of the first CHANNEL_SAMPLE rows (a table slice, or the stream's head)."""
    if is_table(rows):
        return rows[:CHANNEL_SAMPLE][image_column]
    return [row[image_column] for row in rows.take(CHANNEL_SAMPLE)]


def _open(source, root, check, *args):
    """check(PIL image, *args) for a row's image (bytes, a path read only inside `root`, or a {"bytes", "path"}
    dict), its header checked by vae_lab.data.untrusted first."""
    import io

    from vae_lab.data.untrusted import open_image

    name = source.get("path") if isinstance(source, dict) else None
    if isinstance(source, dict):
        source = source["bytes"] if source.get("bytes") is not None else source.get("path")
    with open_image(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source,
                    str(name or "image"), root) as img:
        return check(img, *args)


def decode_all(rows, decoder: Decoder, num_workers: int):
    """The in-memory path: every row decoded once (by the same workers as the stream) into uint8 (N, C, H, W)."""
    import torch

    batches = StreamingBatches(rows, decoder, 512, shuffle=False, seed=0, num_workers=num_workers)
    x = torch.empty((num_rows(rows), *decoder.shape), dtype=torch.uint8)  # filled in place: no second copy
    y = torch.empty(num_rows(rows), dtype=torch.int64)
    start = 0
    for xb, yb in batches.uint8_batches(0, 0):
        x[start : start + len(xb)], y[start : start + len(xb)] = xb, yb
        start += len(xb)
    return x, y if decoder.label_column else None


def _datasets_cache() -> Path:
    """Where `datasets` keeps what it downloads and converts (a Hub dataset's image paths must stay inside it)."""
    import datasets

    return Path(datasets.config.HF_DATASETS_CACHE)


def load_hf(root: Path, download: bool, path: str, image_column: str = "image", label_column: str | None = None,
            split: str = "train", test_split: str | None = None, config_name: str | None = None,
            revision: str | None = None, image_size: int | Sequence[int] | None = None, channels: int | None = None,
            streaming: bool = False, in_memory: str | bool = "auto", memory_limit_gb: float | None = None,
            num_workers: int = 2, shuffle_buffer: int = 10_000, grey_tolerance: int = GREY_TOLERANCE):
    """A Hugging Face dataset: decoded into memory when it fits under the limit, else a StreamSource."""
    from vae_lab.data.raw import RawData, image_size_option as _image_size

    if in_memory not in IN_MEMORY or isinstance(in_memory, int) and not isinstance(in_memory, bool):
        raise ConfigError(f"dataset.options.in_memory={in_memory!r}: expected auto, true or false")
    if streaming and in_memory is True:
        raise ConfigError("dataset.options.in_memory=true contradicts dataset.options.streaming=true")
    if memory_limit_gb is not None and (not isinstance(memory_limit_gb, (int, float)) or memory_limit_gb < 0):
        raise ConfigError(f"dataset.options.memory_limit_gb={memory_limit_gb!r}: expected a number >= 0 or null")
    size = _image_size(image_size)
    ds = open_source(path, config_name, revision, streaming, None)
    train = _pick_split(ds, split, "dataset.options.split")
    if test_split is None:
        test = ds["test"] if split != "test" and hasattr(ds, "keys") and "test" in ds else None
    else:
        test = _pick_split(ds, test_split, "dataset.options.test_split")
    where = f"{path} [{split}]"
    label_column, class_names = _columns(train, image_column, label_column, where)
    label_ids, labels_said = None, "unlabelled" if label_column is None else f"y {label_column!r}" + (
        f" {len(class_names)} classes (names from the dataset)" if class_names else " (class ids)")
    if label_column is not None and str(getattr(train.features[label_column], "dtype", "")) in TEXT:
        class_names = _text_classes(train, label_column, where)
        label_ids = {name: k for k, name in enumerate(class_names)}
        labels_said = f"y {label_column!r} {names_text(class_names)}"
    train = _raw(train, image_column, label_column)
    test = None if test is None else _raw(test, image_column, label_column)
    decoder = make_decoder(train, image_column, label_column, channels, size, where,
                           grey_tolerance_option(grey_tolerance), root=untrusted.images_root(
                               Path(path).expanduser(), _datasets_cache()))
    decoder = replace(decoder, label_ids=label_ids)
    c, h, w = decoder.shape
    n_train = num_rows(train)
    said = (f"{'?' if n_train is None else n_train} images {h}x{w} (HxW) 8-bit, {c} channel{'s' if c == 3 else ''} "
            f"({decoder.rule or 'dataset.options.channels'}); {labels_said}")

    source = StreamSource(train, test, decoder, class_names, num_workers, shuffle_buffer,
                          summary=f"data: hf {where} {said}, streamed")
    if in_memory is False or not is_table(train):
        return source
    n = num_rows(train) + (num_rows(test) if test is not None else 0)
    need = n * decoder.shape[0] * decoder.shape[1] * decoder.shape[2]  # uint8 bytes
    limit = memory_limit_gb * 1e9 if memory_limit_gb is not None else MEMORY_SHARE * available_memory_bytes()
    if in_memory == "auto" and need > limit:
        return source
    train_x, train_y = decode_all(train, decoder, num_workers)
    test_x, test_y = decode_all(test, decoder, num_workers) if test is not None else (None, None)
    if test is not None and label_column is None:
        test_y = None
    return RawData(train_x, train_y, test_x, test_y, class_names, summary=f"data: hf {where} {said}, in memory")


def _text_classes(rows, label_column: str, where: str) -> tuple[str, ...]:
    """The sorted class names of a text label column (one column read); a stream cannot list them in advance."""
    if not is_table(rows):
        raise DataError(f"column {label_column!r} of {where} holds class names as text, which a stream cannot list "
                        f"before reading it all: set dataset.options.streaming=false, or dataset.options."
                        f"label_column=null (unlabelled)")
    return string_classes(rows.unique(label_column))[1]


def file_rows(files: list[Path], labels: list[int] | None):
    """A memory-mapped table of image file paths (and labels): image_folder's rows for the streaming path."""
    import datasets

    features = {"image": datasets.Image(decode=False)}
    data = {"image": [str(f) for f in files]}
    if labels is not None:
        features["label"] = datasets.Value("int64")
        data["label"] = labels
    return datasets.Dataset.from_dict(data, features=datasets.Features(features))
