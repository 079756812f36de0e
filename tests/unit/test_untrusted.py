"""A downloaded artifact is data (issue 16, items 10-13): its train_config.yaml resolves nothing and chooses no path,
its files are read bounded, as regular files inside it, its shapes checked before anything is built; outputs stay
where the user said; no handler prints a token."""

import json
import os
import random
import resource
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from safetensors.torch import save_file

from hub_fixtures import TOKEN, read_tensors, small_vae
from vae_lab.saved_yaml import train_config
from vae_lab import artifact, publish
from vae_lab.cli import CONFIG_DIR
from vae_lab.errors import CheckpointError, ConfigError, VaeLabError
from vae_lab.loading import load_model
from vae_lab.model import VAE

DIGITS = {"name": "digits", "likelihood": "bernoulli", "val_fraction": 0.1, "binarize": "dynamic",
          "dequantize": "none", "download": True, "options": {}}


@pytest.fixture(scope="module")
def digits_artifact(tmp_path_factory) -> Path:
    """A tiny MLP on the 8x8 digits, with a train_config.yaml as a run writes it."""
    return publish.save_artifact(tmp_path_factory.mktemp("base") / "artifact", small_vae("mlp", "bernoulli"),
                                 train_cfg={"dataset": DIGITS, "paths": {"data_dir": "data"}, "seed": 3})


def copy_with_train_config(src: Path, dest: Path, edit) -> Path:
    folder = Path(shutil.copytree(src, dest))
    cfg = yaml.safe_load((folder / "train_config.yaml").read_text())
    edit(cfg)
    (folder / "train_config.yaml").write_text(yaml.safe_dump(cfg))
    return folder


