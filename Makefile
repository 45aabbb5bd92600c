# The two commands that do everything on a fresh machine:
#   make demo   runs `oslogo demo` (the scenario of the seed documents)
#   make test   installs and starts what the tests need, then runs every test with -race
GO ?= go
BIN := bin/oslogo

.PHONY: all build demo test test-unit setup vet staticcheck lint

all: build

build:
	$(GO) build -o $(BIN) ./cmd/oslogo

demo: build
	./$(BIN) demo

# setup installs the real peers (Python oslo.messaging, pika, kombu, amqp-tools,
# garagemq, amqp-specs) and makes sure RabbitMQ is up on 127.0.0.1:5672.
setup:
	bash scripts/setup.sh

test: setup vet staticcheck
	$(GO) test -race -count=1 -p 1 -timeout 60m ./...

# test-unit skips the set-up step, for quick local loops.
test-unit:
	$(GO) test -race -count=1 ./...

vet:
	$(GO) vet ./...

staticcheck:
	$(GO) tool staticcheck ./...

-include mk/*.mk
