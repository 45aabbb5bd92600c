#!/usr/bin/env bash
# RabbitMQ on 127.0.0.1:5672 (guest/guest): start it if it is installed but down.
set -euo pipefail
up() { rabbitmqctl -q status >/dev/null 2>&1 && (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }
if ! up; then
	echo "setup: starting rabbitmq-server"
	rabbitmq-server -detached || true
	for _ in $(seq 1 60); do up && break; sleep 1; done
fi
rabbitmqctl -q await_startup >/dev/null 2>&1 || true
up || { echo "setup: RabbitMQ is not reachable on 127.0.0.1:5672" >&2; exit 1; }
