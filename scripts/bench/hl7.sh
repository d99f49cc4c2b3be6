#!/usr/bin/env bash
# HL7 v2 over MLLP throughput and ACK latency: radbridge's daemon (durable
# JetStream commit with fsync before every ACK, and the same with
# --fsync=false) against the no-op receiver (our MLLP receiver + parser,
# handler stores nothing) and a constant-ACK MLLP server (the baseline).
# All run in this one script so the ratios compare like with like.
#
#   scripts/bench/hl7.sh            # N=10000 messages, 1 and 8 connections
#   N=2000 CONNS="1 4" scripts/bench/hl7.sh
#   RATES="500 1000 2000" scripts/bench/hl7.sh   # also the default daemon at these offered rates (8 connections, paced)
#
# Prints a Markdown table. Everything on 127.0.0.1, bounded, stops itself.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/bench/lib.sh

N=${N:-10000}
CONNS=${CONNS:-"1 8"}
WARM=${WARM:-500}
WORK=$(mktemp -d /tmp/rb-bench-hl7.XXXXXX)
trap cleanup EXIT INT TERM

echo "# machine: nproc $(nproc), $(go version | awk '{print $3, $4}'), $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD)" >&2
go build -o "$WORK/radbridge" ./cmd/radbridge
go build -o "$WORK/hl7load" ./cmd/hl7load
RB=$WORK/radbridge
LOAD=$WORK/hl7load

RESULTS=$WORK/results.tsv
: >"$RESULTS"

# AWK_MS is an awk function: a Go duration as printed (µs, ms, ns, s) in ms.
AWK_MS='function ms(d) {
	if (d ~ /µs$/) { sub(/µs$/, "", d); return d / 1000 }
	if (d ~ /ms$/) { sub(/ms$/, "", d); return d + 0 }
	if (d ~ /ns$/) { sub(/ns$/, "", d); return d / 1e6 }
	if (d ~ /s$/)  { sub(/s$/, "", d);  return d * 1000 }
	return d
}'

# load NAME ADDR CONNS: warm up, then N messages; appends a TSV row.
load() {
	local name=$1 addr=$2 c=$3 out
	"$LOAD" -addr "$addr" -conns "$c" -n "$WARM" -duration 60s >/dev/null
	out=$("$LOAD" -addr "$addr" -conns "$c" -n "$N" -duration 300s)
	echo "$out" | sed "s/^/  [$name conns=$c] /" >&2
	if ! echo "$out" | grep -q "ACK codes map\[AA:$N\]"; then
		echo "warning: not every ACK was AA for $name conns=$c" >&2
	fi
	# sent N messages over C connections in T: R msgs/s / ACK latency p50 X p99 Y max Z
	echo "$out" | awk -v name="$name" -v c="$c" "$AWK_MS"'
		/msgs\/s/ { rate = $(NF-1) }
		/ACK latency/ { p50 = ms($4); p99 = ms($6) }
		END { printf "%s\t%s\t%s\t%.3f\t%.3f\n", name, c, rate, p50, p99 }' >>"$RESULTS"
}

# (c) baseline: constant ACK, no parsing.
A=127.0.0.1:$(free_port)
"$LOAD" -serve-ackonly "$A" -duration 900s >"$WORK/ackonly.log" 2>&1 &
ACK_PID=$!; PIDS+=("$ACK_PID")
wait_port "$A"
for c in $CONNS; do load ackonly "$A" "$c"; done
ACK_HWM=$(hwm_kb "$ACK_PID")
stop_pid "$ACK_PID"

# (b) our receiver and parser, handler stores nothing.
A=127.0.0.1:$(free_port)
"$LOAD" -serve-noop "$A" -duration 900s >"$WORK/noop.log" 2>&1 &
NOOP_PID=$!; PIDS+=("$NOOP_PID")
wait_port "$A"
for c in $CONNS; do load noop "$A" "$c"; done
NOOP_HWM=$(hwm_kb "$NOOP_PID")
stop_pid "$NOOP_PID"

# (d) the disk's raw write+fsync rate, in the daemon's data directory's
# file system: the floor of one durable record per fsync.
rawfsync() {
	local out
	out=$("$LOAD" -fsync-dir "$WORK" -n "${FSYNC_N:-5000}" -duration 120s)
	echo "$out" | sed "s/^/  [raw fsync] /" >&2
	echo "$out" | awk '/fsyncs\/s/ { for (i=1;i<=NF;i++) { if ($i=="fsyncs/s") r=$(i-1); if ($i=="p99") p=$(i+1) } print r, p }'
}
read -r RAW1 RAWP99_1 <<<"$(rawfsync)"

