#!/usr/bin/env bash
# Runs the broker benchmark in one go: the embedded broker (oslogo), a
# second RabbitMQ 3.10 node, garagemq and, when STRANGEQ_BIN is set,
# StrangeQ, each on its own port, measured one after the other by the same
# amqp091-go load generator. Writes
# docs/bench/broker-results.jsonl and docs/bench/broker-bench.png.
# The system RabbitMQ node on 5672 is never touched.
set -euo pipefail
cd "$(dirname "$0")/../../.."
OUT=docs/bench
mkdir -p "$OUT" bin
GO=${GO:-go}
$GO build -o bin/oslogo ./cmd/oslogo
$GO build -o bin/broker-loadgen ./broker/internal/loadgen
for cmd in garagemq rabbitmqctl; do
	command -v $cmd >/dev/null || { echo "bench: $cmd is not installed; run: bash scripts/setup.sh" >&2; exit 1; }
done
TMP=$(mktemp -d /tmp/oslogo-bench.XXXXXX)
chmod 755 "$TMP"
OSLOGO_PORT=${OSLOGO_PORT:-5791}
RABBIT_PORT=${RABBIT_PORT:-5792}
RABBIT_DIST=${RABBIT_DIST:-25792}
GARAGE_PORT=${GARAGE_PORT:-5793}
STRANGEQ_PORT=${STRANGEQ_PORT:-5794}
LOADGEN_ARGS=${LOADGEN_ARGS:-}
GARAGE_TIMEOUT=${GARAGE_TIMEOUT:-10s}
STRANGEQ_TIMEOUT=${STRANGEQ_TIMEOUT:-10s}
RESULTS=$OUT/broker-results.jsonl
: > "$RESULTS"
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	if [ -n "${RABBIT_NODE:-}" ]; then
		HOME=/var/lib/rabbitmq rabbitmqctl -n "$RABBIT_NODE" stop >/dev/null 2>&1 || true
	fi
	rm -rf "$TMP"
}
trap cleanup EXIT

