"""FactorVAE's two optimizers under manual optimisation: who steps what, clipping, the guard, exact resume."""

import copy

import lightning as L
import pytest
import torch

from vae_lab.build import build_datamodule, build_module, build_trainer, reliability_callbacks

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cfg(compose, tmp_path, *overrides):
    cfg = compose("print_config=false", "loss=factor_vae", "loss.discriminator.hidden=32", "loss.discriminator.layers=2",
                  "loss.discriminator.lr=1e-3", "callbacks=none", "logger=none", "trainer.enable_progress_bar=false",
                  "trainer.enable_model_summary=false", "trainer.max_epochs=-1", "model.latent_dim=4",
                  "model.net.hidden_dims=[32]", "schedule.batch_size=32", *overrides)
    cfg.paths.output_dir = str(tmp_path)
    return cfg


def _fit(cfg, ckpt_path=None, module_hook=None):
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = build_datamodule(cfg)
    dm.setup("fit")
    module = build_module(cfg, dm.spec)
    if module_hook:
        module_hook(module)
    trainer = build_trainer(cfg, extra_callbacks=reliability_callbacks(cfg))
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
    return trainer, module


def test_each_optimizer_steps_its_own_network_once_per_batch_with_clipping(compose, tmp_path):
    cfg = _cfg(compose, tmp_path, "trainer.max_steps=3", "schedule.gradient_clip_val=0.01")
    norms = []

    def record_clipping(module):
        clip = module.clip_gradients

        def clip_and_measure(optimizer, value, algorithm):
            clip(optimizer, value, algorithm)
            grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
            norms.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item())

        module.clip_gradients = clip_and_measure
        module.before = copy.deepcopy(module.state_dict())

    trainer, module = _fit(cfg, module_hook=record_clipping)
    assert not module.automatic_optimization and trainer.gradient_clip_val is None  # the module clips
    assert trainer.global_step == 3  # one step per batch: the discriminator's steps do not count
    vae_opt, disc_opt = trainer.optimizers
    assert {id(p) for g in vae_opt.param_groups for p in g["params"]} == {id(p) for p in module.model.parameters()}
    assert {id(p) for g in disc_opt.param_groups for p in g["params"]} == {id(p) for p in
                                                                         module.discriminator.parameters()}
    assert disc_opt.param_groups[0]["lr"] == 1e-3 and disc_opt.param_groups[0]["betas"] == (0.5, 0.9)
    for opt in (vae_opt, disc_opt):
        assert all(int(s["step"]) == 3 for s in opt.state.values())
    after = module.state_dict()
    for name, before in module.before.items():
        assert not torch.equal(before, after[name]), f"{name} did not change"
    assert len(norms) == 6 and max(norms) <= 0.01 * (1 + 1e-4)  # both optimizers, every step


def test_a_checkpoint_resumes_both_networks_and_optimizers_exactly(compose, tmp_path):
    straight_trainer, straight = _fit(_cfg(compose, tmp_path / "a", "trainer.max_steps=6"))
    half_trainer, _ = _fit(_cfg(compose, tmp_path / "b", "trainer.max_steps=3"))
    ckpt = tmp_path / "half.ckpt"
    half_trainer.save_checkpoint(ckpt)
    resumed_trainer, resumed = _fit(_cfg(compose, tmp_path / "b", "trainer.max_steps=6"), ckpt_path=str(ckpt))
    assert resumed_trainer.global_step == 6
    for name, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, rtol=0, atol=0, msg=name)
    for a, b in zip(straight_trainer.optimizers, resumed_trainer.optimizers):
        for sa, sb in zip(a.state_dict()["state"].values(), b.state_dict()["state"].values()):
            for key in sa:
                torch.testing.assert_close(sa[key], sb[key], rtol=0, atol=0)


def test_the_guard_skips_a_poisoned_batch_for_both_networks(compose, tmp_path):
    # steps_per_call=1: the snapshot callback looks at the weights before every optimizer step
    cfg = _cfg(compose, tmp_path, "trainer.max_steps=3", "guard.inject_nan_at_steps=[1]", "schedule.steps_per_call=1")
    snapshots = {}

    class Snap(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            snapshots[trainer.global_step] = copy.deepcopy(module.state_dict())

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = build_datamodule(cfg)
    dm.setup("fit")
    module = build_module(cfg, dm.spec)
    callbacks = reliability_callbacks(cfg)
    trainer = build_trainer(cfg, extra_callbacks=[*callbacks, Snap()])
    trainer.fit(module, datamodule=dm)
    guard = callbacks[-1]
    assert guard.skipped == 2  # the step of each optimizer on the poisoned batch
    for name, value in snapshots[1].items():  # the poisoned step left every weight as it was
        torch.testing.assert_close(snapshots[2][name], value, rtol=0, atol=0, msg=name)
    assert all(torch.isfinite(v).all() for v in module.state_dict().values())
