#!/bin/sh
# The README's two set-up commands, for a fresh Debian 12 machine, as root:
#   ./bootstrap.sh run    install build dependencies, build, start sandpoold on
#                         the embedded default and run a first command in a sandbox
#   ./bootstrap.sh test   install build dependencies, build, run the test suite
set -eu
cd "$(dirname "$0")"

DEPS="build-essential autoconf automake libtool pkg-config libevent-dev libcurl4-openssl-dev
libmsgpack-dev libsqlite3-dev check libseccomp-dev sqlite3 python3"

deps() {
	missing=""
	for p in $DEPS; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
	done
	if [ -n "$missing" ]; then
		echo "bootstrap: installing$missing"
		apt-get update -q
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing
	fi
}

build() {
	[ -x configure ] || ./autogen.sh
	[ -f Makefile ] || ./configure ${CONFIGURE_FLAGS:-}
	make -j"$(nproc)"
}

case "${1:-}" in
run)
	deps
	build
	./sandpoold
	./sandpool status
	./sandpool run -- python3 -c 'print(6*7)'
	;;
test)
	deps
	build
	status=0
	make -j"$(nproc)" check || status=$?
	# Every check suite's verdict, then one line for all of them.
	grep -h -E '^[0-9]+%: Checks: ' tests/*.log tests/*/*.log 2>/dev/null || true
	cat tests/*.log tests/*/*.log 2>/dev/null | awk '
		/^[0-9]+%: Checks: / { gsub(",", ""); c += $3; f += $5 + $7 }
		END { printf "%d passed, %d failed\n", c - f, f }'
	if [ "$status" -ne 0 ]; then
		tail -n 200 test-suite.log 2>/dev/null
		exit "$status"
	fi
	;;
*)
	echo "usage: $0 run|test" >&2
	exit 2
	;;
esac
