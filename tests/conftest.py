import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (ROOT.parent / "shared" / "data").resolve()
sys.path.insert(0, str(Path(__file__).parent))  # oracles.py, datasets_fixtures.py
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("PYTHONHASHSEED", "0")


@pytest.fixture
def one_torch_thread():
    """Small models on 2 shared cores: a second intra-op thread only spins (measured 13x the CPU time here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_collection_modifyitems(config, items):
    """Each test process one torch thread (2 shared cores: a second intra-op thread only spins), set here so that
    every worker of `pytest -n` gets it too."""
    torch.set_num_threads(int(os.environ.get("VAE_LAB_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _within_the_ci_budget(request):
    """VAE_LAB_TEST_DEADLINE (a Unix time, set by .ci/run for the slow tier): tests that would start after it are
    skipped with that reason, so the slow tier runs as far as CI's time allows and never makes CI overrun."""
    import time

    deadline = os.environ.get("VAE_LAB_TEST_DEADLINE")
    if deadline and time.time() > float(deadline):
        pytest.skip("CI time budget spent (VAE_LAB_TEST_DEADLINE): run `make test-slow` locally for this test")
