"""scripts/sample.py as a user runs it, every case in one interpreter (driver.run_many): it prints the paths it
writes, bad requests are exit 2 and one `error:` line with nothing written, --help lists the modes. What each mode
draws: tests/integration/test_sampling.py and tests/integration/test_export.py."""

from PIL import Image

import driver

GRID_2x4 = (4 * (32 + 2) + 2, 2 * (32 + 2) + 2)  # 2 rows of 4 digits upscaled to 32 px, 2 px padding


def test_sample_command_line(trained_run, tmp_path):
    results = driver.run_many("sample", [
        ("prints", [f"model={trained_run('cond')}", "mode=reconstruct", "n=4", f"out={tmp_path}"]),
        ("class of unconditional", [f"model={trained_run('plain2')}", "class=3", f"out={tmp_path / 'c'}"]),
        ("export class=all of unconditional", [f"model={trained_run('plain')}", "mode=export", "class=all",
                                               f"out={tmp_path / 'x.npz'}"]),
        ("help", ["--help"]),
    ], tmp_path / "results.json")

    prints = results["prints"]
    assert prints["code"] == 0, prints["stderr"][-2000:]
    assert prints["stdout"].splitlines() == [str(tmp_path / "reconstructions.png")]
    assert Image.open(tmp_path / "reconstructions.png").size == GRID_2x4

    unconditional = results["class of unconditional"]
    line = driver.one_error_line(unconditional)
    assert unconditional["stderr"].strip().splitlines() == [line] == [
        "error: class=3 needs a conditional model (trained with model.conditional=true); "
        "this model is unconditional: drop class="]
    assert not (tmp_path / "c").exists()

    export = results["export class=all of unconditional"]
    line = driver.one_error_line(export, "class=all needs a conditional model")
    assert export["stderr"].strip().splitlines() == [line] and not (tmp_path / "x.npz").exists()

    helped = results["help"]
    assert helped["code"] == 0
    assert "mode=interpolate pair=[7,9]" in helped["stdout"] and "latent_scatter" in helped["stdout"]
