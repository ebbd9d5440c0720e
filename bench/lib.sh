# Shared by matrix.sh and seams.sh: source it from the repository root.
#
#   ensure_mosquitto            # installs Mosquitto with apt-get if missing; sets MOSQUITTO
#   make_work "$DATA_ROOT"      # WORK: a scratch directory, removed on exit
#   run_child CMD ARGS...       # runs CMD in the background, stopped by its pid
#                               # (SIGTERM) if this script exits first; returns its status

ensure_mosquitto() {
	if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
		echo "$(basename "$0"): installing mosquitto" >&2
		local sudo=""
		[ "$(id -u)" = 0 ] || sudo=sudo
		$sudo apt-get update -qq
		DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq mosquitto >/dev/null
	fi
	MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
}

CHILD_PID=""
_cleanup() {
	if [ -n "$CHILD_PID" ] && kill -0 "$CHILD_PID" 2>/dev/null; then
		kill -TERM "$CHILD_PID" 2>/dev/null || true
		wait "$CHILD_PID" 2>/dev/null || true
	fi
	[ -n "${WORK:-}" ] && rm -rf "$WORK"
}

make_work() {
	WORK=$(mktemp -d "$1/keel-bench.XXXXXX")
	trap _cleanup EXIT
	trap 'exit 130' INT TERM
}

run_child() {
	"$@" &
	CHILD_PID=$!
	local status=0
	wait "$CHILD_PID" || status=$?
	CHILD_PID=""
	return "$status"
}
