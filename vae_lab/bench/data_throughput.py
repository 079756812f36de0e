"""Images/s of the streamed data path against the in-memory path on the same Hugging Face dataset.

    python -m vae_lab.bench.data_throughput [n=4000] [size=32] [batch_size=256] [workers=0,1,2] [path=DIR]

Without `path` it writes a synthetic dataset of n random RGB PNGs (size x size) with save_to_disk to a temp dir.
"""

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vae_lab.data import VAEDataModule


def synthetic_dataset(folder: Path, n: int, size: int, seed: int = 0) -> Path:
    """n random RGB PNG images (size x size) with labels, saved with save_to_disk (a CIFAR-like stand-in)."""
    import io

    import datasets
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
        images.append({"bytes": buf.getvalue(), "path": None})
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    ds = datasets.Dataset.from_dict({"image": images, "label": (np.arange(n) % 10).tolist()}, features=features)
    ds.save_to_disk(str(folder))
    return folder


def _images_per_s(batches, max_batches: int) -> tuple[float, int]:
    """Images/s over one pass (at most max_batches), worker start-up included."""
    start, count = time.perf_counter(), 0
    for b, (x, _) in enumerate(batches):
        count += len(x)
        if b + 1 >= max_batches:
            break
    return count / (time.perf_counter() - start), count


def data_throughput(path: str | Path, workers=(0, 1, 2), batch_size: int = 256, max_batches: int = 50,
                    data_dir: str | None = None) -> list[dict]:
    """One row per path: {"path", "workers", "images_per_s", "images", "setup_s"} for training batches."""
    data_dir = data_dir or tempfile.mkdtemp()
    rows = []
    for in_memory, counts in ((True, [workers[-1]]), (False, list(workers))):
        for w in counts:
            start = time.perf_counter()
            dm = VAEDataModule("hf", data_dir, batch_size=batch_size, seed=0,
                               options={"path": str(path), "in_memory": in_memory, "num_workers": w})
            dm.setup()
            setup_s = time.perf_counter() - start  # in memory: decoding everything once (by w workers)
            rate, images = _images_per_s(dm.train_dataloader(), max_batches)
            rows.append({"path": "in_memory" if in_memory else "streamed", "workers": w,
                         "images_per_s": round(rate), "images": images, "setup_s": round(setup_s, 2)})
    return rows


def throughput_table(path: str | Path | None, n: int = 4000, size: int = 32, batch_size: int = 256,
                     workers=(0, 1, 2)) -> str:
    """The Markdown table of data_throughput (on n synthetic PNGs when `path` is None)."""
    torch.set_num_threads(1)
    path = path or synthetic_dataset(Path(tempfile.mkdtemp()) / "ds", n, size)
    rows = data_throughput(path, tuple(workers), batch_size)
    memory = rows[0]["images_per_s"]
    lines = ["| path | DataLoader workers | images/s | vs in-memory | setup s |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['path']} | {r['workers']} | {r['images_per_s']} | {r['images_per_s'] / memory:.3f} | "
              f"{r['setup_s']} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    args = dict(a.split("=", 1) for a in argv)
    print(throughput_table(args.get("path"), int(args.get("n", 4000)), int(args.get("size", 32)),
                           int(args.get("batch_size", 256)), [int(w) for w in args.get("workers", "0,1,2").split(",")]))


if __name__ == "__main__":
    main(sys.argv[1:])
