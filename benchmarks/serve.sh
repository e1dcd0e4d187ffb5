#!/usr/bin/env bash
# The service under load (2 uvicorn workers, a real Redis, a separate load-generator process) next to its
# in-process compute floor, at 100K items / 100K users and at 1M items / 100K users.
# Writes benchmarks/results/serve-<items>.json; run on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p benchmarks/results
for items in ${ITEMS:-100000 1000000}; do
  .venv/bin/recstack bench serve --items "$items" --users 100000 --duration "${DURATION:-30}" --json \
    | tail -n 1 > "benchmarks/results/serve-$items.json"
  cat "benchmarks/results/serve-$items.json"
done
