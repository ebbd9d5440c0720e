#!/usr/bin/env bash
# Measures keel's TLS and WebSocket listeners beside Mosquitto's own
# (issue 11, "Speed"), interleaved rep by rep (go run ./bench transports -h):
#
#   fan-in: the matrix's fanin-qos1-64 over TCP, TLS and WebSocket, keel
#           durable and Mosquitto in memory; target keel/mosquitto >= 1.3
#           over TLS and over WebSocket;
#   sync:   the matrix's sync-qos1 over TLS, beside an fsync probe; target
#           keel's PUBACK p50 within 0.25 ms of one fsync;
#   conns:  N connections over TLS, each a full handshake: time, broker CPU
#           per handshake, RSS per connection.
#
#   bench/transports.sh
#   REPS=5 N=19000 bench/transports.sh
#   PARTS=conns CONN_REPS=3 bench/transports.sh
#
# Environment: REPS (3), DURATION (5s), WARMUP (1s), MQTT_VERSION (5), N
# (10000), CONN_REPS (2), PARTS (fanin,sync,conns), DATA_ROOT (default
# $TMPDIR or /tmp: the disk measured), OUT (bench/TRANSPORTS.md: the
# report's section; its runs go to OUT with .json), INTO
# (bench/BENCHMARKS.md: the section is put there too, between its markers;
# empty: not), REV (a commit to measure instead of the work tree). Every
# process started here is stopped by pid on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${REPS:-3}
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
MQTT_VERSION=${MQTT_VERSION:-5}
N=${N:-10000}
CONN_REPS=${CONN_REPS:-2}
PARTS=${PARTS:-fanin,sync,conns}
OUT=${OUT:-bench/TRANSPORTS.md}
INTO=${INTO-bench/BENCHMARKS.md}
DATA_ROOT=${DATA_ROOT:-${TMPDIR:-/tmp}}

. bench/lib.sh
ensure_mosquitto
make_work "$DATA_ROOT"

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
(cd "$SRC" && go build -o "$WORK/bench" ./bench && go build -o "$WORK/keel" ./cmd/keel)

# N connections from a few source addresses need the descriptors.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

mkdir -p "$WORK/runs"
run_child "$WORK/bench" transports \
	-keel "$WORK/keel" -keel-rev "$KEEL_REV" -mosquitto "$MOSQUITTO" \
	-reps "$REPS" -duration "$DURATION" -warmup "$WARMUP" -v "$MQTT_VERSION" \
	-n "$N" -conn-reps "$CONN_REPS" -parts "$PARTS" -tmp "$WORK/runs" \
	-out "$OUT" -save "${OUT%.md}.json" ${INTO:+-into "$INTO"} \
	-command "${REV:+REV=$REV }REPS=$REPS DURATION=$DURATION WARMUP=$WARMUP MQTT_VERSION=$MQTT_VERSION N=$N CONN_REPS=$CONN_REPS bench/transports.sh"
