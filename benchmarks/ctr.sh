#!/usr/bin/env bash
# Wide&Deep and the MoE ranker next to DeepCTR-Torch's WDL and DeepFM (installed from the `bench` extra) on
# MovieLens-100K (rating 3 dropped, >= 4 positive, random 80/10/10 split, seed 42), same run.
# Writes benchmarks/results/ctr-ml100k.json; run on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/ml-100k}
.venv/bin/python -m pip install -q -e ".[bench]"
mkdir -p benchmarks/results
.venv/bin/recstack bench ctr --data "$DATA" --json --home "${BENCH_HOME:-/tmp/recstack-bench}" \
  | tail -n 1 > benchmarks/results/ctr-ml100k.json
cat benchmarks/results/ctr-ml100k.json
