"""Sample quality through evaluate in-process (vae_lab.fid with the digits classifier's features) on the shared plain
run: FID, precision / recall, the cached classifier. The maths: tests/unit/test_fid.py."""

import json

import numpy as np
import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_evaluate_reports_classifier_fid_naming_its_features_and_caches_it(trained_run, compose, tmp_path):
    from vae_lab.evaluation import evaluate_model

    run_dir = trained_run("plain")  # read-only: the report and the classifier's cache are written under tmp_path
    cfg = compose(f"model={run_dir}", f"out={tmp_path / 'e.json'}", "split=val", "iwae_samples=2", "progress=false",
                  "fid.features=mnist_classifier", "fid.num_examples=120", "fid.classifier_epochs=1",
                  f"fid.cache_dir={tmp_path / 'cache'}", config="evaluate")
    report, _ = evaluate_model(cfg)
    q = report["sample_quality"]
    assert q["num_examples"] == 120 and "classifier of digits's train split" in q["features"]
    for key in ("fid_samples", "fid_reconstructions", "fid_real_halves"):
        assert np.isfinite(q[key]) and q[key] >= 0
    assert 0 <= q["precision_samples"] <= 1 and 0 <= q["recall_reconstructions"] <= 1
    cached = list((tmp_path / "cache").glob("*.safetensors"))
    assert len(cached) == 1 and json.loads(cached[0].with_suffix(".json").read_text())["accuracy"] > 0.5
    stamp = cached[0].stat().st_mtime_ns
    again, _ = evaluate_model(cfg)  # read from the cache: the same features, the same numbers
    assert cached[0].stat().st_mtime_ns == stamp and again["sample_quality"]["fid_samples"] == q["fid_samples"]
