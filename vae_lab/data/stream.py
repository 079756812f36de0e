"""The out-of-memory path: rows read in order from Arrow (or a stream) in one place, decoded by DataLoader workers.

One reader per rank decides the order: a `datasets.IterableDataset` over the memory-mapped Arrow table (or a Hub
stream), its shards and a shuffle buffer shuffled with `seed + epoch`, split between DDP ranks by
`datasets.distributed.split_dataset_by_node`. It yields chunks of undecoded rows (image bytes or paths); the
DataLoader workers decode each chunk into a uint8 batch, in order. Because the order is a pure function of
(seed, epoch, rank, world size), a resumed epoch replays the reader and drops the batches already trained on,
without decoding them: resuming is exact, shuffle buffer included (the library's own state_dict loses the buffer).
"""

import io
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from vae_lab.data.batches import ResumableOrder
from vae_lab.data.inspection import HIGH_MODES, image_is_grey, image_pixels, to_channels, upright
from vae_lab.errors import ConfigError, DataError

GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")  # PIL modes decoded as 1 channel when `channels` is not given
ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")
SHARDS_PER_RANK = 16  # contiguous shards per rank: their order is shuffled each epoch, on top of the buffer


class ColourImage(DataError):
    """A colour image where channels were decided as 1 from a sample of grey ones."""


def read_image(source, mode: str, size: tuple[int, int] | None, name: str, background: int = 255,
               grey_within: int | None = None, root: str | None = None) -> np.ndarray:
    """One image (a path, bytes, or a {"bytes", "path"} row) -> uint8 (H, W) or (H, W, 3), resized if asked;
    upright by its EXIF orientation; a path is read only as a regular file inside `root` (vae_lab.data.untrusted).
    `grey_within`: refuse a colour image (channels beyond that tolerance) in mode L, where channels were decided
    from a sample."""
    from PIL import Image, UnidentifiedImageError

    from vae_lab.data.untrusted import open_image

    if isinstance(source, dict):
        source = source["bytes"] if source.get("bytes") is not None else source.get("path")
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    try:
        with open_image(source, name, root) as img:
            if img.mode in HIGH_MODES:
                raise DataError(f"{name} is a 16-bit image ({img.mode}): this path decodes 8-bit images only; "
                                f"set dataset.options.in_memory=true (image_folder keeps all 16 bits there)")
            upright(img)  # EXIF orientation, as the in-memory path
            if mode == "L" and grey_within is not None and not image_is_grey(img, grey_within):
                raise ColourImage(f"{name} is a colour image")
            if img.mode in ALPHA_MODES or img.mode == "P" and "transparency" in img.info:
                a, _, _ = image_pixels(img, background)  # alpha as the picture, or composited: never black
                img = Image.fromarray(to_channels(a, 1 if mode == "L" else 3))
            img = img.convert(mode)  # decodes the whole file, so truncated files fail here
            if size is not None and img.size != (size[1], size[0]):
                img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)  # PIL sizes are (W, H)
            return np.asarray(img)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, TypeError) as err:
        raise DataError(f"cannot read image {name}: {err}") from err


def size_mismatch(first: str, first_shape, other: str, other_shape) -> str:
    """The one line for images of different sizes without `image_size` (shapes are (H, W[, C]))."""
    return (f"images differ in size: {first} is {first_shape[1]}x{first_shape[0]}, {other} is "
            f"{other_shape[1]}x{other_shape[0]} (WxH); set dataset.options.image_size=[H,W] to resize them")


