#!/usr/bin/env bash
# Measures what the queue quotas and limits cost (issue 13, "Speed"): the
# matrix's fan-in 4→1 QoS 1, 64 B, window 64, persistent, on keel without
# any quota (every limit 0: none) and with quotas configured (queue quotas,
# subscription and topic limits, 100 [quota NAME] sections, the last
# matching every client), interleaved rep by rep on fresh data
# directories. Prints one line per run, then the medians and the ratio
# (target: with/without >= 0.95).
#
#   bench/quotas.sh
#   REPS=7 DURATION=5s bench/quotas.sh
#
# Environment: REPS (5), DURATION (4s measured per run), WARMUP (1s),
# DATA_ROOT (default $TMPDIR or /tmp). Every process started here is
# stopped by pid on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${REPS:-5}
DURATION=${DURATION:-4s}
WARMUP=${WARMUP:-1s}
DATA_ROOT=${DATA_ROOT:-${TMPDIR:-/tmp}}

. bench/lib.sh
make_work "$DATA_ROOT"
go build -o "$WORK/bench" ./bench
go build -o "$WORK/keel" ./cmd/keel
REV="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
git diff --quiet HEAD -- 2>/dev/null || REV="$REV (work tree modified)"

printf 'max_queued_messages = 0\nmax_queued_bytes = 0\nmax_memory_queue = 0\nmax_topic_levels = 0\n' >"$WORK/off.conf"
{
	printf 'max_queued_messages = 100000\nmax_queued_bytes = 1GiB\nmax_memory_queue = 10000\nqueue_full = refuse\n'
	printf 'max_subscriptions = 100\nmax_topic_levels = 16\nmax_topic_length = 1024\n'
	for i in $(seq 1 99); do printf '[quota q%d]\nclientid = nobody-%d-*\nmax_queued_messages = 10\n' "$i" "$i"; done
	printf '[quota all]\nclientid = *\nmax_queued_messages = 200000\nmax_queued_bytes = 2GiB\n'
} >"$WORK/on.conf"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

RESULTS=$WORK/results
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), keel $REV, $(nproc) cores, REPS=$REPS DURATION=$DURATION WARMUP=$WARMUP"
for rep in $(seq 1 "$REPS"); do
	for what in off on; do
		port=$(free_port)
		dir=$WORK/data-$what-$rep
		mkdir -p "$dir"
		"$WORK/keel" serve --config "$WORK/$what.conf" --listen "127.0.0.1:$port" --data "$dir" --log-level warn >/dev/null 2>&1 &
		KEEL_PID=$!
		CHILD_PID=$KEEL_PID
		for _ in $(seq 1 100); do
			(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
			sleep 0.05
		done
		line=$("$WORK/bench" -addr "127.0.0.1:$port" -pattern fanin -pub 4 -sub 1 -qos 1 -size 64 -window 64 \
			-persistent -warmup "$WARMUP" -duration "$DURATION" -q 2>/dev/null | sed -n 's/^RESULT //p')
		kill "$KEEL_PID" 2>/dev/null || true
		wait "$KEEL_PID" 2>/dev/null || true
		CHILD_PID=""
		rm -rf "$dir"
		echo "$line" | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["del_rate"], r["lost"], r["rejected"])' |
			while read -r rate lost rejected; do
				echo "rep $rep $what deliveries/s $rate lost $lost rejected $rejected" | tee -a "$RESULTS"
			done
	done
done

python3 - "$RESULTS" <<'PY'
import re, statistics, sys
runs = {"off": [], "on": []}
for line in open(sys.argv[1]):
    m = re.match(r"rep \d+ (\w+) deliveries/s ([\d.]+)", line)
    if m:
        runs[m.group(1)].append(float(m.group(2)))
off, on = statistics.median(runs["off"]), statistics.median(runs["on"])
ratios = sorted(b / a for a, b in zip(runs["off"], runs["on"]))
print()
print("| fan-in 4→1, QoS 1, 64 B, window 64, persistent | without quotas | with quotas | with/without | per-rep ratios |")
print("| --- | --- | --- | --- | --- |")
print("| deliveries/s, median of %d | %.0f (%.0f–%.0f) | %.0f (%.0f–%.0f) | %.3f | %s |" % (
    len(runs["off"]), off, min(runs["off"]), max(runs["off"]), on, min(runs["on"]), max(runs["on"]),
    on / off, " ".join("%.2f" % r for r in ratios)))
PY
