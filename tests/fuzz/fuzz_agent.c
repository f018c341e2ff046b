/*
 * libFuzzer target: the agent's request decoder, as the agent runs it on
 * what arrives on its control socket. agent.c is compiled into this file
 * (its main() renamed) so that its own static exec_parse() and
 * exec_build_plan() are what is fuzzed, unchanged. The input is the byte
 * stream from the daemon, fed in 4 KiB reads; every exec request that
 * validates is turned into the argv/envp/cwd block the forked child would
 * use, and that block is walked. Nothing is forked or executed.
 *
 * Not covered: code.run, context.* and files.* check their parameters
 * inside handlers that start processes, so only their framing is fuzzed.
 */
#define main agent_main
#include "sandbox/agent/agent.c"
#undef main

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile unsigned sink;

static void walk(char **v, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		sink += (unsigned)strlen(v[i]);
	if (v[n])
		__builtin_trap();
}

/* req_exec() up to the fork. */
static void decode_exec(const struct rpc_msg *m)
{
	struct child_plan c = { 0 };
	struct exec_spec s;
	char why[AGENT_REPORT_MAX];
	void *plan;

	if (exec_parse(m->params, &s, why, sizeof(why)) < 0) {
		if (!why[0])
			__builtin_trap();
		return;
	}
	plan = exec_build_plan(&s, &c);
	if (!plan)
		return;
	walk(c.argv, s.argv->size);
	walk(c.envp, s.env->size);
	if (strlen(c.cwd) != s.cwd_len)
		__builtin_trap();
	free(plan);
}

static void decode(const struct rpc_msg *m)
{
	uint64_t id;

	if (m->type != RPC_REQUEST)
		return;
	if (ipc_method_is(m, "exec"))
		decode_exec(m);
	else if (ipc_method_is(m, "kill"))
		sink += ipc_get_uint(m->params, "id", &id) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ipc_reader r;
	size_t off = 0;

	/* As agent_setup() does with the default --max-frame. */
	if (ipc_reader_init(&r, AGENT_DEFAULT_MAX_FRAME + AGENT_FRAME_SLACK) < 0)
		return 0;
	while (off < size) {
		size_t want = size - off < 4096 ? size - off : 4096, cap;
		char *dst = ipc_reader_buffer(&r, want, &cap);

		if (!dst)
			break;
		memcpy(dst, data + off, want);
		ipc_reader_consumed(&r, want);
		off += want;
		for (;;) {
			struct rpc_msg m;
			const char *why = NULL;
			enum ipc_read_status st = ipc_reader_next(&r, &m, &why);

			if (st == IPC_READ_MORE)
				break;
			if (st != IPC_READ_MSG)
				goto out; /* the agent stops at the first bad message */
			decode(&m);
		}
	}
out:
	ipc_reader_destroy(&r);
	return 0;
}
