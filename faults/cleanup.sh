#!/usr/bin/env bash
# Leftovers of an interrupted `make test-faults` (a test binary killed by its
# timeout runs no cleanup): unmount the disk-full scenario's tmpfs and stop
# the cluster scenario's RabbitMQ nodes, by the pids in their own pid files,
# then remove their directories. Touches nothing else.
set -u
tmp=${TMPDIR:-/tmp}
# pids_with_arg ARG: processes one of whose arguments is exactly ARG.
pids_with_arg() {
	for p in /proc/[0-9]*; do
		{ tr '\0' '\n' <"$p/cmdline" | grep -qxF "$1"; } 2>/dev/null && echo "${p#/proc/}"
	done
}
awk -v pfx="$tmp/oslogo-faults-tmpfs-" 'index($2, pfx) == 1 { print $2 }' /proc/mounts | while read -r m; do
	# The embedded broker the scenario started on it (oslogo broker --data M).
	for pid in $(pids_with_arg "$m"); do
		kill -KILL "$pid" && echo "faults cleanup: killed broker $pid (--data $m)"
	done
	sleep 0.5
	umount "$m" && echo "faults cleanup: unmounted $m"
done
for d in "$tmp"/oslogo-faults-tmpfs-*; do
	[ -d "$d" ] && ! grep -q " $d" /proc/mounts && rm -rf "$d"
done
for d in "$tmp"/oslogo-faults-cluster-*; do
	[ -d "$d" ] || continue
	for pf in "$d"/f*/pid; do
		[ -f "$pf" ] || continue
		pid=$(cat "$pf")
		# Only a beam whose environment names this directory.
		if [ -r "/proc/$pid/environ" ] && tr '\0' '\n' <"/proc/$pid/environ" | grep -qxF "RABBITMQ_MNESIA_BASE=$(dirname "$pf")/mnesia"; then
			kill -KILL "$pid" && echo "faults cleanup: killed RabbitMQ node $pid ($pf)"
		fi
	done
	rm -rf "$d"
done
exit 0