def compose_tool(name: str, *overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(name, overrides=list(overrides))


# ---------------------------------------------------------------- item 10: train_config.yaml is data


def test_an_artifacts_train_config_resolves_no_environment_and_chooses_no_path(tmp_path, digits_artifact,
                                                                                monkeypatch):
    from vae_lab.evaluation import evaluate_model

    chosen = tmp_path / "chosen_by_the_artifact"

    def edit(cfg):
        cfg["paths"]["data_dir"] = f"{chosen}/${{oc.env:HF_TOKEN}}"
        cfg["dataset"]["val_fraction"] = "${oc.env:HF_TOKEN}"  # a number expected: the error line shows the value

    folder = copy_with_train_config(digits_artifact, tmp_path / "artifact", edit)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(VaeLabError) as info:
        evaluate_model(compose_tool("evaluate", f"model={folder}", "split=val", "iwae_samples=2", "progress=false"))
    assert TOKEN not in str(info.value) and "\n" not in str(info.value)
    assert not chosen.exists()

    report, out = evaluate_model(compose_tool("evaluate", f"model={folder}", "split=val", "iwae_samples=2",
                                              "progress=false", "max_examples=20", f"out={tmp_path / 'e.json'}"),
                                 ["dataset.val_fraction=0.1"])
    text = out.read_text()
    assert TOKEN not in text and not chosen.exists()
    assert report["data_dir"] == str((tmp_path / "data").resolve())  # the default paths.data_dir, not the artifact's
    assert report["data_seed"] == 3  # data settings (not paths) are still the run's


def test_train_config_strings_stay_literal_text(tmp_path, digits_artifact, monkeypatch):
    """Every string, `${...}` and backslashes included, reads back as written (an OmegaConf escape round trip)."""
    from omegaconf import OmegaConf

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    rng = random.Random(0)
    texts = ["${oc.env:HF_TOKEN}", "\\${oc.env:HF_TOKEN}", "\\\\${oc.env:HF_TOKEN}", "${a", "x${a}${b}y", "${${x}}",
             "$${}", "\\", "plain"]
    texts += ["".join(rng.choice(["$", "{", "}", "\\", "a", ":"]) for _ in range(rng.randint(1, 12)))
              for _ in range(300)]
    folder = copy_with_train_config(digits_artifact, tmp_path / "artifact",
                                    lambda cfg: cfg.update(notes=texts, nested={"x": {"y": texts[0]}}))
    cfg = train_config(folder)
    assert OmegaConf.to_container(cfg, resolve=True)["notes"] == texts
    assert cfg.nested.x.y == "${oc.env:HF_TOKEN}"


def test_a_dataset_path_in_an_artifact_is_not_taken(tmp_path, digits_artifact):
    from vae_lab.loading import datamodule_for

    folder = copy_with_train_config(digits_artifact, tmp_path / "artifact", lambda cfg: cfg["dataset"].update(
        name="array_file", options={"path": str(tmp_path / "secret.npz")}))
    with pytest.raises(ConfigError, match="names dataset.options.path=.*give dataset.options.path="):
        datamodule_for(load_model(folder), [], stage="fit")


# ---------------------------------------------------------------- item 12: bounded reads, shapes before building


def _link(target):
    def edit(folder: Path, name: str):
        (folder / name).unlink()
        (folder / name).symlink_to(target(folder) if callable(target) else target)
    return edit


def _fifo(folder: Path, name: str):
    (folder / name).unlink()
    os.mkfifo(folder / name)


def _oversized(folder: Path, name: str):
    (folder / name).write_text(" " * (1 << 20) + "{}")


def _outside_copy(folder: Path, name: str):
    outside = folder.parent / f"outside_{name}"
    shutil.copy(folder / name, outside)
    _link(outside)(folder, name)


FILE_TAMPERS = {  # name -> (how, expected text of the one line)
    "dev_zero": (_link("/dev/zero"), "links outside the artifact folder"),
    "fifo": (_fifo, "is not a regular file"),
    "oversized": (_oversized, "refused"),
    "link_out": (_outside_copy, "links outside the artifact folder"),
}


@pytest.mark.timeout(60)  # a FIFO used to block forever
@pytest.mark.parametrize("name", ["config.json", "train_config.yaml", "model.safetensors"])
@pytest.mark.parametrize("tamper", FILE_TAMPERS)
def test_artifact_files_are_read_as_bounded_regular_files_inside_it(tmp_path, digits_artifact, name, tamper):
    if name == "model.safetensors" and tamper == "oversized":
        pytest.skip("weights have no size limit: their header is checked against the config instead")
    folder = Path(shutil.copytree(digits_artifact, tmp_path / "artifact"))
    how, expected = FILE_TAMPERS[tamper]
    how(folder, name)
    with pytest.raises(CheckpointError) as info:
        load_model(folder)
    assert expected in str(info.value) and name in str(info.value) and "\n" not in str(info.value)


def _edit_config(folder: Path, **changes):
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def _header_claims(folder: Path, length: int):
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(length.to_bytes(8, "little") + data[8:])


CONFIG_TAMPERS = {
    # ~3.6 GB of float32 weights if built: refused from the header before any allocation
    "oversized shapes": (lambda f: _edit_config(f, net={"hidden_dims": [30000, 30000]}), "does not match"),
    "non-string architecture": (lambda f: _edit_config(f, architecture=["mlp"]), "architecture=['mlp'] is invalid"),
    "object as likelihood": (lambda f: _edit_config(f, likelihood={"a": 1}), "likelihood={'a': 1} is invalid"),
    "header claims 10 GB": (lambda f: _header_claims(f, 10 << 30), "is not a valid safetensors file"),
    "nested too deep": (lambda f: (f / "config.json").write_text("[" * 100000), "is not valid JSON"),
}


@pytest.mark.parametrize("tamper", CONFIG_TAMPERS)
def test_shapes_are_checked_from_the_header_before_the_model_is_built(tmp_path, digits_artifact, tamper):
    folder = Path(shutil.copytree(digits_artifact, tmp_path / "artifact"))
    edit, expected = CONFIG_TAMPERS[tamper]
    edit(folder)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    for load in (load_model, VAE.from_pretrained):
        with pytest.raises(CheckpointError) as info:
            load(folder)
        assert expected in str(info.value) and "\n" not in str(info.value)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # no model was allocated


def test_hub_cache_snapshots_linked_to_blobs_still_load(tmp_path, digits_artifact, monkeypatch):
    """huggingface_hub's cache links snapshots/<commit>/<file> to ../../blobs/<hash>: inside the repo's folder."""
    import huggingface_hub.constants

    repo = tmp_path / "cache" / "models--me--vae"
    (repo / "blobs").mkdir(parents=True)
    (repo / "snapshots" / ("c" * 40)).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("c" * 40)
    for i, file in enumerate(sorted(digits_artifact.iterdir())):
        shutil.copy(file, repo / "blobs" / f"{i:040x}")
        (repo / "snapshots" / ("c" * 40) / file.name).symlink_to(Path("../../blobs") / f"{i:040x}")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    loaded = load_model("me/vae")
    assert loaded.cfg.dataset.name == "digits"
    expected = read_tensors(digits_artifact / "model.safetensors")
    assert all(torch.equal(v, expected[k]) for k, v in loaded.model.state_dict().items())


# ---------------------------------------------------------------- item 13: outputs stay where the user said


def fake_run(tmp_path: Path) -> Path:
    """A run directory as train.py leaves it, enough for scripts/sample.py mode=sample: config and a checkpoint."""
    model = small_vae("mlp", "bernoulli")
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"dataset": DIGITS, "seed": 0}))
    (run / "checkpoints").mkdir()
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "hyper_parameters": {"model": artifact.model_config(model)}}, run / "checkpoints" / "last.ckpt")
    return run


