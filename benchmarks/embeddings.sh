#!/usr/bin/env bash
# Pure embedding recall of DeepWalk and GraphSAGE on the MovieLens-100K reference split, next to popularity
# and cornac BPR (the peer, installed here from the `bench` extra) in the same run.
# Writes benchmarks/results/embeddings-ml100k.json; run on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/ml-100k}
.venv/bin/python -m pip install -q -e ".[bench]"
mkdir -p benchmarks/results
.venv/bin/recstack bench embeddings --data "$DATA" --json --home "${BENCH_HOME:-/tmp/recstack-bench}" \
  | tail -n 1 > benchmarks/results/embeddings-ml100k.json
cat benchmarks/results/embeddings-ml100k.json
