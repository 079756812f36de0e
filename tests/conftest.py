"""Shared by every tier: the tier markers, one torch thread per test process, the CI time budget, and the tiny
trained runs that tests share read-only (`trained_run`)."""

import os
import sys
from pathlib import Path

os.environ["OMP_NUM_THREADS"] = os.environ.get("VAE_LAB_TEST_THREADS", "1")  # before torch starts its thread pool

import pytest  # noqa: E402
import torch  # noqa: E402

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


from tiers import TIERS  # noqa: E402  (tests/<tier>/: the marker every test there gets)


def pytest_collection_modifyitems(config, items):
    """Each test gets its tier's marker (`-m unit`, `-m "not cli"`, ...), and each test process one torch thread
    (2 shared cores: a second intra-op thread only spins), set here so that every worker of `pytest -n` gets it."""
    torch.set_num_threads(int(os.environ.get("VAE_LAB_TEST_THREADS", "1")))
    tests = Path(__file__).parent
    for item in items:
        parts = Path(item.fspath).relative_to(tests).parts
        if len(parts) > 1 and parts[0] in TIERS:
            item.add_marker(parts[0])


@pytest.fixture(autouse=True)
def _within_the_ci_budget(request):
    """VAE_LAB_TEST_DEADLINE (a Unix time, set by .ci/run for the slow tier): tests that would start after it are
    skipped with that reason, so the slow tier runs as far as CI's time allows and never makes CI overrun."""
    import time

    deadline = os.environ.get("VAE_LAB_TEST_DEADLINE")
    if deadline and time.time() > float(deadline):
        pytest.skip("CI time budget spent (VAE_LAB_TEST_DEADLINE): run `make test-slow` locally for this test")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """name -> the run directory of one of `trained.RUNS` (tiny runs on the bundled digits), trained once per test
    session and shared by every test and every xdist worker. Read-only: copy it (`shutil.copytree`) to write."""
    import trained

    base = tmp_path_factory.getbasetemp()  # an xdist worker's is <session>/popen-gwN: share the session's folder
    shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "trained_runs"
    return lambda name: trained.shared_run(shared, name)
