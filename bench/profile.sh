#!/usr/bin/env bash
# Profiles Keel under one load: starts a fresh keel (fresh data directory,
# --metrics on a free port), runs the load generator with the given flags,
# and while it runs takes a CPU profile from /debug/pprof/profile and, when
# perf is installed, counts Keel's fdatasync and write syscalls. Prints the
# load's summary, messages per fdatasync, and `go tool pprof -top`.
#
#   bench/profile.sh -pattern fanin -pub 1 -sub 1 -qos 1 -size 64 -window 1 -persistent
#   SECONDS_PROFILED=8 OUT=/tmp/prof bench/profile.sh -pattern pairs -pub 100 -qos 1 -size 100 -window 1 -persistent
#
# Environment: OUT (directory for cpu.pprof, top.txt, load.txt; default a new
# temporary directory, kept), SECONDS_PROFILED (8), DATA_ROOT (where the data
# directory goes: the disk being measured; default $TMPDIR or /tmp), KEEL (a
# keel binary instead of building ./cmd/keel), REV (build keel from `git
# archive REV` instead of the work tree). The load runs for
# SECONDS_PROFILED + 4 s after a 1 s warm-up; the profile starts 2 s in.
# Every process started here is stopped by pid on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -eq 0 ]; then
	sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
	exit 2
fi
PROF=${SECONDS_PROFILED:-8}
DATA_ROOT=${DATA_ROOT:-${TMPDIR:-/tmp}}
OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/keel-profile.XXXXXX")}
mkdir -p "$OUT"
WORK=$(mktemp -d "$DATA_ROOT/keel-profile.XXXXXX")
KEEL_PID="" LOAD_PID="" PERF_PID=""
cleanup() {
	for p in $PERF_PID $LOAD_PID $KEEL_PID; do
		kill "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

SRC=.
if [ -n "${REV:-}" ]; then
	mkdir -p "$WORK/src"
	git archive "$(git rev-parse "$REV^{commit}")" | tar -x -C "$WORK/src"
	SRC=$WORK/src
fi
(cd "$SRC" && go build -o "$WORK/bench" ./bench)
KEEL_BIN=${KEEL:-}
if [ -z "$KEEL_BIN" ]; then
	(cd "$SRC" && go build -o "$WORK/keel" ./cmd/keel)
	KEEL_BIN=$WORK/keel
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
MPORT=$(free_port)
"$KEEL_BIN" serve --listen "127.0.0.1:$PORT" --data "$WORK/data" --metrics "127.0.0.1:$MPORT" >"$OUT/keel.log" 2>&1 &
KEEL_PID=$!
for _ in $(seq 100); do
	curl -sf "127.0.0.1:$MPORT/metrics" >/dev/null 2>&1 && break
	sleep 0.1
done
received() { curl -sf "127.0.0.1:$MPORT/metrics" | awk '/^keel_messages_received_total/ {printf "%d", $2}'; }

"$WORK/bench" -addr "127.0.0.1:$PORT" -pid "$KEEL_PID" -q -warmup 1s -duration "$((PROF + 4))s" "$@" >"$OUT/load.txt" 2>&1 &
LOAD_PID=$!
sleep 3
r0=$(received)
if command -v perf >/dev/null 2>&1; then
	perf stat -x, -e syscalls:sys_enter_fdatasync,syscalls:sys_enter_write -p "$KEEL_PID" -o "$OUT/perf.txt" -- sleep "$PROF" >/dev/null 2>&1 &
	PERF_PID=$!
fi
curl -sf -o "$OUT/cpu.pprof" "127.0.0.1:$MPORT/debug/pprof/profile?seconds=$PROF"
r1=$(received)
[ -n "$PERF_PID" ] && { wait "$PERF_PID" 2>/dev/null || true; PERF_PID=""; }
wait "$LOAD_PID" || true
LOAD_PID=""

echo "== load: bench $*"
grep -v '^RESULT' "$OUT/load.txt" || true
msgs=$((r1 - r0))
echo "== during the ${PROF}s profile: $msgs PUBLISH received"
if [ -s "$OUT/perf.txt" ]; then
	syncs=$(awk -F, '/fdatasync/ {print $1}' "$OUT/perf.txt")
	writes=$(awk -F, '/sys_enter_write/ {print $1}' "$OUT/perf.txt")
	echo "   fdatasync $syncs, write() $writes (perf stat, the same ${PROF}s)"
	[ "${syncs:-0}" -gt 0 ] 2>/dev/null && python3 -c "print(f'   {$msgs/$syncs:.1f} messages per fdatasync, {$writes/max($msgs,1):.2f} write() per message')"
fi
go tool pprof -top "$KEEL_BIN" "$OUT/cpu.pprof" 2>/dev/null >"$OUT/top.txt"
go tool pprof -top -cum "$KEEL_BIN" "$OUT/cpu.pprof" 2>/dev/null >"$OUT/top-cum.txt"
echo "== go tool pprof -top (all of it in $OUT/top.txt, by cumulative time in $OUT/top-cum.txt)"
head -40 "$OUT/top.txt"
