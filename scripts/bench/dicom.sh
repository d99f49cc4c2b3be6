#!/usr/bin/env bash
# DICOM C-STORE throughput and peak memory: radbridge's daemon (commit to the
# JetStream log with fsync before every C-STORE answer), the same with
# --store-dir (Part-10 file written and fsynced, then the commit), against
# DCMTK storescp writing bit-preserving files to disk (the baseline), for
# instances of about 64 KB, 512 KB and 8 MB, over 1 association and over
# 4 parallel storescu processes (4 associations, files split 4 ways).
# All in this one script so the ratios compare like with like.
#
#   scripts/bench/dicom.sh
#   SIZES="64:2000 512:800 8192:64" PAR=4 scripts/bench/dicom.sh   # SIZE_KB:COUNT
#   RECEIVERS="storescp daemon-store" ASSOCS=1 scripts/bench/dicom.sh   # some rows only
#   BASE=/path/to/other/tree scripts/bench/dicom.sh   # also that tree's daemon, same cells
#
# With BASE, each cell runs storescp, then the other tree's daemon and this
# tree's alternately (base, new; new, base for --store-dir), and the table
# adds their rows; "vs storescp" is always against storescp of the same cell.
#
# Needs dcmtk, gcc, /usr/bin/python3 with pydicom. Prints a Markdown table.
# Everything on 127.0.0.1 (storescp through ../shared/tools/loopback_bind.c
# or $SHIM), bounded, cleans up after itself.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/bench/lib.sh

SIZES=${SIZES:-"64:2000 512:800 8192:64"}
PAR=${PAR:-4}
ASSOCS=${ASSOCS:-"1 $PAR"}
RECEIVERS=${RECEIVERS:-"storescp daemon daemon-store"}
BASE=${BASE:-}
export TCP_NODELAY=1 # Debian's DCMTK stalls ~40 ms per exchange without it
WORK=$(mktemp -d /tmp/rb-bench-dicom.XXXXXX)
trap cleanup EXIT INT TERM

echo "# machine: nproc $(nproc), $(go version | awk '{print $3, $4}'), $(storescp --version 2>&1 | head -1), $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD)" >&2
go build -o "$WORK/radbridge" ./cmd/radbridge
RB=$WORK/radbridge
RB_NEW=$RB
if [ -n "$BASE" ]; then
	(cd "$BASE" && go build -o "$WORK/radbridge-base" ./cmd/radbridge)
	echo "# base: $BASE, commit $(git -C "$BASE" rev-parse --short HEAD)" >&2
fi
SHIM_SRC=${SHIM_SRC:-../shared/tools/loopback_bind.c}
[ -f "$SHIM_SRC" ] || SHIM_SRC=/work/shared/tools/loopback_bind.c
gcc -shared -fPIC -O2 -o "$WORK/libloopback_bind.so" "$SHIM_SRC" -ldl

RESULTS=$WORK/results.tsv
: >"$RESULTS"

# sample_hwm PID OUT: until PID exits, keep in OUT the largest VmHWM of PID
# or any of its children (storescp --fork serves each association in a child).
sample_hwm() {
	local pid=$1 out=$2 max=0 v
	while kill -0 "$pid" 2>/dev/null; do
		v=$(hwm_tree_kb "$pid")
		[ "$v" -gt "$max" ] && max=$v && echo "$max" >"$out"
		sleep 0.02
	done
}

# send ADDR DIR NASSOC LOG: storescu over 1 association (whole DIR) or one
# storescu per part directory; prints elapsed seconds.
send() {
	local addr=$1 dir=$2 n=$3 log=$4 t0 t1 pids=() p rc=0
	t0=$(date +%s.%N)
	if [ "$n" -eq 1 ]; then
		storescu +sd +r -aet BENCH -aec RADBRIDGE "${addr%:*}" "${addr##*:}" "$dir" >"$log" 2>&1 || rc=$?
	else
		for p in $(seq 0 $((n - 1))); do
			storescu +sd +r -aet BENCH -aec RADBRIDGE "${addr%:*}" "${addr##*:}" "$dir/part$p" >"$log.$p" 2>&1 &
			pids+=($!)
		done
		for p in "${pids[@]}"; do wait "$p" || rc=$?; done
		cat "$log".* >>"$log"
	fi
	t1=$(date +%s.%N)
	if [ "$rc" -ne 0 ] || grep -qE '^(E|F):' "$log"; then
		echo "storescu failed (rc $rc), see $log:" >&2
		grep -E '^(E|F|W):' "$log" | head -5 >&2
		return 1
	fi
	echo "$t1 - $t0" | bc -l
}

# record TARGET SIZE_KB NASSOC COUNT BYTES SECONDS HWM_KB
record() {
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RESULTS"
	echo "  [$1 ${2}KB assoc=$3] $4 files in ${6}s, peak RSS ${7} kB" >&2
}

want() { case " $RECEIVERS " in *" $1 "*) return 0 ;; esac; return 1; }

