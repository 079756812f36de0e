"""Cyclical KL annealing reaches the training loop: the KL weight of each optimizer step in a real fit (the schedule
itself, and the disentangling objectives: tests/unit/test_disentangling_objectives.py)."""

from vae_lab.build import build_datamodule, build_module, build_trainer


def test_cyclical_annealing_reaches_the_training_loop(compose, tmp_path):
    cfg = compose("schedule.kl_annealing=cyclical", "schedule.kl_cycles=2", "schedule.kl_cycle_ratio=0.5",
                  "trainer.max_steps=8", "trainer.max_epochs=-1", "callbacks=none", "logger=none",
                  "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false")
    cfg.paths.output_dir = str(tmp_path)
    dm = build_datamodule(cfg)
    dm.setup("fit")
    module = build_module(cfg, dm.spec)
    seen = []
    objective = module.objective
    module.objective = lambda *a, **k: (seen.append(k["kl_weight"]), objective(*a, **k))[1]
    build_trainer(cfg).fit(module, datamodule=dm)
    assert seen == [0.0, 0.5, 1.0, 1.0, 0.0, 0.5, 1.0, 1.0]  # two 4-step cycles, rising over the first half
