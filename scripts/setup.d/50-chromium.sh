#!/usr/bin/env bash
# The web UI's browser test (broker/uitest) drives Debian's headless
# Chromium through chromedp; fonts so that screenshots show text.
set -euo pipefail
pkgs=(chromium fonts-dejavu-core)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
	$sudo apt-get update -q || true
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
