"""The Lightning DataModule: load once, split with a seed, binarise if asked, serve in-memory batches."""

from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch

from vae_lab.data.batches import DEQUANTIZE_CONTINUOUS, InMemoryBatches, sample_binary, stream_seed
from vae_lab.data.registry import DATASETS, RawData, load_dataset
from vae_lab.data.spec import DataSpec
from vae_lab.data.stream import StreamingBatches, StreamSource, is_table, num_rows
from vae_lab.errors import ConfigError, DataError, choices_error
from vae_lab.rules import VAL_FRACTION, VAL_MAX_EXAMPLES, check_value, plain
from vae_lab.units import DEQUANTIZE


@dataclass(frozen=True)
class Binarize:
    """Where binary pixels come from: fixed once at setup, or re-sampled for every training batch."""

    fixed_train: bool  # binarise the training split once at setup
    fixed_eval: bool  # binarise validation/test once at setup (deterministic evaluation)
    train_batches: str  # InMemoryBatches' binarize_mode for training batches


BINARIZE: dict[str, Binarize] = {
    "none": Binarize(fixed_train=False, fixed_eval=False, train_batches="none"),
    "dynamic": Binarize(fixed_train=False, fixed_eval=True, train_batches="dynamic"),
    "static": Binarize(fixed_train=True, fixed_eval=True, train_batches="none"),
}


def _is_binary(x: torch.Tensor, levels: int | None) -> bool:
    """Whether every pixel of a split is 0 or the top level (levels - 1; 1.0 for continuous data), in chunks
    (a memory-mapped file is read, never copied)."""
    top = 1 if levels is None else levels - 1
    return all(bool(((part == 0) | (part == top)).all()) for part in x.split(8192))


