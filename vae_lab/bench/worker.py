"""`python -m vae_lab.bench.worker SPEC.json`: one benchmark child runs one side as the spec says, writes its report."""

import json
import sys
from pathlib import Path

from vae_lab.bench.clock import write_report


def _workers() -> dict:
    """Side name -> function(spec) -> report."""
    from vae_lab.bench.evaluation import side_eval_loop, side_eval_vae_lab
    from vae_lab.bench.sides import side_b, side_c, side_imports, side_l

    return {"b": side_b, "l": side_l, "c": side_c, "imports": side_imports,
            "eval_vae_lab": side_eval_vae_lab, "eval_loop": side_eval_loop}


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    write_report(spec["report"], _workers()[spec["side"]](spec))


if __name__ == "__main__":
    main(sys.argv[1])
