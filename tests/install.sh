#!/bin/sh
# make install DESTDIR=... lays out every file a packager expects, and each
# man page renders with no groff warning. Skips (77) without groff.
set -eu

: "${MAKE:=make}"
build=${SANDPOOL_BUILDDIR:?set by make check}
if ! command -v groff >/dev/null 2>&1; then
	echo "groff not found (apt-get install groff-base): skipped"
	exit 77
fi

tmp=$(mktemp -d /tmp/sandpool-install-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
# MAKEFLAGS of the make check that runs us would pass TESTS= and such on.
(cd "$build" && MAKEFLAGS= $MAKE -s install DESTDIR="$tmp/root") >"$tmp/install.log" 2>&1 || {
	cat "$tmp/install.log"
	echo "FAIL: make install"
	exit 1
}

fail=0
expect() {
	if [ -e "$tmp/root$1" ]; then
		echo "ok: $1"
	else
		echo "FAIL: missing $1"
		fail=1
	fi
}
expect "$SP_SBINDIR/sandpoold"
expect "$SP_BINDIR/sandpool"
expect "$SP_PKGLIBEXECDIR/sandpool-agent"
expect "$SP_LIBDIR/libsandpool.so"
expect "$SP_INCLUDEDIR/sandpool.h"
expect "$SP_LIBDIR/pkgconfig/sandpool.pc"
expect "$SP_UNITDIR/sandpoold.service"
expect "$SP_UNITDIR/sandpoold.socket"
expect "$SP_SYSUSERSDIR/sandpool.conf"
expect "$SP_TMPFILESDIR/sandpool.conf"
expect "$SP_SYSCONFDIR/sandpool/sandpoold.conf.example"
expect "$SP_MANDIR/man1/sandpool.1"
expect "$SP_MANDIR/man5/sandpoold.conf.5"
expect "$SP_MANDIR/man8/sandpoold.8"

unit="$tmp/root$SP_UNITDIR/sandpoold.service"
if [ -e "$unit" ] && ! grep -qx "ExecStart=$SP_SBINDIR/sandpoold --foreground" "$unit"; then
	echo "FAIL: sandpoold.service does not run $SP_SBINDIR/sandpoold"
	fail=1
fi

# The installed example must be a configuration the daemon accepts.
conf="$tmp/root$SP_SYSCONFDIR/sandpool/sandpoold.conf.example"
if [ -e "$conf" ]; then
	if ! "$build/sandpoold" --check-config --config "$conf" >"$tmp/check.out" 2>&1; then
		cat "$tmp/check.out"
		echo "FAIL: sandpoold --check-config rejects the example configuration"
		fail=1
	fi
fi

# -ww: every warning; a page that warns or writes nothing fails.
for page in man1/sandpool.1 man5/sandpoold.conf.5 man8/sandpoold.8; do
	f="$tmp/root$SP_MANDIR/$page"
	[ -e "$f" ] || continue
	if ! LC_ALL=C.UTF-8 groff -ww -z -man -Tutf8 "$f" >"$tmp/groff.err" 2>&1 || [ -s "$tmp/groff.err" ]; then
		cat "$tmp/groff.err"
		echo "FAIL: groff warns about $page"
		fail=1
	elif [ "$(LC_ALL=C.UTF-8 groff -man -Tutf8 "$f" 2>/dev/null | wc -l)" -lt 20 ]; then
		echo "FAIL: $page renders to almost nothing"
		fail=1
	else
		echo "ok: $page renders"
	fi
done
exit $fail
