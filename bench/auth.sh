#!/usr/bin/env bash
# Measures what authentication and ACLs cost (issue 12, "Speed"), keel and
# Mosquitto side by side, interleaved rep by rep (go run ./bench auth -h):
#
#   fan-in:   the matrix's fanin-qos1-64 on keel and Mosquitto, each without
#             authentication and with a password file (keel passwd -b, $7$
#             at 210,000 iterations) and a 1,000-rule ACL, every client
#             logged in; targets keel-auth/keel >= 0.9 and
#             keel-auth/mosquitto-auth >= 1.3;
#   connects: new logins offered at CONNECT_RATE per second against keel
#             (verification cap at its default and at each of CAPS) and
#             Mosquitto with the same files, beside a synchronous QoS 1
#             publisher.
#
#   bench/auth.sh
#   REPS=3 PARTS=connects CAPS=1,4 bench/auth.sh
#   REV=HEAD bench/auth.sh          # measure a commit, not the work tree
#
# Environment: REPS (5), DURATION (5s fan-in measured per run), WARMUP (1s),
# MQTT_VERSION (5), CONNECT_RATE (1000), CONNECT_DURATION (10s),
# CONNECT_INFLIGHT (500), CAPS (2,16: max_password_verifications values
# besides the default), PARTS (fanin,connects), DATA_ROOT (default $TMPDIR
# or /tmp), OUT (bench/AUTH.md: the report's section; its runs go to
# OUT with .json), INTO (bench/BENCHMARKS.md: the section is put there too,
# between its markers; empty: not). Every process started here is stopped
# by pid on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${REPS:-5}
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
MQTT_VERSION=${MQTT_VERSION:-5}
CONNECT_RATE=${CONNECT_RATE:-1000}
CONNECT_DURATION=${CONNECT_DURATION:-10s}
CONNECT_INFLIGHT=${CONNECT_INFLIGHT:-500}
CAPS=${CAPS:-2,16}
PARTS=${PARTS:-fanin,connects}
OUT=${OUT:-bench/AUTH.md}
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

mkdir -p "$WORK/runs"
run_child "$WORK/bench" auth \
	-keel "$WORK/keel" -keel-rev "$KEEL_REV" -mosquitto "$MOSQUITTO" \
	-reps "$REPS" -duration "$DURATION" -warmup "$WARMUP" -v "$MQTT_VERSION" \
	-connect-rate "$CONNECT_RATE" -connect-duration "$CONNECT_DURATION" -connect-inflight "$CONNECT_INFLIGHT" \
	-caps "$CAPS" -parts "$PARTS" -tmp "$WORK/runs" -out "$OUT" -save "${OUT%.md}.json" ${INTO:+-into "$INTO"} \
	-command "${REV:+REV=$REV }REPS=$REPS DURATION=$DURATION WARMUP=$WARMUP MQTT_VERSION=$MQTT_VERSION CONNECT_RATE=$CONNECT_RATE CONNECT_DURATION=$CONNECT_DURATION CAPS=$CAPS bench/auth.sh"
