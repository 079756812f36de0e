"""vae_lab.bench's step clock and its thresholds, directly (scripts/benchmark.py end to end:
tests/cli/test_benchmark_cli.py)."""

from pathlib import Path

from vae_lab.bench import clock as clock_module
from vae_lab.bench import report as bench_report
from vae_lab.bench.clock import StepClock

ROOT = Path(__file__).resolve().parents[2]


def test_step_clock_times_each_step_and_leaves_out_pauses(monkeypatch):
    """images/s over the timed window; the median step from per-step times, a step spanning a pause left out."""
    now = [0.0]
    monkeypatch.setattr(clock_module.time, "perf_counter", lambda: now[0])
    monkeypatch.setattr(clock_module.time, "process_time", lambda: now[0])
    clock = StepClock(warmup=2, steps=5)
    for step, duration in enumerate([9.0, 9.0, 1.0, 3.0, 2.0, 50.0, 4.0], start=1):
        now[0] += duration
        if step == 6:  # validation between steps 5 and 6: 45 s paused, a 5 s step
            now[0] -= 45.0
            clock.pause()
            now[0] += 45.0
            clock.resume()
        clock.stepped(8)
    assert clock.done and clock.step_s == [1.0, 3.0, 2.0, 4.0]  # step 6 spans the pause: left out
    report = clock.report()
    assert report["median_step_s"] == 2.5
    assert report["timed_s"] == 15.0 and report["images_per_s"] == 40 / 15.0  # 1+3+2+5+4 s: the pause subtracted


def test_thresholds_follow_device_and_arch():
    """The issue's a/b and a/c targets depend on device and architecture; an explicit value wins."""
    from omegaconf import OmegaConf

    base = OmegaConf.load(ROOT / "configs" / "benchmark.yaml")

    def targets(*overrides):
        cfg = OmegaConf.merge(base, OmegaConf.from_dotlist(list(overrides)))
        found = bench_report.targets(cfg)
        return found["min_a_over_b"], found["min_a_over_c"], found["min_eval_ratio"]

    assert targets("device=cpu", "arch=mlp") == (0.95, 1.4, 2.0)
    assert targets("device=cpu", "arch=conv") == (0.95, 1.25, 1.5)
    assert targets("device=cuda", "arch=conv_deep") == (0.9, 5.0, 1.5)
    assert targets("device=cpu", "arch=resnet") == (0.95, 1.25, 1.5)  # no issue target: the fallback
    assert targets("arch=mlp", "targets.min_a_over_c=2.0") == (0.95, 2.0, 2.0)


def test_every_family_that_builds_from_nothing_is_a_benchmark_arch():
    """arch= takes the flat nets and the model families (`terms` drive both sides); the VQ-VAE's stage-2 prior, which
    needs a trained stage 1, is refused in one line naming the choices."""
    import pytest
    from hydra import compose, initialize_config_dir

    from vae_lab.bench.runner import BENCH_ARCHS, check
    from vae_lab.cli import CONFIG_DIR
    from vae_lab.errors import ConfigError

    options = {p.stem for p in (ROOT / "configs" / "architecture").glob("*.yaml")}
    assert set(BENCH_ARCHS) == options - {"vqvae_prior"}
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        for arch in ("hierarchical", "vqvae"):
            check(compose("benchmark", overrides=[f"arch={arch}"]))
        with pytest.raises(ConfigError, match="arch='vqvae_prior' is not a valid choice; valid choices: .*hierarchical"):
            check(compose("benchmark", overrides=["arch=vqvae_prior"]))
