#!/usr/bin/env bash
# oslo.messaging 18.1.0, the upstream peer Debian does not package (Debian has
# 14.0.3), made available at .peers/ (ignored by git) for the interop tests,
# the functional suite and the benchmark. Idempotent.
#
# With a local copy of the `oslo_messaging` package (OSLO18_SRC, default
# ../shared/peers/oslo.messaging-18.1.0 next to the repository, or next to the
# main worktree when this is a linked one) it is linked as
# .peers/oslo.messaging-18.1.0 and run on Debian's /usr/bin/python3 with
# PYTHONPATH pointing at it (its dependencies and stevedore's entry points come
# from Debian's python3-oslo.messaging, see 10-debian-peers.sh). Without one,
# .peers/oslo18-venv is a venv with --system-site-packages and
# `pip install oslo.messaging==18.1.0` (OSLO18_SRC=pip chooses this way).
#
# Either way the result is checked (`import oslo_messaging` must load the 18.1.0
# copy) and written to .peers/oslo18.env, which internal/oslo18 reads.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
want=18.1.0
peers=$repo/.peers
dest=$peers/oslo.messaging-$want
venv=$peers/oslo18-venv
envfile=$peers/oslo18.env
mkdir -p "$peers"

src=""
if [ "${OSLO18_SRC:-}" = pip ]; then
	: # the venv, even when a local copy exists
elif [ -n "${OSLO18_SRC:-}" ]; then
	src=$OSLO18_SRC
	[ -f "$src/oslo_messaging/__init__.py" ] || { echo "setup: OSLO18_SRC=$src holds no oslo_messaging package" >&2; exit 1; }
else
	common=$(git rev-parse --path-format=absolute --git-common-dir 2>/dev/null || true)
	for d in "$repo/.." "${common:+$(dirname "$common")/..}"; do
		[ -n "$d" ] || continue
		if [ -f "$d/shared/peers/oslo.messaging-$want/oslo_messaging/__init__.py" ]; then
			src=$d/shared/peers/oslo.messaging-$want
			break
		fi
	done
fi

if [ -n "$src" ]; then
	abs=$(cd "$src" && pwd -P)
	if [ "$(readlink "$dest" 2>/dev/null || true)" != "$abs" ]; then
		rm -rf "$dest"
		ln -s "$abs" "$dest"
	fi
	py=/usr/bin/python3
	pypath=$dest
	expect=$dest/oslo_messaging/__init__.py
else
	if [ ! -x "$venv/bin/python" ]; then
		echo "setup: no local oslo.messaging $want, creating $venv"
		/usr/bin/python3 -m venv --system-site-packages "$venv"
	fi
	if [ "$("$venv/bin/python" -m pip show oslo.messaging 2>/dev/null | sed -n 's/^Version: //p')" != "$want" ]; then
		"$venv/bin/python" -m pip install -q "oslo.messaging==$want"
	fi
	py=$venv/bin/python
	pypath=""
	expect=$(cd "$venv" && pwd -P)/lib/
fi

got=$(PYTHONPATH=$pypath "$py" -c 'import oslo_messaging; print(oslo_messaging.__file__)')
case "$(readlink -f "$got")" in
"$(readlink -f "$expect")"*) ;;
*)
	echo "setup: oslo.messaging $want: import oslo_messaging loaded $got, not the 18.1.0 copy ($expect)" >&2
	exit 1
	;;
esac
tmp=$envfile.tmp
printf 'PYTHON=%s\nPYTHONPATH=%s\n' "$py" "$pypath" >"$tmp"
mv "$tmp" "$envfile"
echo "setup: oslo.messaging $want: $py, oslo_messaging from $got"
