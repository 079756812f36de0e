"""Inspect, then decide, then say: what a user's pixels and labels are, read right or refused in one line."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vae_lab.errors import ConfigError, DataError

LABEL_KEYS = ("y", "label", "labels", "target", "targets", "class", "classes")  # matched case-insensitively
IMAGE_KEYS = ("x", "images", "image", "imgs", "data")
BACKGROUNDS = {"white": 255, "black": 0}  # where transparent pixels are composited (dataset.options.background)
SAMPLE = 1 << 20  # values looked at first when checking that an array holds only a few levels
ON_GRID = 1e-3  # a float within this fraction of an 8-bit step of k/255 is on the 8-bit grid (float32 round trip)
PART = 1 << 24  # values per slice when scanning an array: bounds the temporaries (memory-mapped files stay mapped)
GREY_TOLERANCE = 2  # default dataset.options.grey_tolerance: JPEG leaves grey RGB channels ~±2 apart
HIGH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # PIL modes of 16-bit grey images (PNG 16-bit opens as I;16/I)
FILE_KINDS = (  # magic bytes of files people save images in, for "not a .npy/.npz file (found <kind>)"
    (b"\x93NUMPY", "npy"), (b"PK\x03\x04", "zip"), (b"PK\x05\x06", "zip"), (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"), (b"\x89HDF", "an HDF5 file"), (b"MATLAB", "a MATLAB .mat file"),
    (b"GIF8", "a GIF image"), (b"BM", "a BMP image"), (b"PAR1", "a Parquet file"),
)


@dataclass(frozen=True)
class Pixels:
    """Pixel values on RawData's storage scale: uint8 (levels 256), int32 (levels 65536) or float32 (None)."""

    values: np.ndarray
    levels: int | None
    note: str  # what was understood, for the summary line


