#!/usr/bin/env bash
# Soak: one radbridge at a steady mixed load for a bounded time, sampling its
# memory and goroutines from /metrics. By hand, not in CI:
#
#   SOAK_SECONDS=3600 scripts/soak.sh            # the hour-long run
#   SOAK_SECONDS=300 OUT=/tmp/soak scripts/soak.sh
#
# Load (all on 127.0.0.1): HL7 ORU^R01 over MLLP at about HL7_RATE msg/s
# (bursts of 50 from cmd/hl7load, each MSH-10 unique, one order updated again
# and again: steady state), a DICOM study of 2 series x 4 instances every
# STUDY_EVERY seconds with real storescu (a new study each time, PATIENTS
# patients in rotation, or a new patient for every study with PATIENTS=0),
# SUBSCRIBERS gRPC subscribers (radbridge tail), and a REST
# patient snapshot read every second. Samples every 30 s go to
# $OUT/samples.csv; the summary compares the last sample with the one after
# warm-up (first 5 minutes, or a tenth of a shorter run). DAEMON_FLAGS are
# added to serve's, e.g. a short --state-idle so that an hour shows what
# weeks of new patients do to the mapper's memory:
#
#   SOAK_SECONDS=3600 PATIENTS=0 DAEMON_FLAGS="--state-idle 5m" scripts/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench/lib.sh

SOAK_SECONDS=${SOAK_SECONDS:-3600}
HL7_RATE=${HL7_RATE:-20}
STUDY_EVERY=${STUDY_EVERY:-10}
SUBSCRIBERS=${SUBSCRIBERS:-8}
PATIENTS=${PATIENTS:-12}
DAEMON_FLAGS=${DAEMON_FLAGS:-}
OUT=${OUT:-soak-$(date -u +%Y%m%dT%H%M%SZ)}
WORK=$(mktemp -d)
trap cleanup EXIT
mkdir -p "$OUT"
: >"$OUT/errors.log"
export TCP_NODELAY=1

go build -o "$WORK/radbridge" ./cmd/radbridge
go build -o "$WORK/hl7load" ./cmd/hl7load
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)

grpc=127.0.0.1:$(free_port)
http=127.0.0.1:$(free_port)
mllp=127.0.0.1:$(free_port)
dicom=127.0.0.1:$(free_port)
"$WORK/radbridge" serve --data-dir "$WORK/data" --grpc-addr "$grpc" --http-addr "$http" \
	--mllp-addr "$mllp" --dicom-addr "$dicom" --study-quiet-period 3s --log-level warn $DAEMON_FLAGS \
	2>"$OUT/daemon.log" &
daemon=$!
PIDS+=("$daemon")
wait_ready "http://$http/readyz" "$daemon"

for _ in $(seq 1 "$SUBSCRIBERS"); do
	"$WORK/radbridge" tail --addr "$grpc" >/dev/null 2>&1 &
	PIDS+=($!)
done

end=$((SECONDS + SOAK_SECONDS))
burst=50
pause=$(awk -v b=$burst -v r="$HL7_RATE" 'BEGIN { printf "%.2f", b / r }')
(
	while [ $SECONDS -lt $end ]; do
		"$WORK/hl7load" -addr "$mllp" -n $burst -duration 30s >>"$WORK/hl7load.log" 2>&1 || echo "hl7load failed" >>"$OUT/errors.log"
		sleep "$pause"
	done
) &
PIDS+=($!)
(
	i=0
	while [ $SECONDS -lt $end ]; do
		i=$((i + 1))
		dir="$WORK/study"
		rm -rf "$dir"
		/usr/bin/python3 scripts/dicom/study.py "$dir" "1.2.826.0.1.3680043.10.1447.55.$i" "SOAK$([ "$PATIENTS" -gt 0 ] && echo $((i % PATIENTS)) || echo "$i")" "SOAKACC$i" 2 4 >/dev/null
		storescu -aet SOAK -aec RADBRIDGE +sd "${dicom%:*}" "${dicom##*:}" "$dir" >>"$WORK/storescu.log" 2>&1 || echo "storescu $i failed" >>"$OUT/errors.log"
		sleep "$STUDY_EVERY"
	done
) &
PIDS+=($!)
(
	while [ $SECONDS -lt $end ]; do
		code=$(curl -sS -o /dev/null -w '%{http_code}' "http://$http/v1/patients/SOAK1/imaging" || true)
		case $code in 200 | 404) ;; *) echo "snapshot read: $code" >>"$OUT/errors.log" ;; esac
		sleep 1
	done
) &
PIDS+=($!)

metric() { awk -v m="$1" '$1 == m { printf "%d", $2; exit }' "$WORK/metrics"; }
echo "seconds,rss_bytes,heap_inuse_bytes,goroutines,events,hl7_messages,patients_in_memory" >"$OUT/samples.csv"
start=$SECONDS
while [ $SECONDS -lt $end ]; do
	curl -fsS "http://$http/metrics" >"$WORK/metrics" || { echo "metrics scrape failed" >>"$OUT/errors.log"; sleep 30; continue; }
	events=$(awk '$1 ~ /^radbridge_events_emitted_total/ { s += $2 } END { printf "%d", s }' "$WORK/metrics")
	hl7=$(awk '$1 ~ /^radbridge_hl7_messages_total/ { s += $2 } END { printf "%d", s }' "$WORK/metrics")
	echo "$((SECONDS - start)),$(metric process_resident_memory_bytes),$(metric go_memstats_heap_inuse_bytes),$(metric go_goroutines),$events,$hl7,$(metric radbridge_mapper_patients_in_memory)" >>"$OUT/samples.csv"
	sleep 30
done

warm=$((SOAK_SECONDS / 10 < 300 ? SOAK_SECONDS / 10 : 300))
{
	echo "soak of radbridge $commit: ${SOAK_SECONDS}s, HL7 ~${HL7_RATE}/s, a study every ${STUDY_EVERY}s (patients: ${PATIENTS/#0/a new one each}), $SUBSCRIBERS subscribers, flags: ${DAEMON_FLAGS:-none}"
	awk -F, -v warm="$warm" 'NR > 1 {
		if (!w && $1 >= warm) { w = 1; r0 = $2; h0 = $3; g0 = $4 }
		if ($2 > rmax) rmax = $2
		if ($4 > gmax) gmax = $4
		r = $2; h = $3; g = $4; ev = $5; m = $6; t = $1; pm = $7
		if ($7 > pmax) pmax = $7
	} END {
		printf "after warm-up (%ds) -> end (%ds): RSS %.1f -> %.1f MB (max %.1f), heap in use %.1f -> %.1f MB, goroutines %d -> %d (max %d)\n", warm, t, r0/1e6, r/1e6, rmax/1e6, h0/1e6, h/1e6, g0, g, gmax
		printf "HL7 messages %d, events emitted %d, patients in the mapper'"'"'s memory at the end %d (max %d)\n", m, ev, pm, pmax
	}' "$OUT/samples.csv"
	echo "errors: $(wc -l <"$OUT/errors.log")"
} | tee "$OUT/summary.txt"
