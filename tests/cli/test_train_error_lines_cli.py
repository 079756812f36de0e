"""train.py's one-error-line contract for a bad callback knob and for a conditional model on unlabelled data: exit
2, no traceback, one `error: ...` line. Both cases run in one interpreter (`driver.run_many`)."""

import numpy as np
import pytest

import driver
from datasets_fixtures import write_array_file


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Each case's exit code and stderr, from one interpreter running train.py's entry point for each."""
    tmp = tmp_path_factory.mktemp("train_error_lines")
    images = np.random.default_rng(0).integers(0, 256, (20, 8, 8), dtype=np.uint8)
    unlabelled = write_array_file(tmp / "images.npy", images)  # a bare array: no labels
    cases = [
        ("bad_callback_knob", [f"hydra.run.dir={tmp / 'knob'}", "print_config=false",
                               "callbacks.image_grids.every_n_epochs=-2"]),
        ("conditional_unlabelled", ["dataset=array_file", f"dataset.options.path={unlabelled}",
                                    "model.conditional=true", f"hydra.run.dir={tmp / 'cond'}", "print_config=false"]),
    ]
    return driver.run_many("train", cases, tmp / "results.json")


def test_cli_reports_a_bad_callback_knob_in_one_line(results):
    """(from tests/test_image_callbacks.py)"""
    line = driver.one_error_line(results["bad_callback_knob"])
    assert line.startswith("error: callbacks.image_grids.every_n_epochs=-2 is invalid: must be an integer >= 0"), line


def test_conditional_on_unlabelled_data_is_one_clear_line(results):
    """(from tests/test_conditional.py)"""
    driver.one_error_line(results["conditional_unlabelled"], "model.conditional=true", "label")
