"""A user's own data is read right or refused in one line (issue 15): a table of odd inputs, each written by the
test in its official format (np.save / np.savez, PIL PNGs of every mode), and the outcome it must give."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from user_files import npy, npz, pngs, raw_bytes, zip_of_pngs

from vae_lab.data.raw import storage_dtype
from vae_lab.data.registry import load_dataset
from vae_lab.errors import ConfigError, DataError

RNG = np.random.default_rng(0)
U8 = RNG.integers(0, 256, (6, 5, 7), dtype=np.uint8)  # 6 images 5x7, 8-bit
BITS = RNG.integers(0, 2, (202, 28, 20), dtype=np.uint8)  # binary glyphs stored as 0/1
WIDE = RNG.integers(0, 65536, (6, 5, 7)).astype(np.uint16)
GRID = np.arange(2001, dtype=np.float32)[RNG.permutation(2001)][:1600].reshape(4, 20, 20) / 2000  # 2001 levels
NCHW = RNG.integers(0, 256, (4, 3, 5, 7), dtype=np.uint8)  # 4 RGB images stored channels-first
SIXTEEN = np.concatenate([np.arange(16), RNG.integers(0, 16, 194)]).astype(np.uint8).reshape(6, 5, 7)  # 0..15
TWELVE = np.concatenate([[0, 4095], RNG.integers(0, 4096, 208)]).astype(np.uint16).reshape(6, 5, 7)  # 12-bit
NAMES = np.array(["dog", "cat", "emu", "cat", "dog", "cat"])  # text labels: sorted, cat=0, dog=1, emu=2


def nchw(x: np.ndarray) -> np.ndarray:
    return x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)


# (id, write(tmp) -> path, options, expected): expected is the error text (a fragment of the one line) or a dict
# with the tensor's dtype/levels/values (N, C, H, W), the labels, and fragments of the summary line.
ARRAY_CASES = [
    ("uint8_0_1_is_binary", lambda t: npz(t, x=BITS, labels=np.arange(202) % 101), {},
     dict(levels=256, values=nchw(BITS) * 255, labels=(np.arange(202) % 101).tolist(),
          summary="array_file x.npz['x'] (202, 28, 20) uint8 levels {0,1} -> binary, 1 channel; "
                  "y 'labels' 0..100 (101 classes)")),
    ("bool_is_binary", lambda t: npy(t, BITS.astype(bool)), {}, dict(levels=256, values=nchw(BITS) * 255,
                                                                     summary="bool -> binary")),
    ("float_0_1_is_binary", lambda t: npy(t, BITS.astype(np.float32)), {},
     dict(levels=256, values=nchw(BITS) * 255, summary="float32 levels {0,1} -> binary")),
    ("uint8_0_255_stays", lambda t: npy(t, BITS * 255), {}, dict(levels=256, values=nchw(BITS) * 255,
                                                                  summary="levels {0,255} -> binary")),
    ("int64_0_255_is_8bit", lambda t: npy(t, U8.astype(np.int64)), {}, dict(levels=256, values=nchw(U8),
                                                                            summary="int64 levels")),
    ("uint16_is_16bit", lambda t: npy(t, WIDE), {}, dict(levels=65536, values=nchw(WIDE.astype(np.int32)),
                                                         summary="-> 16-bit (65536 levels)")),
    ("negative_ints", lambda t: npy(t, U8.astype(np.int16) - 3), {}, f"int16 values in [-3, {U8.max() - 3}]; integer "
                                                                     f"pixels must lie in 0..255 (8-bit) or 0..65535"),
    ("ints_over_16bit", lambda t: npy(t, WIDE.astype(np.int32) + 70000), {}, "or 0..65535 (16-bit)"),
    ("float_on_k_over_255", lambda t: npy(t, U8.astype(np.float32) / 255), {},
     dict(levels=256, values=nchw(U8), summary="on the k/255 grid -> 8-bit")),
    ("float_2001_levels_stay_continuous", lambda t: npy(t, GRID), {},
     dict(levels=None, values=nchw(GRID), summary="off the 8-bit grid -> continuous")),
    ("float_0_255", lambda t: npy(t, U8.astype(np.float32)), {}, "float pixels must lie in [0, 1]: divide by 255"),
    ("float_nan", lambda t: npy(t, np.where(U8 == U8.max(), np.nan, U8 / 255)), {},
     f"holds NaN in {int((U8 == U8.max()).sum())} of {U8.size} values"),
    ("float_inf", lambda t: npy(t, np.where(U8 == U8.max(), np.inf, U8 / 255)), {}, "holds inf in"),
    ("lone_rgb_image", lambda t: npy(t, RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)), {},
     "holds one image of shape (32, 32, 3) (H, W, C), not a stack; save images as (N,H,W,C)"),
    ("lone_grey_image", lambda t: npy(t, U8[0]), {}, "has shape (5, 7): flattened images? reshape them to (N,H,W)"),
    ("flattened_images", lambda t: npy(t, BITS.reshape(202, -1)), {}, "one image? stack images as (N,H,W)"),
    ("nhwc_colour", lambda t: npy(t, U8.reshape(2, 5, 7, 3)), {}, dict(levels=256, values=nchw(U8.reshape(2, 5, 7, 3)),
                                                                       summary="3 channels, memory-mapped; unlabelled")),
    ("rgba_array", lambda t: npy(t, np.zeros((3, 8, 8, 4), np.uint8)), {}, "4 channels: RGBA?"),
    ("empty_npy", lambda t: npy(t, np.zeros((0, 8, 8), np.uint8)), {}, "is empty (shape (0, 8, 8))"),
    ("empty_npz", lambda t: npz(t), {}, "holds no arrays; save the images with numpy.savez"),
    ("zero_bytes", raw_bytes(b"", "x.npy"), {}, "is empty (0 bytes)"),
    ("csv", raw_bytes(b"0,1,2\n3,4,5\n", "x.csv"), {}, "is not a .npy/.npz file (found text (CSV?)): convert it"),
    ("png", lambda t: (Image.fromarray(U8[0]).save(t / "a.png"), t / "a.png")[1], {},
     "not a .npy/.npz file (found a PNG image)"),
    ("hdf5", raw_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64), "x.h5"), {}, "not a .npy/.npz file (found an HDF5 file)"),
    ("mat", raw_bytes(b"MATLAB 5.0 MAT-file" + bytes(64), "x.mat"), {}, "(found a MATLAB .mat file)"),
    ("zip_of_images", lambda t: zip_of_pngs(t, U8[0]), {},
     "a zip archive of a.png, ...; unzip it and use dataset=image_folder"),
    ("folder_given", lambda t: t, {}, "is a folder, not an array file: use dataset=image_folder"),
    ("object_array", lambda t: (np.save(t / "o.npy", np.array([U8, None], dtype=object)), t / "o.npy")[1], {},
     "object arrays (dtype=object) cannot be read"),
    ("images_and_Targets_keys", lambda t: npz(t, images=U8, Targets=np.arange(6) % 2), {},
     dict(levels=256, values=nchw(U8), labels=[0, 1, 0, 1, 0, 1], summary="y 'Targets' 0..1 (2 classes)")),
    ("float_integral_labels", lambda t: npz(t, x=U8, label=np.array([0., 1, 2, 0, 1, 2])), {},
     dict(levels=256, values=nchw(U8), labels=[0, 1, 2, 0, 1, 2], summary="y 'label' 0..2 (3 classes)")),
    ("one_based_labels", lambda t: npz(t, x=U8, y=np.array([1, 2, 3, 1, 2, 3])), {},
     dict(levels=256, values=nchw(U8), labels=[0, 1, 2, 0, 1, 2], summary="1-based: remapped 1..3 -> 0..2")),
    ("labels_under_unknown_key", lambda t: npz(t, x=U8, digit=np.arange(6)), {},
     dict(levels=256, values=nchw(U8), labels=None,
          summary="unlabelled; found 'digit' (6,) ints: set dataset.options.label_key=digit")),
    ("label_key_option", lambda t: npz(t, x=U8, digit=np.arange(6)), {"label_key": "digit"},
     dict(levels=256, values=nchw(U8), labels=list(range(6)), summary="y 'digit' 0..5 (6 classes)")),
    ("one_class", lambda t: npz(t, x=U8, y=np.zeros(6, np.int64)), {},
     dict(levels=256, values=nchw(U8), labels=[0] * 6, summary="1 class (no more than unlabelled)")),
    ("no_image_key", lambda t: npz(t, pixels=U8), {}, "has no array 'x' (nor images, image, imgs, data); keys "
                                                      "present: pixels; set dataset.options.key=pixels"),
    ("key_option_missing", lambda t: npz(t, x=U8), {"key": "imgs2"}, "no array 'imgs2' (dataset.options.key)"),
    ("label_key_option_missing", lambda t: npz(t, x=U8), {"label_key": "lab"},
     "no array 'lab' (dataset.options.label_key)"),
    ("fractional_labels", lambda t: npz(t, x=U8, y=np.full(6, 0.5)), {}, "non-integer values"),
    ("negative_labels", lambda t: npz(t, x=U8, y=np.arange(6) - 1), {}, "negative values (min -1)"),
    ("labels_of_wrong_length", lambda t: npz(t, x=U8, y=np.arange(5)), {}, "have shape (5,); expected (6,)"),
    # issue 30
    ("float16_nchw_on_k_over_255", lambda t: npz(t, x=(NCHW / 255).astype(np.float16)), {},
     dict(levels=256, values=NCHW, summary="] on the k/255 grid (within float16 rounding) -> 8-bit, 3 channels")),
    ("float16_off_the_grid_stays_continuous", lambda t: npy(t, GRID.astype(np.float16)), {},
     dict(levels=None, values=nchw(GRID.astype(np.float16).astype(np.float32)), summary="float16 in [0, 1], off the")),
    ("uint8_levels_0_15_are_4bit", lambda t: npy(t, SIXTEEN), {},
     dict(levels=16, values=nchw(SIXTEEN), summary="uint8 levels 0..15 -> 4-bit in an 8-bit container (16 levels, "
                                                   "k/15; dataset.options.levels=256 keeps 8-bit), 1 channel")),
    ("levels_256_keeps_8bit", lambda t: npy(t, SIXTEEN), {"levels": 256},
     dict(levels=256, values=nchw(SIXTEEN), summary="uint8 levels 0..15 -> 256 levels (dataset.options.levels)")),
    ("uint16_12bit_in_16bit_container", lambda t: npy(t, TWELVE), {},
     dict(levels=4096, values=nchw(TWELVE.astype(np.int32)),
          summary="uint16 levels 0..4095 -> 12-bit in a 16-bit container (4096 levels, k/4095; "
                  "dataset.options.levels=65536 keeps 16-bit)")),
    ("string_labels", lambda t: npz(t, x=U8, y=NAMES), {},
     dict(levels=256, values=nchw(U8), labels=[1, 0, 2, 0, 1, 0], class_names=("cat", "dog", "emu"),
          summary="y 'y' strings -> 3 classes (sorted: cat, dog, emu)")),
    ("ambiguous_channel_axis", lambda t: npy(t, np.zeros((2, 3, 5, 3), np.uint8)), {},
     "(2, 3, 5, 3) (ambiguous channel axis: set dataset.options.layout=nhwc or nchw)"),
    ("layout_nchw", lambda t: npy(t, NCHW[:, :, :3, :3]), {"layout": "nchw"},
     dict(levels=256, values=NCHW[:, :, :3, :3], summary="3 channels")),
    ("layout_nhwc", lambda t: npy(t, NCHW[:, :, :3, :3]), {"layout": "nhwc"},
     dict(levels=256, values=NCHW[:, :, :3, :3].transpose(0, 3, 1, 2), summary="3 channels")),
    ("layout_that_does_not_fit", lambda t: npy(t, U8), {"layout": "nhwc"},
     "has shape (6, 5, 7), not NHWC with C in {1, 3} (dataset.options.layout=nhwc)"),
    ("lone_channels_first_image", lambda t: npy(t, NCHW[0, :, :, :5].repeat(7, 1)), {},
     "holds one image of shape (3, 35, 5) (C, H, W), not a stack; stack images as (N,C,H,W)"),
    ("three_grey_images_by_layout", lambda t: npy(t, NCHW[0, :, :, :5].repeat(7, 1)), {"layout": "nhw"},
     dict(levels=256, values=NCHW[0, :, :, :5].repeat(7, 1)[:, None], summary="(3, 35, 5) uint8")),
]


def check(raw, expected: dict) -> None:
    """The tensor, its scale and labels, and the summary line, against the expected outcome."""
    values = expected["values"]
    assert raw.levels == expected["levels"]
    assert raw.train_x.dtype == storage_dtype(expected["levels"])
    assert tuple(raw.train_x.shape) == values.shape and np.array_equal(raw.train_x.numpy(), values)
    labels = expected.get("labels", None)
    assert (raw.train_y is None) if labels is None else raw.train_y.tolist() == labels
    assert raw.summary.startswith("data: ") and "\n" not in raw.summary
    assert expected["summary"] in raw.summary, raw.summary
    assert raw.class_names == expected.get("class_names", raw.class_names)


@pytest.mark.parametrize(("name", "write", "options", "expected"), ARRAY_CASES, ids=[c[0] for c in ARRAY_CASES])
def test_array_file_reads_right_or_refuses_in_one_line(tmp_path, name, write, options, expected):
    path = write(tmp_path)
    if isinstance(expected, str):
        with pytest.raises(DataError) as err:
            load_dataset("array_file", tmp_path, False, path=str(path), **options)
        message = str(err.value)
        assert expected in message and "\n" not in message and "allow_pickle" not in message, message
        assert "[nan" not in message
        return
    check(load_dataset("array_file", tmp_path, False, path=str(path), **options), expected)


@pytest.mark.parametrize("options, message", [
    ({"levels": 8}, "dataset.options.levels=8 is invalid: must be auto or an integer in 16..65536 (the data reach 15)"),
    ({"layout": "hwc"}, "dataset.options.layout='hwc' is invalid: must be one of auto, nhw, nhwc, nchw"),
])
def test_bad_array_options_are_config_errors(tmp_path, options, message):
    with pytest.raises(ConfigError) as err:
        load_dataset("array_file", tmp_path, False, path=str(npy(tmp_path, SIXTEEN)), **options)
    assert str(err.value) == message


def test_a_npy_is_memory_mapped_and_served_from_the_map_with_the_validation_split_capped(tmp_path):
    """Issue 30 row 11: the .npy stays a map (the splits are rows of it, never copies); every example is served
    once per pass; the validation split stops at dataset.val_max_examples, said in the data line."""
    from vae_lab.data import VAEDataModule

    images = RNG.integers(0, 256, (50, 4, 3, 3), dtype=np.uint8)  # NHWC
    raw = load_dataset("array_file", tmp_path, False, path=str(npy(tmp_path, images)))
    assert raw.mapped and "memory-mapped" in raw.summary
    dm = VAEDataModule("array_file", str(tmp_path), batch_size=8, seed=0, download=False,
                       options={"path": str(tmp_path / "x.npy")}, val_max_examples=3)
    dm.setup()
    x_train, x_val = dm._splits["train"][0], dm._splits["val"][0]
    assert x_train.data_ptr() == x_val.data_ptr()  # one map, two sets of rows
    served = {split: torch.cat([x for x, _ in getattr(dm, f"{split}_dataloader")()]) for split in ("train", "val")}
    assert len(served["val"]) == 3 and len(served["train"]) == 47
    every = torch.cat([served["train"], served["val"]]).mul(255).round().to(torch.uint8)
    expected = torch.from_numpy(images).permute(0, 3, 1, 2)
    key = lambda t: sorted(map(bytes, t.reshape(len(t), -1).numpy()))  # noqa: E731
    assert key(every) == key(expected)
    assert "val 3 (val capped at dataset.val_max_examples=3)" in dm.describe()
    assert "served from the memory-mapped file" in dm.describe()


# ---------------------------------------------------------------- image folders


GREY_RGB = np.repeat(U8[..., None], 3, axis=3)  # RGB files whose channels are equal
COLOUR = RNG.integers(0, 256, (3, 5, 7, 3), dtype=np.uint8)
INK = RNG.integers(0, 256, (3, 6, 6), dtype=np.uint8)  # alpha masks: black ink on a transparent background
HALF = np.concatenate([np.zeros((3, 3, 6), np.uint8), np.full((3, 3, 6), 255, np.uint8)], axis=1)  # top transparent
RGBA_INK = np.concatenate([np.zeros((3, 6, 6, 3), np.uint8), INK[..., None]], axis=3)
RGBA_HALF = np.concatenate([RNG.integers(0, 256, (3, 6, 6, 3), dtype=np.uint8), HALF[..., None]], axis=3)


def composite(bg: int) -> np.ndarray:
    a = HALF[..., None] / 255
    return nchw(np.rint(a * RGBA_HALF[..., :3] + (1 - a) * bg).astype(np.uint8))


def palette_with_transparency(folder: Path) -> Path:
    folder.mkdir()
    img = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), "P")
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.save(folder / "p.png", transparency=0)  # palette entry 0 (red) is transparent
    return folder


def classes(folder: Path, names) -> Path:
    for k, name in enumerate(names):
        pngs(folder / name, U8[k : k + 1])
    return folder


def exif_rotated_jpeg(folder: Path, in_class: bool = False) -> Path:
    """A phone photo: pixels stored landscape (8x16) with EXIF orientation 6 (display rotated 90 degrees clockwise)."""
    target = folder / "c" if in_class else folder
    target.mkdir(parents=True)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    Image.fromarray(np.kron(U8[0, :2, :4], np.ones((4, 4), np.uint8))).save(target / "p.jpg", quality=95, exif=exif)
    return folder


def stored_pixels(folder: Path) -> np.ndarray:
    """The JPEG's pixels as stored (no orientation applied), rotated by hand: what the picture shows."""
    with Image.open(next(folder.rglob("*.jpg"))) as img:
        return np.rot90(np.asarray(img.convert("L")), k=-1)  # orientation 6 = 90 degrees clockwise


