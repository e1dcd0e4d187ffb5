#!/usr/bin/env bash
# The service under load (2 uvicorn workers, a real Redis, a separate load-generator process) next to its
# in-process compute floor, at 100K items / 100K users (RUNS times: this shared 2-core VM is noisy) and at
# 1M items / 100K users. Writes benchmarks/results/serve-<items>.jsonl (one JSON result per run);
# RANKER=moe ITEMS=100000 ranks with the MoE (seeded weights) and writes serve-<items>-moe.jsonl.
# Run on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p benchmarks/results
for items in ${ITEMS:-100000 1000000}; do
  runs=${RUNS:-3}
  [ "$items" -ge 1000000 ] && runs=${RUNS_1M:-1}
  out="benchmarks/results/serve-$items${RANKER:+-$RANKER}.jsonl"
  : > "$out"
  for _ in $(seq "$runs"); do
    .venv/bin/recstack bench serve --items "$items" --users 100000 --duration "${DURATION:-30}" \
      --concurrency "${CONCURRENCY:-6}" ${RANKER:+--ranker "$RANKER"} --json \
      | tail -n 1 >> "$out"
  done
  cat "$out"
done
