#!/usr/bin/env bash
# A bridge between two brokers (issue 17, "Speed"): edge -> bridge ->
# central with the matrix's QoS 1 fan-in, keel bridged to keel vs
# Mosquitto bridged to Mosquitto, interleaved rep by rep (go run ./bench
# bridge -h): the rate delivered at the central broker and the end-to-end
# latency.
#
#   bench/bridge.sh
#   REPS=5 DURATION=10s bench/bridge.sh
#
# Environment: REPS (3), DURATION (5s measured per run), WARMUP (1s),
# DATA_ROOT (default $TMPDIR or /tmp), OUT (bench/BRIDGE.md; its runs go to
# OUT with .json), INTO (bench/BENCHMARKS.md: the section is put there too,
# between its markers; empty: not). Every process started here is stopped
# by pid on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${REPS:-3}
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
OUT=${OUT:-bench/BRIDGE.md}
INTO=${INTO-bench/BENCHMARKS.md}
DATA_ROOT=${DATA_ROOT:-${TMPDIR:-/tmp}}

. bench/lib.sh
ensure_mosquitto
make_work "$DATA_ROOT"
KEEL_REV="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
git diff --quiet HEAD -- 2>/dev/null || KEEL_REV="$KEEL_REV (work tree modified)"
go build -o "$WORK/bench" ./bench
go build -o "$WORK/keel" ./cmd/keel
mkdir -p "$WORK/runs"
run_child "$WORK/bench" bridge -keel "$WORK/keel" -keel-rev "$KEEL_REV" -mosquitto "$MOSQUITTO" \
	-reps "$REPS" -duration "$DURATION" -warmup "$WARMUP" \
	-tmp "$WORK/runs" -out "$OUT" -save "${OUT%.md}.json" ${INTO:+-into "$INTO"} \
	-command "REPS=$REPS DURATION=$DURATION WARMUP=$WARMUP bench/bridge.sh"
