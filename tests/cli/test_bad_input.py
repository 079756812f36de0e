"""Bad input to train.py: one `error: ...` line, exit code 2, no stack trace, and an existing run directory left
byte-identical; and the other train.py behaviours a user sees on the command line.

Every case runs train.py's entry point (`vae_lab.cli.train.main`, Hydra command-line parsing included) through
`driver.run_many`: all cases share one interpreter, which records each case's exit code, stdout and stderr and
whether the existing run directory stayed byte-identical. The good run is that interpreter's first case (the same
entry point, a real run directory as Hydra writes it); test_cli_writes_the_run_directory checks what it wrote.
"""

import argparse
import json
import math
import os
import shlex
from pathlib import Path

import driver
import numpy as np
import pytest
import torch
from datasets_fixtures import write_array_file, write_cifar10, write_image_folder

QUIET = ["print_config=false", "trainer.enable_progress_bar=false", "callbacks=no_images"]

# (id, overrides, fragments the error line must contain). {run}: an existing run directory (trained once),
# {new}: a fresh directory for this case, {data}: where this module's bad datasets live.
CASES = [
    ("unknown_group_option", ["dataset=nope"],
     ["dataset=nope is not a valid choice; valid choices: array_file, cifar10, digits"]),
    ("unknown_key", ["model.latnt_dim=8"], ["unknown config key 'model.latnt_dim'"]),
    ("override_syntax", ["model.latent_dim=[8"], ["cannot parse the override 'model.latent_dim=[8'"]),
    ("wrong_type", ["model.latent_dim=abc"], ["model.latent_dim='abc' is invalid: must be an integer >= 1"]),
    ("latent_dim_zero", ["model.latent_dim=0"], ["model.latent_dim=0 is invalid: must be an integer >= 1"]),
    ("beta_negative", ["loss.beta=-1"], ["loss.beta=-1 is invalid: must be a number >= 0"]),
    ("lr_zero", ["schedule.lr=0"], ["schedule.lr=0 is invalid: must be a number > 0"]),
    ("batch_size_zero", ["schedule.batch_size=0"], ["schedule.batch_size=0 is invalid: must be an integer >= 1"]),
    ("steps_per_call_word", ["schedule.steps_per_call=often"],
     ["schedule.steps_per_call=often is invalid: must be auto or an integer >= 1"]),
    ("optimizer_not_a_class", ["schedule.optimizer._target_=torch.optim.Adamm"],
     ["schedule.optimizer._target_=torch.optim.Adamm is not an optimizer class"]),
    ("fused_word", ["schedule.optimizer.fused=maybe"], ["schedule.optimizer.fused='maybe' is not a valid choice"]),
    ("val_fraction_one", ["dataset.val_fraction=1.0"],
     ["dataset.val_fraction=1.0 is invalid: must be a number > 0 and < 1"]),
    ("val_fraction_zero", ["dataset.val_fraction=0"], ["dataset.val_fraction=0 is invalid"]),
    ("warmup_negative", ["schedule.kl_warmup_steps=-5"],
     ["schedule.kl_warmup_steps=-5 is invalid: must be an integer >= 0"]),
    ("images_of_two_sizes", ["dataset=image_folder", "dataset.options.path={data}/mixed"],
     ["images differ in size", "dataset.options.image_size"]),
    ("two_channel_arrays", ["dataset=array_file", "dataset.options.path={data}/two_channels.npz"],
     ["has shape (4, 2, 8, 8)", "expected (N,H,W), (N,H,W,C) or (N,C,H,W)"]),
    ("empty_image_folder", ["dataset=image_folder", "dataset.options.path={data}/empty"], ["no images found in"]),
    ("unreadable_image", ["dataset=image_folder", "dataset.options.path={data}/broken"],
     ["cannot read image", "b_broken.png"]),
    ("npz_without_x", ["dataset=array_file", "dataset.options.path={data}/no_x.npz"],
     ["has no array 'x' (nor images, image, imgs, data); keys present: pixels; set dataset.options.key=pixels"]),
    ("md5_mismatch", ["dataset=cifar10", "paths.data_dir={data}/cifar", "dataset.download=false"],
     ["CIFAR10: ", "data_batch_1 fails its md5 check (expected c99cafc152244af753f735de768cd75f, found "]),
    ("truncated_checkpoint", ["ckpt_path={data}/truncated.ckpt"],
     ["cannot read checkpoint", "truncated.ckpt: truncated (an interrupted write or copy?)"]),
    ("foreign_checkpoint", ["ckpt_path={data}/foreign.ckpt"], ["foreign.ckpt is not a vae_lab training checkpoint"]),
    ("pickled_code_checkpoint", ["ckpt_path={data}/pickled.ckpt"],
     ["cannot read checkpoint", "pickled.ckpt with weights_only=True", "argparse.Namespace"]),
    ("hub_id_that_does_not_exist", ["init_from=nobody-vae-lab/no-such-model"], ["nobody-vae-lab/no-such-model"]),
    ("resume_other_model_shape", ["resume={run}", "model.latent_dim=8"],
     ["last.ckpt was trained with a different model (latent_dim: 16 in the checkpoint, 8 now)"]),
    ("resume_missing_dir", ["resume={data}/no_such_run"], ["resume=", "no such run directory"]),
    ("ckpt_path_last", ["ckpt_path=last"], ["ckpt_path=last: no such checkpoint file", "resume=<run dir>"]),
    ("run_dir_taken", ["hydra.run.dir={run}"], ["already holds a run", "resume={run}"]),
    ("vamp_zero_components", ["prior=vamp", "prior.num_components=0"],
     ["prior.num_components=0 is invalid: must be an integer >= 1"]),
    ("iaf_negative_steps", ["posterior=iaf", "posterior.num_steps=-1"],
     ["posterior.num_steps=-1 is invalid: must be an integer >= 1"]),
    ("unknown_prior", ["prior=nope"], ["prior=nope is not a valid choice; valid choices: mog, standard_normal, vamp"]),
    ("free_bits_with_monte_carlo_rate", ["prior=mog", "loss.free_bits=0.5"],
     ["loss.free_bits=0.5 needs a factorised rate", "prior=mog posterior=gaussian", "set loss.free_bits=0"]),
    ("conditional_vampprior", ["prior=vamp", "model.conditional=true"],
     ["prior=vamp does not support model.conditional=true"]),
    ("sprites_bad_stride", ["dataset=sprites", "dataset.options.stride.pos_x=0"],
     ["dataset.options.stride.pos_x=0 is invalid: must be an integer in [1, 32]"]),
    ("sprites_unknown_option", ["dataset=sprites", "+dataset.options.colour=red"],
     ["dataset 'sprites'", "accepted options: stride"]),
    ("dsprites_missing", ["dataset=dsprites", "paths.data_dir={data}"], ["dSprites not found: expected"]),
    ("factor_vae_with_iwae_samples", ["loss=factor_vae", "loss.num_samples=5"],
     ["loss.num_samples=5 is invalid with loss=factor_vae: must be 1"]),
    ("factor_vae_with_an_iwae_key", ["loss=factor_vae", "+loss.iwae_samples=5"],
     ["loss.iwae_samples is not an option of loss.name=factor_vae"]),
    ("beta_tcvae_bad_sampling", ["loss=beta_tcvae", "loss.sampling=exact"],
     ["loss.sampling='exact' is invalid: must be one of: mss, mws"]),
    ("cyclical_ratio_zero", ["schedule.kl_annealing=cyclical", "schedule.kl_cycle_ratio=0"],
     ["schedule.kl_cycle_ratio=0 is invalid: must be a number > 0 and <= 1"]),
    # values that used to slip through (issue 16, item 9): inf trained until the NaN guard stopped it, the rest
    # traced back
    ("lr_inf", ["schedule.lr=inf"], ["schedule.lr=inf is invalid: must be a number > 0"]),
    ("beta_inf", ["loss.beta=inf"], ["loss.beta=inf is invalid: must be a number >= 0"]),
    ("free_bits_inf", ["loss.free_bits=inf"], ["loss.free_bits=inf is invalid: must be a number >= 0"]),
    ("likelihood_scale_inf", ["model.likelihood_scale=inf"], ["model.likelihood_scale=inf is invalid"]),
    ("kl_warmup_epochs_inf", ["schedule.kl_warmup_epochs=inf"],
     ["schedule.kl_warmup_epochs=inf is invalid: must be a number >= 0"]),
    ("seed_too_big", ["seed=4294967296"], ["seed=4294967296 is invalid: must be an integer >= 0 and <= 4294967295"]),
    ("run_dir_is_a_file", ["hydra.run.dir={data}/a_file"],
     ["hydra.run.dir={data}/a_file is invalid: it is a file, not a directory"]),
    ("run_dir_below_a_file", ["hydra.run.dir={data}/a_file/run"], ["it is below {data}/a_file, a file"]),
    ("conditional_unlabelled", ["dataset=array_file", "dataset.options.path={data}/unlabelled.npy",
                                "model.conditional=true"], ["model.conditional=true", "label"]),
]
# Each case aims at the existing run (resume=) unless it names its own target: the strongest test that nothing
# written before the check can reach a good run. Cases that start a new run get a fresh hydra.run.dir.
NEW_RUN = {"truncated_checkpoint", "foreign_checkpoint", "pickled_code_checkpoint", "hub_id_that_does_not_exist",
           "ckpt_path_last", "resume_missing_dir", "conditional_unlabelled"}

