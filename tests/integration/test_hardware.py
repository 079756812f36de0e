"""hardware=auto: the default; Lightning's auto accelerator on one device in float32, and the GPU line it prints
(the line's wording on a mocked GPU: tests/unit/test_hardware_note.py)."""

import pytest
import torch

from vae_lab.build import build_trainer, hardware_note

HAS_GPU = torch.cuda.is_available()


@pytest.fixture
def compose_cfg(compose):
    """compose_cfg(tmp_path, *overrides): the train config writing into tmp_path, print_config off."""

    def composed(tmp_path, *overrides):
        cfg = compose("print_config=false", *overrides)
        cfg.paths.output_dir = str(tmp_path)
        return cfg

    return composed


def test_auto_is_the_default_and_resolves_to_this_machine(compose_cfg, tmp_path):
    cfg = compose_cfg(tmp_path, "logger=none", "callbacks=none")
    assert cfg.trainer.accelerator == "auto" and cfg.trainer.devices == 1 and cfg.trainer.precision == "32-true"
    trainer = build_trainer(cfg)
    assert trainer.strategy.root_device.type == ("cuda" if HAS_GPU else "cpu")
    assert trainer.num_devices == 1 and trainer.precision == "32-true"
    assert (hardware_note(trainer) is None) != HAS_GPU  # the GPU line only on a GPU


def test_cpu_still_forces_the_cpu(compose_cfg, tmp_path):
    trainer = build_trainer(compose_cfg(tmp_path, "hardware=cpu", "logger=none", "callbacks=none"))
    assert trainer.strategy.root_device.type == "cpu" and hardware_note(trainer) is None


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA device")
def test_auto_trains_on_the_gpu(compose_cfg, tmp_path, capsys):
    from vae_lab.cli.train import train

    metrics = train(compose_cfg(tmp_path, "trainer.max_steps=20", "trainer.max_epochs=-1", "callbacks=none",
                                "logger=none", "trainer.enable_progress_bar=false"))
    assert metrics["global_step"] == 20
    assert "GPU: " in capsys.readouterr().out
