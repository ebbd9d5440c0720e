#!/usr/bin/env bash
# What keel's dedup window costs (issue 17: fan-in QoS 1 with the window on
# >= 0.9 x off), interleaved rep by rep (go run ./bench dedup -h): the
# matrix's fanin-qos1-64 at MQTT 5.0 with a unique msg-id on every
# publish, keel with dedup_window on and off, and the same load without
# the id.
#
#   bench/dedup.sh
#   REPS=5 DURATION=10s bench/dedup.sh
#
# Environment: REPS (3), DURATION (5s measured per run), WARMUP (1s),
# DATA_ROOT (default $TMPDIR or /tmp), OUT (bench/DEDUP.md; its runs go to
# OUT with .json), INTO (bench/BENCHMARKS.md: the section is put there too,
# between its markers; empty: not). Every process started here is stopped
# by pid on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${REPS:-3}
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
OUT=${OUT:-bench/DEDUP.md}
INTO=${INTO-bench/BENCHMARKS.md}
DATA_ROOT=${DATA_ROOT:-${TMPDIR:-/tmp}}

. bench/lib.sh
make_work "$DATA_ROOT"
KEEL_REV="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
git diff --quiet HEAD -- 2>/dev/null || KEEL_REV="$KEEL_REV (work tree modified)"
go build -o "$WORK/bench" ./bench
go build -o "$WORK/keel" ./cmd/keel
mkdir -p "$WORK/runs"
run_child "$WORK/bench" dedup -keel "$WORK/keel" -keel-rev "$KEEL_REV" \
	-reps "$REPS" -duration "$DURATION" -warmup "$WARMUP" \
	-tmp "$WORK/runs" -out "$OUT" -save "${OUT%.md}.json" ${INTO:+-into "$INTO"} \
	-command "REPS=$REPS DURATION=$DURATION WARMUP=$WARMUP bench/dedup.sh"
