#!/usr/bin/env bash
# Measures the two seams of issue 9 (a core that never waits for an fsync)
# before and after the change, interleaved rep by rep:
#
#   burst:  5,000 clean-start reconnects over stored persistent sessions,
#           50 at a time, beside a synchronous QoS 1 publisher; against keel
#           built from REV_BEFORE and REV_AFTER, and Mosquitto in memory;
#   expiry: 10,000 persistent 5.0 sessions restored after kill -9 expiring
#           together, beside 4 synchronous QoS 1 publishers; keel only.
#
#   bench/seams.sh
#   REPS=5 REV_BEFORE=a3f6d70 REV_AFTER=main bench/seams.sh
#   PROFILES=/tmp/prof bench/seams.sh      # keel's CPU profile of each expiry window
#
# Environment: REPS (3), REV_BEFORE (a3f6d70), REV_AFTER (HEAD),
# BURST_N (5000), CONCURRENCY (50), MQTT_VERSION (4: the burst in 3.1.1;
# 5), EXPIRY_N (10000), EXPIRY (5, seconds), DATA_ROOT (where the brokers'
# data directories go; default $TMPDIR or /tmp), PROFILES (a directory).
# keel is built from `git archive REV` of each revision; the load generator
# from the work tree. Every process started here is stopped by pid on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${REPS:-3}
REV_BEFORE=${REV_BEFORE:-a3f6d70}
REV_AFTER=${REV_AFTER:-HEAD}
BURST_N=${BURST_N:-5000}
CONCURRENCY=${CONCURRENCY:-50}
MQTT_VERSION=${MQTT_VERSION:-4}
EXPIRY_N=${EXPIRY_N:-10000}
EXPIRY=${EXPIRY:-5}
DATA_ROOT=${DATA_ROOT:-${TMPDIR:-/tmp}}
PROFILES=${PROFILES:-}

. bench/lib.sh
ensure_mosquitto
make_work "$DATA_ROOT"

build_keel() { # REV OUT
	local rev dir
	rev=$(git rev-parse "$1^{commit}")
	dir=$WORK/src-${rev:0:12}
	mkdir -p "$dir"
	git archive "$rev" | tar -x -C "$dir"
	(cd "$dir" && go build -o "$2" ./cmd/keel)
	echo "$rev"
}
BEFORE_REV=$(build_keel "$REV_BEFORE" "$WORK/keel-before")
AFTER_REV=$(build_keel "$REV_AFTER" "$WORK/keel-after")
go build -o "$WORK/bench" ./bench
[ -n "$PROFILES" ] && mkdir -p "$PROFILES"

mkdir -p "$WORK/runs"
run_child "$WORK/bench" seams \
	-keel-before "$WORK/keel-before" -rev-before "$REV_BEFORE ($BEFORE_REV)" \
	-keel-after "$WORK/keel-after" -rev-after "$REV_AFTER ($AFTER_REV)" \
	-mosquitto "$MOSQUITTO" -reps "$REPS" \
	-burst-n "$BURST_N" -concurrency "$CONCURRENCY" -v "$MQTT_VERSION" \
	-expiry-n "$EXPIRY_N" -expiry "$EXPIRY" -tmp "$WORK/runs" ${PROFILES:+-profiles "$PROFILES"}
