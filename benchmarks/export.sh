#!/usr/bin/env bash
# The batch export on the MovieLens-100K reference split, scored against its test file:
# u.data = ../shared/data/ml-100k-split/train.tsv (with ml-100k's u.user / u.item), top 10 per user through the
# serving pipeline, nDCG / recall / precision @10 and catalog coverage over all 943 users.
# Writes benchmarks/results/export-ml100k-split.json (summary + metrics).
set -euo pipefail
cd "$(dirname "$0")/.."
SPLIT=${SPLIT:-../shared/data/ml-100k-split}
ML=${ML:-../shared/data/ml-100k}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/data" benchmarks/results
ln -s "$(realpath "$SPLIT/train.tsv")" "$WORK/data/u.data"
ln -s "$(realpath "$ML/u.user")" "$WORK/data/u.user"
ln -s "$(realpath "$ML/u.item")" "$WORK/data/u.item"
.venv/bin/recstack export recommendations --data "$WORK/data" --k 10 --out "$WORK/recs.csv" --home "$WORK/home" "$@" \
  | tail -n 1 > "$WORK/summary.json"
.venv/bin/recstack export evaluate --recs "$WORK/recs.csv" --test "$SPLIT/test.tsv" --train "$SPLIT/train.tsv" \
  | tail -n 1 > "$WORK/metrics.json"
.venv/bin/python - "$WORK/summary.json" "$WORK/metrics.json" > benchmarks/results/export-ml100k-split.json <<'PY'
import json, sys
summary, metrics = (json.load(open(p)) for p in sys.argv[1:3])
summary.pop("out", None)
print(json.dumps({"export": summary, "metrics": metrics, "peers_measured_here": {
    "popularity": 0.250, "cornac_bpr": 0.405, "cornac_bivae": 0.469, "ease_lambda500": 0.480, "ease_coverage": 295}}))
PY
cat benchmarks/results/export-ml100k-split.json
