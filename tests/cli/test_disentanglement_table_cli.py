"""scripts/disentanglement_table.py as a user runs it: a bad setting is one line, exit 2, before any run is scored
(the table's rows and the gathering of run paths: tests/unit/test_disentanglement_metrics.py)."""

import driver
import pytest

CASES = [
    ("unknown_metric", "metrics=[mig,nope]", "metrics='nope' is not a valid choice; valid choices: beta_vae_score, dci"),
    ("no_training_examples", "num_train=0", "num_train"),
]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    runs = {}
    for name, override, _ in CASES:
        run = tmp_path_factory.mktemp(name)
        (run / "metrics.json").write_text("{}")  # a finished-looking run: refused before any scoring
        runs[name] = run
    out = driver.run_many("disentanglement_table", [(name, [runs[name], override]) for name, override, _ in CASES],
                          tmp_path_factory.mktemp("table") / "results.json")
    return {name: (out[name], runs[name]) for name in runs}


@pytest.mark.parametrize("name, override, message", CASES, ids=[c[0] for c in CASES])
def test_a_bad_table_setting_is_one_line_and_exit_2(results, name, override, message):
    result, run = results[name]
    driver.one_error_line(result, message)
    assert len(result["stderr"].strip().splitlines()) == 1 and result["stderr"].startswith("error: ")
    assert not (run / "disentanglement.json").exists()
