"""Data files are data, whoever made them: an image path read only as a regular file inside the dataset's folder, a
pixel count checked from the header before anything is decoded, archives and a save_to_disk folder checked before a
library parses them. Each refusal is one DataError line naming the file and the fix.
"""

import json
import os
import re
import stat
import warnings
import zipfile
from pathlib import Path

from vae_lab.errors import DataError

MAX_PIXELS_ENV = "VAE_LAB_MAX_IMAGE_PIXELS"
# Pixels per image (width x height) decoded at most: 40 Mpx (e.g. 8000x5000) is far above what a VAE trains on,
# and a 900 Mpx PNG of a few KB cannot exhaust memory. PIL's own guard only warns under 179 Mpx.
DEFAULT_MAX_PIXELS = 40_000_000
MAX_JSON_BYTES = 16 << 20  # a save_to_disk folder's dataset_info.json / state.json / dataset_dict.json
MAX_JSON_DEPTH = 64  # nesting of those files (a deeply nested JSON is a RecursionError in the parser)
MAX_DECODED_GB_ENV = "VAE_LAB_MAX_PARQUET_GB"
DEFAULT_MAX_DECODED_GB = 1.0  # one Parquet row group decoded into Arrow (datasets converts a row group at a time)
EXPANSION = 100  # ... and only when that is this many times its size on disk: real image bytes barely expand


def max_pixels() -> int:
    value = os.environ.get(MAX_PIXELS_ENV, "")
    return int(value) if value.isdigit() and int(value) > 0 else DEFAULT_MAX_PIXELS


def image_file(path, root: str | Path | None, name: str) -> Path:
    """`path` if it resolves to a regular file inside `root` (the dataset's own folder); else one DataError line.

    A dataset's image column may hold any path: /etc/passwd, a FIFO (open() blocks forever), a device.
    """
    path = Path(path)
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError) as err:
        raise DataError(f"cannot read image {name}: {getattr(err, 'strerror', None) or err}") from None
    if root is not None and not real.is_relative_to(Path(root).resolve()):
        raise DataError(f"image path {name} leads outside the dataset's folder {root} (to {real}): refused; "
                        "images are read only from inside the dataset")
    if not stat.S_ISREG(os.stat(real).st_mode):  # before open: opening a FIFO waits for a writer
        raise DataError(f"image path {name} is not a regular file (a FIFO, device or socket): refused")
    return real


def open_image(source, name: str, root: str | Path | None = None):
    """A PIL image (header read, nothing decoded) from a path (checked by image_file), bytes' stream or file object,
    refused when its pixel count is over the limit."""
    from PIL import Image

    if isinstance(source, (str, os.PathLike)):
        source = image_file(source, root, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # this module's check decides
        try:
            img = Image.open(source)
        except Image.DecompressionBombError as err:  # over twice PIL's own limit: refused before our check
            found = re.search(r"\((\d+) pixels\)", str(err))
            raise DataError(too_many_pixels(name, int(found[1]) if found else None, None)) from None
    width, height = img.size
    if width * height > max_pixels():
        img.close()
        raise DataError(too_many_pixels(name, width * height, (width, height)))
    return img


def too_many_pixels(name: str, pixels: int | None, size: tuple[int, int] | None) -> str:
    shown = f"{size[0]}x{size[1]} ({pixels:,} pixels)" if size else f"{pixels:,} pixels" if pixels else "too large"
    return (f"image {name} is {shown}, over the limit of {max_pixels():,} pixels checked before decoding (a "
            f"decompression bomb?); if it is genuine, raise the limit with {MAX_PIXELS_ENV}=<pixels>")


def check_npz_members(file: Path) -> None:
    """Refuse an .npz holding an object array under any key (numpy raises only when that key is read, as a
    traceback), reading each member's header only."""
    import numpy as np

    with zipfile.ZipFile(file) as archive:
        for member in archive.namelist():
            if not member.endswith(".npy"):
                continue
            with archive.open(member) as f:
                try:
                    major, _ = np.lib.format.read_magic(f)
                    read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                    _, _, dtype = read(f)
                except (ValueError, OSError, SyntaxError) as err:
                    raise DataError(f"cannot read array file {file}: member {member!r}: {err}") from None
            if dtype.hasobject:
                raise DataError(f"cannot read array file {file}: {member[:-4]!r} is an object array (dtype=object), "
                                "which cannot be read: save numeric arrays")


def _depth(value, limit: int) -> int:
    stack, deepest = [(value, 1)], 0
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > limit:
            return depth
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, depth + 1) for child in children)
    return deepest


