"""Issue 16, item 4: a crash inside write_artifact's renames never loses the artifact: the next load finds the
complete copy (in-process: a rename that raises stands for the process dying there; the same with a real SIGKILL is
tests/cli/test_reliability_iii_cli.py)."""

from pathlib import Path

import pytest


def crash_on_rename(monkeypatch, nth: int) -> None:
    """The `nth` directory rename from now on raises, as if the process died right there (later renames work)."""
    real, calls = Path.rename, []

    def rename(self, target):
        calls.append(self)
        if len(calls) == nth:
            raise KeyboardInterrupt("simulated crash")
        return real(self, target)

    monkeypatch.setattr(Path, "rename", rename)


@pytest.mark.parametrize("crash_at", [1, 2, 3], ids=["before_complete", "before_swap_out", "between_the_renames"])
def test_an_interrupted_artifact_swap_is_recovered_by_the_next_load(tmp_path, monkeypatch, crash_at):
    """Item 4: a crash inside write_artifact's renames never loses the artifact: loading finds the complete copy."""
    import torch

    from vae_lab import artifact, publish
    from vae_lab.loading import load_model
    from vae_lab.model import VAE

    def vae(seed: int) -> VAE:
        torch.manual_seed(seed)
        return VAE(in_shape=[1, 8, 8], latent_dim=3, architecture="mlp", likelihood="bernoulli").eval()

    out = tmp_path / "run" / "artifact"
    first, second = vae(0), vae(1)
    publish.save_artifact(out, first)
    crash_on_rename(monkeypatch, crash_at)
    with pytest.raises(KeyboardInterrupt):
        publish.save_artifact(out, second)
    monkeypatch.undo()
    if crash_at == 3:  # the reported state: both complete copies hidden, no artifact/
        assert not out.exists() and (out.parent / ".artifact.new").is_dir() and (out.parent / ".artifact.old").is_dir()
    loaded = load_model(str(out)).model
    # crash before the copy was complete: the previous artifact; after: the new one, swapped in
    expected = first if crash_at == 1 else second
    for key, value in expected.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert sorted(p.name for p in out.parent.iterdir()) == ["artifact"]  # nothing hidden left behind
    assert artifact.recover_artifact(out) == out  # idempotent
