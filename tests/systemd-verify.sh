#!/bin/sh
# systemd-analyze verify on sandpoold.service and sandpoold.socket, as they
# are installed: @sbindir@ filled in (here with this build tree, since
# verify wants ExecStart= to name an executable), the man pages that
# Documentation= names on MANPATH. verify exits 0 on warnings such as an
# unknown or misspelt option, so any word it says about our units fails.
# Skips (77) where systemd-analyze is missing.
set -eu

analyze=${SYSTEMD_ANALYZE:-}
[ -n "$analyze" ] || analyze=$(command -v systemd-analyze || true)
if [ -z "$analyze" ] || [ ! -x "$analyze" ]; then
	echo "systemd-analyze not found (apt-get install systemd): skipped"
	exit 77
fi
src=${SANDPOOL_SRCDIR:?set by make check}
build=${SANDPOOL_BUILDDIR:?set by make check}

tmp=$(mktemp -d /tmp/sandpool-verify-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/units" "$tmp/man" "$tmp/man/man1" "$tmp/man/man5" "$tmp/man/man8"
sed -e "s|@sbindir@|$build|g" "$src/systemd/sandpoold.service.in" >"$tmp/units/sandpoold.service"
cp "$src/systemd/sandpoold.socket" "$tmp/units/"
cp "$src/docs/sandpool.1" "$tmp/man/man1/"
cp "$src/docs/sandpoold.conf.5" "$tmp/man/man5/"
cp "$src/docs/sandpoold.8" "$tmp/man/man8/"
if grep -n '@[a-z_]*@' "$tmp/units/sandpoold.service"; then
	echo "FAIL: a placeholder was left in sandpoold.service"
	exit 1
fi

status=0
MANPATH="$tmp/man" "$analyze" verify "$tmp/units/sandpoold.socket" "$tmp/units/sandpoold.service" \
	>"$tmp/out" 2>&1 || status=$?
cat "$tmp/out"
if [ "$status" -ne 0 ] || grep -q -e sandpool -e "$tmp" "$tmp/out"; then
	echo "FAIL: systemd-analyze verify (exit status $status) objects to the units"
	exit 1
fi
echo "ok: systemd-analyze verify accepts sandpoold.service and sandpoold.socket"
