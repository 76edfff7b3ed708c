#!/usr/bin/env bash
# One GPU call for the paper's Gaussian results (issue 16): the 1D Fig. 2 study with its
# data-size and separation sweeps and the two official 25-mode grids at the official training
# settings (paper presets: width 128, batch 10 000, constant 1e-3, 20 000 / 100 000 steps),
# 3 seeds, 10^5 samples per model, then the core benchmark and the claims ledger.
#
#   bash benchmarks/gpu_paper.sh [--out=DIR]     # on a GPU machine (PYTHONPATH=. or installed)
#   bash benchmarks/gpu_paper.sh --dry           # the same steps at toy size on a CPU (a test)
#
# Estimate (BUILD_NOTES "A GPU call for the paper"): ~2.5e16 training FLOP in all, a few minutes
# on an H200-class GPU; not yet measured on one.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=runs/gpu_paper
DRY=0
for arg in "$@"; do
  case "$arg" in
    --dry) DRY=1 ;;
    --out=*) OUT="${arg#--out=}" ;;
    *) echo "error: unknown argument $arg (use --dry, --out=DIR)" >&2; exit 2 ;;
  esac
done
COMMON="--seeds=0,1,2 --num_samples=100000 --chunk_size=100000"
G1=""
G2=""
BENCH="--sizes=10000,100000"
if [ "$DRY" = 1 ]; then
  TOY="--steps=20 --epochs=1 --train_chunk=10 --batch_size=64 --num_samples=64 --chunk_size=64 --T=50 --width=16 --curve_every=0"
  G1="$TOY --sizes=200,500 --separations=1,2 --num_train=500 --num_train_b=500"
  G2="$TOY --num_train=1000"
  BENCH="--sizes=1000 --chunk=1000 --train_steps=2"
  OUT="${OUT}_dry"
fi
mkdir -p "$OUT"
start=$(date +%s)
python -m experiments.gmm1d --workdir="$OUT/gmm1d" --preset=paper $COMMON $G1
python -m experiments.gmm2d --workdir="$OUT/gmm2d" --preset=paper $COMMON $G2
python -m benchmarks.bench_core $BENCH --out="$OUT/bench_core.json"
python -m experiments.ledger --workdir="$OUT" > /dev/null
echo "gpu_paper: wrote $OUT (ledger.md, gmm1d/, gmm2d/, bench_core.json) in $(( $(date +%s) - start )) s"
