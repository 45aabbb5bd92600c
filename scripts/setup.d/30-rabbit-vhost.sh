#!/usr/bin/env bash
# A private vhost for the rabbit:// driver and interop tests, so that their
# queues never mix with anything else on the shared broker.
set -euo pipefail
vhost=oslogo_test
if ! rabbitmqctl -q list_vhosts 2>/dev/null | grep -qx "$vhost"; then
	rabbitmqctl -q add_vhost "$vhost"
fi
rabbitmqctl -q set_permissions -p "$vhost" guest '.*' '.*' '.*'
