"""scripts/evaluate.py as a user runs it, every case in one interpreter (driver.run_many): the path it prints, bad
input as exit 2 and one `error:` line with nothing written, --help. Its numbers: tests/integration/test_evaluate.py."""

import json
import shutil

import driver
from vae_lab.feature_nets import INCEPTION_FILE


def test_evaluate_command_line(trained_run, tmp_path):
    run_dir = shutil.copytree(trained_run("plain"), tmp_path / "run")  # the default out= is next to the model
    weights = tmp_path / "inception.pth"
    results = driver.run_many("evaluate", [
        ("wrote", [f"model={run_dir}", "split=val", "iwae_samples=5", "max_examples=50", "dataset.binarize=static",
                   "progress=false"]),
        ("test split", [f"model={run_dir}", "split=test", "progress=false"]),  # digits has no test split
        ("no model", ["progress=false"]),
        ("fid weights", [f"model={run_dir}", f"out={tmp_path / 'e.json'}", f"fid.features={weights}"]),
        ("help", ["--help"]),
    ], tmp_path / "results.json")

    wrote = results["wrote"]
    assert wrote["code"] == 0, wrote["stderr"][-3000:]
    assert f"wrote {run_dir / 'evaluation.json'}" in wrote["stdout"] and "IWAE k=5" in wrote["stdout"]
    report = json.loads((run_dir / "evaluation.json").read_text())
    assert report["binarize"] == "static" and report["num_examples"] == 50  # dataset.* reached the model's data

    (run_dir / "evaluation.json").unlink()
    driver.one_error_line(results["test split"], "test split")
    driver.one_error_line(results["no model"], "model")
    line = driver.one_error_line(results["fid weights"], INCEPTION_FILE, str(weights))
    assert results["fid weights"]["stderr"].strip().splitlines() == [line]  # a missing weights file: only that line
    assert not (tmp_path / "e.json").exists()

    helped = results["help"]
    assert helped["code"] == 0
    for key in ("model:", "split:", "iwae_samples:", "out:", "binarize:"):
        assert key in helped["stdout"]