def _step(a: np.ndarray) -> int:
    """Rows of `a` per slice of about PART values."""
    return max(1, PART // max(1, a[0].size)) if a.ndim and len(a) else 1


def _parts(a: np.ndarray):
    """`a` in slices along its first axis of about PART values each."""
    return (a[i : i + _step(a)] for i in range(0, max(len(a), 1), _step(a))) if a.ndim else iter([a])


def _only(a: np.ndarray, values: tuple) -> bool:
    """Every value of `a` is one of `values` (a sample first: most arrays fail fast)."""
    for part in (a.reshape(-1)[:SAMPLE] if a.flags.c_contiguous else a[:1], *_parts(a)):
        hit = part == values[0]
        for v in values[1:]:
            hit |= part == v
        if not hit.all():
            return False
    return True


def _grid_tolerance(dtype: np.dtype) -> float:
    """How far (in 8-bit steps) a float may lie from k/255 and still be k/255: the dtype's own rounding of k/255
    (float16: up to 1/8 of a step) with a margin of 2, at least ON_GRID; always under half a step."""
    return max(ON_GRID, 255 * float(np.finfo(dtype).eps))


def data_levels(hi: int, container: int, option="auto") -> tuple[int, str]:
    """(levels, what was understood) for integer pixels up to `hi` stored in a `container`-bit type (8 or 16).

    auto: the smallest bit depth that holds `hi` (0..15 is 4-bit, 16 levels k/15; 0..4095 is 12-bit in a 16-bit
    container), since scans and quantised data fill their own range, not the container's; an integer option keeps
    that many levels (the container's: 256 or 65536).
    """
    keep = 1 << container
    if option != "auto":
        if isinstance(option, bool) or not isinstance(option, int) or not max(2, hi + 1) <= option <= 65536:
            raise ConfigError(f"dataset.options.levels={option!r} is invalid: must be auto or an integer in "
                              f"{max(2, hi + 1)}..65536 (the data reach {hi})")
        return option, f"{option} levels (dataset.options.levels)"
    bits = max(1, hi.bit_length())  # smallest b with hi < 2^b
    levels = 1 << bits
    if bits >= container:
        return levels, f"{bits}-bit" + ("" if container == 8 else f" ({levels} levels)")
    return levels, (f"{bits}-bit in {'an' if container == 8 else 'a'} {container}-bit container ({levels} levels, k/{levels - 1}; "
                    f"dataset.options.levels={keep} keeps {container}-bit)")


def _levels_text(a: np.ndarray, lo: int, hi: int) -> str:
    """`levels {0,1}` for binary-looking data, `levels 0..255` otherwise (no full count: arrays can be large)."""
    if hi - lo <= 1:  # integers: nothing in between
        return "levels {" + ",".join(map(str, sorted({lo, hi}))) + "}"
    for values in ((0, 255), (0, 65535)):
        if lo in values and hi in values and _only(a, values):
            return "levels {" + ",".join(map(str, sorted(set(values) & {lo, hi}))) + "}"
    return f"levels {lo}..{hi}"


def _rint_uint8(a: np.ndarray, scale: float) -> np.ndarray:
    """rint(a * scale) as uint8, slice by slice (no full-size float temporary)."""
    out, step = np.empty(a.shape, np.uint8), _step(a)
    for i in range(0, len(a), step):
        out[i : i + step] = np.rint(a[i : i + step] * np.float32(scale))
    return out


def pixel_scale(a: np.ndarray, source: str, levels="auto") -> Pixels:
    """Any array of pixel values -> uint8 (up to 8-bit; binary data as 0/255), int32 (9..16-bit) or float32 in
    [0, 1]; integer data on their own bit depth (data_levels; `levels`: dataset.options.levels)."""
    if a.size == 0:
        raise DataError(f"{source} is empty (shape {a.shape}): it holds no images")
    dtype = a.dtype
    if dtype.kind == "b":
        return Pixels(a.astype(np.uint8) * 255, 256, "bool -> binary")
    if dtype.kind == "f":
        if not all(np.isfinite(part).all() for part in _parts(a)):
            for name, bad in (("NaN", np.isnan), ("inf", np.isinf)):
                count = sum(int(bad(part).sum()) for part in _parts(a))
                if count:
                    raise DataError(f"{source} holds {name} in {count} of {a.size} values; "
                                    f"replace or drop those images (numpy.isfinite finds them)")
        lo, hi = float(a.min()), float(a.max())
        if lo < 0 or hi > 1:
            fix = "divide by 255 (x / 255)" if 0 <= lo and hi <= 255 else "rescale them to [0, 1]"
            raise DataError(f"{source} holds {dtype} values in [{lo:g}, {hi:g}]; float pixels must lie in [0, 1]: "
                            f"{fix}, or store uint8 0..255")
        if _only(a, (0, 1)):
            return Pixels(a.astype(np.uint8) * 255, 256, f"{dtype} levels {{0,1}} -> binary")
        tolerance = _grid_tolerance(dtype)
        off = max(float(np.abs(p * np.float32(255) - np.rint(p * np.float32(255))).max()) for p in _parts(a))
        if off <= tolerance:  # saved as x / 255: exactly 8-bit (float16 rounds k/255 by up to 1/8 of a step)
            within = f" (within {dtype} rounding)" if tolerance > ON_GRID else ""
            note = f"{dtype} in [{lo:g}, {hi:g}] on the k/255 grid{within} -> 8-bit"
            return Pixels(_rint_uint8(a, 255), 256, note)
        return Pixels(a.astype(np.float32, copy=False), None,
                      f"{dtype} in [{lo:g}, {hi:g}], off the 8-bit grid -> continuous")
    if dtype.kind not in "iu":
        raise DataError(f"{source} holds dtype {dtype}; expected integer pixels (uint8 0..255, uint16 0..65535), "
                        f"bool, or float in [0, 1]")
    lo, hi = int(a.min()), int(a.max())
    if lo < 0 or hi > 65535:
        raise DataError(f"{source} holds {dtype} values in [{lo}, {hi}]; integer pixels must lie in 0..255 (8-bit) "
                        f"or 0..65535 (16-bit): shift and rescale them, or store float in [0, 1]")
    text = _levels_text(a, lo, hi)
    if levels == "auto" and hi <= 1:  # 0/1 in any integer dtype is binary, never 0..255 nearly-black
        return Pixels(a.astype(np.uint8) * 255, 256, f"{dtype} {text} -> binary")
    if levels == "auto" and text == "levels {0,255}":
        return Pixels(a.astype(np.uint8, copy=False), 256, f"{dtype} {text} -> binary")
    levels, said = data_levels(hi, 8 if hi <= 255 else 16, levels)
    values = a.astype(np.uint8, copy=False) if levels <= 256 else a.astype(np.int32)  # uint8 memory maps stay maps
    return Pixels(values, levels, f"{dtype} {text} -> {said}")


LAYOUTS = {"auto": None, "nhw": 3, "nhwc": 4, "nchw": 4}  # dataset.options.layout -> the array's ndim


def array_layout(shape: tuple[int, ...], source: str, layout: str = "auto", labelled: bool = False) -> str:
    """NHW, NHWC or NCHW for an image stack (`layout`: dataset.options.layout, auto: from the shape); a lone image,
    a flat table or an ambiguous channel axis is refused with the fix (`labelled`: one label per first-axis entry
    was found, so (3, H, W) is 3 images)."""
    if layout not in LAYOUTS:
        raise ConfigError(f"dataset.options.layout={layout!r} is invalid: must be one of {', '.join(LAYOUTS)}")
    if layout != "auto":
        channels = {"nhwc": shape[-1], "nchw": shape[1] if len(shape) > 1 else None}.get(layout, 1)
        if len(shape) != LAYOUTS[layout] or channels not in (1, 3):
            raise DataError(f"{source} has shape {shape}, not {layout.upper()} with C in {{1, 3}} "
                            f"(dataset.options.layout={layout})")
        return layout.upper()
    if len(shape) == 2:
        raise DataError(f"{source} has shape {shape}: flattened images? reshape them to (N,H,W) (x.reshape(N, H, W)); "
                        f"one image? stack images as (N,H,W)")
    if len(shape) == 3:
        if shape[2] in (1, 3, 4) and shape[2] < min(shape[:2]):  # (H, W, C): one image, not H images of width C
            raise DataError(f"{source} holds one image of shape {shape} (H, W, C), not a stack; save images as "
                            f"(N,H,W,C) (one image: x[None]), or (N,H,W) for grey ones")
        if shape[0] == 3 and shape[0] < min(shape[1:]) and not labelled:  # (C, H, W): one RGB image
            raise DataError(f"{source} holds one image of shape {shape} (C, H, W), not a stack; stack images as "
                            f"(N,C,H,W) (one image: x[None]); {shape[0]} grey images? set dataset.options.layout=nhw")
        return "NHW"
    if len(shape) == 4:
        last, first = shape[3] in (1, 3), shape[1] in (1, 3)
        if last != first:
            return "NHWC" if last else "NCHW"
        hint = "ambiguous channel axis: set dataset.options.layout=nhwc or nchw" if last else \
            "no channel axis of size 1 or 3"
        if 4 in (shape[1], shape[3]):
            hint = "4 channels: RGBA? composite the alpha channel or drop it"
    else:
        hint = f"{len(shape)} dims"
    raise DataError(f"{source} has shape {shape} ({hint}); expected (N,H,W), (N,H,W,C) or (N,C,H,W) with C in {{1, 3}}")


def file_kind(file: Path) -> str | None:
    """What a file is by its first bytes (None: unrecognised), for messages about files given to the wrong source."""
    with open(file, "rb") as f:
        head = f.read(16)
    kind = next((k for magic, k in FILE_KINDS if head.startswith(magic)), None)
    if kind is None and head and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return "text (CSV?)"
    return kind


def pick_key(present: list[str], wanted: str | None, defaults: tuple[str, ...]) -> str | None:
    """`wanted` if given, else the first default present, matched case-insensitively."""
    lower = {k.lower(): k for k in present}
    return next((lower[k] for k in defaults if k in lower), None) if wanted is None else wanted


def string_classes(values) -> tuple[np.ndarray, tuple[str, ...]]:
    """Text labels -> (int64 ids, class names): names in sorted order, id k for the k-th name."""
    names, ids = np.unique(np.asarray(values).astype(str), return_inverse=True)
    return ids.astype(np.int64).reshape(-1), tuple(str(name) for name in names)


def names_text(names: tuple[str, ...]) -> str:
    shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
    return f"strings -> {len(names)} class{'es' if len(names) > 1 else ''} (sorted: {shown})"


def read_labels(y: np.ndarray, n: int, where: str) -> tuple[np.ndarray, str, tuple[str, ...] | None]:
    """Class ids (N,) as int64 from integer, bool, integral float or text labels (sorted names kept), and what was
    understood; 1-based ids become 0-based (said)."""
    if y.shape != (n,):
        raise DataError(f"labels {where} have shape {y.shape}; expected ({n},), one per image")
    if y.dtype.kind in "US":
        ids, names = string_classes(y)
        return ids, names_text(names), names
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.rint(y)):
            raise DataError(f"labels {where} are {y.dtype} with non-integer values; expected class ids 0..K-1")
    elif y.dtype.kind not in "iub":
        raise DataError(f"labels {where} hold dtype {y.dtype}; expected integer class ids 0..K-1")
    y = y.astype(np.int64)
    if n == 0:
        return y, "no labels", None
    lo, hi = int(y.min()), int(y.max())
    if lo < 0:
        raise DataError(f"labels {where} hold negative values (min {lo}); expected class ids 0..K-1")
    note = ""
    if lo == 1 and hi > 1:  # 1..K with no 0: class 0 would be empty
        y, note = y - 1, f", 1-based: remapped {lo}..{hi} -> 0..{hi - 1}"
        lo, hi = 0, hi - 1
    count = len(np.unique(y))
    classes = "1 class (no more than unlabelled)" if hi == 0 else f"{hi + 1} classes"
    empty = f", {hi + 1 - count} empty" if count < hi + 1 else ""
    return y, f"{lo}..{hi} ({classes}{empty}){note}", None


