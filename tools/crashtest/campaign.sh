#!/usr/bin/env bash
# The long crash campaign quoted in README.md: every mode, CRASHES kill -9s
# each (default 200), against the keel built from this tree. One summary
# line per run; exits non-zero if any run found a violation.
#
#   tools/crashtest/campaign.sh                 # all modes, QoS 1 and 2
#   CRASHES=50 MODES="online offline" QOS="2" tools/crashtest/campaign.sh
#   AUTH=1 CRASHES=30 tools/crashtest/campaign.sh   # with a password file and an ACL (-auth)
#   BRIDGE=1 tools/crashtest/campaign.sh         # two keels bridged both ways (-bridge), modes online and offline
set -uo pipefail
cd "$(dirname "$0")/../.."

CRASHES=${CRASHES:-200}
MODES=${MODES:-"online offline replay-crash retain-will many-sessions"}
QOS=${QOS:-"1 2"}
V=${V:-4}
SESSIONS=${SESSIONS:-10000}
# Messages per session in many-sessions: enough publishing to fit CRASHES kills.
PER_SESSION=${PER_SESSION:-6}
# AUTH=1: the broker runs with a password file and an ACL, every client logs in.
AUTH=${AUTH:-0}
# BRIDGE=1: two keel processes, A bridged to B both ways, each killed in turn (-bridge).
BRIDGE=${BRIDGE:-0}
if [ "$BRIDGE" = 1 ]; then
	MODES=${MODES_BRIDGE:-"online offline"}
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

go build -o "$work/keel" ./cmd/keel || exit 2
go build -o "$work/crashtest" ./tools/crashtest || exit 2

status=0
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), keel $(git rev-parse --short HEAD), $(nproc) cores, CRASHES=$CRASHES V=$V AUTH=$AUTH BRIDGE=$BRIDGE"
for mode in $MODES; do
	for qos in $QOS; do
		args=(-keel "$work/keel" -mode "$mode" -qos "$qos" -v "$V" -crashes "$CRASHES"
			-duration 60m -timeout 90m -log warn)
		if [ "$AUTH" = 1 ]; then
			args+=(-auth)
		fi
		if [ "$BRIDGE" = 1 ]; then
			args+=(-bridge)
		fi
		if [ "$mode" = many-sessions ]; then
			args+=(-sessions "$SESSIONS" -per-session "$PER_SESSION")
		fi
		start=$(date +%s)
		line=$("$work/crashtest" "${args[@]}" 2>"$work/err.log" | tail -1)
		rc=$?
		if [ $rc -ne 0 ]; then
			status=1
			tail -20 "$work/err.log" >&2
		fi
		echo "$line seconds=$(( $(date +%s) - start )) exit=$rc"
	done
done
exit $status
