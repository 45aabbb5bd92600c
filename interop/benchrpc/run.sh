#!/usr/bin/env bash
# make bench-rpc: oslogo, the bare amqp091-go floor and Python oslo.messaging,
# in one run on the same broker; JSON lines to $OUT, then the table and chart.
set -euo pipefail
cd "$(dirname "$0")/../.."
# Without BENCH_URL the run gets a vhost of its own, deleted at the end.
if [ -z "${BENCH_URL:-}" ]; then
	vhost="oslogo_bench_$$"
	rabbitmqctl -q add_vhost "$vhost"
	trap 'rabbitmqctl -q delete_vhost "$vhost"' EXIT
	rabbitmqctl -q set_permissions -p "$vhost" guest '.*' '.*' '.*'
	BENCH_URL="rabbit://guest:guest@127.0.0.1:5672/$vhost"
fi
URL=$BENCH_URL
COUNT=${BENCH_COUNT:-3000}
PYCOUNT=${BENCH_PYCOUNT:-1500}
SIZE=${BENCH_SIZE:-64}
OUT=${BENCH_OUT:-docs/bench/rpc-results.jsonl}
BIN=${BENCH_BIN:-bin/oslogo}
mkdir -p "$(dirname "$OUT")"
: >"$OUT"
run() { "$@" | tail -1 | tee -a "$OUT"; }

# Every row is measured ROUNDS times (the calls interleaved with their
# floors) and interop/benchrpc keeps the run with the median rate: the
# machine is shared, and a single run can land on a busy second.
ROUNDS=${BENCH_ROUNDS:-3}
for c in 1 8; do
	for _ in $(seq "$ROUNDS"); do
		run "$BIN" bench --url "$URL" --mode bare-call --concurrency $c --count "$COUNT" --size "$SIZE"
		run "$BIN" bench --url "$URL" --mode bare-call-wire --concurrency $c --count "$COUNT" --size "$SIZE"
		run "$BIN" bench --url "$URL" --mode call --concurrency $c --count "$COUNT" --size "$SIZE"
	done
done
for _ in $(seq "$ROUNDS"); do
	run "$BIN" bench --url "$URL" --mode cast --concurrency 8 --count "$((COUNT * 2))" --size "$SIZE"
	run "$BIN" bench --url "$URL" --mode notify --concurrency 8 --count "$((COUNT * 2))" --size "$SIZE"
done

# Python oslo.messaging: its own server process and client.
topic="pybench_$$"
coproc PYSRV { /usr/bin/python3 interop/python/bench.py server "$URL" "$topic"; }
read -r ready <&"${PYSRV[0]}"
for _ in $(seq "$ROUNDS"); do
	for c in 1 8; do
		run /usr/bin/python3 interop/python/bench.py call "$URL" "$topic" $c "$PYCOUNT" "$SIZE"
	done
	run /usr/bin/python3 interop/python/bench.py cast "$URL" "$topic" 8 "$((PYCOUNT * 2))" "$SIZE"
done
eval "exec ${PYSRV[1]}>&-"
wait "$PYSRV_PID" || true

go run ./interop/benchrpc -in "$OUT" -png docs/bench/rpc.png