wait_port() {
	for _ in $(seq 1 120); do
		(exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
		sleep 0.5
	done
	echo "bench: nothing listening on $1" >&2
	return 1
}

measure() { # name pid port
	echo "bench: measuring $1" >&2
	timeout 900 ./bin/broker-loadgen -name "$1" -pid "$2" -url "amqp://guest:guest@127.0.0.1:$3/" $LOADGEN_ARGS >> "$RESULTS" ||
		echo "{\"name\":\"$1\",\"errors\":[\"load generator failed or timed out\"]}" >> "$RESULTS"
}

# measure_step runs one step of the generator against a broker started for
# it, then stops that broker (SIGTERM, SIGKILL if it ignores it: a wedged
# garagemq does) and waits until its port is free. Brokers that wedge or go
# wrong after some load get a fresh instance per step this way.
measure_step() { # name pid port step per-test-timeout
	echo "bench: measuring $1 ($4)" >&2
	timeout 900 ./bin/broker-loadgen -name "$1" -pid "$2" -only "$4" -timeout "$5" -url "amqp://guest:guest@127.0.0.1:$3/" $LOADGEN_ARGS >> "$RESULTS" ||
		echo "{\"name\":\"$1\",\"errors\":[\"$4: load generator failed\"]}" >> "$RESULTS"
	kill "$2" 2>/dev/null || true
	for _ in $(seq 1 20); do kill -0 "$2" 2>/dev/null || break; sleep 0.25; done
	kill -9 "$2" 2>/dev/null || true
	wait "$2" 2>/dev/null || true
	for _ in $(seq 1 40); do (exec 3<>/dev/tcp/127.0.0.1/"$3") 2>/dev/null || break; sleep 0.25; done
}

# 1. oslogo embedded broker, persistent storage on (confirms after fsync).
./bin/oslogo broker --amqp 127.0.0.1:$OSLOGO_PORT --data "$TMP/oslogo" > "$TMP/oslogo.log" 2>&1 &
OSLOGO_PID=$!
pids+=("$OSLOGO_PID")
wait_port $OSLOGO_PORT
sleep 1
measure oslogo "$OSLOGO_PID" $OSLOGO_PORT
kill "$OSLOGO_PID"; wait "$OSLOGO_PID" 2>/dev/null || true

# 2. A second RabbitMQ 3.10 node beside the system one.
RABBIT_NODE="bench$$@$(hostname -s)"
mkdir -p "$TMP/rabbit"
cat > "$TMP/rabbit/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$RABBIT_PORT
loopback_users.guest = true
CONF
echo "[]." > "$TMP/rabbit/enabled_plugins"
chown -R rabbitmq:rabbitmq "$TMP/rabbit"
su -s /bin/sh rabbitmq -c "HOME=/var/lib/rabbitmq RABBITMQ_NODENAME=$RABBIT_NODE RABBITMQ_NODE_PORT=$RABBIT_PORT \
	RABBITMQ_DIST_PORT=$RABBIT_DIST RABBITMQ_MNESIA_BASE=$TMP/rabbit/mnesia RABBITMQ_LOG_BASE=$TMP/rabbit/log \
	RABBITMQ_ENABLED_PLUGINS_FILE=$TMP/rabbit/enabled_plugins RABBITMQ_CONFIG_FILE=$TMP/rabbit/rabbitmq \
	/usr/lib/rabbitmq/bin/rabbitmq-server" > "$TMP/rabbit.out" 2>&1 &
pids+=($!)
wait_port $RABBIT_PORT
HOME=/var/lib/rabbitmq rabbitmqctl -n "$RABBIT_NODE" -q await_startup >/dev/null 2>&1 || true
RABBIT_PID=$(HOME=/var/lib/rabbitmq rabbitmqctl -n "$RABBIT_NODE" eval 'list_to_integer(os:getpid()).' 2>/dev/null | tr -d '\r\n ')
sleep 2
measure rabbitmq-3.10 "${RABBIT_PID:-0}" $RABBIT_PORT

# 2b. Round trips in back-to-back pairs: a fresh oslogo beside the same
# RabbitMQ node, the two measured one right after the other PAIRS times
# (who goes first alternates). The sections above measure each broker for
# minutes before the next; on this shared box a neighbour's load can move
# the round-trip rows by 20% in that time, so these pairs give the ratio
# with the drift taken out (docs/BENCHMARKS.md reports both).
PAIRS=${PAIRS:-5}
PAIRED=$OUT/broker-paired.jsonl
: > "$PAIRED"
pair_run() { # name port callers; appends exactly one line, so pairs stay aligned
	local out
	out=$(timeout 120 ./bin/broker-loadgen -name "$1" -only rtt -callers "$3" -reps 1 -url "amqp://guest:guest@127.0.0.1:$2/" $LOADGEN_ARGS | tail -n 1) || true
	case "$out" in
	'{'*) echo "$out" >> "$PAIRED" ;;
	*) echo "{\"name\":\"$1\",\"errors\":[\"paired round trips ($3 callers) failed\"]}" >> "$PAIRED" ;;
	esac
}
if [ "$PAIRS" -gt 0 ]; then
	echo "bench: round trips in $PAIRS back-to-back pairs" >&2
	./bin/oslogo broker --amqp 127.0.0.1:$OSLOGO_PORT --data "$TMP/oslogo-paired" > "$TMP/oslogo-paired.log" 2>&1 &
	OSLOGO_PID=$!
	pids+=("$OSLOGO_PID")
	wait_port $OSLOGO_PORT
	sleep 1
	for i in $(seq 1 "$PAIRS"); do
		for callers in 1 8; do
			if [ $((i % 2)) = 1 ]; then
				pair_run oslogo $OSLOGO_PORT $callers
				pair_run rabbitmq-3.10 $RABBIT_PORT $callers
			else
				pair_run rabbitmq-3.10 $RABBIT_PORT $callers
				pair_run oslogo $OSLOGO_PORT $callers
			fi
		done
	done
	kill "$OSLOGO_PID"; wait "$OSLOGO_PID" 2>/dev/null || true
