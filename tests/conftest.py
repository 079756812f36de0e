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
