#!/usr/bin/env bash
# Real-time anti-fraud on replayed MovieLens-100K with injected, labelled attacks (private Redis), and the CTR
# model's test AUC trained on clean / attacked+filtered / attacked data. Writes benchmarks/results/fraud-ml100k.json.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/ml-100k}
mkdir -p benchmarks/results
.venv/bin/recstack bench fraud --data "$DATA" --json --home "${BENCH_HOME:-/tmp/recstack-bench}" \
  | tail -n 1 > benchmarks/results/fraud-ml100k.json
cat benchmarks/results/fraud-ml100k.json
