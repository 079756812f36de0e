"""TensorBoard HPARAMS: a 2-job sweep writes each job's swept values and final metrics, read back from the events."""

import json

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from test_sweep import run_cli

from vae_lab.callbacks.hparams import overridden_params


def hparams_of(event_dir) -> tuple[dict, dict]:
    """(hparams of the session, final/* scalars) as TensorBoard's HPARAMS plugin would read them."""
    acc = EventAccumulator(str(event_dir))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    params = {}
    for key, value in start.session_start_info.hparams.items():
        params[key] = value.WhichOneof("kind") and getattr(value, value.WhichOneof("kind"))
    metric_tags = {m.name.tag for m in experiment.experiment.metric_infos}
    scalars = {tag: acc.Scalars(tag)[-1].value for tag in acc.Tags()["scalars"] if tag in metric_tags}
    return params, scalars


def test_a_sweep_lines_up_in_the_hparams_tab(tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = run_cli("train.py", "-m", "loss.beta=0.5,2", "model.latent_dim=3", f"hydra.sweep.dir={sweep_dir}",
                   "trainer.max_steps=4", "trainer.max_epochs=-1", "print_config=false", "callbacks=no_images",
                   "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "logger=tensorboard")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for job, beta in (("0", 0.5), ("1", 2.0)):
        params, scalars = hparams_of(sweep_dir / job / "tensorboard")
        assert params == {"loss.beta": beta, "model.latent_dim": 3.0, "trainer.max_steps": 4.0,
                          "trainer.max_epochs": -1.0, "print_config": False, "callbacks": "no_images",
                          "trainer.enable_progress_bar": False, "trainer.enable_model_summary": False,
                          "logger": "tensorboard"}
        val = json.loads((sweep_dir / job / "metrics.json").read_text())["val"]
        assert set(scalars) == {f"final/{k}" for k in val}  # digits: no test split
        assert scalars["final/val/elbo_nats"] == val["val/elbo_nats"]


def test_overridden_params_parse_values_and_skip_hydra_keys(tmp_path):
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text(
        "- loss.beta=4\n- +model.extra=[1,2]\n- dataset=mnist\n- hydra.job.name=x\n- schedule.lr=3e-4\n")
    assert overridden_params(tmp_path) == {"loss.beta": 4, "model.extra": "[1, 2]", "dataset": "mnist",
                                           "schedule.lr": 3e-4}
    assert overridden_params(tmp_path / "nowhere") == {}
