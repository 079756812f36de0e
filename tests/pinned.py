"""The numbers of short runs pinned before the model-family interface (tests/fixtures/pinned_runs.json) and the CPU
model they were pinned on (tests/integration/test_pinned_numbers.py, tests/test_architecture.py)."""

import json
from pathlib import Path

PINNED = json.loads((Path(__file__).parent / "fixtures" / "pinned_runs.json").read_text())


def _cpu() -> str | None:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return None


def same_cpu_as_pinned() -> bool:
    """Bit-identical on the CPU model the numbers were pinned on (float reductions are the same kernels there);
    elsewhere another BLAS code path may round differently, so compare within float32 rounding."""
    return _cpu() == PINNED["cpu"]
