#!/bin/sh
# Builds the libFuzzer targets with clang (no configure needed) and runs
# each for SECONDS (default 60), one after another; 0 only builds them and
# replays the seeds. TARGETs (default: all three) pick some of them:
#   tests/fuzz/run.sh [SECONDS [TARGET...]]
# The committed seeds (tests/fuzz/corpus/TARGET) are read, never written:
# what a run discovers goes to $FUZZ_OUT/corpus/TARGET (default
# /tmp/sandpool-fuzz), which later runs start from. Every seed is replayed
# before fuzzing, the regress-* ones (inputs that once crashed a target)
# among them. A crash, a leak, an allocation above 128 MiB or an input
# running 10 s leaves its input in $FUZZ_OUT/crashes/ and makes the script
# fail.
set -u

secs=${1:-60}
[ $# -gt 0 ] && shift
targets=${*:-fuzz_frame fuzz_agent fuzz_config}
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
out=${FUZZ_OUT:-/tmp/sandpool-fuzz}
cc=${FUZZ_CC:-clang}

mkdir -p "$out/bin" "$out/crashes"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1}"
limits="-malloc_limit_mb=128 -rss_limit_mb=2048 -timeout=10"
# configure is not needed: this stands in for its autoconfig.h, with only
# what the fuzzed sources use.
mkdir -p "$out/include"
cat >"$out/include/autoconfig.h" <<'EOF'
#define _GNU_SOURCE 1
#define PACKAGE "sandpool"
#define PACKAGE_NAME "sandpool"
#define PACKAGE_VERSION "0.1.0"
#define PACKAGE_STRING "sandpool 0.1.0"
EOF
cflags="-g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined
	-fno-sanitize-recover=undefined -I$out/include -I$src -I$src/ipc"
codec="$src/ipc/codec.c $src/ipc/errors.c $src/daemon/log.c"

build() {
	name=$1
	shift
	echo "fuzz: building $name" >&2
	# shellcheck disable=SC2086
	$cc $cflags -o "$out/bin/$name" "$@" || exit 1
}

for t in $targets; do
	case $t in
	fuzz_frame)
		build fuzz_frame "$here/fuzz_frame.c" $codec -lmsgpackc -levent
		;;
	fuzz_agent)
		# fuzz_agent.c includes agent.c itself; the agent's other modules
		# link as they are, with empty interpreter drivers (the build
		# embeds the real ones).
		agent_modules=$(ls "$src"/sandbox/agent/*.c | grep -v '/agent\.c$')
		sed -n 's/^extern const char \(agent_driver_[a-z_]*\)\[\];/const char \1[] = "";/p' \
			"$src/sandbox/agent/drivers.h" >"$out/drivers.c"
		build fuzz_agent "$here/fuzz_agent.c" $codec $agent_modules "$out/drivers.c" \
			-lmsgpackc -levent -lseccomp
		;;
	fuzz_config)
		build fuzz_config "$here/fuzz_config.c" "$src/daemon/config.c" "$src/daemon/log.c" \
			-DSANDPOOL_AGENT_PATH='"/usr/local/libexec/sandpool/sandpool-agent"' \
			-DSANDPOOL_SYSCONFDIR='"/usr/local/etc"'
		;;
	*)
		echo "fuzz: no target $t (fuzz_frame, fuzz_agent, fuzz_config)" >&2
		exit 2
		;;
	esac
done

count() { find "$1" -type f 2>/dev/null | wc -l | tr -d ' '; }

status=0
summary=""
for t in $targets; do
	seeds="$here/corpus/${t#fuzz_}"
	work="$out/corpus/$t"
	log="$out/$t.log"
	mkdir -p "$work"
	echo "fuzz: $t: $secs s from $(count "$seeds") seeds and $(count "$work") earlier finds" >&2
	# libFuzzer takes -max_total_time=0 as "no limit"; -runs=0 only replays.
	if [ "$secs" -gt 0 ]; then budget="-max_total_time=$secs"; else budget="-runs=0"; fi
	# shellcheck disable=SC2086
	"$out/bin/$t" "$work" "$seeds" $budget -print_final_stats=1 $limits \
		-artifact_prefix="$out/crashes/$t-" >"$log" 2>&1
	rc=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
	cov=$(grep -E '^#[0-9]+' "$log" | tail -n 1 | sed -n 's/.*cov: \([0-9]*\).*/\1/p')
	line="$t: ${execs:-?} execs, coverage ${cov:-?} edges, corpus $(count "$seeds") seeds + $(count "$work") found"
	if [ "$rc" -ne 0 ]; then
		line="$line, CRASHED (exit $rc): $(ls -t "$out/crashes/$t-"* 2>/dev/null | head -n 1)"
		status=1
		grep -E 'ERROR|SUMMARY|runtime error' "$log" | head -n 5 >&2
	fi
	echo "fuzz: $line" >&2
	summary="$summary$line
"
done
printf '\n%s' "$summary"
[ "$status" -eq 0 ] || echo "fuzz: failures above; logs in $out" >&2
exit $status
