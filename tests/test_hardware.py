"""hardware=auto: the default; Lightning's auto accelerator on one device in float32, and the GPU line it prints."""

from types import SimpleNamespace

import pytest
import torch
from test_train import compose_cfg

from vae_lab.build import build_trainer, hardware_note

HAS_GPU = torch.cuda.is_available()


def test_auto_is_the_default_and_resolves_to_this_machine(tmp_path):
    cfg = compose_cfg(tmp_path, "logger=none", "callbacks=none")
    assert cfg.trainer.accelerator == "auto" and cfg.trainer.devices == 1 and cfg.trainer.precision == "32-true"
    trainer = build_trainer(cfg)
    assert trainer.strategy.root_device.type == ("cuda" if HAS_GPU else "cpu")
    assert trainer.num_devices == 1 and trainer.precision == "32-true"
    assert (hardware_note(trainer) is None) != HAS_GPU  # the GPU line only on a GPU


def test_cpu_still_forces_the_cpu(tmp_path):
    trainer = build_trainer(compose_cfg(tmp_path, "hardware=cpu", "logger=none", "callbacks=none"))
    assert trainer.strategy.root_device.type == "cpu" and hardware_note(trainer) is None


@pytest.mark.parametrize(("precision", "bf16", "suggests"),
                         [("32-true", True, True), ("32-true", False, False), ("bf16-mixed", True, False)])
def test_gpu_line_names_the_gpu_and_suggests_bf16_only_where_it_helps(monkeypatch, precision, bf16, suggests):
    props = SimpleNamespace(name="NVIDIA Test GPU", total_memory=80 * 2**30)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: props)
    calls = []
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: calls.append(
        including_emulation) or bf16)
    trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cuda", 0)), precision=precision)
    line = hardware_note(trainer)
    assert line.startswith("GPU: NVIDIA Test GPU (cuda:0, 80 GiB), precision " + precision)
    assert ("hardware=gpu_bf16" in line) == suggests
    assert all(flag is False for flag in calls)  # emulated bf16 is no reason to switch


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA device")
def test_auto_trains_on_the_gpu(tmp_path, capsys):
    from vae_lab.cli.train import train

    metrics = train(compose_cfg(tmp_path, "trainer.max_steps=20", "trainer.max_epochs=-1", "callbacks=none",
                                "logger=none", "trainer.enable_progress_bar=false"))
    assert metrics["global_step"] == 20
    assert "GPU: " in capsys.readouterr().out
