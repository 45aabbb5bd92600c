# soak: ten minutes of mixed RPC and notification load on the embedded broker
# with 1,000 idle connections and 10,000 queues beside it; broker RSS and
# goroutines sampled every second into docs/bench/soak.jsonl and plotted in
# docs/bench/soak.png. Fails when either grows or a call fails. Not in CI.
.PHONY: soak
SOAK_ARGS ?= -duration 10m -conns 1000 -queues 10000

soak: build
	$(GO) run ./internal/soak -bin $(BIN) $(SOAK_ARGS)
