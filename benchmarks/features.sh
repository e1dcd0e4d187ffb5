#!/usr/bin/env bash
# Offline feature pipeline throughput: synthetic events → samples, features, sessions, graphs (Spark local[*]).
# Writes benchmarks/results/features-<N>.json, one file per size; run on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p benchmarks/results
for n in ${SIZES:-1000000 3000000 10000000}; do
  echo "== bench features --events $n" >&2
  .venv/bin/recstack bench features --events "$n" --json --home "${BENCH_HOME:-/tmp/recstack-bench}" \
    | tail -n 1 > "benchmarks/results/features-$n.json"
  cat "benchmarks/results/features-$n.json"
done