def hidden_and_nested(folder: Path) -> Path:
    """cat/ and dog/ with Jupyter's .ipynb_checkpoints copies and a dot-file inside; a hidden top-level folder."""
    classes(folder, ["cat", "dog"])
    pngs(folder / "cat" / ".ipynb_checkpoints", U8[2:4])
    Image.fromarray(U8[4]).save(folder / "dog" / "._00.png")  # macOS resource-fork twin
    pngs(folder / ".trash", U8[5:6])
    return folder


def nested_classes(folder: Path) -> Path:
    """Classes two levels deep: animals/{cat,dog}/, plants/tree/ (labels: animals, plants)."""
    for k, sub in enumerate(["animals/cat", "animals/dog", "plants/tree"]):
        pngs(folder / sub, U8[k : k + 1])
    return folder


NEAR_GREY = np.stack([U8, np.clip(U8.astype(int) + 2, 0, 255), np.clip(U8.astype(int) + 1, 0, 255)], -1).astype(
    np.uint8)  # what a JPEG makes of grey RGB: channels ±2 apart


FOLDER_CASES = [
    ("png_16bit_keeps_its_levels", lambda t: pngs(t / "f", WIDE), {},
     dict(levels=65536, values=nchw(WIDE.astype(np.int32)),
          summary=f"6 images 5x7 (HxW) 16-bit, values {WIDE.min()}..{WIDE.max()} -> 1 channel")),
    ("grey_L_is_one_channel", lambda t: pngs(t / "f", U8), {},
     dict(levels=256, values=nchw(U8), summary="-> 1 channel (auto: all images grey)")),
    ("rgb_with_equal_channels_is_grey", lambda t: pngs(t / "f", GREY_RGB), {},
     dict(levels=256, values=nchw(U8), summary="-> 1 channel (auto: all images grey)")),
    ("colour_is_three_channels", lambda t: pngs(t / "f", COLOUR), {},
     dict(levels=256, values=nchw(COLOUR), summary="-> 3 channels (auto: colour images)")),
    ("channels_1_on_colour_is_luma", lambda t: pngs(t / "f", COLOUR), {"channels": 1},
     dict(levels=256, values=nchw(np.stack([np.asarray(Image.fromarray(c).convert("L")) for c in COLOUR])),
          summary="-> 1 channel (dataset.options)")),
    ("channels_3_on_grey", lambda t: pngs(t / "f", U8), {"channels": 3},
     dict(levels=256, values=nchw(GREY_RGB), summary="-> 3 channels (dataset.options)")),
    ("rgba_content_in_alpha", lambda t: pngs(t / "f", RGBA_INK), {},
     dict(levels=256, values=nchw(INK), summary="3 alpha used as the image (colour constant) -> 1 channel")),
    ("la_content_in_alpha", lambda t: pngs(t / "f", RGBA_INK[..., 2:], "LA"), {},
     dict(levels=256, values=nchw(INK), summary="alpha used as the image")),
    ("rgba_composited_on_white", lambda t: pngs(t / "f", RGBA_HALF), {},
     dict(levels=256, values=composite(255), summary="3 composited on white (dataset.options.background)")),
    ("rgba_composited_on_black", lambda t: pngs(t / "f", RGBA_HALF), {"background": "black"},
     dict(levels=256, values=composite(0), summary="composited on black")),
    ("palette_with_transparency", lambda t: palette_with_transparency(t / "f"), {},
     dict(levels=256, values=np.array([[[[255, 0], [0, 255]], [[255, 0], [0, 255]], [[255, 255], [255, 255]]]],
                                      np.uint8), summary="1 composited on white")),
    ("numeric_class_folders", lambda t: classes(t / "f", ["10", "2", "0", "1"]), {},
     dict(levels=256, values=nchw(U8[[2, 3, 1, 0]]), labels=[0, 1, 2, 3], class_names=("0", "1", "2", "10"),
          summary="4 classes from subfolders (numeric order)")),
    ("mixed_class_names_as_text", lambda t: classes(t / "f", ["10", "2", "a"]), {},
     dict(levels=256, values=nchw(U8[[0, 1, 2]]), labels=[0, 1, 2], class_names=("10", "2", "a"),
          summary="1 channel (auto: all images grey); 3 classes from subfolders")),
    ("one_class_folder", lambda t: classes(t / "f", ["only"]), {},
     dict(levels=256, values=nchw(U8[:1]), labels=[0], summary="1 class from subfolders (1 class: no more than")),
    ("8bit_beside_16bit", lambda t: (pngs(t / "f", WIDE[:2]), Image.fromarray(U8[0]).save(t / "f" / "z.png"),
                                     t / "f")[2], {},
     dict(levels=65536, values=nchw(np.concatenate([WIDE[:2].astype(np.int32), U8[:1].astype(np.int32) * 257])),
          summary="16-bit (8-bit images scaled x257)")),
    ("file_given", lambda t: pngs(t / "f", U8[:1]) / "00.png", {}, "is a file, not a folder of images: one image"),
    ("zip_given", lambda t: zip_of_pngs(t, U8[0]), {}, "imgs.zip is a file, not a folder of images: unzip it"),
    ("npz_given", lambda t: npz(t, x=U8), {}, "is a file, not a folder of images: dataset=array_file"),
    ("16bit_streamed", lambda t: pngs(t / "f", WIDE), {"in_memory": False},
     "is a 16-bit image (I;16): this path decodes 8-bit images only; set dataset.options.in_memory=true"),
    # issue 30
    ("12bit_in_16bit_pngs", lambda t: pngs(t / "f", TWELVE), {},
     dict(levels=4096, values=nchw(TWELVE.astype(np.int32)),
          summary="16-bit, values 0..4095 -> 12-bit in a 16-bit container (4096 levels, k/4095; "
                  "dataset.options.levels=65536 keeps 16-bit) -> 1 channel")),
    ("12bit_kept_as_16", lambda t: pngs(t / "f", TWELVE), {"levels": 65536},
     dict(levels=65536, values=nchw(TWELVE.astype(np.int32)), summary="-> 65536 levels (dataset.options.levels)")),
    ("8bit_levels_0_15", lambda t: pngs(t / "f", SIXTEEN), {},
     dict(levels=16, values=nchw(SIXTEEN), summary="8-bit, values 0..15 -> 4-bit in an 8-bit container")),
    ("hidden_files_and_folders_skipped", lambda t: hidden_and_nested(t / "f"), {},
     dict(levels=256, values=nchw(U8[:2]), labels=[0, 1], class_names=("cat", "dog"),
          summary="2 classes from subfolders; 4 images in hidden files/folders (.name) skipped")),
    ("nested_class_folders", lambda t: nested_classes(t / "f"), {},
     dict(levels=256, values=nchw(U8[:3]), labels=[0, 0, 1], class_names=("animals", "plants"),
          summary="2 classes from subfolders (labels from the top-level folders; 3 images sit in their subfolders)")),
    ("near_grey_rgb_within_tolerance", lambda t: pngs(t / "f", NEAR_GREY), {},
     dict(levels=256, values=nchw(np.stack([np.asarray(Image.fromarray(a).convert("L")) for a in NEAR_GREY])),
          summary="-> 1 channel (auto: all images grey, 6 of them within ±2 (dataset.options.grey_tolerance))")),
    ("near_grey_rgb_with_tolerance_0", lambda t: pngs(t / "f", NEAR_GREY), {"grey_tolerance": 0},
     dict(levels=256, values=nchw(NEAR_GREY), summary="-> 3 channels (auto: colour images)")),
]


