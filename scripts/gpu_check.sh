#!/usr/bin/env bash
# On a GPU machine: hardware=auto (the default) must train on the GPU. Prints the resolved accelerator and the
# GPU line train.py prints, then runs the GPU-marked tests. Usage: bash scripts/gpu_check.sh [python]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python}
export PYTHONPATH=$PWD HF_HUB_OFFLINE=1
RUN=$(mktemp -d)/run
$PY -c "import torch; print('torch', torch.__version__, 'cuda available:', torch.cuda.is_available())"
$PY - <<'PY'
from hydra import compose, initialize_config_dir
from vae_lab.build import build_trainer
from vae_lab.cli import CONFIG_DIR
with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
    cfg = compose("train", overrides=["logger=none", "callbacks=none"])
trainer = build_trainer(cfg)
print("resolved accelerator:", type(trainer.accelerator).__name__, "root device:", trainer.strategy.root_device,
      "precision:", trainer.precision)
PY
$PY train.py trainer.max_steps=20 trainer.enable_progress_bar=false print_config=false "hydra.run.dir=$RUN" \
  > "$RUN.log" 2>&1 || { tail -20 "$RUN.log"; exit 1; }
grep -E "^GPU: |^data: |Final validation ELBO" "$RUN.log"
grep -q "^GPU: " "$RUN.log" || { echo "FAIL: train.py did not train on a GPU"; exit 1; }
$PY -m pytest tests/integration/test_hardware.py -q -p no:cacheprovider
