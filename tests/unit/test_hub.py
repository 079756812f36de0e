"""Artifacts and the Hugging Face Hub, offline, in-process: save/load round trips, tampered artifacts, Hub ids served
from a prepared cache, pushes through huggingface_hub's real HfApi to a local endpoint that records the commits, and
push failures that must leave the run and its artifact intact. Log sync during training and init_from / ckpt_path:
tests/integration/test_hub_training.py; train.py and push_to_hub.py as processes: tests/cli/test_hub_cli.py."""

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from huggingface_hub import HfApi, ModelCard
from safetensors.torch import save_file

from hub_fixtures import ARTIFACT_FILES, TOKEN, fake_hub, read_tensors, small_vae, stage_in_cache  # noqa: F401
from vae_lab import artifact, hub, publish
from vae_lab.cli import CONFIG_DIR
from vae_lab.distributions import LIKELIHOODS
from vae_lab.errors import CheckpointError, ConfigError
from vae_lab.loading import load_model
from vae_lab.model import VAE
from vae_lab.nets import NETS



def compose_cfg(out_dir, *overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=[f"paths.output_dir={out_dir}", "print_config=false", *overrides])


# ---------------------------------------------------------------- round trips


def outputs(model: VAE, conditional: bool) -> list[torch.Tensor]:
    """Everything the model computes on fixed inputs and fixed noise, in eval mode."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, *model.in_shape, generator=gen)
    y = torch.tensor([0, 1, 2, 0]) if conditional else None
    z = torch.randn(2, 4, model.latent_dim, generator=gen)  # (K, B, D)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):  # fixed noise, global RNG left as it was
        q_z, p_x = model.encode(x, y), model.decode(z, y)
        torch.manual_seed(1)
        samples = model.sample(4, y=y)
        return [q_z.mean, q_z.stddev, p_x.mean, p_x.log_prob(x), samples, model(x, y)]


ROUND_TRIPS = [(a, lik, False) for a in NETS for lik in LIKELIHOODS] + [(a, "bernoulli", True) for a in NETS]


@pytest.mark.parametrize("architecture,likelihood,conditional", ROUND_TRIPS)
def test_save_load_round_trip_gives_identical_outputs(tmp_path, architecture, likelihood, conditional):
    model = small_vae(architecture, likelihood, conditional)
    publish.save_artifact(tmp_path / "artifact", model)
    loaded = VAE.from_pretrained(tmp_path / "artifact")
    assert not loaded.training
    for got, want in zip(outputs(loaded, conditional), outputs(model, conditional)):
        assert torch.equal(got, want)
    other = small_vae(architecture, likelihood, conditional)  # same config, other weights: must differ
    assert not torch.equal(outputs(other, conditional)[2], outputs(model, conditional)[2])


def test_config_schema_covers_exactly_the_model_init_args():
    import inspect

    args = set(inspect.signature(VAE.__init__).parameters) - {"self"}
    assert set(artifact.CONFIG_RULES) | set(artifact.SHAPED_KEYS) == args


def test_artifact_written_with_card_and_records(tmp_path):
    model = small_vae("conv", "gaussian", in_shape=(3, 8, 8))
    metrics = {"val": {"val/elbo_nats": -12.5, "val/bits_per_dim": 0.3, "val/loss": 12.5},
               "test": {"test/elbo_nats": -13.0}, "global_step": 7, "epochs": 1}
    train_cfg = {"seed": 3, "dataset": {"name": "cifar10"}, "loss": {"name": "elbo", "beta": 4.0},
                 "schedule": {"lr": 0.01, "batch_size": 32, "optimizer": {"_target_": "torch.optim.AdamW"}}}
    out = publish.save_artifact(tmp_path / "artifact", model, repo_id="me/vae-c10", train_cfg=train_cfg, metrics=metrics,
                            overrides=["dataset=cifar10", "loss.beta=4", "hub=push", "hub.repo_id=me/vae-c10",
                                       "paths.data_dir=/data"])
    assert {p.name for p in out.iterdir()} == ARTIFACT_FILES
    assert json.loads((out / "config.json").read_text())["in_shape"] == [3, 8, 8]
    card = ModelCard.load(out / "README.md")
    got = {(r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert got == {("validation", "elbo_nats"): -12.5, ("validation", "bits_per_dim"): 0.3,
                   ("test", "elbo_nats"): -13.0}  # the weighted loss is not a result
    assert card.data.library_name == "vae_lab" and "cifar10" in card.data.tags
    assert "python train.py dataset=cifar10 loss.beta=4 seed=3" in card.text  # no hub/paths overrides
    assert "AdamW, lr 0.01, batch size 32" in card.text and "beta 4.0" in card.text
    assert 'VAE.from_pretrained("me/vae-c10")' in card.text and "![samples](samples.png)" in card.text
    from PIL import Image

    assert Image.open(out / "samples.png").size[0] > 8


# ---------------------------------------------------------------- tampered artifacts


def _edit_config(folder: Path, **changes):
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def _edit_weights(folder: Path, edit):
    state = read_tensors(folder / "model.safetensors")
    edit(state)
    save_file(state, folder / "model.safetensors")


def _pickle_instead(folder: Path, name: str):
    state = read_tensors(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / name)


TAMPERS = {
    "missing tensor": (lambda f: _edit_weights(f, lambda s: s.pop("encoder.head.bias")), "missing encoder.head.bias"),
    "unexpected tensor": (lambda f: _edit_weights(f, lambda s: s.update(extra=torch.zeros(2))), "unexpected extra"),
    "wrong shape": (lambda f: _edit_weights(f, lambda s: s.update({"encoder.head.bias": torch.zeros(5)})),
                    "wrong shape: encoder.head.bias (5,) (model: (6,))"),
    "config disagrees with weights": (lambda f: _edit_config(f, latent_dim=4), "does not match its config.json"),
    "unknown config key": (lambda f: _edit_config(f, activation_fn="os.system"), "unknown key(s) activation_fn"),
    "unknown architecture": (lambda f: _edit_config(f, architecture="transformer"),
                             "architecture='transformer' is invalid: must be one of: conv, conv_deep, mlp, resnet"),
    "unknown likelihood": (lambda f: _edit_config(f, likelihood="poisson"), "likelihood='poisson' is invalid"),
    "wrong type": (lambda f: _edit_config(f, latent_dim="3"), "latent_dim='3' is invalid: must be an integer >= 1"),
    "unknown net argument": (lambda f: _edit_config(f, net={"hidden_dims": [16], "eval": "x"}),
                             "does not accept eval"),
    "not json": (lambda f: (f / "config.json").write_text("{'in_shape': [1, 8, 8]"), "is not valid JSON"),
    "pickle as safetensors": (lambda f: torch.save(read_tensors(f / "model.safetensors"), f / "model.safetensors"),
                              "is a pickle (torch.save) file, not safetensors"),
    "pickle only": (lambda f: _pickle_instead(f, "pytorch_model.bin"),
                    "found pytorch_model.bin: pickle files are never loaded"),
    "truncated weights": (lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:300]),
                          "is not a valid safetensors file"),
}


@pytest.fixture(scope="module")
def base_artifact(tmp_path_factory) -> Path:
    return publish.save_artifact(tmp_path_factory.mktemp("base") / "artifact", small_vae("mlp", "bernoulli"))


@pytest.mark.parametrize("tamper", TAMPERS)
def test_tampered_artifact_fails_with_one_clear_line(tmp_path, base_artifact, monkeypatch, tamper):
    import shutil

    folder = Path(shutil.copytree(base_artifact, tmp_path / "artifact"))
    VAE.from_pretrained(folder)  # intact, it loads
    edit, expected = TAMPERS[tamper]
    edit(folder)
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("an artifact must never be unpickled"))
    with pytest.raises(CheckpointError) as info:
        VAE.from_pretrained(folder)
    message = str(info.value)
    assert expected in message and "\n" not in message
    with pytest.raises(CheckpointError):  # the same through the scripts' loader
        load_model(folder)


# ---------------------------------------------------------------- Hub ids, offline


def test_hub_id_loads_from_the_cache_offline_with_revision_pinning(tmp_path, monkeypatch):
    import huggingface_hub.constants

    first, second = small_vae("mlp", "gaussian"), small_vae("mlp", "gaussian")
    a = publish.save_artifact(tmp_path / "a", first, train_cfg={"dataset": {"name": "digits"}, "seed": 1})
    b = publish.save_artifact(tmp_path / "b", second)
    cache = tmp_path / "cache"
    stage_in_cache(cache, "me/vae-mnist", a, "a" * 40)
    stage_in_cache(cache, "me/vae-mnist", b, "b" * 40, ref=None)  # an older commit, reachable by its hash only
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))

    latest = VAE.from_pretrained("me/vae-mnist")
    assert torch.equal(outputs(latest, False)[2], outputs(first, False)[2])
    pinned = VAE.from_pretrained("me/vae-mnist", revision="b" * 40)
    assert torch.equal(outputs(pinned, False)[2], outputs(second, False)[2])

    loaded = load_model(f"me/vae-mnist@{'b' * 40}")  # what scripts/evaluate.py model=... and init_from= use
    assert torch.equal(outputs(loaded.model, False)[2], outputs(second, False)[2])
    with_cfg = load_model("me/vae-mnist")
    assert with_cfg.cfg.dataset.name == "digits" and with_cfg.source.name == "model.safetensors"

    with pytest.raises(CheckpointError, match="cannot download config.json of me/vae-mnist@nope"):
        VAE.from_pretrained("me/vae-mnist", revision="nope")
    with pytest.raises(CheckpointError, match="not in the local cache"):
        load_model("me/not-cached")
    with pytest.raises(CheckpointError, match="nor a Hub id"):
        load_model("outputs/runs/missing-run")


def test_hub_downloads_are_checked_before_the_weights(tmp_path, base_artifact, monkeypatch):
    import shutil

    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    served = Path(shutil.copytree(base_artifact, tmp_path / "served"))
    requested = []

    def fake_download(repo_id, filename, revision=None, **kwargs):
        requested.append((repo_id, filename, revision))
        if not (served / filename).is_file():
            raise EntryNotFoundError(f"{filename} not in {repo_id}")
        return str(served / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    model = VAE.from_pretrained("me/vae", revision="v1")
    assert isinstance(model, VAE) and ("me/vae", "model.safetensors", "v1") in requested

    _edit_config(served, architecture="transformer")
    requested.clear()
    with pytest.raises(CheckpointError, match="architecture='transformer' is invalid"):
        VAE.from_pretrained("me/vae")
    assert [name for _, name, _ in requested] == ["config.json"]  # refused before any weights were fetched

    _edit_config(served, architecture="mlp")
    _pickle_instead(served, "pytorch_model.bin")  # a repo with only pickled weights
    with pytest.raises(CheckpointError, match="has no model.safetensors: vae_lab loads safetensors only"):
        VAE.from_pretrained("me/vae")


# ---------------------------------------------------------------- pushing


def test_push_commits_the_artifact_through_hfapi(tmp_path, fake_hub):
    model = small_vae("mlp", "bernoulli")
    metrics = {"val": {"val/elbo_nats": -30.5, "val/bits_per_dim": 0.7}}
    artifact = publish.save_artifact(tmp_path / "run" / "artifact", model, repo_id="me/vae-digits", metrics=metrics,
                                 train_cfg={"dataset": {"name": "digits"}, "seed": 0})
    logs = tmp_path / "run" / "tensorboard"
    logs.mkdir()
    (logs / "events.out.tfevents.1.host").write_bytes(b"events")
    api = HfApi(endpoint=fake_hub.url, token=TOKEN)

    info = publish.push_artifact(artifact, "me/vae-digits", private=True, revision="v1",
                             log_files=publish.tensorboard_files(logs.parent), api=api)
    [commit] = fake_hub.commits
    assert (commit["repo_id"], commit["revision"]) == ("me/vae-digits", "v1") and info.commit_url.endswith(info.oid)
    assert set(commit["files"]) == ARTIFACT_FILES | {"tensorboard/events.out.tfevents.1.host"}
    assert commit["files"]["model.safetensors"] == (artifact / "model.safetensors").read_bytes()
    assert commit["summary"] == "vae_lab: mlp VAE on digits (latent_dim 3, bernoulli), val ELBO -30.50 nats"
    card = ModelCard(commit["files"]["README.md"].decode())
    [result] = [r for r in card.data.eval_results if r.metric_type == "elbo_nats"]
    assert (result.metric_value, result.dataset_split, result.dataset_name) == (-30.5, "validation", "digits")
    create = next(r for r in fake_hub.requests if r["path"] == "/api/repos/create")
    assert json.loads(create["body"])["visibility"] == "private"
    assert any(r["path"] == "/api/models/me/vae-digits/branch/v1" for r in fake_hub.requests)
    assert all(r["authorization"] == f"Bearer {TOKEN}" for r in fake_hub.requests)
    assert not any(TOKEN.encode() in data for data in commit["files"].values())


@pytest.mark.parametrize("failure", ["offline", "no token"])
def test_push_failure_keeps_the_artifact_and_prints_the_retry_command(tmp_path, monkeypatch, capsys, failure):
    import huggingface_hub.constants

    cfg = compose_cfg(tmp_path, "hub=push", "hub.repo_id=me/vae-x", "hub.private=true")
    model = small_vae("mlp", "bernoulli")
    if failure == "offline":  # HF_HUB_OFFLINE=1 (conftest): the network is out of reach
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        reason = "offline mode is on (HF_HUB_OFFLINE=1)"
    else:  # online, but neither HF_TOKEN nor a saved login: refused before any request
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
        reason = hub.NO_TOKEN
    artifact = publish.finish_run(cfg, tmp_path, model)
    err = capsys.readouterr().err
    assert f"not pushed to me/vae-x ({reason})" in err and TOKEN not in err
    assert f"python scripts/push_to_hub.py {tmp_path.resolve()} repo_id=me/vae-x private=true" in err
    assert torch.equal(outputs(VAE.from_pretrained(artifact), False)[2], outputs(model, False)[2])


def test_hub_settings_are_checked_at_start(tmp_path):
    from omegaconf.errors import MissingMandatoryValue

    publish.check_hub_config(compose_cfg(tmp_path))  # hub=none: nothing to check
    with pytest.raises(MissingMandatoryValue):
        publish.check_hub_config(compose_cfg(tmp_path, "hub=push"))
    with pytest.raises(ConfigError, match="hub.repo_id='a/b/c' is invalid"):
        publish.check_hub_config(compose_cfg(tmp_path, "hub=push", "hub.repo_id=a/b/c"))
    with pytest.raises(ConfigError, match="hub.sync_every_minutes=0 is invalid"):
        publish.check_hub_config(compose_cfg(tmp_path, "hub=push", "hub.repo_id=a/b", "hub.sync_every_minutes=0"))
    with pytest.raises(ConfigError, match="init_from and ckpt_path are both set"):
        publish.check_hub_config(compose_cfg(tmp_path, "init_from=me/vae", "ckpt_path=last.ckpt"))


def test_model_card_claims_density_estimation_only_for_a_normalised_likelihood():
    from vae_lab.model_card import model_card

    config = {"in_shape": [1, 8, 8], "architecture": "mlp", "latent_dim": 2, "likelihood": "bernoulli"}
    metrics = {"val": {"val/elbo_nats": -30.0}, "log_likelihood": {"normalised": False, "note": "grey levels"}}
    card = model_card(config, name="x", train_cfg={"dataset": {"name": "digits"}}, metrics=metrics)
    assert not card.data.eval_results and "Not a normalised log-likelihood**: grey levels" in str(card)
    metrics["log_likelihood"] = {"normalised": True, "note": "binary pixels"}
    card = model_card(config, name="x", train_cfg={"dataset": {"name": "digits"}}, metrics=metrics)
    assert card.data.eval_results[0].task_name == "Density estimation" and "Not a normalised" not in str(card)
