#!/usr/bin/env bash
# The real peers the interop tests talk to, from Debian's packages.
set -euo pipefail
pkgs=(python3-oslo.messaging python3-pika python3-kombu amqp-tools garagemq amqp-specs rabbitmq-server)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
	$sudo apt-get update -q || true
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}"
fi