def read_json(path: Path, root: Path):
    """A save_to_disk folder's JSON file as data: regular, inside `root`, bounded in size and nesting."""
    real = image_file(path, root, str(path)) if os.path.lexists(path) else None
    if real is None:
        return None
    if real.stat().st_size > MAX_JSON_BYTES:
        raise DataError(f"{path} is {real.stat().st_size} bytes (limit {MAX_JSON_BYTES}): not a datasets file")
    text = real.read_bytes()
    if max(text.count(b"["), text.count(b"{")) > MAX_JSON_DEPTH and re.search(
            rb"[\[{]\s*" * (MAX_JSON_DEPTH + 1), text):
        raise DataError(f"{path} nests deeper than {MAX_JSON_DEPTH} levels: not a datasets file")
    try:
        value = json.loads(text.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise DataError(f"{path} is not valid JSON ({str(err).splitlines()[0][:120]}): a damaged datasets "
                        "folder; save it again with save_to_disk") from None
    if _depth(value, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise DataError(f"{path} nests deeper than {MAX_JSON_DEPTH} levels: not a datasets file")
    return value


def check_saved_dataset(folder: Path) -> None:
    """Check a save_to_disk folder before `datasets.load_from_disk` parses it: its JSON files well-formed, every
    data file its state.json names a plain file inside the folder, every feature type one `datasets` knows."""
    folder = Path(folder)
    splits = read_json(folder / "dataset_dict.json", folder)
    parts = [folder] if splits is None else []
    if splits is not None:
        names = splits.get("splits") if isinstance(splits, dict) else None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise DataError(f"{folder / 'dataset_dict.json'} has no list of split names: a damaged datasets folder")
        parts = [_inside(folder, n, folder / "dataset_dict.json") for n in names]
    for part in parts:
        state = read_json(part / "state.json", folder)
        for entry in (state or {}).get("_data_files", []) if isinstance(state, dict) else []:
            name = entry.get("filename") if isinstance(entry, dict) else None
            _inside(part, name, part / "state.json")
        info = read_json(part / "dataset_info.json", folder)
        features = info.get("features") if isinstance(info, dict) else None
        if features is not None:
            _check_features(features, part / "dataset_info.json")


def _inside(folder: Path, name, where: Path) -> Path:
    """folder/name for a plain name (no '/', '..' or absolute path); else one line."""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise DataError(f"{where} names the file {name!r}, outside its folder: refused (a datasets folder refers "
                        "only to files inside it)")
    return folder / name


def _check_features(features, where: Path) -> None:
    import datasets

    try:
        datasets.Features.from_dict(features)
    except Exception as err:  # noqa: BLE001 - an unknown `_type`, a malformed entry: whatever datasets raises
        first = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        raise DataError(f"{where} describes features datasets cannot read ({type(err).__name__}: {first}): a "
                        "damaged or newer datasets folder") from None


def check_parquet(files: list[Path], limit_gb: float | None = None) -> None:
    """Refuse a Parquet file whose row group would decode to more than the limit (a few KB of dictionary-encoded
    rows can expand to GBs): the estimate comes from the footer alone (row counts, column sizes, min/max lengths)."""
    import pyarrow.parquet as pq

    limit = (limit_gb if limit_gb is not None else _float_env(MAX_DECODED_GB_ENV, DEFAULT_MAX_DECODED_GB)) * 1e9
    for file in files:
        try:
            meta = pq.ParquetFile(file).metadata
        except Exception as err:  # noqa: BLE001 - pyarrow's ArrowInvalid and friends
            raise DataError(f"cannot read Parquet file {file}: {str(err).splitlines()[0][:160]}") from None
        for i in range(meta.num_row_groups):
            group = meta.row_group(i)
            need = sum(_decoded_bytes(group.column(j), group.num_rows) for j in range(group.num_columns))
            on_disk = sum(group.column(j).total_compressed_size for j in range(group.num_columns))
            if need > limit and need > EXPANSION * on_disk:
                raise DataError(f"Parquet file {file} row group {i} ({group.num_rows:,} rows) decodes to about "
                                f"{need / 1e9:.1f} GB, over the limit of {limit / 1e9:g} GB; raise it with "
                                f"{MAX_DECODED_GB_ENV}=<GB> if the file is genuine")


def _decoded_bytes(column, rows: int) -> int:
    """Upper estimate of a column chunk's size in memory: dictionary-encoded values count once per row."""
    size = column.total_uncompressed_size
    if not any("DICTIONARY" in str(e) for e in column.encodings):
        return size
    stats = column.statistics
    if stats is None or not stats.has_min_max:  # no value lengths to go by: the chunk's own size
        return size
    width = max(len(v) if isinstance(v, (bytes, str)) else 8 for v in (stats.min, stats.max))
    return max(size, (column.num_values or rows) * min(width, size))


def _float_env(name: str, default: float) -> float:
    try:
        return float(os.environ[name])
    except (KeyError, ValueError):
        return default


def images_root(local: Path, cache_dir: Path) -> Path:
    """The folder a dataset's image paths must stay in: a local folder itself, a local file's folder, or (a Hub
    dataset) the cache it was downloaded into."""
    if local.is_dir():
        return local
    if local.parent.is_dir() and (local.exists() or any(c in local.name for c in "*?[")):
        return local.parent
    return cache_dir


def check_local_source(local: Path, files: list[Path]) -> None:
    """A local `dataset.options.path` checked before `datasets` reads it: no loading script (code), a sound
    save_to_disk folder, Parquet files whose row groups decode within the limit."""
    if local.is_dir():
        scripts = sorted(p.name for p in local.glob("*.py"))
        if scripts:
            raise DataError(f"dataset.options.path={str(local)!r} holds a dataset loading script ({scripts[0]}): "
                            "vae_lab never runs a dataset's code; point it at the data files (Parquet/Arrow) or a "
                            "save_to_disk folder")
        if any((local / f).is_file() for f in ("dataset_info.json", "dataset_dict.json", "state.json")):
            check_saved_dataset(local)
            return
        files = sorted(local.rglob("*.parquet"))
    check_parquet([f for f in files if f.suffix.lower() == ".parquet" and f.is_file()])
