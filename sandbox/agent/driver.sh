# sandpool's bash context driver (docs/AGENT.md, "Interpreter drivers").
# The agent embeds this file and runs it as `bash --noprofile --norc -c
# SOURCE` as the sandbox user. Fd 4 is its channel to the agent: each cell
# arrives NUL-terminated and is evaluated in this one shell, so the working
# directory, variables and functions persist; "done STATUS" goes back after
# it. The cell runs in a function so that SIGINT (the agent's interrupt)
# can return from it and leave the shell alive; it cannot see fd 4.
__sandpool_cell() { eval "$1"; }
trap 'return 130 2>/dev/null' INT
printf 'ready\n' >&4
while :; do
	IFS= read -r -d '' -u 4 __sandpool_code
	__sandpool_status=$?
	# An interrupt that lands between cells only cuts this read short.
	[ "$__sandpool_status" -gt 128 ] && continue
	[ "$__sandpool_status" -eq 0 ] || exit 0
	__sandpool_cell "$__sandpool_code" 4<&- </dev/null
	printf 'done %d\n' "$?" >&4
done
