"""scripts/benchmark.py (vae_lab.bench) end to end for a handful of steps: the plumbing of its sides and its JSON,
not timings, and its bad options (the step clock and the thresholds: tests/unit/test_bench_clock.py)."""

import json
import math
import subprocess
from pathlib import Path

import pytest

import driver
from datasets_fixtures import SHARED_DATA


def run_benchmark(tmp_path: Path, *overrides: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return driver.run("benchmark", f"hydra.run.dir={tmp_path / 'bench'}", f"out={tmp_path / 'b.json'}", *overrides,
                      timeout=timeout)


@pytest.fixture
def mnist_dir():
    if not (SHARED_DATA / "MNIST" / "raw").is_dir():
        pytest.skip(f"{SHARED_DATA / 'MNIST' / 'raw'} is not available")
    return SHARED_DATA


def check_training_sides(result: dict, batch_size: int, steps: int, warmup: int, calls: dict[str, int]) -> None:
    """Every training side ran the same model for the same timed steps; ratios are those of the medians.

    calls: optimizer steps per Lightning call of sides a and s, whose clocks run from a call end to a call end: from
    the first multiple of the call length at or past the warm-up to the last step."""
    runs, sides = result["runs"], result["summary"]["sides"]
    for side in "abcls":
        (report,) = runs[side]
        assert report["side"] == side and report.get("steps_per_call", calls.get(side)) == calls.get(side)
        n = calls.get(side, 1)
        expected = warmup + steps - -(-warmup // n) * n
        assert report["timed_steps"] == expected and report["timed_images"] == expected * batch_size
        assert report["images_per_s"] > 0 and report["first_step_s"] > 0 and report["peak_rss_mb"] > 0
        assert math.isclose(report["images_per_s"], report["timed_images"] / report["timed_s"])
        assert sides[side]["images_per_s"] == report["images_per_s"]  # the median of one repeat
        # the median step lies within the timed window: at most all of it, at least its mean share over `steps`
        assert 0 < report["median_step_s"] <= report["timed_s"]
    # one composed config and seed: the same initial weights and size on every side
    assert len({(r["weights_checksum"], r["num_params"]) for side in "abcls" for r in runs[side]}) == 1
    assert len({r["torch_threads"] for side in "abcls" for r in runs[side]}) == 1
    ratios = result["summary"]["ratios"]
    for name, (top, bottom) in {"a_over_b": "ab", "a_over_c": "ac", "a_over_l": "al", "l_over_b": "lb"}.items():
        assert ratios[name] == pytest.approx(sides[top]["images_per_s"] / sides[bottom]["images_per_s"])
        step = sides[bottom]["median_step_s"] / sides[top]["median_step_s"]
        assert ratios[f"{name}_median_step"] == pytest.approx(step)
    assert "a_over_l" not in result["summary"]["targets"]  # shown, not judged
    first_step, imports = sides["a"]["first_step_s"], sides["imports"]["import_s"]
    assert ratios["first_step_a_over_imports"] == pytest.approx(first_step / imports)
    assert sides["b"]["flops_per_image"] > 0 and sides["b"]["matmul_tflops"] > 0
    # side a is `python train.py` itself: its run directory and captured output, progress bar included
    log = Path(runs["a"][0]["log"]).read_text()
    assert runs["a"][0]["output_has_progress_bar"] and "Final validation ELBO" in log
    assert (Path(runs["a"][0]["log"]).parent / "a_r0" / "metrics.json").is_file()
    assert all(len(v) == 3 for v in (result["load_before"], result["load_after"]))


@pytest.mark.slow  # every side as its own process: 1-1.5 min
def test_training_sides_on_mnist(tmp_path, mnist_dir):
    proc = run_benchmark(tmp_path, f"paths.data_dir={mnist_dir}", "batch_size=16", "steps=8", "warmup_steps=1",
                         "repeats=1", "evaluation.enabled=false", "steps_per_call=2")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "b.json").read_text())
    assert set(result["runs"]) == {"a", "s", "b", "c", "l", "imports"}
    # a: train.py's default (auto: 8 here); s: the benchmark's steps_per_call
    check_training_sides(result, batch_size=16, steps=8, warmup=1, calls={"a": 8, "s": 2})
    assert result["settings"]["data_shape"] == [1, 28, 28]
    for line in ("load average", "a  vae_lab train.py", "b  hand loop", "c  seeds' DataLoader", "l  bare L.Trainer",
                 "a_over_b", "info a_over_l", "info l_over_b", "by median step"):
        assert line in proc.stdout
    targets = result["summary"]["targets"]  # the thresholds for mlp on the CPU
    assert targets["a_over_b"]["target"] == ">= 0.95" and targets["a_over_c"]["target"] == ">= 1.4"


@pytest.mark.slow
def test_every_side_with_evaluation_and_repeats(tmp_path, mnist_dir):
    proc = run_benchmark(tmp_path, f"paths.data_dir={mnist_dir}", "batch_size=32", "steps=8", "warmup_steps=2",
                         "steps_per_call=2", "repeats=2", "evaluation.num_images=20", "evaluation.iwae_samples=64",
                         "evaluation.batch_size=10", "evaluation.max_decoded=320", "evaluation.families=[]",
                         timeout=1200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "b.json").read_text())
    sides = result["summary"]["sides"]
    for side in ("a", "b", "c", "imports", "eval_vae_lab", "eval_loop"):
        assert len(result["runs"][side]) == 2
    for side in "abcl":
        values = [r["images_per_s"] for r in result["runs"][side]]
        assert sides[side]["images_per_s"] == pytest.approx(sum(values) / 2)  # the median of two
    evals = result["runs"]["eval_vae_lab"] + result["runs"]["eval_loop"]
    assert len({r["weights_checksum"] for r in evals}) == 1
    # both estimate the same log p(x) of the same untrained model: equal up to Monte Carlo noise
    estimates = [r["iwae_nats"] for r in evals]
    assert all(math.isfinite(v) and v < 0 for v in estimates)
    assert max(estimates) - min(estimates) < 0.05 * abs(min(estimates))
    assert "eval_vae_lab_over_loop" in result["summary"]["targets"]