@pytest.mark.parametrize(("name", "write", "options", "expected"), FOLDER_CASES, ids=[c[0] for c in FOLDER_CASES])
def test_image_folder_reads_right_or_refuses_in_one_line(tmp_path, name, write, options, expected):
    path = write(tmp_path)
    if isinstance(expected, str):
        with pytest.raises(DataError) as err:
            load_dataset("image_folder", tmp_path, False, path=str(path), **options)
        assert expected in str(err.value) and "\n" not in str(err.value), str(err.value)
        assert "does not exist" not in str(err.value)
        return
    raw = load_dataset("image_folder", tmp_path, False, path=str(path), **options)
    check(raw, expected)
    assert raw.class_names == expected.get("class_names", raw.class_names)


@pytest.mark.parametrize("options, message", [
    ({"background": "pink"}, "dataset.options.background='pink' is invalid: must be one of white, black"),
    ({"channels": 2}, "dataset.options.channels=2 is invalid: must be auto, 1 or 3"),
])
def test_bad_folder_options_are_config_errors(tmp_path, options, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_dataset("image_folder", tmp_path, False, path=str(pngs(tmp_path / "f", U8)), **options)


@pytest.mark.parametrize("in_memory", [True, False])
def test_exif_orientation_is_applied_in_every_path(tmp_path, in_memory):
    """Issue 30 row 6: a JPEG stored landscape with EXIF orientation 6 is read upright (16x8), in memory and streamed."""
    folder = exif_rotated_jpeg(tmp_path / "f")
    source = load_dataset("image_folder", tmp_path, False, path=str(folder), in_memory=in_memory, num_workers=0)
    x = source.train_x if in_memory else source.decoder(source.train[:])[0]
    assert x.shape == (1, 1, 16, 8) and np.array_equal(x[0, 0].numpy(), stored_pixels(folder))


def test_hf_applies_exif_orientation(tmp_path):
    import datasets

    folder = exif_rotated_jpeg(tmp_path / "f")
    features = datasets.Features({"image": datasets.Image()})
    datasets.Dataset.from_dict({"image": [str(folder / "p.jpg")]}, features=features).save_to_disk(tmp_path / "d")
    raw = load_dataset("hf", tmp_path, False, path=str(tmp_path / "d"), num_workers=0)
    assert raw.train_x.shape == (1, 1, 16, 8) and np.array_equal(raw.train_x[0, 0].numpy(), stored_pixels(folder))


def mixed_modes(folder: Path) -> Path:
    """A grey L image first, then an RGB and a palette (P) image: colour after grey."""
    folder.mkdir()
    Image.fromarray(U8[0]).save(folder / "0.png")
    Image.fromarray(COLOUR[0]).save(folder / "1.png")
    Image.fromarray(COLOUR[1]).convert("P").save(folder / "2.png")
    return folder


def test_streamed_folder_decides_channels_from_a_sample_not_the_first_image(tmp_path):
    """Issue 30 row 4: in_memory=false with a grey first image: 3 channels, as in memory."""
    folder = mixed_modes(tmp_path / "f")
    streamed = load_dataset("image_folder", tmp_path, False, path=str(folder), in_memory=False, num_workers=0)
    in_memory = load_dataset("image_folder", tmp_path, False, path=str(folder))
    x, _ = streamed.decoder(streamed.train[:])
    assert streamed.decoder.channels == 3 and np.array_equal(x.numpy(), in_memory.train_x.numpy())
    assert "3 channels (auto: not all of the first 3 images grey)" in streamed.summary


def test_a_colour_image_after_a_grey_sample_is_refused(tmp_path, monkeypatch):
    """The sample's rule is stated, and a later image that breaks it is refused in one line, never made grey."""
    monkeypatch.setattr("vae_lab.data.hf.CHANNEL_SAMPLE", 1)
    folder = mixed_modes(tmp_path / "f")
    source = load_dataset("image_folder", tmp_path, False, path=str(folder), in_memory=False, num_workers=0)
    assert source.decoder.channels == 1 and "(auto: all of the first 1 images grey)" in source.summary
    out = source.decoder(source.train[:])
    assert out == (f"{folder / '1.png'} is a colour image, but channels were set to 1 (auto: all of the first 1 "
                   f"images grey): set dataset.options.channels=3")


def test_streamed_folder_decodes_alpha_as_in_memory(tmp_path):
    """in_memory=false: the DataLoader workers' decoder uses alpha the same way (never black)."""
    folder = pngs(tmp_path / "f", RGBA_INK)
    source = load_dataset("image_folder", tmp_path, False, path=str(folder), in_memory=False, num_workers=0)
    x, _ = source.decoder(source.train[:])
    assert source.decoder.channels == 1 and np.array_equal(x.numpy(), nchw(INK))


def test_hf_finds_labels_under_common_keys_and_uses_alpha(tmp_path):
    """hf shares the label keys (any case) and the alpha rule with folders."""
    import io

    import datasets

    blobs = []
    for a in RGBA_INK:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")
        blobs.append({"bytes": buf.getvalue(), "path": None})
    features = datasets.Features({"image": datasets.Image(), "Target": datasets.Value("int64")})
    datasets.Dataset.from_dict({"image": blobs, "Target": [2, 0, 1]}, features=features).save_to_disk(tmp_path / "d")
    raw = load_dataset("hf", tmp_path, False, path=str(tmp_path / "d"), num_workers=0)
    assert raw.train_y.tolist() == [2, 0, 1] and np.array_equal(raw.train_x.numpy(), nchw(INK))


def png_bytes(a: np.ndarray, mode: str | None = None) -> dict:
    import io

    buf = io.BytesIO()
    (Image.fromarray(a) if mode is None else Image.fromarray(a).convert(mode)).save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


def hf_disk(tmp: Path, images: list, label=None, test=None) -> Path:
    """A save_to_disk DatasetDict (train, optional test) with an Image column and a text `label` column."""
    import datasets

    features = {"image": datasets.Image()}
    if label is not None:
        features["label"] = datasets.Value("string")

    def split(imgs, labels):
        data = {"image": imgs} | ({"label": labels} if labels is not None else {})
        return datasets.Dataset.from_dict(data, features=datasets.Features(features))

    splits = {"train": split(images, label)} | ({"test": split(images[: len(test)], test)} if test else {})
    datasets.DatasetDict(splits).save_to_disk(tmp / "d")
    return tmp / "d"


@pytest.mark.parametrize("in_memory", [True, False])
def test_hf_text_labels_become_sorted_class_ids_and_the_summary_says_so(tmp_path, in_memory):
    """Issue 30 row 8: a string `label` column -> ids of the sorted names (names kept), in memory and streamed."""
    path = hf_disk(tmp_path, [png_bytes(a) for a in U8], label=NAMES.tolist())
    out = load_dataset("hf", tmp_path, False, path=str(path), num_workers=0, in_memory=in_memory)
    y = out.train_y if in_memory else out.decoder(out.train[:])[1]
    assert y.tolist() == [1, 0, 2, 0, 1, 0] and out.class_names == ("cat", "dog", "emu")
    assert out.summary == (f"data: hf {path} [train] 6 images 5x7 (HxW) 8-bit, 1 channel (auto: all of the first 6 "
                           f"images grey); y 'label' strings -> 3 classes (sorted: cat, dog, emu), "
                           f"{'in memory' if in_memory else 'streamed'}")


def test_hf_test_split_with_a_class_the_training_split_lacks_is_refused(tmp_path):
    path = hf_disk(tmp_path, [png_bytes(a) for a in U8], label=NAMES.tolist(), test=["cat", "yak"])
    with pytest.raises(DataError, match=r"column 'label' holds 'yak', not one of the training split's classes "
                                        r"\(cat, dog, emu\)"):
        load_dataset("hf", tmp_path, False, path=str(path), num_workers=0)


def test_hf_channels_come_from_a_sample_not_the_first_image(tmp_path):
    """Issue 30 row 4: hf whose first image is grey (L), then RGB and P: 3 channels, colour kept."""
    images = [png_bytes(U8[0]), png_bytes(COLOUR[0]), png_bytes(COLOUR[1], "P")]
    raw = load_dataset("hf", tmp_path, False, path=str(hf_disk(tmp_path, images)), num_workers=0)
    palette = np.asarray(Image.fromarray(COLOUR[1]).convert("P").convert("RGB"))
    expected = nchw(np.stack([np.repeat(U8[0][..., None], 3, 2), COLOUR[0], palette]))
    assert np.array_equal(raw.train_x.numpy(), expected)
    assert "3 channels (auto: not all of the first 3 images grey); unlabelled, in memory" in raw.summary


def test_hf_parquet_is_converted_into_the_datasets_cache_not_the_working_directory(tmp_path, monkeypatch):
    """Issue 30 row 12: run from a checkout with the default relative paths.data_dir: nothing lands under it."""
    import datasets

    (tmp_path / "checkout").mkdir()
    datasets.Dataset.from_dict({"image": [png_bytes(a) for a in U8]},
                               features=datasets.Features({"image": datasets.Image()})).to_parquet(tmp_path / "x.parquet")
    monkeypatch.chdir(tmp_path / "checkout")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    raw = load_dataset("hf", "data", False, path=str(tmp_path / "x.parquet"), num_workers=0)
    assert np.array_equal(raw.train_x.numpy(), nchw(U8))
    assert list((tmp_path / "checkout").iterdir()) == []  # no ./data/huggingface in the checkout
    assert any((tmp_path / "cache").rglob("*.arrow"))


def test_data_source_records_path_keys_size_and_checksum(tmp_path):
    """Issue 30 row 14: what evaluation.json records about the data it scored."""
    import hashlib

    from vae_lab.data.source_record import data_source

    path = npz(tmp_path, x=U8)
    record = data_source("array_file", {"path": str(path), "key": "x", "label_key": None}, "val", "data")
    assert record == {"dataset": "array_file", "split": "val", "option_key": "x", "path": str(path),
                      "bytes": path.stat().st_size, "mtime": int(path.stat().st_mtime),
                      "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    folder = pngs(tmp_path / "f", U8[:2])
    assert data_source("image_folder", {"path": str(folder)}, "val", "data")["files"] == 2
    assert data_source("mnist", {}, "test", "/d") == {"dataset": "mnist", "split": "test", "data_dir": "/d"}


def test_installed_commands_name_themselves_in_their_help(monkeypatch, capsys):
    """Issue 30 row 15: `vae-lab-train --help` shows vae-lab-train's usage, `python train.py --help` its own."""
    import logging

    from hydra.core.global_hydra import GlobalHydra

    from vae_lab.cli.train import main

    root = logging.getLogger()  # Hydra configures logging in-process: its handler would outlive capsys's stream
    handlers, level = root.handlers[:], root.level
    try:
        for argv0, usage in (("/venv/bin/vae-lab-train", "vae-lab-train [GROUP=OPTION ...]"),
                             ("train.py", "python train.py [GROUP=OPTION ...]")):
            monkeypatch.setattr(sys, "argv", [argv0, "--help"])
            try:
                main()
            except SystemExit:
                pass
            GlobalHydra.instance().clear()
            out = capsys.readouterr().out
            assert usage in out and ("python train.py" in out) == argv0.endswith(".py"), out[:300]
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_a_missing_path_is_refused_before_anything_is_printed_or_made():
    """Issue 30 row 13: validate (run first by the Hydra callback, before the run directory exists) names the key."""
    from vae_lab.cli.run_dir_guard import RunDirGuard  # noqa: F401 (its on_run_start calls validate first)
    from vae_lab.config import validate
    from vae_lab.configs import compose_train

    for dataset in ("array_file", "image_folder", "hf"):
        with pytest.raises(ConfigError) as err:
            validate(compose_train([f"dataset={dataset}"]))
        assert str(err.value) == "dataset.options.path is required: set it on the command line (dataset.options.path=...)"
