#!/usr/bin/env bash
# The hierarchical family against the best single-level row (seed 003's conv VAE) at one wall-clock budget, trained
# side by side (the same machine load for both), then test log p(x) by IWAE-K on the test split:
#   binarised MNIST (experiment=mnist_hierarchical vs mnist_likelihood architecture=conv) and 8-bit Fashion-MNIST
#   (experiment=fashion_mnist_hierarchical vs the conv VAE with the same logistic mixture).
#   MAXT=00:00:50:00 K=1000 MAX=1000 bash scripts/results_hierarchical.sh   # the CPU budget of docs/families.md
#   MAXT=00:00:02:00 K=10 MAX=200 bash scripts/results_hierarchical.sh   # smoke test
# Env: MAXT (Lightning's max_time per run, DD:HH:MM:SS), K, MAX (test examples; empty: all 10k), HW, DATA, OUT, PY,
# PAIRS (binarised, eightbit or both).
set -euo pipefail
MAXT=${MAXT:-00:00:50:00}; K=${K:-1000}; MAX=${MAX:-}; HW=${HW:-cpu}; PAIRS=${PAIRS:-"binarised eightbit"}
DATA=${DATA:-../shared/data}; OUT=${OUT:-outputs/results_hierarchical}; PY=${PY:-python}
common=(hardware="$HW" paths.data_dir="$DATA" print_config=false trainer.enable_progress_bar=false
        +trainer.max_time="$MAXT" trainer.max_steps=-1 callbacks=no_images)
declare -A RUNS=(
  [binarised_hierarchical]="experiment=mnist_hierarchical"
  [binarised_conv]="experiment=mnist_likelihood architecture=conv ~model.net.hidden_dims ~model.net.activation schedule.kl_warmup_steps=5000"
  [eightbit_hierarchical]="experiment=fashion_mnist_hierarchical"
  [eightbit_conv]="dataset=fashion_mnist dataset.binarize=none architecture=conv model.likelihood=discretized_logistic_mixture model.likelihood_components=5 schedule.max_epochs=-1 schedule.kl_warmup_steps=5000"
)
names=()
for pair in $PAIRS; do names+=("${pair}_hierarchical" "${pair}_conv"); done
pids=()
for name in "${names[@]}"; do
  # shellcheck disable=SC2086  # the run's overrides are separate words
  OMP_NUM_THREADS=1 $PY train.py ${RUNS[$name]} "${common[@]}" hydra.run.dir="$OUT/$name" > "$OUT.$name.log" 2>&1 &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
pids=()
for name in "${names[@]}"; do  # side by side as well: the evaluations share the machine as the trainings did
  OMP_NUM_THREADS=1 $PY scripts/evaluate.py model="$OUT/$name" iwae_samples="$K" ${MAX:+max_examples=$MAX} \
    progress=false split=test paths.data_dir="$DATA" out="$OUT/$name/evaluation.json" >> "$OUT.$name.log" 2>&1 &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
$PY - "$OUT" "${names[@]}" <<'PY'
import json, sys
from pathlib import Path
print("| run | test IWAE log p(x) (nats) | test ELBO (nats) | bits/dim (IWAE) | rate per group (nats) | k | examples | steps | train wall time (s) |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for name in sys.argv[2:]:
    run = Path(sys.argv[1]) / name
    e, m = json.loads((run / "evaluation.json").read_text()), json.loads((run / "metrics.json").read_text())
    groups = ", ".join(f"{v:.1f}" for v in e.get("rate_nats_per_group", {}).values())
    print(f"| {name} | {e['iwae_nats']:.2f} ± {e['iwae_stderr_nats']:.2f} | {e['elbo_nats']:.2f} | "
          f"{e.get('iwae_bits_per_dim', float('nan')):.4f} | {groups} | {e['iwae_samples']} | {e['num_examples']} | "
          f"{m['global_step']} | {m['wall_time_s']:.0f} |")
PY
