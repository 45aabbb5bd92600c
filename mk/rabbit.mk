# RPC over RabbitMQ: oslogo vs a bare amqp091-go loop vs Python oslo.messaging,
# in one run on the broker at BENCH_URL (default: a vhost of its own, deleted after, on
# 127.0.0.1:5672). Writes docs/bench/rpc-results.jsonl and docs/bench/rpc.png
# and prints the markdown table for docs/BENCHMARKS.md.
.PHONY: bench-rpc bench-peers test-rabbit

bench-rpc: setup build
	BENCH_BIN=$(BIN) bash interop/benchrpc/run.sh

# bench-peers: call (sequential), cast and fanout, one caller, for Python
# oslo.messaging 18.1.0 and 14.0.3 and oslogo in the defaults, kolla and
# kolla-qm configurations, in one run on 127.0.0.1:5672 (a vhost per row
# group). Writes docs/bench/peers-results.jsonl and prints the table of
# docs/BENCHMARKS.md.
bench-peers: setup build
	BENCH_BIN=$(BIN) bash interop/benchrpc/peers.sh

# test-rabbit runs the rabbit:// driver and interop tests only.
test-rabbit: setup
	$(GO) test -race -count=1 ./driver/rabbit/... ./interop/...
