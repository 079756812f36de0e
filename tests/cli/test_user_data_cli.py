"""A user's own data through the real tools (issue 15, issue 30): train.py refuses bad data in one line and writes
nothing; a trained model's sample/evaluate read other data of its shape and refuse another shape; a 300 MB .npy
trains within the file's size of memory (the loaders in-process: tests/unit/test_user_data.py)."""

import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import driver
from user_files import npy, pngs, raw_bytes, zip_of_pngs

RNG = np.random.default_rng(0)
U8 = RNG.integers(0, 256, (6, 5, 7), dtype=np.uint8)  # 6 images 5x7, 8-bit
COLOUR = RNG.integers(0, 256, (3, 5, 7, 3), dtype=np.uint8)


CLI_CASES = [  # (id, write(tmp) -> path, dataset, the error line's fragment)
    ("float_0_255", lambda t: npy(t, U8.astype(np.float32)), "array_file", "divide by 255"),
    ("csv", raw_bytes(b"0,1\n2,3\n", "x.csv"), "array_file", "not a .npy/.npz file (found text (CSV?))"),
    ("lone_image", lambda t: npy(t, COLOUR[0]), "array_file", "holds one image of shape (5, 7, 3)"),
    ("folder_to_array_file", lambda t: pngs(t / "f", U8), "array_file", "is a folder, not an array file"),
    ("zip_to_image_folder", lambda t: zip_of_pngs(t, U8[0]), "image_folder",
     "is a file, not a folder of images: unzip it"),
]


@pytest.mark.slow
def test_cli_refuses_bad_user_data_in_one_line_and_writes_nothing(tmp_path):
    cases = []
    for name, write, dataset, _ in CLI_CASES:
        (tmp_path / name).mkdir()
        path = write(tmp_path / name)
        cases.append((name, [f"dataset={dataset}", f"dataset.options.path={path}", "print_config=false",
                             "logger=none", f"hydra.run.dir={tmp_path / name / 'run'}"]))
    results = driver.run_many("train", cases, out=tmp_path / "results.json")  # every case in one interpreter
    for name, _, _, fragment in CLI_CASES:
        driver.one_error_line(results[name], fragment)  # exit 2, no traceback, one error line with the fragment
        run = tmp_path / name / "run"  # Hydra makes the directory (.hydra/, train.log) before the job starts
        written = {p.relative_to(run).parts[0] for p in run.rglob("*")} if run.exists() else set()
        # no checkpoint, metrics or artifact (.run.lock: the run directory's lock file, naming the PID that held it)
        assert written <= {".hydra", "train.log", ".run.lock"}, (name, written)


def _cli(tool: str, *args: str) -> subprocess.CompletedProcess:
    return driver.run(tool, *args)


def _tiles(png: Path, rows: int, cols: int, tile: int = 32, padding: int = 2) -> list[np.ndarray]:
    grid = np.asarray(Image.open(png).convert("L"))
    return [grid[padding + r * (tile + padding):][:tile, padding + c * (tile + padding):][:, :tile]
            for r in range(rows) for c in range(cols)]