fi
HOME=/var/lib/rabbitmq rabbitmqctl -n "$RABBIT_NODE" stop >/dev/null 2>&1 || true
RABBIT_NODE=

# 3. garagemq (Debian package), its own port and data directory. It wedges
# under sustained load, so it is restarted for every step.
garage_step() { # step
	rm -rf "$TMP/garagemq-db"
	cat > "$TMP/garagemq.yaml" <<CONF
proto: amqp-rabbit
users:
  - username: guest
    password: 084e0343a0486ff05530df6c705c8bb4
tcp:
  ip: 127.0.0.1
  port: $GARAGE_PORT
  nodelay: false
  readBufSize: 196608
  writeBufSize: 196608
admin:
  ip: 127.0.0.1
  port: 0
queue:
  shardSize: 8192
  maxMessagesInRam: 131072
db:
  defaultPath: $TMP/garagemq-db
  engine: badger
vhost:
  defaultPath: /
security:
  passwordCheck: md5
connection:
  channelsMax: 4096
  frameMaxSize: 65536
CONF
	garagemq --config "$TMP/garagemq.yaml" --log-level error > "$TMP/garagemq.log" 2>&1 &
	GARAGE_PID=$!
	pids+=("$GARAGE_PID")
	wait_port $GARAGE_PORT
	sleep 1
	# A short per-test timeout: a wedged garagemq fails its step in about a
	# minute (recorded as failed) instead of waiting out the default.
	measure_step garagemq "$GARAGE_PID" "$GARAGE_PORT" "$1" "$GARAGE_TIMEOUT"
}
for step in transient persistent rtt fanout topic memory; do
	garage_step $step
done

# 4. StrangeQ (github.com/maxpert/strangeq), only when STRANGEQ_BIN points at
# a binary built by hand (nothing of it is in this repository): its own port
# and data directory, fsync on, authentication off (it accepts any login).
# Its round trips stop answering after the transient and persistent steps
# have run on the same instance, so, like garagemq, it gets a fresh
# instance (and data directory) for every step.
strangeq_step() { # step
	rm -rf "$TMP/strangeq"
	mkdir -p "$TMP/strangeq"
	"$STRANGEQ_BIN" -generate-config "$TMP/strangeq/default.yaml" >/dev/null 2>&1
	sed -e "s/address: :5672/address: 127.0.0.1:$STRANGEQ_PORT/" -e "s/port: 5672/port: $STRANGEQ_PORT/" \
		-e "s#path: ./data#path: $TMP/strangeq/data#" -e "s/loglevel: info/loglevel: error/" \
		"$TMP/strangeq/default.yaml" > "$TMP/strangeq/bench.yaml"
	"$STRANGEQ_BIN" -config "$TMP/strangeq/bench.yaml" > "$TMP/strangeq.log" 2>&1 &
	STRANGEQ_PID=$!
	pids+=("$STRANGEQ_PID")
	wait_port $STRANGEQ_PORT
	sleep 1
	# Its memory step stalls: a short per-test timeout there ends it in
	# minutes, not ten (the other steps keep the default).
	local wait=30s
	[ "$1" = memory ] && wait=$STRANGEQ_TIMEOUT
	measure_step strangeq "$STRANGEQ_PID" "$STRANGEQ_PORT" "$1" "$wait"
}
if [ -n "${STRANGEQ_BIN:-}" ]; then
	for step in transient persistent rtt fanout topic memory; do
		strangeq_step $step
	done
fi

./bin/broker-loadgen -chart "$RESULTS" -png "$OUT/broker-bench.png" -ref rabbitmq-3.10 | tee "$OUT/broker-table.md"
if [ "$PAIRS" -gt 0 ]; then
	./bin/broker-loadgen -paired "$PAIRED" -ref rabbitmq-3.10 | tee -a "$OUT/broker-table.md"
fi