# (a) the daemon, durable (fsync before every ACK): group commit (the
# default), then every write fsynced on its own (--group-commit=false),
# then --fsync=false.
start_daemon "$WORK/data-fsync" "$WORK/daemon-fsync.log"
for c in $CONNS; do load daemon "$MLLP_ADDR" "$c"; done
D_HWM=$(hwm_kb "$DAEMON_PID")
# The ACK latency a RIS sees when it sends at its own pace, below the
# daemon's capacity: 8 connections offered RATE msg/s in all, latency from
# each message's due time (hl7load -rate).
PACED=$WORK/paced.tsv
: >"$PACED"
for r in ${RATES:-}; do
	out=$("$LOAD" -addr "$MLLP_ADDR" -conns 8 -rate "$r" -n "$N" -duration 300s)
	echo "$out" | sed "s/^/  [daemon paced rate=$r] /" >&2
	echo "$out" | awk -v r="$r" "$AWK_MS"'
		/msgs\/s$/ { got = $(NF-1) }
		/ACK latency/ { p50 = ms($4); p99 = ms($6); mx = ms($8) }
		END { printf "%s\t%s\t%.3f\t%.3f\t%.3f\n", r, got, p50, p99, mx }' >>"$PACED"
done
stop_pid "$DAEMON_PID"

start_daemon "$WORK/data-pw" "$WORK/daemon-pw.log" --group-commit=false
for c in $CONNS; do load daemon-perwrite "$MLLP_ADDR" "$c"; done
DP_HWM=$(hwm_kb "$DAEMON_PID")
stop_pid "$DAEMON_PID"
read -r RAW2 RAWP99_2 <<<"$(rawfsync)"

start_daemon "$WORK/data-nofsync" "$WORK/daemon-nofsync.log" --fsync=false
for c in $CONNS; do load daemon-nofsync "$MLLP_ADDR" "$c"; done
DN_HWM=$(hwm_kb "$DAEMON_PID")
stop_pid "$DAEMON_PID"

echo
echo "HL7 ORU^R01 (~0.4 KB), N=$N per row after $WARM warm-up messages; one message in flight per connection."
echo
echo "Raw write+fsync of 0.4 KB on the data directory's disk (same run): $RAW1/s (p99 $RAWP99_1) before the daemon rows, $RAW2/s (p99 $RAWP99_2) after; the ratio column uses the mean rate."
echo
echo "| receiver | conns | msg/s | ACK p50 ms | ACK p99 ms | msg/s vs ACK-only | msg/s vs no-op | msg/s vs raw fsync | peak RSS MB |"
echo "|---|---|---|---|---|---|---|---|---|"
awk -F'\t' -v h_ack="$ACK_HWM" -v h_noop="$NOOP_HWM" -v h_d="$D_HWM" -v h_dp="$DP_HWM" -v h_dn="$DN_HWM" -v raw="$(( (${RAW1%.*} + ${RAW2%.*}) / 2 ))" '
	{ name[NR]=$1; c[NR]=$2; rate[NR]=$3; p50[NR]=$4; p99[NR]=$5
	  if ($1=="ackonly") base[$2]=$3; if ($1=="noop") noop[$2]=$3 }
	END {
		label["ackonly"]="ACK-only server (baseline)"; label["noop"]="no-op receiver (our parser, no store)"
		label["daemon"]="**daemon, fsync, group commit (durable, default)**"; label["daemon-perwrite"]="daemon, fsync per write (--group-commit=false)"
		label["daemon-nofsync"]="daemon, --fsync=false"
		hwm["ackonly"]=h_ack; hwm["noop"]=h_noop; hwm["daemon"]=h_d; hwm["daemon-perwrite"]=h_dp; hwm["daemon-nofsync"]=h_dn
		for (i=1; i<=NR; i++)
			printf "| %s | %s | %d | %.3f | %.3f | %.2f× | %.2f× | %.2f× | %.0f |\n", label[name[i]], c[i], rate[i], p50[i], p99[i],
				rate[i]/base[c[i]], rate[i]/noop[c[i]], rate[i]/raw, hwm[name[i]]/1024
	}' "$RESULTS"
if [ -s "$PACED" ]; then
	echo
	echo "Default daemon (group commit), 8 connections, paced: N=$N messages offered at a fixed rate, ACK latency from each message's due time."
	echo
	echo "| offered msg/s | achieved msg/s | ACK p50 ms | ACK p99 ms | ACK max ms |"
	echo "|---|---|---|---|---|"
	awk -F'\t' '{ printf "| %d | %d | %.3f | %.3f | %.3f |\n", $1, $2, $3, $4, $5 }' "$PACED"
fi
echo
echo "Parser alone (same run): go test -run '^\$' -bench BenchmarkParseORU -benchmem ./hl7/"
echo
echo '```'
go test -run '^$' -bench BenchmarkParseORU -benchmem ./hl7/ | grep -E '^Benchmark'
echo '```'