@pytest.mark.slow
def test_a_trained_model_reads_other_data_through_evaluate_and_sample(tmp_path):
    """Train on binary 0/1 noise; evaluate/sample with dataset.options.path=<other file> use that file (its all-white
    or all-black images appear as the originals of the reconstruction grid) and refuse a file of another shape."""
    train = npy(tmp_path, RNG.integers(0, 2, (100, 8, 8), dtype=np.uint8), "train.npy")
    white = npy(tmp_path, np.ones((40, 8, 8), np.uint8), "white.npy")  # 0/1 storage: read as binary 255
    black = npy(tmp_path, np.zeros((40, 8, 8), np.uint8), "black.npy")
    wrong = npy(tmp_path, np.zeros((40, 12, 12), np.uint8), "wrong.npy")
    run = tmp_path / "run"
    proc = _cli("train", "dataset=array_file", f"dataset.options.path={train}", f"hydra.run.dir={run}",
                "print_config=false", "logger=none", "callbacks=no_images", "trainer.max_steps=5",
                "trainer.max_epochs=-1", "trainer.enable_progress_bar=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "data: array_file train.npy (100, 8, 8) uint8 levels {0,1} -> binary, 1 channel; unlabelled" in proc.stdout
    for name, path, value in (("white", white, 255), ("black", black, 0)):
        out = tmp_path / f"{name}.png"
        proc = _cli("sample", f"model={run}", "mode=reconstruct", "n=4", f"dataset.options.path={path}",
                    f"out={out}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        uniform = [t for t in _tiles(out, 2, 4) if np.all(t == value)]
        assert len(uniform) >= 4, name  # the 4 originals come from the other file, not the noise trained on
        proc = _cli("evaluate", f"model={run}", "split=val", "iwae_samples=2", "progress=false",
                    f"dataset.options.path={path}", f"out={tmp_path / name}.json")
        assert proc.returncode == 0, proc.stderr[-3000:]
        report = json.loads((tmp_path / f"{name}.json").read_text())
        assert report["num_examples"] == 4  # 10% of 40, not of 100
        # issue 30 row 14: which data were scored
        assert report["data_source"] == {"dataset": "array_file", "split": "val", "path": str(path),
                                         "bytes": path.stat().st_size, "mtime": int(path.stat().st_mtime),
                                         "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    for script in ("sample", "evaluate"):
        proc = _cli(script, f"model={run}", "mode=reconstruct" if "sample" in script else "split=val",
                    f"dataset.options.path={wrong}", f"out={tmp_path / 'wrong'}")
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert proc.stderr.strip().splitlines() == [
            "error: the data are (1, 12, 12) images but the model takes (1, 8, 8): point dataset.* at data of the "
            "model's shape"], proc.stderr
        assert not (tmp_path / "wrong").exists()


PEAK_RSS = r"""
import resource, subprocess, sys
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
print(proc.stdout[-4000:], proc.stderr[-3000:], file=sys.stderr)
print(proc.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
"""


def _train_peak_rss(path: Path, run: Path) -> tuple[int, str]:
    """(peak RSS in bytes of `python train.py` on the array file, its stdout's tail) in a fresh process."""
    args = driver.command("train", "dataset=array_file", f"dataset.options.path={path}", f"hydra.run.dir={run}",
                          "print_config=false", "logger=none", "callbacks=no_images", "trainer.max_steps=30",
                          "trainer.max_epochs=-1", "trainer.enable_progress_bar=false", "architecture=mlp")
    proc = driver.python(PEAK_RSS, *args, timeout=1800)
    code, rss = proc.stdout.split()[-2:]
    assert code == "0", proc.stderr[-3000:]
    return int(rss), proc.stderr


@pytest.mark.slow
def test_training_on_a_300mb_npy_stays_under_the_file_plus_the_model(tmp_path):
    """Issue 30 row 11: a 300 MB uint8 .npy (380,000 images 28x28) is memory-mapped and served from the map: peak RSS
    of a 30-step run stays within the file's size (+15 %) over the RSS of the same run on a 1,000-image file (the
    model, torch, Lightning); validation is capped at 10,000 examples, said in the data line (issue: 2.2 GB, 38,000
    validated)."""
    big = tmp_path / "big.npy"
    images = np.lib.format.open_memmap(big, mode="w+", dtype=np.uint8, shape=(380_000, 28, 28))
    for start in range(0, len(images), 50_000):  # written in pieces: the test itself stays small
        images[start : start + 50_000] = RNG.integers(0, 256, (min(50_000, len(images) - start), 28, 28), np.uint8)
    images.flush()
    del images
    small = npy(tmp_path, RNG.integers(0, 256, (1000, 28, 28), dtype=np.uint8), "small.npy")
    baseline, _ = _train_peak_rss(small, tmp_path / "small_run")
    peak, out = _train_peak_rss(big, tmp_path / "big_run")
    size = big.stat().st_size
    if peak >= baseline + 1.15 * size:  # a peak is one sample: measured once more on a second run, the lower kept
        # (two runs of the same command measured 1652 and 1487 MiB, another pair 1687 and 1521: the first run on a
        # freshly written file peaks higher; a copy of the data, the failure this guards against, is in every run)
        again, _ = _train_peak_rss(big, tmp_path / "big_run_again")
        print(f"peak RSS {peak / 2**20:.0f} MiB over the bound; again: {again / 2**20:.0f} MiB")
        peak = min(peak, again)
    assert "val 10000 (val capped at dataset.val_max_examples=10000)" in out and "memory-mapped" in out, out[-2000:]
    print(f"peak RSS {peak / 2**20:.0f} MiB; file {size / 2**20:.0f} MiB + small run {baseline / 2**20:.0f} MiB")
    # the file's pages count once in RSS when touched; 15 % over it covers the per-example int64 index arrays
    # (permutation, split rows, labels, epoch order: ~40 B per example) and allocator noise between two processes
    assert peak < baseline + 1.15 * size, (peak, size, baseline)  # measured: 1781 < 1492 + 284 MiB (+5 MiB)
