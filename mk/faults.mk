# Fault scenarios (package faults, build tag "faults"): the embedded broker
# killed and its disk full, a three-node RabbitMQ cluster losing nodes in
# turn (oslogo and Python oslo.messaging), network faults through a proxy,
# an RPC server killed mid-stream, and a notification backlog beside RPC.
# Each scenario prints a FAULTS-RESULT JSON line; FAULTS_RESULTS=file
# collects them. FAULTS_SHORT=1 runs the short mode (one cluster kill, no
# Python, a 30 s backlog); FAULTS_RUN selects scenarios by test name, e.g.
# FAULTS_RUN='TestBrokerKill9|TestNetworkFaults' for the ones without a cluster.
# Needs root (tmpfs, RabbitMQ nodes as user rabbitmq) and `make setup`.
.PHONY: test-faults

FAULTS_RUN ?= .
FAULTS_SHORT ?=
FAULTS_TIMEOUT ?= 60m

# faults/cleanup.sh runs afterwards whatever the outcome: a test binary
# killed by its timeout leaves its tmpfs mounted and its RabbitMQ nodes up.
test-faults: setup
	status=0; $(GO) test -tags faults -race -count=1 -p 1 -v -timeout $(FAULTS_TIMEOUT) \
		$(if $(FAULTS_SHORT),-short) -run '$(FAULTS_RUN)' ./faults/ ./internal/faultproxy/ || status=$$?; \
	bash faults/cleanup.sh; exit $$status