def background_option(background) -> int:
    """dataset.options.background (white | black) -> the grey value transparent pixels are composited on."""
    if background not in BACKGROUNDS:
        raise ConfigError(f"dataset.options.background={background!r} is invalid: must be one of white, black")
    return BACKGROUNDS[background]


def image_pixels(img, background: int) -> tuple[np.ndarray, int, str | None]:
    """A PIL image -> ((H, W) or (H, W, 3) array, bit depth 8 or 16, how alpha was used or None).

    8-bit arrays are uint8; 16-bit grey images are int32 0..65535 (never converted to 8 bits: PIL's convert("L")
    clips them to 0/255). Transparent images: when the colour is constant and only alpha varies, alpha is the
    picture; otherwise colour is composited on `background` (out = a c + (1 - a) bg, Porter & Duff 1984 "over").
    """
    mode = img.mode
    if mode in HIGH_MODES:
        a = np.asarray(img).astype(np.int32)
        if a.size and (int(a.min()) < 0 or int(a.max()) > 65535):
            raise DataError(f"a {mode} image holds values in [{int(a.min())}, {int(a.max())}]; expected 0..65535")
        return a, 16, None
    if mode == "F":
        raise DataError("a 32-bit float image (mode F); save it as 8- or 16-bit PNG, or as a float .npy in [0, 1]")
    if mode == "P":
        mode = "RGBA" if "transparency" in img.info else "RGB"
        img = img.convert(mode)
    if mode in ("LA", "La", "PA", "RGBA", "RGBa"):
        rgba = np.asarray(img.convert("RGBA"))
        colour, alpha = rgba[..., :3], rgba[..., 3]
        if alpha.min() == 255:
            return _grey_if_grey(colour) if mode.startswith("L") else colour, 8, None
        if np.all(colour == colour.reshape(-1, 3)[0]) and alpha.max() > alpha.min():
            return alpha.copy(), 8, "alpha"  # the content is the alpha mask: use it as a grey image
        a = alpha[..., None].astype(np.float32) / 255
        out = np.rint(a * colour + (1 - a) * background).astype(np.uint8)
        return out, 8, "composited"
    if mode in ("1", "L"):
        return np.asarray(img.convert("L")), 8, None
    return np.asarray(img.convert("RGB")), 8, None


