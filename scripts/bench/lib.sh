# Shared helpers for scripts/bench/*.sh (sourced, not run).
# Everything listens on 127.0.0.1; every process started here is recorded in
# PIDS and stopped by the EXIT trap that the calling script installs.

PIDS=()

cleanup() {
	local p
	for p in "${PIDS[@]}"; do
		kill "$p" 2>/dev/null || true
	done
	for p in "${PIDS[@]}"; do
		wait "$p" 2>/dev/null || true
	done
	PIDS=()
	[ -n "${WORK:-}" ] && [ -z "${KEEP:-}" ] && rm -rf "$WORK"
}

# free_port prints a TCP port that was free on 127.0.0.1 a moment ago.
free_port() {
	/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# wait_port HOST:PORT waits up to 30 s until something accepts on it.
wait_port() {
	local hp=$1 i
	for i in $(seq 1 300); do
		if (exec 3<>"/dev/tcp/${hp%:*}/${hp##*:}") 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	echo "nothing listens on $hp" >&2
	return 1
}

# wait_ready URL [PID] waits up to 60 s for a 200 from URL (gives up if PID exits).
wait_ready() {
	local i
	for i in $(seq 1 600); do
		if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
		if [ -n "${2:-}" ] && ! kill -0 "$2" 2>/dev/null; then echo "process $2 exited before $1 was ready" >&2; return 1; fi
		sleep 0.1
	done
	echo "$1 not ready" >&2
	return 1
}

# hwm_kb PID prints the peak resident set (VmHWM, kB) of PID.
hwm_kb() {
	local v
	v=$(awk '/^VmHWM/ {print $2}' "/proc/$1/status" 2>/dev/null || true)
	echo "${v:-0}"
}

# hwm_tree_kb PID: the largest VmHWM of PID and its live children
# (storescp --fork serves each association in a forked child).
hwm_tree_kb() {
	local max=0 p v
	for p in $1 $(pgrep -P "$1" 2>/dev/null || true); do
		v=$(hwm_kb "$p")
		[ "$v" -gt "$max" ] && max=$v
	done
	echo "$max"
}

# start_daemon DATADIR LOG [extra flags...]: starts radbridge (RB binary) on
# free loopback ports; sets DAEMON_PID, MLLP_ADDR, DICOM_ADDR, HTTP_ADDR.
start_daemon() {
	local data=$1 log=$2
	shift 2
	MLLP_ADDR=127.0.0.1:$(free_port)
	DICOM_ADDR=127.0.0.1:$(free_port)
	HTTP_ADDR=127.0.0.1:$(free_port)
	"$RB" serve --data-dir "$data" --grpc-addr 127.0.0.1:0 --http-addr "$HTTP_ADDR" \
		--mllp-addr "$MLLP_ADDR" --dicom-addr "$DICOM_ADDR" \
		--log-format json --log-level warn "$@" >"$log" 2>&1 &
	DAEMON_PID=$!
	PIDS+=("$DAEMON_PID")
	wait_ready "http://$HTTP_ADDR/readyz" "$DAEMON_PID" || { cat "$log" >&2; return 1; }
}

# stop_pid PID: stop one process we started and wait for it.
stop_pid() {
	kill "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}
