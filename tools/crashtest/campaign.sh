#!/usr/bin/env bash
# The long crash campaign quoted in README.md: every mode, CRASHES kill -9s
# each (default 200), against the keel built from this tree. One summary
# line per run; exits non-zero if any run found a violation.
#
#   tools/crashtest/campaign.sh                 # all modes, QoS 1 and 2
#   CRASHES=50 MODES="online offline" QOS="2" tools/crashtest/campaign.sh
#   AUTH=1 CRASHES=30 tools/crashtest/campaign.sh   # with a password file and an ACL (-auth)
#   TLS=1 CRASHES=60 tools/crashtest/campaign.sh    # every client over TLS (-tls)
#   TLS=1 WS=1 CRASHES=60 tools/crashtest/campaign.sh   # over wss:// (-tls -ws)
#   DEDUP=1 CRASHES=60 tools/crashtest/campaign.sh  # retrying 5.0 producers, the dedup window on (-mode dedup)
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
# TLS=1: the broker's listener is TLS, every client connects over it.
TLS=${TLS:-0}
# WS=1: MQTT over WebSocket (with TLS=1: wss).
WS=${WS:-0}
# DEDUP=1: the dedup mode only (MQTT 5.0), and the window-off control run
# once, which must report duplicates.
DEDUP=${DEDUP:-0}
if [ "$DEDUP" = 1 ]; then
	MODES=dedup
	V=5
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

go build -o "$work/keel" ./cmd/keel || exit 2
go build -o "$work/crashtest" ./tools/crashtest || exit 2

status=0
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), keel $(git rev-parse --short HEAD), $(nproc) cores, CRASHES=$CRASHES V=$V AUTH=$AUTH TLS=$TLS WS=$WS DEDUP=$DEDUP"
for mode in $MODES; do
	for qos in $QOS; do
		args=(-keel "$work/keel" -mode "$mode" -qos "$qos" -v "$V" -crashes "$CRASHES"
			-duration 60m -timeout 90m -log warn)
		if [ "$AUTH" = 1 ]; then
			args+=(-auth)
		fi
		if [ "$TLS" = 1 ]; then
			args+=(-tls)
		fi
		if [ "$WS" = 1 ]; then
			args+=(-ws)
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
if [ "$DEDUP" = 1 ]; then
	# The control: the window off, the same producers; exit 1 (duplicates)
	# is the expected outcome, anything else fails the campaign.
	# Its work dir (kept on a violation) inside ours, removed on exit.
	mkdir -p "$work/control"
	line=$("$work/crashtest" -keel "$work/keel" -work "$work/control" -mode dedup -qos 1 -v 5 -crashes "$CRASHES" -dedup-window -1s \
		-duration 60m -timeout 90m -log warn 2>"$work/err.log" | tail -1)
	rc=$?
	case "$line" in
	*" lost=0 "*) ;;
	*) rc=99 ;;
	esac
	case "$line" in
	*" duplicated=0 "*) rc=99 ;;
	esac
	if [ $rc -ne 1 ]; then
		status=1
		tail -20 "$work/err.log" >&2
	fi
	echo "$line control exit=$rc (want 1: duplicates, nothing lost)"
fi
exit $status
