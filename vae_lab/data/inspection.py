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


def _only(a: np.ndarray, values: tuple) -> bool:
    """Every value of `a` is one of `values` (a sample first: most arrays fail fast)."""
    flat = a.reshape(-1)
    for part in (flat[:SAMPLE], flat):
        hit = part == values[0]
        for v in values[1:]:
            hit |= part == v
        if not hit.all():
            return False
    return True


def _levels_text(a: np.ndarray, lo: int, hi: int) -> str:
    """`levels {0,1}` for binary-looking data, `levels 0..255` otherwise (no full count: arrays can be large)."""
    if hi - lo <= 1:  # integers: nothing in between
        return "levels {" + ",".join(map(str, sorted({lo, hi}))) + "}"
    for values in ((0, 255), (0, 65535)):
        if lo in values and hi in values and _only(a, values):
            return "levels {" + ",".join(map(str, sorted(set(values) & {lo, hi}))) + "}"
    return f"levels {lo}..{hi}"


def pixel_scale(a: np.ndarray, source: str) -> Pixels:
    """Any array of pixel values -> uint8 (8-bit; binary data as 0/255), int32 (9..16-bit) or float32 in [0, 1]."""
    if a.size == 0:
        raise DataError(f"{source} is empty (shape {a.shape}): it holds no images")
    dtype = a.dtype
    if dtype.kind == "b":
        return Pixels(a.astype(np.uint8) * 255, 256, "bool -> binary")
    if dtype.kind == "f":
        for name, bad in (("NaN", np.isnan), ("inf", np.isinf)) if not np.isfinite(a).all() else ():
            bad = bad(a)
            if bad.any():
                raise DataError(f"{source} holds {name} in {int(bad.sum())} of {a.size} values; "
                                f"replace or drop those images (numpy.isfinite finds them)")
        lo, hi = float(a.min()), float(a.max())
        if lo < 0 or hi > 1:
            fix = "divide by 255 (x / 255)" if 0 <= lo and hi <= 255 else "rescale them to [0, 1]"
            raise DataError(f"{source} holds {dtype} values in [{lo:g}, {hi:g}]; float pixels must lie in [0, 1]: "
                            f"{fix}, or store uint8 0..255")
        if _only(a, (0, 1)):
            return Pixels(a.astype(np.uint8) * 255, 256, f"{dtype} levels {{0,1}} -> binary")
        steps = a * np.float32(255)
        if float(np.abs(steps - np.rint(steps)).max()) <= ON_GRID:  # saved as x / 255: exactly 8-bit
            note = f"{dtype} in [{lo:g}, {hi:g}] on the k/255 grid -> 8-bit"
            return Pixels(np.rint(steps).astype(np.uint8), 256, note)
        return Pixels(a.astype(np.float32), None, f"{dtype} in [{lo:g}, {hi:g}], off the 8-bit grid -> continuous")
    if dtype.kind not in "iu":
        raise DataError(f"{source} holds dtype {dtype}; expected integer pixels (uint8 0..255, uint16 0..65535), "
                        f"bool, or float in [0, 1]")
    lo, hi = int(a.min()), int(a.max())
    if lo < 0 or hi > 65535:
        raise DataError(f"{source} holds {dtype} values in [{lo}, {hi}]; integer pixels must lie in 0..255 (8-bit) "
                        f"or 0..65535 (16-bit): shift and rescale them, or store float in [0, 1]")
    levels = _levels_text(a, lo, hi)
    if hi <= 1:  # 0/1 in any integer dtype is binary, never 0..255 nearly-black
        return Pixels(a.astype(np.uint8) * 255, 256, f"{dtype} {levels} -> binary")
    if hi <= 255:
        binary = " -> binary" if levels == "levels {0,255}" else " -> 8-bit"
        return Pixels(a.astype(np.uint8, copy=False), 256, f"{dtype} {levels}{binary}")
    return Pixels(a.astype(np.int32), 65536, f"{dtype} {levels} -> 16-bit (65536 levels)")


def array_layout(shape: tuple[int, ...], source: str) -> str:
    """NHW, NHWC or NCHW for an image stack; a lone image or a flat table is refused with the fix."""
    if len(shape) == 2:
        raise DataError(f"{source} has shape {shape}: flattened images? reshape them to (N,H,W) (x.reshape(N, H, W)); "
                        f"one image? stack images as (N,H,W)")
    if len(shape) == 3:
        if shape[2] in (1, 3, 4) and shape[2] < min(shape[:2]):  # (H, W, C): one image, not H images of width C
            raise DataError(f"{source} holds one image of shape {shape} (H, W, C), not a stack; save images as "
                            f"(N,H,W,C) (one image: x[None]), or (N,H,W) for grey ones")
        return "NHW"
    if len(shape) == 4:
        last, first = shape[3] in (1, 3), shape[1] in (1, 3)
        if last != first:
            return "NHWC" if last else "NCHW"
        hint = "ambiguous channel axis" if last else "no channel axis of size 1 or 3"
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


def read_labels(y: np.ndarray, n: int, where: str) -> tuple[np.ndarray, str]:
    """Class ids (N,) as int64 from integer, bool or integral float labels; 1-based ids become 0-based (said)."""
    if y.shape != (n,):
        raise DataError(f"labels {where} have shape {y.shape}; expected ({n},), one per image")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.rint(y)):
            raise DataError(f"labels {where} are {y.dtype} with non-integer values; expected class ids 0..K-1")
    elif y.dtype.kind not in "iub":
        raise DataError(f"labels {where} hold dtype {y.dtype}; expected integer class ids 0..K-1")
    y = y.astype(np.int64)
    if n == 0:
        return y, "no labels"
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
    return y, f"{lo}..{hi} ({classes}{empty}){note}"


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


def is_grey(a: np.ndarray) -> bool:
    """A 2-D image, or an RGB one with R == G == B everywhere."""
    return a.ndim == 2 or bool(np.all(a[..., 0] == a[..., 1]) and np.all(a[..., 1] == a[..., 2]))


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