def _grey_if_grey(a: np.ndarray) -> np.ndarray:
    return a[..., 0].copy() if a.ndim == 3 and is_grey(a) else a


def is_grey(a: np.ndarray, tolerance: int = 0) -> bool:
    """A 2-D image, or an RGB one whose R, G, B differ by at most `tolerance` everywhere (0: R == G == B)."""
    if a.ndim == 2:
        return True
    r, g, b = (a[..., c].astype(np.int32) for c in range(3))
    return bool(np.abs(r - g).max() <= tolerance and np.abs(g - b).max() <= tolerance)


def grey_tolerance_option(tolerance) -> int:
    """dataset.options.grey_tolerance -> an int >= 0."""
    if isinstance(tolerance, bool) or not isinstance(tolerance, int) or tolerance < 0:
        raise ConfigError(f"dataset.options.grey_tolerance={tolerance!r} is invalid: must be an integer >= 0")
    return tolerance


def upright(img) -> None:
    """Apply the EXIF orientation in place (phone photos are stored sideways with a tag saying so)."""
    from PIL import ImageOps

    ImageOps.exif_transpose(img, in_place=True)


def image_is_grey(img, tolerance: int) -> bool:
    """Whether a PIL image is grey as the folders decide it: a grey mode, alpha as the picture, or RGB within
    `tolerance` (compositing on white first, as decoding does)."""
    return img.mode in HIGH_MODES or is_grey(image_pixels(img, 255)[0], tolerance)


