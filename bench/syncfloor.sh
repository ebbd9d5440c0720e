#!/usr/bin/env bash
# What bounds the synchronous QoS 1 PUBACK: runs, interleaved, REPS times
# each, the synchronous 1→1 QoS 1 load (64 B, persistent, 5.0) against
#   floor   bench floor: read, write + fdatasync, PUBACK, on one goroutine
#   handoff bench floor -handoff: the write + fdatasync on another goroutine
#   pebble  bench floor -pebble: the same with a synced Pebble DB.Set
#   keel    ./cmd/keel (built from the work tree, or KEEL=binary)
#   mosq    Mosquitto in memory (no disk at all)
# together with the fsync probe, back to back (as the matrix measures it)
# and paced (each write + fdatasync after an idle pause, as a synchronous
# client's syncs come). Prints every run and the medians.
#
#   bench/syncfloor.sh              # REPS=5, DURATION=4s
#   REPS=9 DURATION=5s bench/syncfloor.sh
#
# Environment: REPS (5), DURATION (4s measured per run, after 1 s warm-up),
# DATA_ROOT (the disk being measured; default $TMPDIR or /tmp), KEEL.
# Every process started here is stopped by pid.
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${REPS:-5}
DURATION=${DURATION:-4s}
DATA_ROOT=${DATA_ROOT:-${TMPDIR:-/tmp}}
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
WORK=$(mktemp -d "$DATA_ROOT/keel-syncfloor.XXXXXX")
SERVER_PID=""
cleanup() {
	if [ -n "$SERVER_PID" ]; then
		kill "$SERVER_PID" 2>/dev/null || true
		wait "$SERVER_PID" 2>/dev/null || true
	fi
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

go build -o "$WORK/bench" ./bench
KEEL_BIN=${KEEL:-}
if [ -z "$KEEL_BIN" ]; then
	go build -o "$WORK/keel" ./cmd/keel
	KEEL_BIN=$WORK/keel
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

RESULTS=$WORK/results.txt
: >"$RESULTS"
for rep in $(seq 1 "$REPS"); do
	"$WORK/bench" -fsync-probe "$DATA_ROOT" -fsync-paced 2>/dev/null | sed -n 's/^RESULT //p' |
		python3 -c 'import json,sys; r=json.load(sys.stdin); print("probe", r["prealloc_p50_us"], r.get("paced_p50_us", 0))' |
		while read -r _ b2b paced; do
			echo "rep $rep fsync back-to-back $b2b paced $paced" | tee -a "$RESULTS"
		done
	for what in floor handoff pebble keel mosq; do
		port=$(free_port)
		dir=$WORK/data-$what-$rep
		mkdir -p "$dir"
		case $what in
		floor) "$WORK/bench" floor -listen "127.0.0.1:$port" -dir "$dir" 2>/dev/null & ;;
		handoff) "$WORK/bench" floor -handoff -listen "127.0.0.1:$port" -dir "$dir" 2>/dev/null & ;;
		pebble) "$WORK/bench" floor -pebble -listen "127.0.0.1:$port" -dir "$dir" 2>/dev/null & ;;
		keel) "$KEEL_BIN" serve --listen "127.0.0.1:$port" --data "$dir" --log-level warn >/dev/null 2>&1 & ;;
		mosq)
			printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 1000000\n' "$port" >"$dir/m.conf"
			"$MOSQUITTO" -c "$dir/m.conf" >/dev/null 2>&1 &
			;;
		esac
		SERVER_PID=$!
		sleep 0.5
		line=$("$WORK/bench" -addr "127.0.0.1:$port" -pattern fanin -pub 1 -sub 1 -qos 1 -size 64 \
			-window 1 -persistent -warmup 1s -duration "$DURATION" -q 2>/dev/null | sed -n 's/^RESULT //p')
		kill "$SERVER_PID" 2>/dev/null || true
		wait "$SERVER_PID" 2>/dev/null || true
		SERVER_PID=""
		rm -rf "$dir"
		echo "$line" | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["ack_p50_us"], r["lost"])' |
			while read -r p50 lost; do
				echo "rep $rep $what PUBACK p50 $p50 lost $lost" | tee -a "$RESULTS"
			done
	done
done

python3 - "$RESULTS" <<'PY'
import re, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    m = re.match(r"rep (\d+) fsync back-to-back ([\d.]+) paced ([\d.]+)", line)
    if m:
        runs.setdefault("fsync back-to-back", []).append(float(m.group(2)))
        runs.setdefault("fsync paced", []).append(float(m.group(3)))
        continue
    m = re.match(r"rep (\d+) (\w+) PUBACK p50 ([\d.]+)", line)
    if m:
        runs.setdefault(m.group(2), []).append(float(m.group(3)))
med = {k: statistics.median(v) for k, v in runs.items()}
print()
print("medians over %d reps (us)" % len(runs.get("keel", [])))
for k in ["fsync back-to-back", "fsync paced", "mosq", "floor", "handoff", "pebble", "keel"]:
    if k in med:
        v = runs[k]
        extra = ""
        if not k.startswith("fsync") and "fsync back-to-back" in med:
            extra = "  (+%.0f over the back-to-back fsync, +%.0f over the paced one)" % (
                med[k] - med["fsync back-to-back"], med[k] - med.get("fsync paced", 0))
        print("  %-20s %6.0f  (%.0f-%.0f)%s" % (k, med[k], min(v), max(v), extra))
PY
