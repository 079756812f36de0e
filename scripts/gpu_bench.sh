#!/usr/bin/env bash
# The GPU rows of issues 13/20 (docs/performance.md): MLP and conv_deep under bf16 autocast on CIFAR-10-shaped
# generated data (no download: works offline), training sides a/b/c/l and IWAE-5000 evaluation (vae_lab vs the
# straightforward loop), each side's FLOP/s as a share of the GPU's datasheet bf16 peak (H200: 989 TFLOP/s dense).
#
#   bash scripts/gpu_bench.sh [mlp|conv_deep|all] [OUT_DIR]     # from the repository root, one CUDA GPU
#
# Each arch takes ~3-5 min on an H200 with REPEATS=3 (7 child processes per repeat, ~10-20 s of start-up each);
# REPEATS=2 fits both in one 10-minute call. Results: OUT_DIR/<arch>.json and <arch>.txt (the printed table);
# children's logs under /tmp/gpu_bench/<arch>. Where hydra-core / omegaconf are not installed (the lent H200 image),
# put their wheels in .whl/ first and this installs them into /tmp/site, e.g. on a machine with pip:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl \
#       hydra-core==1.3.2 omegaconf==2.3.0 antlr4-python3-runtime==4.9.3        # antlr: a pure-Python sdist-only
#   (antlr4-python3-runtime 4.9.3 has no wheel: `pip wheel --no-deps antlr4-python3-runtime==4.9.3 -w .whl`)
set -euo pipefail
ARCH=${1:-all}
OUT_DIR=${2:-${OUT:-outputs/benchmarks/gpu}}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT_DIR"
if ! "$PYTHON" -c "import hydra, omegaconf" 2>/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PYTHON" -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)"

# DEVICE=cpu and EXTRA="steps=2 ..." (extra overrides, split on spaces) give a quick smoke run without a GPU.
# shellcheck disable=SC2206
common=(synthetic.enabled=true synthetic.shape=[3,32,32] "device=${DEVICE:-cuda}" precision=bf16-mixed
        "repeats=${REPEATS:-3}" "peak_tflops=${PEAK_TFLOPS:-989}" evaluation.iwae_samples=5000 ${EXTRA:-})
run() {  # arch, then its own options
  local arch=$1; shift
  "$PYTHON" scripts/benchmark.py "${common[@]}" "arch=$arch" "$@" "hydra.run.dir=/tmp/gpu_bench/$arch" \
    "out=$OUT_DIR/$arch.json" 2>&1 | tee "$OUT_DIR/$arch.txt"
}
if [[ $ARCH == mlp || $ARCH == all ]]; then  # seed 002's net and Bernoulli likelihood, latent 50 (issue 20)
  run mlp batch_size=64 'train_overrides=["model.latent_dim=50","model.likelihood=bernoulli"]' \
    evaluation.num_images=1000
fi
if [[ $ARCH == conv_deep || $ARCH == all ]]; then  # experiment=seed_cifar10_advanced's net: latent 128, Gaussian
  run conv_deep batch_size=256 'train_overrides=["model.latent_dim=128","model.likelihood=gaussian"]' \
    evaluation.num_images=200
fi
