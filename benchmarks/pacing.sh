#!/usr/bin/env bash
# PID exposure pacing vs a hard cap vs no control on a simulated day (288 five-minute intervals, diurnal traffic,
# a 3x surge 12:00-14:00), driving the real controller on a private Redis. Writes benchmarks/results/pacing.json.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p benchmarks/results
HOME_DIR=$(mktemp -d)
# a private Redis on a free port, stopped on exit
RECSTACK_REDIS__LOCAL_PORT=$(.venv/bin/python -c "from recstack.features.redis_local import free_port; print(free_port())")
export RECSTACK_REDIS__LOCAL_PORT
trap '.venv/bin/recstack redis stop --home "$HOME_DIR" >/dev/null 2>&1 || true; rm -rf "$HOME_DIR"' EXIT
.venv/bin/recstack bench pacing --json --home "$HOME_DIR" | tail -n 1 > benchmarks/results/pacing.json
cat benchmarks/results/pacing.json