def to_channels(a: np.ndarray, channels: int) -> np.ndarray:
    """(H, W) or (H, W, 3) -> (H, W) when channels == 1 (ITU-R 601 luma, as PIL's convert("L")) or (H, W, 3)."""
    if channels == 1:
        if a.ndim == 2:
            return a
        if is_grey(a):
            return a[..., 0]
        from PIL import Image

        return np.asarray(Image.fromarray(a).convert("L"))  # 8-bit colour only (16-bit images are grey)
    return a if a.ndim == 3 else np.repeat(a[..., None], 3, axis=2)


def resize(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize to (H, W); 16-bit images per channel in float so every level survives; same dtype out."""
    from PIL import Image

    if a.shape[:2] == tuple(size):
        return a
    if a.dtype == np.uint8:  # as the streamed path does it (PIL on L / RGB), so both paths give the same pixels
        return np.asarray(Image.fromarray(a).resize((size[1], size[0]), Image.Resampling.BILINEAR))
    planes = a[..., None] if a.ndim == 2 else a
    out = [np.asarray(Image.fromarray(planes[..., c].astype(np.float32), mode="F").resize(
        (size[1], size[0]), Image.Resampling.BILINEAR)) for c in range(planes.shape[2])]
    hi = 255 if a.dtype == np.uint8 else 65535
    res = np.clip(np.rint(np.stack(out, axis=2)), 0, hi).astype(a.dtype)
    return res[..., 0] if a.ndim == 2 else res
