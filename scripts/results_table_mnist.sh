#!/usr/bin/env bash
# The binarised-MNIST table (docs/priors.md): one training budget for every row, then test log p(x) by IWAE-K.
#   STEPS=30000 MAXT=00:00:04:20 K=5000 HW=gpu bash scripts/results_table_mnist.sh   # the table's budget
#   STEPS=50000 K=5000 HW=gpu bash scripts/results_table_mnist.sh        # a longer GPU budget
#   STEPS=50 K=10 MAX=100 bash scripts/results_table_mnist.sh            # CPU smoke test (minutes)
# Env: STEPS (optimizer steps), K (importance samples), MAX (test examples; empty: all 10k), WARMUP (KL warm-up
# steps; default STEPS/5), MAXT (a wall-clock cap per row, Lightning's max_time DD:HH:MM:SS), HW (hardware group), DATA (paths.data_dir), OUT (where the runs go), PY (python).
set -euo pipefail
STEPS=${STEPS:-50000}; K=${K:-5000}; MAX=${MAX:-}; WARMUP=${WARMUP:-$((STEPS / 5))}; HW=${HW:-cpu}
DATA=${DATA:-../shared/data}; OUT=${OUT:-outputs/results_mnist/steps${STEPS}}; PY=${PY:-python}
declare -A ROWS=(
  [mlp_standard]="prior=standard_normal"
  [mlp_mog]="prior=mog"
  [mlp_vamp]="prior=vamp"
  [mlp_standard_iaf]="prior=standard_normal posterior=iaf"
  [mlp_vamp_iaf]="prior=vamp posterior=iaf"
  [conv_standard]="architecture=conv ~model.net.hidden_dims ~model.net.activation"  # seed 003's conv nets
)
for row in mlp_standard mlp_mog mlp_vamp mlp_standard_iaf mlp_vamp_iaf conv_standard; do
  # shellcheck disable=SC2086  # the row's overrides are separate words
  $PY train.py experiment=mnist_likelihood ${ROWS[$row]} hardware="$HW" paths.data_dir="$DATA" print_config=false \
    trainer.max_steps="$STEPS" ${MAXT:++trainer.max_time=$MAXT} schedule.kl_warmup_steps="$WARMUP" \
    trainer.enable_progress_bar=false \
    hydra.run.dir="$OUT/$row"
  $PY scripts/evaluate.py model="$OUT/$row" iwae_samples="$K" ${MAX:+max_examples=$MAX} progress=false max_decoded=200000 \
    out="$OUT/$row/evaluation.json"
done
$PY - "$OUT" <<'PY'
import json, sys
from pathlib import Path
print("| row | test IWAE log p(x) (nats) | test ELBO (nats) | rate estimator | active units | k | examples | steps | train wall time (s) |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for run in sorted(Path(sys.argv[1]).iterdir()):
    e, m = json.loads((run / "evaluation.json").read_text()), json.loads((run / "metrics.json").read_text())
    print(f"| {run.name} | {e['iwae_nats']:.2f} ± {e['iwae_stderr_nats']:.2f} | {e['elbo_nats']:.2f} | "
          f"{e['rate_estimator']} | {e['active_units']} | {e['iwae_samples']} | {e['num_examples']} | "
          f"{m['global_step']} | {m['wall_time_s']:.0f} |")
PY
