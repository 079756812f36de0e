"""scripts/score.py as a user runs it: bad input is exit 2 and one `error:` line, nothing written. Its scores:
tests/integration/test_ood.py."""

import numpy as np

import driver


def test_cli_out_data_of_another_shape_is_one_line_naming_both_shapes(trained_run, tmp_path):
    np.savez(tmp_path / "big.npz", x=np.zeros((20, 28, 28), dtype=np.uint8))
    proc = driver.run("score", f"model={trained_run('plain')}", f"out={tmp_path / 's'}",
                      f"out_data.path={tmp_path / 'big.npz'}", timeout=300)
    line = driver.one_error_line(proc, "(1, 28, 28)", "(1, 8, 8)")
    assert proc.stderr.strip().splitlines() == [line] and line.startswith("error: out_data:")
    assert not (tmp_path / "s").exists()
