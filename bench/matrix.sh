#!/usr/bin/env bash
# Measures Keel and Mosquitto side by side on every scenario of the matrix
# (go run ./bench matrix -list) and rewrites bench/BENCHMARKS.md.
#
#   bench/matrix.sh                      # 3 reps x 5 s per scenario and broker
#   REPS=5 DURATION=10s bench/matrix.sh
#   ONLY='sync|pairs' OUT=/tmp/b.md bench/matrix.sh
#
# Environment: REPS (3), DURATION (5s measured per run), WARMUP (1s),
# MQTT_VERSION (5, or 4 for 3.1.1), ONLY (regexp of scenario names),
# OUT (bench/BENCHMARKS.md), DATA_ROOT (where brokers' data directories go:
# the disk being measured; default $TMPDIR or /tmp), KEEL (a keel binary to
# use instead of building ./cmd/keel).
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
DATA_ROOT=${DATA_ROOT:-${TMPDIR:-/tmp}}

if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
	echo "matrix: installing mosquitto" >&2
	SUDO=""
	[ "$(id -u)" = 0 ] || SUDO=sudo
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mosquitto >/dev/null
fi
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)

WORK=$(mktemp -d "$DATA_ROOT/keel-bench.XXXXXX")
MATRIX_PID=""
cleanup() {
	if [ -n "$MATRIX_PID" ] && kill -0 "$MATRIX_PID" 2>/dev/null; then
		kill -TERM "$MATRIX_PID" 2>/dev/null || true
		wait "$MATRIX_PID" 2>/dev/null || true
	fi
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

go build -o "$WORK/bench" ./bench

KEEL_NOTE=""
if [ -n "${KEEL:-}" ]; then
	KEEL_BIN=$KEEL
elif go build -o "$WORK/keel" ./cmd/keel 2>"$WORK/keel-build.log"; then
	KEEL_BIN=$WORK/keel
else
	KEEL_BIN=""
	KEEL_NOTE="go build ./cmd/keel failed: $(head -c 300 "$WORK/keel-build.log" | tr '\n' ' ')"
	echo "matrix: $KEEL_NOTE; measuring Mosquitto only" >&2
fi
KEEL_REV="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
git diff --quiet HEAD -- 2>/dev/null || KEEL_REV="$KEEL_REV (work tree modified)"

mkdir -p "$WORK/runs"
"$WORK/bench" matrix \
	-keel "$KEEL_BIN" -keel-rev "$KEEL_REV" -keel-note "$KEEL_NOTE" \
	-mosquitto "$MOSQUITTO" \
	-reps "$REPS" -duration "$DURATION" -warmup "$WARMUP" -v "$MQTT_VERSION" \
	-only "$ONLY" -tmp "$WORK/runs" -out "$OUT" \
	-command "REPS=$REPS DURATION=$DURATION WARMUP=$WARMUP MQTT_VERSION=$MQTT_VERSION${ONLY:+ ONLY='$ONLY'} bench/matrix.sh" &
MATRIX_PID=$!
status=0
wait "$MATRIX_PID" || status=$?
MATRIX_PID=""
exit "$status"
