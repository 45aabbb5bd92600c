#!/usr/bin/env bash
# make bench-peers: RPC throughput of Python oslo.messaging 18.1.0 (the peer
# of scripts/setup.d/40-oslo-messaging-18.sh), Debian's 14.0.3 and oslogo, in
# each configuration (defaults, kolla, kolla-qm: interop/python18/common.py),
# on the RabbitMQ at 127.0.0.1:5672, in one run. Each (implementation,
# configuration) gets a vhost of its own, deleted after (a vhost where the
# defaults declared the control exchange non-durable refuses the kolla
# configurations). Modes, one caller each: call (sequential), cast, fanout
# cast to one server; a cast counts once the server has run it.
# JSON lines go to $OUT, then interop/benchrpc prints the table.
set -euo pipefail
cd "$(dirname "$0")/../.."
env18=.peers/oslo18.env
[ -f "$env18" ] || { echo "bench-peers: $env18 missing: run make setup" >&2; exit 1; }
PY18=$(sed -n 's/^PYTHON=//p' "$env18")
PY18PATH=$(sed -n 's/^PYTHONPATH=//p' "$env18")
BIN=${BENCH_BIN:-bin/oslogo}
OUT=${BENCH_OUT:-docs/bench/peers-results.jsonl}
# 18.1's sequential call takes ~0.5 s, so it gets fewer calls.
PY18_CALLS=${BENCH_PY18_CALLS:-10}
CALLS=${BENCH_CALLS:-300}
CASTS=${BENCH_CASTS:-500}
ROW_TIMEOUT=${BENCH_ROW_TIMEOUT:-120}
mkdir -p "$(dirname "$OUT")"
: >"$OUT"
lockdir=$(mktemp -d)
vhosts=()
cleanup() {
	for v in "${vhosts[@]}"; do rabbitmqctl -q delete_vhost "$v" || true; done
	rm -rf "$lockdir"
}
trap cleanup EXIT

# oslogo reads the options from the URL query (Python reads them from the
# configuration file common.py writes).
query() {
	local q="rabbit_quorum_queue=true&rabbit_transient_quorum_queue=true&rabbit_stream_fanout=true&rabbit_qos_prefetch_count=10"
	case $1 in
	defaults) echo "" ;;
	kolla) echo "?$q" ;;
	kolla-qm) echo "?$q&use_queue_manager=true&hostname=oslogo-bench-$$&processname=oslogo-bench" ;;
	esac
}

# row IMPL CONFIG MODE CMD...: one JSON line, or an error line when the
# command fails or runs past ROW_TIMEOUT.
row() {
	local impl=$1 conf=$2 mode=$3
	shift 3
	local line rc=0
	line=$(timeout "$ROW_TIMEOUT" "$@" 2>/tmp/bench-peers-err.$$ | tail -1) || rc=$?
	if [ $rc -ne 0 ] || [ -z "$line" ]; then
		local why
		why=$(tail -1 /tmp/bench-peers-err.$$ | tr -d '"\\' | cut -c1-160)
		[ $rc -eq 124 ] && why="no result within ${ROW_TIMEOUT}s"
		line="{\"impl\":\"$impl\",\"config\":\"$conf\",\"mode\":\"$mode\",\"concurrency\":1,\"error\":\"$why\"}"
	elif [ "$impl" = oslogo ]; then
		line=$(echo "$line" | sed "s/^{/{\"config\":\"$conf\",/")
	fi
	rm -f /tmp/bench-peers-err.$$
	echo "$line" | tee -a "$OUT"
}

for conf in defaults kolla kolla-qm; do
	for impl in python-18.1 python-14.0.3 oslogo; do
		# 14.0.3 knows neither use_queue_manager nor hostname/processname:
		# its kolla-qm would be its kolla again.
		[ "$impl" = python-14.0.3 ] && [ "$conf" = kolla-qm ] && continue
		v="oslogo_bench_peers_$$_${impl//[.-]/}_${conf//-/}"
		rabbitmqctl -q add_vhost "$v"
		vhosts+=("$v")
		rabbitmqctl -q set_permissions -p "$v" guest '.*' '.*' '.*'
		url="rabbit://guest:guest@127.0.0.1:5672/$v"
		for mode in call cast fanout; do
			case $impl in
			python-18.1)
				n=$CASTS; [ "$mode" = call ] && n=$PY18_CALLS
				row "$impl" "$conf" "$mode" env PYTHONPATH="$PY18PATH" OSLO18_HOSTNAME="oslogo-bench-$$" \
					"$PY18" interop/python18/bench.py "$impl" "$url" "$conf" "$mode" "$n" ;;
			python-14.0.3)
				n=$CASTS; [ "$mode" = call ] && n=$CALLS
				row "$impl" "$conf" "$mode" env -u PYTHONPATH \
					/usr/bin/python3 interop/python18/bench.py "$impl" "$url" "$conf" "$mode" "$n" ;;
			oslogo)
				n=$CASTS; [ "$mode" = call ] && n=$CALLS
				row "$impl" "$conf" "$mode" env OSLO_LOCK_PATH="$lockdir" \
					"$BIN" bench --url "$url$(query "$conf")" --mode "$mode" --concurrency 1 --count "$n" ;;
			esac
		done
	done
done
rm -f /dev/shm/oslogo-bench-$$_*_qmanager
go run ./interop/benchrpc -peers -in "$OUT"