class VAEDataModule(L.LightningDataModule):
    """A dataset from DATASETS split into train/val (seeded) plus its official test split, if any.

    Batches are `InMemoryBatches`, not DataLoaders: the whole dataset lives in one tensor per split, stored as
    RawData gives it (uint8 8-bit, int32 up to 16-bit, float32 continuous), moved once to the GPU when the trainer
    runs there. A source that stays on disk (a `StreamSource`) is served by
    `StreamingBatches` instead, split into train/val with the same seeded permutation. Under DDP each rank serves
    its own shard, so the Trainer needs `use_distributed_sampler=False`.
    """

    def __init__(
        self,
        name: str,
        data_dir: str,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        val_fraction: float = 0.1,
        seed: int = 42,
        download: bool = True,
        binarize: str = "none",
        options: dict | None = None,
        dequantize: str = "none",
        val_max_examples: int | None = None,
    ):
        super().__init__()
        if name not in DATASETS:
            raise choices_error("dataset", name, DATASETS)
        if binarize not in BINARIZE:
            raise choices_error("dataset.binarize", binarize, BINARIZE)
        if dequantize not in DEQUANTIZE:
            raise choices_error("dataset.dequantize", dequantize, DEQUANTIZE)
        if dequantize != "none" and binarize != "none":
            raise ConfigError(f"dataset.dequantize={dequantize!r} is invalid: must be none with dataset.binarize="
                              f"{binarize} (binary pixels are not dequantised)")
        for key, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"{key}={value!r} must be an int >= 1")
        check_value(VAL_FRACTION, val_fraction)
        check_value(VAL_MAX_EXAMPLES, val_max_examples)
        self.save_hyperparameters(
            {
                "name": name,
                "data_dir": str(data_dir),
                "batch_size": batch_size,
                "eval_batch_size": eval_batch_size,
                "val_fraction": float(val_fraction),
                "seed": seed,
                "download": download,
                "binarize": binarize,
                "options": plain(options or {}),
                "dequantize": dequantize,
                "val_max_examples": val_max_examples,
            }
        )
        self._raw: RawData | None = None  # filled by prepare_data when it runs in this process
        self._splits: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self._streams: dict[str, tuple[object, int | None]] = {}  # split -> (raw rows, examples) when streamed
        self._rows: dict[str, torch.Tensor] = {}  # split -> its rows of a memory-mapped x (served from the map)
        self._source: StreamSource | None = None
        self._spec: DataSpec | None = None
        self._factors: dict[str, torch.Tensor] = {}  # per split: ground-truth factor classes (factor datasets)
        self._factor_names: tuple[str, ...] | None = None
        self._levels: int | None = 256  # RawData.levels of the in-memory splits
        self.summary: str | None = None

    def _load(self) -> RawData | StreamSource:
        h = self.hparams
        options = {k: v for k, v in h.options.items() if k != "classes"}  # classes: applied in setup, any source
        return load_dataset(h.name, Path(h.data_dir).expanduser(), h.download, **options)

    def _keep_classes(self, raw: RawData) -> RawData:
        """Only the examples whose label is in dataset.options.classes, in the train and test splits alike (the
        validation split is carved out of the kept training examples); labels keep their indices."""
        classes = self.hparams.options.get("classes")
        if classes is None:
            return raw
        name = self.hparams.name
        ok = isinstance(classes, list) and classes and all(isinstance(c, int) and not isinstance(c, bool) and c >= 0
                                                          for c in classes)
        if not ok:
            raise ConfigError(f"dataset.options.classes={classes!r} is invalid: must be a non-empty list of class "
                              "indices, e.g. [0,1,2]")
        if isinstance(raw, StreamSource) or raw.train_y is None:
            what = "is streamed" if isinstance(raw, StreamSource) else "is unlabelled"
            raise ConfigError(f"dataset.options.classes needs labelled in-memory data; {name} {what}")
        count = len(raw.class_names) if raw.class_names else int(raw.train_y.max()) + 1
        if max(classes) >= count:
            raise ConfigError(f"dataset.options.classes={classes} is invalid: {name} has classes 0..{count - 1}")
        wanted = torch.tensor(sorted(set(classes)))
        keep = torch.isin(raw.train_y, wanted)
        test = None if raw.test_y is None else torch.isin(raw.test_y, wanted)
        pick = lambda t, m: None if t is None or m is None else t[m]  # noqa: E731
        return RawData(raw.train_x[keep], raw.train_y[keep], pick(raw.test_x, test), pick(raw.test_y, test),
                       raw.class_names, pick(raw.factors, keep), raw.factor_names, raw.levels, raw.summary)

    def prepare_data(self) -> None:
        # Lightning runs this on one process per node before setup: with download=True torchvision fetches or
        # extracts the files here. Keep what was decoded so setup in the same process does not decode twice.
        # Once set up (train.py sets up before fit), the Trainer's own calls have nothing left to do.
        if not self._splits and not self._streams and self._raw is None:
            self._raw = self._load()

    def _split_sizes(self, n: int) -> int:
        """Validation examples out of `n` (rounded down, as in random_split([0.9, 0.1])), at most val_max_examples
        (the rest train)."""
        h = self.hparams
        n_val = int(n * h.val_fraction)
        if h.get("val_max_examples") is not None:
            n_val = min(n_val, h.val_max_examples)
        if n - n_val < 1 or (h.val_fraction > 0 and n_val < 1):
            raise DataError(
                f"{h.name}: {n} training examples cannot be split with dataset.val_fraction={h.val_fraction}"
            )
        return n_val

    def _permutation(self, n: int) -> torch.Tensor:
        return torch.randperm(n, generator=torch.Generator().manual_seed(self.hparams.seed))

    def _setup_stream(self, source: StreamSource) -> None:
        """Train/val rows of a streamed source: the in-memory path's split (same seed, same sets) for tables."""
        h = self.hparams
        if h.binarize != "none":
            raise ConfigError(f"dataset.binarize={h.binarize} needs the in-memory path; this dataset is streamed "
                              f"(dataset.options.in_memory=false or too large): use dataset.binarize=none")
        rows, n = source.train, num_rows(source.train)
        if n is None:
            raise DataError(f"{h.name}: the stream does not state its size, so dataset.val_fraction cannot be "
                            f"carved out of it; use a dataset whose card lists split sizes, or streaming=false")
        n_val = self._split_sizes(n)
        if is_table(rows):
            perm = self._permutation(n)
            # Sorted indices keep reads in file order; the set of examples is exactly the in-memory path's.
            train = rows.select(perm[: n - n_val].sort().values.tolist())
            val = rows.select(perm[n - n_val :].sort().values.tolist())
        else:  # a stream: the first n_val examples (before any shuffling) validate
            train, val = rows.skip(n_val), rows.take(n_val)
        self._streams = {"train": (train, n - n_val), "val": (val, n_val)}
        if source.test is not None:
            self._streams["test"] = (source.test, num_rows(source.test))
        num_classes = len(source.class_names) if source.class_names else None
        label = source.decoder.label_column
        if num_classes is None and label is not None and is_table(rows):
            import pyarrow.compute as pc

            num_classes = int(pc.max(rows.data.column(label)).as_py()) + 1  # one column read, no images
        self._source = source
        self._spec = DataSpec(shape=source.decoder.shape, num_classes=num_classes, class_names=source.class_names,
                              has_test=source.test is not None, num_train=n - n_val)

    def setup(self, stage: str | None = None) -> None:
        if self._splits or self._streams:
            return
        raw = self._keep_classes(self._raw if self._raw is not None else self._load())
        self._raw = None
        self.summary = raw.summary if raw.summary else None  # the loader's one line: what it understood
        if isinstance(raw, StreamSource):
            return self._setup_stream(raw)
        h = self.hparams
        if h.dequantize != "none" and raw.levels is None:
            raise ConfigError(DEQUANTIZE_CONTINUOUS)
        n = len(raw.train_x)
        n_val = self._split_sizes(n)
        perm = self._permutation(n)
        train_idx, val_idx = perm[: n - n_val], perm[n - n_val :]
        pick = lambda y, idx: None if y is None else y[idx]  # noqa: E731
        if raw.mapped:  # a memory-mapped file: each split is its rows of the map, gathered batch by batch
            self._rows = {"train": train_idx.sort().values, "val": val_idx.sort().values}
            splits = {split: (raw.train_x, pick(raw.train_y, idx)) for split, idx in self._rows.items()}
        else:
            splits = {
                "train": (raw.train_x[train_idx], pick(raw.train_y, train_idx)),
                "val": (raw.train_x[val_idx], pick(raw.train_y, val_idx)),
            }
        if raw.test_x is not None:
            splits["test"] = (raw.test_x, raw.test_y)
        if raw.factors is not None:
            self._factors = {"train": raw.factors[train_idx], "val": raw.factors[val_idx]}
            self._factor_names = raw.factor_names
        policy = BINARIZE[h.binarize]
        for split, (x, y) in list(splits.items()):
            fixed = policy.fixed_train if split == "train" else policy.fixed_eval
            if fixed:
                x = x[self._rows.pop(split)] if split in self._rows else x  # a fixed draw is its own copy
                splits[split] = (sample_binary(x, stream_seed(h.seed, split), raw.levels), y)
        self._splits, self._levels = splits, raw.levels

        labels = [y for _, y in splits.values() if y is not None and len(y)]
        if raw.class_names is not None:
            num_classes = len(raw.class_names)
        else:
            num_classes = int(max(y.max() for y in labels)) + 1 if labels else None
        self._spec = DataSpec(
            shape=tuple(raw.train_x.shape[1:]),
            num_classes=num_classes,
            class_names=raw.class_names,
            has_test=raw.test_x is not None,
            binary=policy.train_batches == "dynamic" or all(_is_binary(x, raw.levels) for x, _ in splits.values()),
            factor_names=raw.factor_names,
            num_train=len(self._rows.get("train", splits["train"][0])),
            levels=raw.levels,
        )

    @property
    def spec(self) -> DataSpec:
        """Shape and classes of the data (loads it on first use if setup has not run)."""
        self.setup()
        return self._spec

    def factor_grid(self):
        """The train + val images with their ground-truth factors as a FactorGrid; None without factors."""
        from vae_lab.data.factors import FactorGrid

        self.setup()
        if not self._factors:
            return None
        images = torch.cat([self._splits[s][0].cpu() for s in ("train", "val")])
        return FactorGrid(images, torch.cat([self._factors["train"], self._factors["val"]]), self._factor_names)

    def describe(self) -> str:
        """One line for logs: name, shape, split sizes, classes."""
        spec = self.spec
        counts = {split: len(self._rows.get(split, x)) for split, (x, _) in self._splits.items()}
        counts.update({split: "?" if n is None else n for split, (_, n) in self._streams.items()})
        sizes = " / ".join(f"{split} {n}" for split, n in counts.items())  # train, val[, test]
        n = spec.num_classes
        classes = f"{n} class{'es' if n > 1 else ''}" if n else "unlabelled"
        test = "" if spec.has_test else " (no test split)"
        where = (f", streamed by {self._source.num_workers} workers" if self._streams else
                 ", served from the memory-mapped file" if self._rows else ", in memory")
        cap = self.hparams.get("val_max_examples")
        if cap is not None and counts.get("val") == cap:
            sizes += f" (val capped at dataset.val_max_examples={cap})"
        # 8-bit grey levels are the default and go unsaid; other scales are named
        pixels = (", binary" if spec.binary else "" if spec.levels == 256 else
                  ", continuous (float)" if spec.levels is None else f", {spec.levels} levels")
        return f"{self.hparams.name}: {'x'.join(map(str, spec.shape))}{pixels}, {sizes}{test}, {classes}{where}"

    def _batches(self, split: str, batch_size: int, shuffle: bool, binarize_mode: str):
        self.setup()
        rank, world_size, device = 0, 1, None
        if self.trainer is not None:
            rank, world_size = self.trainer.global_rank, self.trainer.world_size
            device = self.trainer.strategy.root_device
        if self._streams:
            rows, n = self._streams[split]
            s = self._source
            return StreamingBatches(rows, s.decoder, batch_size, shuffle, self.hparams.seed, rank, world_size,
                                    s.num_workers, s.shuffle_buffer, device, num_examples=n)
        x, y = self._splits[split]
        if device is not None and device.type == "cuda" and x.device != device and split not in self._rows:
            # Once per split: every batch is then indexed on the GPU and Lightning's transfer is a no-op.
            x, y = x.to(device), None if y is None else y.to(device)
            self._splits[split] = (x, y)
        return InMemoryBatches(x, y, batch_size, shuffle, self.hparams.seed, binarize_mode, rank, world_size,
                               dequantize=self.hparams.dequantize, levels=self._levels, rows=self._rows.get(split))

    def train_dataloader(self) -> InMemoryBatches | StreamingBatches:
        return self._batches("train", self.hparams.batch_size, True, BINARIZE[self.hparams.binarize].train_batches)

    def val_dataloader(self) -> InMemoryBatches | StreamingBatches:
        return self._batches("val", self.hparams.eval_batch_size or self.hparams.batch_size, False, "none")

    def test_dataloader(self) -> InMemoryBatches | StreamingBatches:
        self.setup()
        if "test" not in self._splits and "test" not in self._streams:
            raise DataError(
                f"dataset {self.hparams.name!r} has no test split: evaluate the validation split with split=val"
            )
        return self._batches("test", self.hparams.eval_batch_size or self.hparams.batch_size, False, "none")

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        # The batches are cut on the training device already: skip Lightning's walk over the collection.
        if all(isinstance(t, torch.Tensor) and t.device == device for t in batch):
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)
