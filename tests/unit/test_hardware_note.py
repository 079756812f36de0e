"""The GPU line hardware=auto prints: it names the GPU and suggests bf16 only where it helps (a mocked device; the
default resolved on this machine, and training on a GPU: tests/integration/test_hardware.py)."""

from types import SimpleNamespace

import pytest
import torch

from vae_lab.build import hardware_note


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