def test_sample_does_not_follow_a_symlinked_images_folder_out_of_the_run(tmp_path):
    from vae_lab.sampling import run_sample

    run = fake_run(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run / "images").symlink_to(elsewhere)
    with pytest.raises(ConfigError, match="leads out of .*choose where with out="):
        run_sample(compose_tool("sample", f"model={run}", "n=4"))
    assert not list(elsewhere.iterdir())
    (run / "images").unlink()
    written = run_sample(compose_tool("sample", f"model={run}", "n=4"))  # a real images/ folder: written there
    assert [p.parent for p in written] == [run / "images"]
    written = run_sample(compose_tool("sample", f"model={run}", "n=4", f"out={elsewhere}"))  # where the user said
    assert [p.parent for p in written] == [elsewhere]


# ---------------------------------------------------------------- item 11: no handler prints a token


def test_evaluate_refuses_a_linked_evaluation_json_before_evaluating(tmp_path, digits_artifact, monkeypatch):
    from vae_lab.evaluation import evaluate_model

    folder = Path(shutil.copytree(digits_artifact, tmp_path / "artifact"))
    outside = tmp_path / "outside.json"
    outside.write_text("{}")
    (folder / "evaluation.json").symlink_to(outside)
    monkeypatch.setattr("vae_lab.loading.datamodule_for", lambda *a, **k: pytest.fail("evaluated before the check"))
    with pytest.raises(ConfigError, match="evaluation.json leads out of"):
        evaluate_model(compose_tool("evaluate", f"model={folder}", "split=val", "iwae_samples=2", "progress=false"))
    assert outside.read_text() == "{}"


def test_every_log_record_has_the_token_blanked(monkeypatch, capsys):
    """In-process twin of the CLI test (tests/cli/test_untrusted_cli.py): a message, its %-args and its traceback all pass through redaction."""
    import logging

    from vae_lab import log_redaction

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    previous = logging.getLogRecordFactory()
    log_redaction.install()
    log_redaction.install()  # idempotent
    logger = logging.getLogger("huggingface_hub.test_untrusted")
    handler = logging.StreamHandler(sys.stderr)
    logger.addHandler(handler)
    try:
        try:
            raise RuntimeError(f"server said: Authorization: Bearer {TOKEN}")
        except RuntimeError:
            logger.exception("Error while pushing to Hub: %s", f"Bearer {TOKEN}")
        logger.error("other token hf_%s", "AbCdEfGh12345678")
    finally:
        logger.removeHandler(handler)
        logging.setLogRecordFactory(previous)
    err = capsys.readouterr().err
    assert TOKEN not in err and "hf_AbCdEfGh12345678" not in err
    assert "Bearer ***" in err and "RuntimeError: server said: Authorization: Bearer ***" in err and "hf_***" in err


def test_a_handler_that_fails_to_write_reports_its_error_without_the_token(monkeypatch, capsys):
    """logging's report of a failing handler prints the exception being handled with its chain: a log call made while
    handling a Hub error whose text echoes the token chains that error; the report is redacted like the records."""
    import io
    import logging

    from vae_lab import log_redaction

    monkeypatch.setattr(logging, "raiseExceptions", True)  # the default: a failing handler is reported
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    previous = logging.getLogRecordFactory()
    log_redaction.install()
    closed = io.StringIO()
    closed.close()  # what a handler left on a finished capture stream writes to
    logger = logging.getLogger("huggingface_hub.test_untrusted_closed")
    handler = logging.StreamHandler(closed)
    logger.addHandler(handler)
    try:
        try:
            raise RuntimeError(f"server said: Authorization: Bearer {TOKEN}")
        except RuntimeError:
            logger.error("push failed")
    finally:
        logger.removeHandler(handler)
        logging.setLogRecordFactory(previous)
    err = capsys.readouterr().err
    assert "--- Logging error ---" in err and "I/O operation on closed file" in err  # the report was printed
    assert "RuntimeError: server said: Authorization: Bearer ***" in err and TOKEN not in err


@pytest.mark.parametrize("dataset", [5, {"name": "digits", "options": "x"}])
def test_a_malformed_train_config_is_one_line(tmp_path, digits_artifact, dataset):
    from vae_lab.loading import datamodule_for

    folder = copy_with_train_config(digits_artifact, tmp_path / "artifact", lambda cfg: cfg.update(dataset=dataset))
    with pytest.raises(ConfigError, match="has no `dataset` mapping"):
        datamodule_for(load_model(folder), [], stage="fit")


def test_a_checkpoint_whose_init_args_disagree_with_its_weights_is_refused_before_building(tmp_path):
    run = fake_run(tmp_path)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    ckpt["hyper_parameters"]["model"]["net"] = {"hidden_dims": [30000, 30000]}  # ~3.6 GB if built
    torch.save(ckpt, run / "checkpoints" / "last.ckpt")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(CheckpointError, match="does not match its model config"):
        load_model(run)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000
