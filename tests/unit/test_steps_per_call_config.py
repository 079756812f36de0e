"""schedule.steps_per_call in the config: what several steps per call cannot keep is refused in one line, and auto
is what the rest of the config allows (the training itself: tests/integration/test_steps_per_call.py)."""

import pytest
from hydra import compose, initialize_config_dir

from vae_lab.cli import CONFIG_DIR
from vae_lab.errors import ConfigError


@pytest.mark.parametrize("overrides, match", [
    (["schedule.steps_per_call=8", "trainer.val_check_interval=20"],
     "trainer.val_check_interval=20 is invalid with schedule.steps_per_call=8"),
    (["schedule.steps_per_call=64", "callbacks=no_images"],
     "callbacks.periodic_checkpoint.every_n_train_steps=200 is invalid with schedule.steps_per_call=64"),
    (["schedule.steps_per_call=0"], "schedule.steps_per_call=0 is invalid: must be auto or an integer >= 1"),
    (["schedule.steps_per_call=many"], "schedule.steps_per_call=many is invalid: must be auto or an integer >= 1"),
    (["schedule.steps_per_call=4", "+trainer.accumulate_grad_batches=2"],
     "trainer.accumulate_grad_batches=2 is invalid with schedule.steps_per_call=4"),
])
def test_what_several_steps_per_call_cannot_keep_is_refused_in_one_line(tmp_path, overrides, match):
    from vae_lab.config import validate

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.output_dir={tmp_path}", *overrides])
    with pytest.raises(ConfigError, match=match):
        validate(cfg)


@pytest.mark.parametrize("overrides, expected", [
    ([], 8),  # the default: auto
    (["callbacks.periodic_checkpoint.every_n_train_steps=100"], 4),  # the largest of 8, 4, 2, 1 dividing 100
    (["callbacks.periodic_checkpoint.every_n_train_steps=75"], 1),
    (["trainer.val_check_interval=20"], 1),  # validation within epochs counts calls
    (["trainer.val_check_interval=0.5"], 1),
    (["+trainer.accumulate_grad_batches=2"], 1),
    (["schedule.steps_per_call=3", "callbacks.periodic_checkpoint.every_n_train_steps=300"], 3),  # as set
])
def test_auto_steps_per_call_is_what_the_rest_of_the_config_allows(tmp_path, overrides, expected):
    from vae_lab.build import manual_optimization
    from vae_lab.config import steps_per_call, validate

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.output_dir={tmp_path}", *overrides])
    n = steps_per_call(cfg)
    assert n == expected and manual_optimization(cfg, n) == (expected > 1)
    cfg.schedule.steps_per_call = n
    validate(cfg)  # auto never picks a number the checks above refuse when set by hand