def write_bad_data(data: Path) -> None:
    """The bad datasets and checkpoints the cases point at."""
    write_image_folder(data / "mixed" / "a", classes=None, per_class=2, size=(8, 8))
    write_image_folder(data / "mixed" / "b", classes=None, per_class=2, size=(6, 9))
    (data / "empty").mkdir()
    (data / "a_file").write_text("not a directory\n")
    write_image_folder(data / "broken", classes=None, per_class=3, size=(8, 8))
    (data / "broken" / "b_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    write_array_file(data / "two_channels.npz", np.zeros((4, 2, 8, 8), np.uint8), np.zeros(4, np.int64))
    write_array_file(data / "no_x.npz", np.zeros((4, 8, 8), np.uint8), key="pixels")
    unlabelled = np.random.default_rng(0).integers(0, 256, (20, 8, 8), dtype=np.uint8)
    write_array_file(data / "unlabelled.npy", unlabelled)  # a bare array: no labels for a conditional model
    write_cifar10(data / "cifar")  # generated batches: their md5s cannot match the official ones
    torch.save({"state_dict": {"w": torch.zeros(4096)}, "global_step": 1}, data / "whole.ckpt")
    whole = (data / "whole.ckpt").read_bytes()
    (data / "truncated.ckpt").write_bytes(whole[: len(whole) // 2])  # a crash mid-write of a non-atomic save
    torch.save({"weights": torch.zeros(3)}, data / "foreign.ckpt")
    torch.save({"args": argparse.Namespace(lr=1.0)}, data / "pickled.ckpt")  # a class to import: weights_only refuses


# The command-line checks of train.py's own bad input (formerly tests/test_train.py, each its own process): a
# non-zero exit, no stack trace, and the offending key named.
CLI_OVERRIDES = ["model.latent_dim=0", "loss.beta=-1", "loss.beta=abc", "model.likelihood=nope", "dataset=nope"]
FORGED_NAME = "x\nerror: FAKE LINE.png"
# Good run: 30 steps, validation every 15, default callbacks and logger (what test_cli_writes_the_run_directory
# checks); every later case must leave it byte-identical.
GOOD = ["trainer.max_steps=30", "trainer.max_epochs=-1", "trainer.val_check_interval=15",
        "trainer.enable_progress_bar=false", "print_config=false"]
NAN_STEPS = ",".join(str(s) for s in range(20, 60))


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    """Train a real run (the batch's first case), then run every case against it, all in one interpreter."""
    existing_run = tmp_path_factory.mktemp("existing") / "run"
    data = tmp_path_factory.mktemp("bad_data")
    write_bad_data(data)
    (data / "forged").mkdir()
    (data / "forged" / FORGED_NAME).write_bytes(b"not an image")
    cases = [("good", [f"hydra.run.dir={existing_run}", *GOOD])]
    for name, overrides, _ in CASES:
        argv = [o.format(run=existing_run, data=data) for o in overrides]
        if not any(o.startswith(("hydra.run.dir=", "resume=")) for o in argv):
            argv.append(f"hydra.run.dir={data / 'new' / name}" if name in NEW_RUN else f"resume={existing_run}")
        cases.append((name, [*QUIET, *argv]))
    cases += [(f"cli_{override}", [f"hydra.run.dir={data / 'new' / f'cli_{i}'}", override])
              for i, override in enumerate(CLI_OVERRIDES)]
    # default callbacks (not QUIET's no_images): the knob must exist to be refused
    cases.append(("bad_callback_knob", [f"hydra.run.dir={data / 'new' / 'knob'}", "print_config=false",
                                        "callbacks.image_grids.every_n_epochs=-2"]))
    cases.append(("forged_file_name", ["dataset=image_folder", f"dataset.options.path={data / 'forged'}",
                                       "trainer.fast_dev_run=true", f"hydra.run.dir={data / 'new' / 'forged'}"]))
    cases.append(("keeps_producing_nan", [
        f"hydra.run.dir={data / 'new' / 'nan'}", "trainer.max_steps=100", "trainer.max_epochs=-1",
        "callbacks=no_images", "callbacks.periodic_checkpoint.every_n_train_steps=10", "trainer.log_every_n_steps=1",
        f"guard.inject_nan_at_steps=[{NAN_STEPS}]", "guard.max_consecutive=5", "trainer.enable_progress_bar=false",
        "print_config=false"]))
    out = driver.run_many("train", cases, data / "results.json", watch=existing_run)
    assert out["good"]["code"] == 0, out["good"]["stderr"][-3000:]
    assert (existing_run / "checkpoints" / "last.ckpt").is_file() and (existing_run / "metrics.json").is_file()
    # byte-identical after every case (run_many's digest before and after each): the good run as it finished
    assert [name for name, result in out.items() if name != "good" and not result["unchanged"]] == []
    assert (data / "a_file").read_text() == "not a directory\n"  # a run dir that is a file: left as it was
    return {**out, "_run": str(existing_run), "_data": str(data)}


@pytest.mark.parametrize(("name", "overrides", "fragments"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line_and_touches_nothing(results, name, overrides, fragments):
    result = results[name]
    driver.one_error_line(result, *(f.format(run=results["_run"], data=results["_data"]) for f in fragments))
    assert result["unchanged"], "the existing run directory changed"


def test_cli_writes_the_run_directory(results):
    """The good run of the batch, through train.py's entry point: what it prints and every file of a run."""
    run_dir = Path(results["_run"])
    stdout = results["good"]["stdout"]
    assert f"Run directory: {run_dir.resolve()}" in stdout and "Final validation ELBO" in stdout
    assert (run_dir / ".hydra" / "config.yaml").is_file() and (run_dir / "run_info.json").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert list((run_dir / "checkpoints").glob("best-*.ckpt"))
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["global_step"] == 30
    val = metrics["val"]
    assert val["val/elbo_nats"] == pytest.approx(-(val["val/distortion_nats"] + val["val/rate_nats"]), rel=1e-5)
    assert "test" not in metrics  # digits has no official test split
    assert (run_dir / metrics["best_checkpoint"]).is_file()  # relative: the run is relocatable


@pytest.mark.parametrize("override", CLI_OVERRIDES)
def test_cli_bad_input_is_one_clear_line(results, override):
    result = results[f"cli_{override}"]
    assert result["code"] != 0
    assert "Traceback" not in result["stderr"]
    key = override.split("=")[0]
    assert key in result["stderr"], result["stderr"]


def test_cli_reports_a_bad_callback_knob_in_one_line(results):
    """(from tests/test_image_callbacks.py)"""
    line = driver.one_error_line(results["bad_callback_knob"])
    assert line.startswith("error: callbacks.image_grids.every_n_epochs=-2 is invalid: must be an integer >= 0"), line


def test_a_file_name_cannot_forge_an_error_line(results):
    """Issue 29, row 15: a file name holding a newline and `error:` is printed escaped, inside the one line."""
    result = results["forged_file_name"]
    assert result["code"] == 2, result["stderr"][-2000:]
    lines = result["stderr"].splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot read image ") and "x\\nerror: FAKE LINE.png" in lines[0]


def test_run_that_keeps_producing_nan_stops_with_one_line_and_a_loadable_checkpoint(results):
    """The non-finite guard through the CLI: 5 poisoned steps in a row stop the run with one line, exit 2, and the
    periodic checkpoint before the streak kept loadable."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from vae_lab.loading import model_from_checkpoint

    run_dir = Path(results["_data"]) / "new" / "nan"
    result = results["keeps_producing_nan"]
    assert result["code"] == 2, result["stderr"][-3000:]
    assert "Traceback" not in result["stderr"]
    line = result["stderr"].strip().splitlines()[-1]
    # steps 21..25 are poisoned (the batch served at global step s becomes step s + 1): the 5th in a row stops
    assert line.startswith("error: training stopped at step 25: 5 steps in a row had a non-finite loss")
    assert "last finite step 20: train/loss=" in line
    for cause in ("schedule.lr", "model.likelihood_scale", "bf16-mixed"):
        assert cause in line

    last = run_dir / "checkpoints" / "last.ckpt"
    assert str(last) in line
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 20  # the periodic checkpoint before the streak, not overwritten since
    model = model_from_checkpoint(last)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert not (run_dir / "metrics.json").exists()

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    counts = {e.step: e.value for e in acc.Scalars("train/nonfinite_steps")}
    assert counts[19] == 0 and counts[20] == 1 and max(counts.values()) == 4  # the 5th raised before logging
    assert all(math.isfinite(e.value) for e in acc.Scalars("train/loss") if e.step < 20)


def test_read_only_run_dir_is_one_line_at_start(tmp_path):
    """A run dir on a read-only filesystem (a real ro mount; or permissions, for a user who is not root)."""
    import tiny_fs

    ro = tmp_path / "ro"
    ro.mkdir()
    wrap = None
    if tiny_fs.available():
        wrap = lambda argv: tiny_fs.in_tmpfs(ro, "ro", shlex.join(argv))  # noqa: E731
    elif os.geteuid() != 0:
        ro.chmod(0o555)
    else:
        pytest.skip("root without mount namespaces: no read-only directory to test with")
    proc = driver.run("train", f"hydra.run.dir={ro / 'run'}", *QUIET, wrap=wrap, timeout=300)
    ro.chmod(0o755)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: hydra.run.dir={ro / 'run'} is invalid: {ro} is not writable (read-only filesystem or permissions)")
    assert list(ro.iterdir()) == []
