#!/usr/bin/env bash
# Measures Keel and Mosquitto side by side on every scenario of the matrix
# (go run ./bench matrix -list) and rewrites bench/BENCHMARKS.md.
#
#   bench/matrix.sh                      # 3 reps x 5 s per scenario and broker
#   REPS=5 DURATION=10s bench/matrix.sh
#   ONLY='sync|pairs' OUT=/tmp/b.md bench/matrix.sh
#   REV=HEAD bench/matrix.sh             # measure a commit, not the work tree
#   BASE=a3f6d70 REV=HEAD bench/matrix.sh # and another commit beside it ("keel-base"), interleaved
#
# Environment: REPS (3), DURATION (5s measured per run), WARMUP (1s),
# MQTT_VERSION (5, or 4 for 3.1.1), ONLY (regexp of scenario names),
# OUT (bench/BENCHMARKS.md), DATA_ROOT (where brokers' data directories go:
# the disk being measured; default $TMPDIR or /tmp), KEEL (a keel binary to
# use instead of building ./cmd/keel), REV (a commit: build keel and the
# load generator from `git archive REV`, so that uncommitted changes in the
# work tree are not measured), NOTES (hand-written Markdown included after
# the targets; default bench/ANALYSIS.md when it exists), EXTRA (bench
# auth's section, carried into the report; default bench/AUTH.md when it
# exists: bench/auth.sh measures it; bench/DEDUP.md, bench/BRIDGE.md and
# bench/TRANSPORTS.md, from bench/dedup.sh, bench/bridge.sh and
# bench/transports.sh, are carried too), SAVE (every
# run's result as JSON; default OUT with .json for .md). To write the report
# again from saved results, e.g. after editing bench/ANALYSIS.md:
#
#   go run ./bench matrix -load bench/BENCHMARKS.json -notes bench/ANALYSIS.md -extra bench/AUTH.md -carry bench/DEDUP.md,bench/BRIDGE.md,bench/TRANSPORTS.md -out bench/BENCHMARKS.md
#
# Targets (the issue's goals for Keel) are printed at the end and written to
# the report's "Targets" table; their definitions are in bench/targets.go.
#
# Mosquitto runs in memory (persistence false); Keel runs with a fresh data
# directory per run. Every process started here is stopped by pid on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${REPS:-3}
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
MQTT_VERSION=${MQTT_VERSION:-5}
ONLY=${ONLY:-}
OUT=${OUT:-bench/BENCHMARKS.md}
SAVE=${SAVE:-${OUT%.md}.json}
DATA_ROOT=${DATA_ROOT:-${TMPDIR:-/tmp}}

. bench/lib.sh
ensure_mosquitto
make_work "$DATA_ROOT"

NOTES=${NOTES:-}
[ -z "$NOTES" ] && [ -f bench/ANALYSIS.md ] && NOTES=bench/ANALYSIS.md
EXTRA=${EXTRA:-}
[ -z "$EXTRA" ] && [ -f bench/AUTH.md ] && EXTRA=bench/AUTH.md
# bench/dedup.sh's and bench/bridge.sh's sections, carried likewise.
CARRY=""
for f in bench/DEDUP.md bench/BRIDGE.md bench/TRANSPORTS.md; do
	[ -f "$f" ] && CARRY="${CARRY:+$CARRY,}$f"
done

SRC=.
if [ -n "${REV:-}" ]; then
	KEEL_REV="$(git rev-parse "$REV^{commit}")"
	mkdir -p "$WORK/src"
	git archive "$KEEL_REV" | tar -x -C "$WORK/src"
	SRC=$WORK/src
else
	KEEL_REV="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
	git diff --quiet HEAD -- 2>/dev/null || KEEL_REV="$KEEL_REV (work tree modified)"
fi

(cd "$SRC" && go build -o "$WORK/bench" ./bench)

KEEL_NOTE=""
if [ -n "${KEEL:-}" ]; then
	KEEL_BIN=$KEEL
	KEEL_REV="$KEEL_REV (keel binary: $KEEL)"
elif (cd "$SRC" && go build -o "$WORK/keel" ./cmd/keel) 2>"$WORK/keel-build.log"; then
	KEEL_BIN=$WORK/keel
else
	KEEL_BIN=""
	KEEL_NOTE="go build ./cmd/keel failed: $(head -c 300 "$WORK/keel-build.log" | tr '\n' ' ')"
	echo "matrix: $KEEL_NOTE; measuring Mosquitto only" >&2
fi

KEEL_BASE_BIN=""
KEEL_BASE_REV=""
if [ -n "${BASE:-}" ]; then
	KEEL_BASE_REV="$(git rev-parse "$BASE^{commit}")"
	mkdir -p "$WORK/base-src"
	git archive "$KEEL_BASE_REV" | tar -x -C "$WORK/base-src"
	(cd "$WORK/base-src" && go build -o "$WORK/keel-base" ./cmd/keel)
	KEEL_BASE_BIN=$WORK/keel-base
fi

mkdir -p "$WORK/runs"
run_child "$WORK/bench" matrix \
	-keel "$KEEL_BIN" -keel-rev "$KEEL_REV" -keel-note "$KEEL_NOTE" \
	-keel-base "$KEEL_BASE_BIN" -keel-base-rev "$KEEL_BASE_REV" \
	-mosquitto "$MOSQUITTO" \
	-reps "$REPS" -duration "$DURATION" -warmup "$WARMUP" -v "$MQTT_VERSION" \
	-only "$ONLY" -tmp "$WORK/runs" -out "$OUT" -notes "$NOTES" -extra "$EXTRA" -carry "$CARRY" -save "$SAVE" \
	-command "${BASE:+BASE=$BASE }${REV:+REV=$REV }REPS=$REPS DURATION=$DURATION WARMUP=$WARMUP MQTT_VERSION=$MQTT_VERSION${ONLY:+ ONLY='$ONLY'} bench/matrix.sh"
