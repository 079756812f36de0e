"""dataset=array_file: a .npy / .npz of images (and labels), read as its dtype and value range say, or refused;
.npy files memory-mapped and served from the map."""

from pathlib import Path

import numpy as np
import torch

from vae_lab.data.files import _uint8_nchw, _wrong_source
from vae_lab.data.inspection import IMAGE_KEYS, LABEL_KEYS, array_layout, file_kind, pick_key, pixel_scale, read_labels
from vae_lab.data.raw import RawData
from vae_lab.data.untrusted import check_npz_members
from vae_lab.errors import DataError


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
        # never unpickle user files; a .npy is memory-mapped (copy-on-write: pages are read when a batch needs
        # them and never copied whole); np.load ignores mmap_mode for .npz members, which are read whole
        return np.load(file, allow_pickle=False, mmap_mode="c" if kind == "npy" else None)
    except (OSError, ValueError, EOFError) as err:
        objects = any(word in str(err) for word in ("pickle", "Python objects"))  # np.load's / the memory map's
        hint = "object arrays (dtype=object) cannot be read: save numeric arrays" if objects else err
        raise DataError(f"cannot read array file {file}: {hint}") from err


def load_array_file(
    root: Path, download: bool, path: str, key: str | None = None, label_key: str | None = None,
    layout: str = "auto", levels="auto",
) -> RawData:
    """Images from a .npy array (memory-mapped) or a .npz archive (images under `key`, default x or images; labels
    under y, ...)."""
    file = Path(path).expanduser().resolve()
    loaded = _open_arrays(file)
    labels, said, class_names = None, "unlabelled", None
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
                labels, said, class_names = read_labels(loaded[wanted], len(images), f"{wanted!r} in {file}")
                said = f"y {wanted!r} {said}"
            else:
                ids = [k for k in others if loaded[k].shape == (len(images),) and loaded[k].dtype.kind in "iu"]
                if ids:
                    said += f"; found {ids[0]!r} ({len(images)},) ints: set dataset.options.label_key={ids[0]}"
    layout = array_layout(images.shape, where, layout, labelled=labels is not None)
    pixels = pixel_scale(images, where, levels)
    mapped = isinstance(images, np.memmap) and pixels.values is images  # not converted: still the file
    x = _uint8_nchw(pixels.values, layout, copy=not mapped)
    c = x.shape[1]
    served = ", memory-mapped" if mapped else ""
    summary = (f"data: array_file {source} {tuple(images.shape)} {pixels.note}, {c} channel{'s' if c > 1 else ''}"
               f"{served}; {said}")
    return RawData(train_x=x, train_y=None if labels is None else torch.from_numpy(labels), levels=pixels.levels,
                   summary=summary, class_names=class_names, mapped=mapped)
