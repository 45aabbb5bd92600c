# Embedded broker targets.
.PHONY: bench-broker test-broker

# bench-broker measures the embedded broker beside a second RabbitMQ 3.10
# node and garagemq (and StrangeQ when STRANGEQ_BIN names a binary built by
# hand) with one amqp091-go load generator, writing
# docs/bench/broker-results.jsonl and docs/bench/broker-bench.png.
bench-broker:
	bash broker/internal/loadgen/bench.sh

# test-broker runs the broker's tests, real clients included.
test-broker:
	$(GO) test -race -count=1 -timeout 20m ./broker/...