@pytest.mark.slow  # every side as its own process: 1-1.5 min
def test_evaluation_sides_report_flops_and_the_share_of_the_yardstick(tmp_path, mnist_dir):
    """The IWAE sides alone (no training side): the same model, its FLOPs counted once, FLOP/s and share each."""
    k = 16
    proc = run_benchmark(tmp_path, f"paths.data_dir={mnist_dir}", "sides=[]", "repeats=1", "evaluation.num_images=6",
                         f"evaluation.iwae_samples={k}", "evaluation.batch_size=3", "evaluation.max_decoded=24",
                         'evaluation.families=["prior=vamp"]', "evaluation.family_images=3")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "b.json").read_text())
    family = ("eval_vae_lab prior=vamp", "eval_loop prior=vamp")
    assert set(result["runs"]) == {"imports", "eval_vae_lab", "eval_loop", *family}
    # a family's rows: its own model (the VampPrior's pseudo-inputs: more weights), same FLOP/s bookkeeping
    vamp = result["runs"]["eval_vae_lab prior=vamp"] + result["runs"]["eval_loop prior=vamp"]
    assert len({r["num_params"] for r in vamp}) == 1
    assert vamp[0]["num_params"] > result["runs"]["eval_loop"][0]["num_params"]
    assert result["summary"]["sides"]["eval_loop prior=vamp"]["share_of_peak"] > 0
    assert "eval_vae_lab_over_loop prior=vamp" in result["summary"]["ratios"]
    assert "IWAE vae_lab prior=vamp" in proc.stdout
    sides, evals = result["summary"]["sides"], result["runs"]["eval_vae_lab"] + result["runs"]["eval_loop"]
    assert len({r["weights_checksum"] for r in evals}) == 1
    loop = sides["eval_loop"]
    # the default MLP (784-400-100-2x16 encoder once, 16-100-400-784 decoder k times): 2 FLOPs per multiply-add
    encoder, decoder = 784 * 400 + 400 * 100 + 100 * 32, 16 * 100 + 100 * 400 + 400 * 784
    assert loop["flops_per_image"] == 2 * (encoder + k * decoder)
    for side in ("eval_vae_lab", "eval_loop"):
        assert sides[side]["tflops"] == pytest.approx(sides[side]["images_per_s"] * loop["flops_per_image"] / 1e12)
        assert sides[side]["share_of_peak"] == pytest.approx(sides[side]["tflops"] / loop["matmul_tflops"])
    ratios = result["summary"]["ratios"]
    assert ratios["eval_vae_lab_over_loop"] == pytest.approx(
        sides["eval_vae_lab"]["images_per_s"] / loop["images_per_s"])
    assert result["summary"]["targets"]["eval_vae_lab_over_loop"]["target"] == ">= 2.0"  # the issue's, mlp on CPU
    assert "IWAE-16 FLOPs per image" in proc.stdout and "IWAE vae_lab" in proc.stdout


@pytest.mark.slow  # ~2 min of conv_deep under bf16 on CPU; run by make test-slow in CI
def test_synthetic_data_and_bf16(tmp_path):
    """CIFAR-10-shaped random images (the GPU benchmark's data, here on CPU) under bf16 autocast."""
    proc = run_benchmark(tmp_path, "synthetic.enabled=true", "synthetic.num_examples=64", "arch=conv_deep",
                         "precision=bf16-mixed", "sides=[b,c]", "batch_size=8", "steps=2", "warmup_steps=1",
                         "repeats=1", "evaluation.enabled=false")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "b.json").read_text())
    assert result["settings"]["data_shape"] == [3, 32, 32] and set(result["runs"]) == {"b", "c", "imports"}
    assert result["runs"]["b"][0]["weights_checksum"] == result["runs"]["c"][0]["weights_checksum"]
    assert result["summary"]["ratios"] == {}  # no side a: nothing to compare


BAD_OPTIONS = [("arch=nope", "arch"), ("device=tpu", "device"), ("steps=0", "steps"), ("sides=[a,z]", "sides"),
               ("dataset=digits", "dataset"), ("evaluation.families=all", "evaluation.families"),
               ("evaluation.family_images=0", "evaluation.family_images"),
               ("steps=5 steps_per_call=8", "steps=5 is invalid for side s"),
               ("steps=5 sides=[a,b]", "steps=5 is invalid for side a")]


def test_bad_option_is_one_clear_line(tmp_path):
    """Each bad option: exit 2, one `error:` line naming the option, no traceback, no result file written (all the
    cases in one interpreter: scripts/benchmark.py's entry point, Hydra's parsing included)."""
    cases = [(override, [f"hydra.run.dir={tmp_path / str(k) / 'bench'}", f"out={tmp_path / str(k) / 'b.json'}",
                         *override.split()]) for k, (override, _) in enumerate(BAD_OPTIONS)]
    results = driver.run_many("benchmark", cases, out=tmp_path / "results.json")
    for k, (override, key) in enumerate(BAD_OPTIONS):
        proc = results[override]
        assert proc["code"] == 2, (override, proc["stderr"][-2000:])
        assert "Traceback" not in proc["stderr"] and proc["stderr"].strip().startswith("error:"), override
        assert key in proc["stderr"] and not (tmp_path / str(k) / "b.json").exists(), override