@dataclass(frozen=True)
class Decoder:
    """Undecoded rows (a dict of columns) -> uint8 images (B, C, H, W) and int64 labels (B,) (-1 if unlabelled)."""

    image_column: str
    label_column: str | None
    channels: int
    size: tuple[int, int] | None
    shape: tuple[int, int, int]  # (C, H, W) every image must have (the first image's, unless resized)
    first: str  # name of the image that set `shape`, for the mismatch message
    rule: str | None = None  # how `channels` was decided from a sample (None: given); 1 then refuses colour images
    grey_tolerance: int = 0
    label_ids: dict | None = None  # text label -> class id (sorted names), for a column of strings
    root: str | None = None  # image paths are read only inside this folder (the dataset's own)

    def __call__(self, rows: dict) -> tuple[torch.Tensor, torch.Tensor] | str:
        """A batch, or the one-line error as a string (raised by the caller: a worker's exception gets wrapped)."""
        mode = "L" if self.channels == 1 else "RGB"
        check = self.grey_tolerance if self.rule is not None and self.channels == 1 else None
        images = []
        for i, source in enumerate(rows[self.image_column]):
            name = _name(source, f"{self.image_column}[{i}]")
            try:
                a = read_image(source, mode, self.size, name, grey_within=check, root=self.root)
            except ColourImage as err:
                return f"{err}, but channels were set to 1 ({self.rule}): set dataset.options.channels=3"
            except DataError as err:
                return str(err)
            hw = a.shape[:2]
            if hw != self.shape[1:]:
                return size_mismatch(self.first, self.shape[1:], name, hw)
            images.append(a)
        x = torch.from_numpy(np.stack(images))  # (B, H, W) or (B, H, W, 3)
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()
        if self.label_column is None:
            y = torch.full((len(images),), -1, dtype=torch.int64)
        else:
            values = rows[self.label_column]
            if self.label_ids is not None:
                unknown = next((v for v in values if v not in self.label_ids), None)
                if unknown is not None:
                    return (f"column {self.label_column!r} holds {unknown!r}, not one of the training split's classes "
                            f"({', '.join(self.label_ids)})")
                values = [self.label_ids[v] for v in values]
            y = torch.as_tensor(values, dtype=torch.int64)
            if len(y) and int(y.min()) < 0:
                return f"column {self.label_column!r} holds negative labels ({int(y.min())}); expected class ids >= 0"
        return x, y


def _name(source, fallback: str) -> str:
    if isinstance(source, dict) and source.get("path"):
        return str(source["path"])
    return str(source) if isinstance(source, (str, Path)) else fallback


class _DecodeChunks:
    """Map-style "dataset" whose keys are the chunks themselves: DataLoader sends each chunk to a worker."""

    def __init__(self, decoder: Decoder):
        self.decoder = decoder

    def __getitem__(self, rows: dict):
        return self.decoder(rows)


@dataclass
class StreamSource:
    """A dataset left on disk or the network: raw rows per split (image column undecoded) and how to decode them."""

    train: object  # datasets.Dataset (memory-mapped, known length) or datasets.IterableDataset (a stream)
    test: object | None
    decoder: Decoder
    class_names: tuple[str, ...] | None
    num_workers: int = 2
    shuffle_buffer: int = 10_000
    summary: str | None = None  # one line: what the loader understood

    def __post_init__(self):
        for key in ("num_workers", "shuffle_buffer"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if key == "shuffle_buffer" else 0):
                raise ConfigError(f"dataset.options.{key}={value!r} is invalid: must be an integer >= "
                                  f"{1 if key == 'shuffle_buffer' else 0}")


def num_rows(rows) -> int | None:
    """Examples in a split, when known (a memory-mapped table, or a stream whose card states its size)."""
    if hasattr(rows, "num_rows"):
        return rows.num_rows
    splits = getattr(getattr(rows, "info", None), "splits", None) or {}
    split = getattr(rows, "split", None)
    return splits[str(split)].num_examples if split is not None and str(split) in splits else None


def is_table(rows) -> bool:
    """A memory-mapped table (random access, known length) rather than a stream."""
    return hasattr(rows, "num_rows")


