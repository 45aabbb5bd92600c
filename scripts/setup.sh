#!/usr/bin/env bash
# Installs and starts what the test suite needs. Idempotent; every piece lives
# in scripts/setup.d/ so each part of the project owns its own prerequisites.
set -euo pipefail
cd "$(dirname "$0")/.."
for step in scripts/setup.d/*.sh; do
	[ -e "$step" ] || continue
	echo "setup: $step"
	bash "$step"
done
