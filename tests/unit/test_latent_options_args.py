"""The prior and posterior config groups become the model's flat init args (every option training with every
architecture, and a short run's pictures: tests/integration/test_latent_options.py)."""

from hydra import compose, initialize_config_dir

from vae_lab.build import model_kwargs
from vae_lab.cli import CONFIG_DIR
from vae_lab.data.spec import DataSpec

QUIET = ["print_config=false", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
         "schedule.batch_size=8"]


def compose_cfg(tmp_path, *overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=[f"paths.output_dir={tmp_path}", *QUIET, *overrides])


def test_config_groups_become_flat_init_args():
    spec = DataSpec((1, 8, 8), None, None, False)
    cfg = compose_cfg("/tmp/unused", "prior=vamp", "prior.num_components=7", "prior.activation=sigmoid",
                      "posterior=iaf", "posterior.num_steps=3", "posterior.context_dim=0")
    kwargs = model_kwargs(cfg, spec)
    assert {k: kwargs[k] for k in kwargs if k.startswith(("prior", "posterior_s", "posterior_c"))} | {
        "posterior": kwargs["posterior"]} == {
        "prior": "vamp", "prior_components": 7, "prior_activation": "sigmoid", "prior_init": "data",
        "posterior": "iaf", "posterior_steps": 3, "posterior_context_dim": 0}
    default = model_kwargs(compose_cfg("/tmp/unused"), spec)
    assert default["prior"] == "standard_normal" and default["posterior"] == "gaussian"
    assert "prior_components" not in default  # keys of other options keep VAE's defaults
