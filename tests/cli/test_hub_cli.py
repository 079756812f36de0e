"""train.py and push_to_hub.py as a user runs them, against a local Hub endpoint (tests/hub_fixtures.py): logs synced
during training, a failed final push that keeps the artifact and prints the retry command, that command run, the
offline push as one error line; evaluate.py and sample.py given a Hub id (slow). In-process: tests/unit/test_hub.py."""

import json
import shlex

import pytest
import torch
from huggingface_hub import ModelCard

import driver
from hub_fixtures import ARTIFACT_FILES, TOKEN, FakeHub, hub_env, only, read_tensors, small_vae, stage_in_cache
from vae_lab import publish


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """`python train.py hub=push ... hub.sync_logs=true` against a FakeHub that syncs logs but fails the final push."""
    tmp = tmp_path_factory.mktemp("cli")
    server = FakeHub()
    server.fail_commits = lambda summary: summary.startswith("vae_lab:")  # the Hub goes down at the end
    proc = driver.run("train", f"hydra.run.dir={tmp / 'run'}", "trainer.max_steps=20", "trainer.max_epochs=-1",
                      "trainer.val_check_interval=10", "trainer.enable_progress_bar=false", "print_config=false",
                      "hub=push", "hub.repo_id=me/vae-cli", "hub.sync_logs=true", "hub.sync_every_minutes=0.005",
                      timeout=300, env=only(hub_env(server.url, home=tmp / "hf")))
    yield {"proc": proc, "server": server, "run_dir": tmp / "run", "tmp": tmp}
    server.close()


def test_cli_push_failure_then_push_to_hub_script(cli_run):
    proc, server, run_dir = cli_run["proc"], cli_run["server"], cli_run["run_dir"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    synced = [c for c in server.commits if c["summary"] == "Scheduled Commit"]
    assert synced and all(path.startswith("tensorboard/") for c in synced for path in c["files"])
    assert any("events.out.tfevents" in path for c in synced for path in c["files"])
    [warning] = [line for line in proc.stderr.splitlines() if "not pushed to me/vae-cli" in line]
    assert "(HfHubHTTPError: Server error '503 Service Unavailable'" in warning
    assert {p.name for p in (run_dir / "artifact").iterdir()} == ARTIFACT_FILES
    from vae_lab.loading import model_from_checkpoint

    best = model_from_checkpoint(run_dir / json.loads((run_dir / "metrics.json").read_text())["best_checkpoint"])
    shipped = read_tensors(run_dir / "artifact" / "model.safetensors")  # the weights metrics.json describes
    assert shipped.keys() == best.state_dict().keys()
    assert all(torch.equal(shipped[k], v) for k, v in best.state_dict().items())
    assert TOKEN not in proc.stdout + proc.stderr
    assert not [p for p in run_dir.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]

    command = shlex.split(warning.split("push it later with: ", 1)[1])
    assert command[:2] == ["python", "scripts/push_to_hub.py"]
    server.fail_commits = lambda summary: False  # the Hub is back
    again = driver.run(*command[1:], timeout=120, env=only(hub_env(server.url, home=cli_run["tmp"] / "hf")))
    assert again.returncode == 0, again.stderr[-3000:]
    final = server.commits[-1]
    assert final["repo_id"] == "me/vae-cli" and final["summary"].startswith("vae_lab: mlp VAE on digits")
    assert ARTIFACT_FILES <= set(final["files"]) and any(p.startswith("tensorboard/events.") for p in final["files"])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    card = ModelCard(final["files"]["README.md"].decode())
    elbo = next(r.metric_value for r in card.data.eval_results if r.metric_type == "elbo_nats")
    assert elbo == pytest.approx(metrics["val"]["val/elbo_nats"])
    assert TOKEN not in again.stdout + again.stderr


def test_push_to_hub_script_offline_is_one_error_line(cli_run):
    artifact = cli_run["run_dir"] / "artifact"
    before = {p.name: p.read_bytes() for p in artifact.iterdir()}
    proc = driver.run("push", str(cli_run["run_dir"]), "repo_id=me/vae-cli", timeout=120,
                      env=only(hub_env(None, home=cli_run["tmp"] / "hf")))
    line = driver.one_error_line(proc)
    assert proc.stderr.strip().splitlines() == [line] == [f"error: could not push {artifact.resolve()} to me/vae-cli: "
                                                "offline mode is on (HF_HUB_OFFLINE=1)"]
    assert {p.name: p.read_bytes() for p in artifact.iterdir()} == before


@pytest.mark.slow
def test_evaluate_and_sample_scripts_accept_a_hub_id(tmp_path):
    base_artifact = publish.save_artifact(tmp_path / "artifact", small_vae("mlp", "bernoulli"))
    stage_in_cache(tmp_path / "cache", "me/vae-tiny", base_artifact, "e" * 40)
    env = only(hub_env(None, home=tmp_path / "hf", HF_HUB_CACHE=str(tmp_path / "cache")))
    sample = driver.run("sample", f"model=me/vae-tiny@{'e' * 40}", f"out={tmp_path / 'pictures'}", timeout=300,
                        env=env)
    assert sample.returncode == 0, sample.stderr[-3000:]
    assert list((tmp_path / "pictures").glob("*.png"))
    evaluate = driver.run("evaluate", "model=me/vae-tiny", "dataset.name=digits", "split=val", "iwae_samples=4",
                          "progress=false", f"out={tmp_path / 'eval.json'}", timeout=300, env=env)
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    assert (tmp_path / "eval.json").is_file()
