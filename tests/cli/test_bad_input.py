"""Bad input: one `error: ...` line, exit code 2, no stack trace, and an existing run directory left byte-identical.

Every case runs train.py's entry point (`vae_lab.cli.train.main`, Hydra command-line parsing included) in a
subprocess. To keep the suite fast the cases share one interpreter: a driver sets sys.argv, calls main(), and
records the exit code, stderr and a digest of the existing run directory before and after each call.
"""

import argparse
import errno
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets_fixtures import write_array_file, write_cifar10, write_image_folder
from hydra import compose, initialize_config_dir

from vae_lab.cli import CONFIG_DIR
from vae_lab.errors import CheckpointError

ROOT = Path(__file__).resolve().parents[2]
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
]
# Each case aims at the existing run (resume=) unless it names its own target: the strongest test that nothing
# written before the check can reach a good run. Cases that start a new run get a fresh hydra.run.dir.
NEW_RUN = {"truncated_checkpoint", "foreign_checkpoint", "pickled_code_checkpoint", "hub_id_that_does_not_exist",
           "ckpt_path_last", "resume_missing_dir"}

DRIVER = r"""
import contextlib, hashlib, io, json, os, sys
from pathlib import Path
from hydra.core.global_hydra import GlobalHydra

def digest(folder):
    h = hashlib.sha256()
    for p in sorted(Path(folder).rglob("*")):
        h.update(str(p.relative_to(folder)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()

cases, run_dir, out = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
from vae_lab.cli.train import main
sys.argv = ["train.py", *json.loads(sys.argv[4])]
main()  # the good run first, through the same entry point
GlobalHydra.instance().clear()
import shutil
shutil.copytree(run_dir, run_dir + "_pristine")
results = {}
for name, argv in cases:
    before = digest(run_dir)
    sys.argv = ["train.py", *argv]
    err = io.StringIO()
    code = 0
    with contextlib.redirect_stderr(err):
        try:
            main()
        except SystemExit as exit_:
            code = exit_.code
        except BaseException as exc:  # a crash: recorded as a failure of this case, not of the driver
            import traceback
            err.write("Traceback (driver)\n" + traceback.format_exc())
            code = "crash"
    GlobalHydra.instance().clear()
    results[name] = {"code": code, "stderr": err.getvalue(), "unchanged": digest(run_dir) == before}
Path(out).write_text(json.dumps(results))
"""


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


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
    write_cifar10(data / "cifar")  # generated batches: their md5s cannot match the official ones
    torch.save({"state_dict": {"w": torch.zeros(4096)}, "global_step": 1}, data / "whole.ckpt")
    whole = (data / "whole.ckpt").read_bytes()
    (data / "truncated.ckpt").write_bytes(whole[: len(whole) // 2])  # a crash mid-write of a non-atomic save
    torch.save({"weights": torch.zeros(3)}, data / "foreign.ckpt")
    torch.save({"args": argparse.Namespace(lr=1.0)}, data / "pickled.ckpt")  # a class to import: weights_only refuses


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    """Train a real run (the driver's first call), then run every case against it."""
    existing_run = tmp_path_factory.mktemp("existing") / "run"
    data = tmp_path_factory.mktemp("bad_data")
    write_bad_data(data)
    good = [*QUIET, f"hydra.run.dir={existing_run}", "trainer.max_steps=4", "trainer.max_epochs=-1"]
    cases = []
    for name, overrides, _ in CASES:
        argv = [o.format(run=existing_run, data=data) for o in overrides]
        if not any(o.startswith(("hydra.run.dir=", "resume=")) for o in argv):
            argv.append(f"hydra.run.dir={data / 'new' / name}" if name in NEW_RUN else f"resume={existing_run}")
        cases.append((name, [*QUIET, *argv]))
    out = data / "results.json"
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(cases), str(existing_run), str(out),
                           json.dumps(good)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900, env={**__import__("os").environ,
                                                                             "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0 and out.is_file(), proc.stderr[-3000:]
    assert (existing_run / "checkpoints" / "last.ckpt").is_file() and (existing_run / "metrics.json").is_file()
    pristine = tree_bytes(existing_run.with_name("run_pristine"))  # copied right after the good run
    assert tree_bytes(existing_run) == pristine  # every file of the good run, byte for byte, and no new ones
    assert (data / "a_file").read_text() == "not a directory\n"  # a run dir that is a file: left as it was
    return {**json.loads(out.read_text()), "_run": str(existing_run), "_data": str(data)}


@pytest.mark.parametrize(("name", "overrides", "fragments"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line_and_touches_nothing(results, name, overrides, fragments):
    result = results[name]
    stderr = result["stderr"]
    assert result["code"] == 2, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr[-3000:]
    for fragment in fragments:
        assert fragment.format(run=results["_run"], data=results["_data"]) in errors[0], errors[0]
    assert result["unchanged"], "the existing run directory changed"


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """ENOSPC in the middle of writing a checkpoint: the previous last.ckpt survives, one clear error."""
    from vae_lab.cli.train import train

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[
            f"paths.output_dir={tmp_path}", "trainer.max_steps=6", "trainer.max_epochs=-1", "logger=none",
            "callbacks.periodic_checkpoint.every_n_train_steps=3", *QUIET])
    real_save, saves = torch.save, []

    def full_disk(obj, f, *args, **kwargs):
        saves.append(obj.get("global_step"))
        if len(saves) > 1:  # the second checkpoint: half written, then the device is full
            f.write(b"\0" * 1000)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointError) as info:
        train(cfg)
    monkeypatch.setattr(torch, "save", real_save)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"no space left on the device while writing {tmp_path / 'checkpoints' / 'last.ckpt'}")
    assert "the previous last.ckpt is intact" in message and f"resume={tmp_path}" in message
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == saves[0] == 3
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.ckpt"]  # no temp file left


def test_read_only_run_dir_is_one_line_at_start(tmp_path):
    """A run dir on a read-only filesystem (a real ro mount; or permissions, for a user who is not root)."""
    import os
    import shlex

    import tiny_fs

    ro = tmp_path / "ro"
    ro.mkdir()
    argv = [sys.executable, "train.py", f"hydra.run.dir={ro / 'run'}", *QUIET]
    if tiny_fs.available():
        argv = tiny_fs.in_tmpfs(ro, "ro", " ".join(shlex.quote(a) for a in argv))
    elif os.geteuid() != 0:
        ro.chmod(0o555)
    else:
        pytest.skip("root without mount namespaces: no read-only directory to test with")
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    ro.chmod(0o755)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: hydra.run.dir={ro / 'run'} is invalid: {ro} is not writable (read-only filesystem or permissions)")
    assert list(ro.iterdir()) == []