class StreamingBatches(ResumableOrder):
    """An epoch-aware iterable of (x, y) batches (x float32 (B, C, H, W) in [0, 1]) read and decoded lazily.

    Same contract as `InMemoryBatches`: `set_epoch`, `state_dict` / `load_state_dict` (epoch, seed, batch) and
    equal step counts on every rank for shuffled passes (each rank stops after the number of examples every rank
    is sure to have); unshuffled passes serve each example once, one in `world_size` per rank, in row order.
    """

    def __init__(self, rows, decoder: Decoder, batch_size: int, shuffle: bool, seed: int, rank: int = 0,
                 world_size: int = 1, num_workers: int = 0, shuffle_buffer: int = 10_000,
                 device: torch.device | None = None, num_examples: int | None = None):
        if batch_size < 1:
            raise ConfigError(f"batch_size={batch_size} must be >= 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} must be in [0, world_size={world_size})")
        self.rows, self.decoder = rows, decoder
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.num_workers, self.shuffle_buffer = num_workers, shuffle_buffer
        self.device = device if device is not None and device.type == "cuda" else None
        # Examples in the split: a table knows; a stream is told (its card's size less the validation examples).
        self.n = rows.num_rows if is_table(rows) else num_examples
        # Shuffled passes over a table: contiguous shards, a multiple of world_size so ranks own whole shards.
        shards = min(world_size * SHARDS_PER_RANK, self.n or 0) // world_size * world_size
        self.num_shards = shards if is_table(rows) and shuffle and shards else 1
        self._epoch, self._resume_batch, self._progress = 0, 0, None

    def _num_examples(self) -> int | None:
        """Examples this rank serves per pass (None for a stream of unknown size)."""
        n = self.n
        if n is None or self.world_size == 1:
            return n
        if not self.shuffle:  # split_dataset_by_node on one shard: example i goes to rank i % world_size
            return len(range(self.rank, n, self.world_size))
        if self.num_shards < self.world_size:  # "examples" strategy: every rank has at least n // world_size
            return n // self.world_size
        return self.num_shards // self.world_size * (n // self.num_shards)  # whole shards, each >= n // shards

    def __len__(self) -> int:
        n = self._num_examples()
        if n is None:
            raise TypeError("a stream of unknown size has no length")  # Lightning then relies on max_steps
        return math.ceil(n / self.batch_size)

    def _reader(self, epoch: int):
        """This rank's rows for `epoch`, in the order they are served (a datasets.IterableDataset)."""
        from datasets.distributed import split_dataset_by_node

        rows = self.rows
        if is_table(rows):
            rows = rows.to_iterable_dataset(num_shards=self.num_shards)
        if self.shuffle:
            rows = rows.shuffle(seed=self.seed, buffer_size=self.shuffle_buffer)  # shard order + buffer
            rows.set_epoch(epoch)  # effective seed = seed + epoch, the same on every rank
        if self.world_size > 1:
            # Evaluation: example i to rank i % world_size (every example once; counts known per rank).
            strategy = "auto" if self.shuffle else "examples"
            rows = split_dataset_by_node(rows, rank=self.rank, world_size=self.world_size, strategy=strategy)
        return rows

    def _chunks(self, epoch: int, first: int) -> Iterator[dict]:
        """Undecoded rows in batches, from batch `first` (earlier ones are read but not decoded)."""
        limit = self._num_examples() if self.shuffle else None
        served = 0
        for b, rows in enumerate(self._reader(epoch).iter(batch_size=self.batch_size)):
            count = len(next(iter(rows.values())))
            if limit is not None and served + count > limit:
                count = limit - served
                rows = {k: v[:count] for k, v in rows.items()}
            if count <= 0:
                return
            served += count
            if b >= first:
                yield rows

    def uint8_batches(self, epoch: int, first: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Decoded batches of `epoch` from batch `first`: uint8 (B, C, H, W) and int64 (B,), in order."""
        workers = self.num_workers
        loader = DataLoader(_DecodeChunks(self.decoder), sampler=self._chunks(epoch, first), batch_size=None,
                            num_workers=workers, pin_memory=self.device is not None,
                            prefetch_factor=4 if workers else None)
        for out in loader:
            if isinstance(out, str):
                raise DataError(out)
            yield out

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, first = self._epoch, self._resume_batch
        self._epoch, self._resume_batch = epoch + 1, 0
        self._progress = [epoch, first]
        for b, (x, y) in enumerate(self.uint8_batches(epoch, first), start=first):
            if self.device is not None:  # uint8 over the bus (4x fewer bytes), converted on the GPU
                x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            self._progress[1] = b + 1
            yield x.float().div_(255), y

    def set_epoch(self, epoch: int) -> None:
        """Serve `epoch`'s order on the next pass, from its first batch."""
        self._epoch, self._resume_batch = epoch, 0

    def state_dict(self) -> dict[str, int]:
        """Where the order stands: plain ints, so checkpoints stay loadable with weights_only."""
        try:
            done = self._progress is not None and self._progress[1] >= len(self)
        except TypeError:  # unknown length: a checkpoint mid-pass is mid-epoch
            done = False
        if self._progress is not None and not done:
            epoch, batch = self._progress
        else:
            epoch, batch = self._epoch, self._resume_batch
        return {"epoch": epoch, "seed": self.seed, "batch": batch}

