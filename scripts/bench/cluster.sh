#!/usr/bin/env bash
# Clustered radbridge against the embedded store, for sizing: HL7 over MLLP
# (commit before every ACK) into
#   (a) one radbridge on its embedded JetStream, fsync on every write (baseline)
#   (b) one radbridge on a 3-server JetStream cluster, streams replicated 3 ways
#   (c) two radbridge processes on that cluster, loaded at the same time
# The cluster runs from packaging/cluster/nats-server.conf, all on 127.0.0.1
# of this one machine (so the three servers and radbridge share its cores and
# disk: a real cluster has a host each).
#
#   scripts/bench/cluster.sh           # N=5000 messages per row, 4 connections
#   N=2000 CONNS=8 scripts/bench/cluster.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/bench/lib.sh

N=${N:-5000}
CONNS=${CONNS:-4}
WORK=$(mktemp -d /tmp/rb-bench-cluster.XXXXXX)
trap cleanup EXIT INT TERM

echo "# machine: nproc $(nproc), $(go version | awk '{print $3, $4}'), $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD)" >&2
go build -o "$WORK/radbridge" ./cmd/radbridge
go build -o "$WORK/hl7load" ./cmd/hl7load
go build -o "$WORK/nats-server" github.com/nats-io/nats-server/v2
RB=$WORK/radbridge

# rate ADDR CONNS N: msgs/s of one hl7load run (all ACKs must be AA).
rate() {
	local out
	out=$("$WORK/hl7load" -addr "$1" -conns "$2" -n "$3" -duration 300s)
	echo "$out" | grep -q "ACK codes map\[AA:$3\]" || echo "warning: not every ACK was AA: $out" >&2
	echo "$out" | awk '/msgs\/s/ { print $(NF-1) }'
}

start_daemon "$WORK/embedded" "$WORK/embedded.log"
"$WORK/hl7load" -addr "$MLLP_ADDR" -conns "$CONNS" -n 500 >/dev/null
embedded=$(rate "$MLLP_ADDR" "$CONNS" "$N")
stop_pid "$DAEMON_PID"

routes=()
clients=()
for i in 1 2 3; do
	routes+=("nats://127.0.0.1:$(free_port)")
	clients+=("127.0.0.1:$(free_port)")
done
for i in 0 1 2; do
	NATS_NAME=n$((i + 1)) NATS_LISTEN=${clients[$i]} NATS_STORE_DIR=$WORK/nats$i \
		NATS_CLUSTER_LISTEN=${routes[$i]#nats://} NATS_ROUTE_1=${routes[0]} NATS_ROUTE_2=${routes[1]} NATS_ROUTE_3=${routes[2]} \
		"$WORK/nats-server" -c packaging/cluster/nats-server.conf >"$WORK/nats$i.log" 2>&1 &
	PIDS+=($!)
done
for i in $(seq 1 300); do
	grep -q "metadata leader" "$WORK"/nats*.log && break
	sleep 0.1
done
url="nats://${clients[0]},nats://${clients[1]},nats://${clients[2]}"
start_daemon "$WORK/a" "$WORK/a.log" --nats-url "$url" --nats-replicas 3 --node-id a
A_MLLP=$MLLP_ADDR
"$WORK/hl7load" -addr "$A_MLLP" -conns "$CONNS" -n 500 >/dev/null
r3=$(rate "$A_MLLP" "$CONNS" "$N")
start_daemon "$WORK/b" "$WORK/b.log" --nats-url "$url" --nats-replicas 3 --node-id b
B_MLLP=$MLLP_ADDR
rate "$A_MLLP" "$CONNS" "$N" >"$WORK/ra" &
ra=$!
rate "$B_MLLP" "$CONNS" "$N" >"$WORK/rb" &
rb=$!
wait $ra $rb
two=$(awk '{ s += $1 } END { print s }' "$WORK/ra" "$WORK/rb")

echo
echo "HL7 ORU^R01 (~0.4 KB), N=$N per process, $CONNS connections each, one message in flight per connection."
echo
echo "| store | radbridge processes | msg/s (all processes) | vs embedded |"
echo "|---|---|---|---|"
printf "| embedded JetStream, fsync every write (baseline) | 1 | %d | 1.00× |\n" "$embedded"
awk -v r="$r3" -v e="$embedded" 'BEGIN { printf "| 3-server JetStream cluster, R3 | 1 | %d | %.2f× |\n", r, r / e }'
awk -v r="$two" -v e="$embedded" 'BEGIN { printf "| 3-server JetStream cluster, R3 | 2 | %d | %.2f× |\n", r, r / e }'
