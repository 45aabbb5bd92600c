# Native Go fuzzing (docs/FUZZING.md). The seeds in each package's
# testdata/fuzz/ run as ordinary tests in make test; make fuzz runs the
# fuzzer on every target for FUZZTIME each, one after another:
#   make fuzz                                  every target, 10 minutes each
#   make fuzz FUZZTIME=30s FUZZ=FuzzTopicMatch  one target
#   make fuzz FUZZFLAGS=-parallel=1            one worker (a shared machine)
# A failing input is written to the package's testdata/fuzz/<target>/ and
# stops the run.
.PHONY: fuzz

FUZZTIME ?= 10m
FUZZFLAGS ?=
FUZZ ?=
FUZZ_TARGETS := \
	./broker/internal/amqp091:FuzzFrames \
	./broker/internal/amqp091:FuzzMethod \
	./broker/internal/amqp091:FuzzTable \
	./broker/internal/amqp091:FuzzContentHeader \
	./broker:FuzzConnection \
	./broker:FuzzTopicMatch \
	./driver/rabbit:FuzzParseObject \
	./driver/rabbit:FuzzDecodeEnvelopeReference \
	./driver/rabbit:FuzzDecodeEnvelope \
	./driver/rabbit:FuzzMessageRoundTrip \
	./driver/rabbit:FuzzPyJSON \
	./driver/rabbit:FuzzParseURL \
	./driver/rabbit:FuzzURLPassword \
	./messaging:FuzzOpenTransport \
	./config:FuzzLoad \
	./config:FuzzParseRoundTrip \
	./cmd/oslogo:FuzzBrokerFile \
	./cmd/oslogo:FuzzBrokerFilePassword

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		if [ -n "$(FUZZ)" ] && [ "$(FUZZ)" != "$$name" ]; then continue; fi; \
		echo "== $$name ($$pkg), $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$${name}$$" -fuzztime $(FUZZTIME) $(FUZZFLAGS) $$pkg; \
	done