# run_storescp SIZE_KB NASSOC COUNT BYTES DIR: the baseline, DCMTK storescp,
# +B to disk, --fork for parallel associations.
run_storescp() {
	local kb=$1 n=$2 count=$3 bytes=$4 dir=$5 od port fork=() secs got hwm
	od=$WORK/scp-out
	rm -rf "$od"; mkdir -p "$od"
	port=$(free_port)
	[ "$n" -gt 1 ] && fork=(--fork)
	LD_PRELOAD=$WORK/libloopback_bind.so storescp "${fork[@]}" +B +xa -aet RADBRIDGE -pdu 65536 -od "$od" "$port" >"$WORK/storescp.log" 2>&1 &
	SCP_PID=$!; PIDS+=("$SCP_PID")
	wait_port "127.0.0.1:$port"
	if ss -ltnH "sport = :$port" | grep -vq '127.0.0.1'; then echo "storescp is not on loopback only" >&2; exit 1; fi
	sample_hwm "$SCP_PID" "$WORK/scp.hwm" &
	SAMP=$!; PIDS+=("$SAMP")
	secs=$(send "127.0.0.1:$port" "$dir" "$n" "$WORK/storescu.log")
	got=$(find "$od" -type f | wc -l)
	[ "$got" -eq "$count" ] || echo "warning: storescp wrote $got of $count files" >&2
	hwm=$(cat "$WORK/scp.hwm" 2>/dev/null || echo 0)
	stop_pid "$SCP_PID"; stop_pid "$SAMP"
	record storescp "$kb" "$n" "$count" "$bytes" "$secs" "$hwm"
	rm -rf "$od"
}

# run_daemon TARGET SIZE_KB NASSOC COUNT BYTES DIR BINARY: the daemon, which
# commits before every C-STORE answer; TARGET *-store adds --store-dir
# (Part-10 file made durable as well).
run_daemon() {
	local target=$1 kb=$2 n=$3 count=$4 bytes=$5 dir=$6 secs got extra=()
	RB=$7
	rm -rf "$WORK/data" "$WORK/store"
	case $target in *-store) mkdir -p "$WORK/store"; extra=(--store-dir "$WORK/store") ;; esac
	start_daemon "$WORK/data" "$WORK/$target.log" "${extra[@]}"
	secs=$(send "$DICOM_ADDR" "$dir" "$n" "$WORK/storescu.log")
	if [ ${#extra[@]} -gt 0 ]; then
		got=$(find "$WORK/store" -type f -name '*.dcm' ! -name '.incoming-*' | wc -l)
		[ "$got" -ge "$count" ] || echo "warning: --store-dir holds $got files for $count sent" >&2
	fi
	record "$target" "$kb" "$n" "$count" "$bytes" "$secs" "$(hwm_kb "$DAEMON_PID")"
	stop_pid "$DAEMON_PID"
	rm -rf "$WORK/data" "$WORK/store"
}

for sc in $SIZES; do
	kb=${sc%%:*}
	count=${sc##*:}
	dir=$WORK/files-$kb
	study=1.2.826.0.1.3680043.8.498.$(date +%s%N | cut -c1-18)$kb
	/usr/bin/python3 scripts/bench/gen_dicom.py "$dir" "$kb" "$count" "$PAR" "$study"
	bytes=$(du -sb "$dir" | awk '{print $1}')
	for n in $ASSOCS; do
		if want storescp; then run_storescp "$kb" "$n" "$count" "$bytes" "$dir"; fi
		if want daemon; then
			if [ -n "$BASE" ]; then run_daemon base "$kb" "$n" "$count" "$bytes" "$dir" "$WORK/radbridge-base"; fi
			run_daemon daemon "$kb" "$n" "$count" "$bytes" "$dir" "$RB_NEW"
		fi
		if want daemon-store; then
			run_daemon daemon-store "$kb" "$n" "$count" "$bytes" "$dir" "$RB_NEW"
			if [ -n "$BASE" ]; then run_daemon base-store "$kb" "$n" "$count" "$bytes" "$dir" "$WORK/radbridge-base"; fi
		fi
	done
	rm -rf "$dir"
done

echo
echo "C-STORE of synthetic CT instances (explicit VR LE), storescu +sd +r, TCP_NODELAY=1; storescp +B +xa -pdu 65536 (no fsync), --fork for parallel associations; radbridge advertises a 64 KB max PDU too."
echo
echo "| size | assoc | receiver | files | inst/s | MB/s | vs storescp | peak RSS MB |"
echo "|---|---|---|---|---|---|---|---|"
awk -F'\t' '
	{ t[NR]=$1; kb[NR]=$2; n[NR]=$3; c[NR]=$4; b[NR]=$5; s[NR]=$6; h[NR]=$7
	  if ($1=="storescp") base[$2 "/" $3]=$4/$6 }
	END {
		label["storescp"]="storescp +B to disk (baseline)"; label["daemon"]="**radbridge (commit, fsync)**"; label["daemon-store"]="radbridge --store-dir (file fsync + commit)"; label["base"]="main: radbridge"; label["base-store"]="main: radbridge --store-dir"
		for (i=1; i<=NR; i++) {
			r=c[i]/s[i]; bs=base[kb[i] "/" n[i]]
			printf "| %s | %s | %s | %d | %.0f | %.1f | %s | %.0f |\n", (kb[i]>=1024 ? kb[i]/1024 " MB" : kb[i] " KB"), n[i], label[t[i]], c[i], r, b[i]/s[i]/1048576, (bs>0 ? sprintf("%.2f×", r/bs) : "–"), h[i]/1024
		}
	}' "$RESULTS"
