/*
 * Tests of sandpool-agent against the real binary: each test starts it on
 * a socketpair as fd 3 (as the spawner does, minus the namespaces), speaks
 * docs/AGENT.md to it and checks what comes back. Needs root, for the
 * agent to drop to uid 65534.
 */
#include "autoconfig.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <event2/buffer.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ipc/codec.h"

#define TEST_UID "65534"
#define IO_TIMEOUT_MS 5000

static const char *const default_env[] = { "PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C", NULL };

struct agent {
	pid_t pid;
	int fd;
	struct ipc_reader reader;
	uint32_t next_msgid;
	unsigned fds_before;
};

/* What came back for one exec. */
struct obs {
	uint64_t id;
	uint32_t msgid;
	bool done;
	bool is_error;
	char err_code[32];
	char err_msg[256];
	bool has_exit;
	int64_t exit_code;
	bool has_signal;
	uint64_t signal;
	bool truncated;
	char limit[16];
	uint64_t duration_us;
	struct evbuffer *out[2]; /* stdout, stderr */
	size_t max_chunk;
	char text[4096]; /* obs_text() */
};

/* The response to a request that is not an exec. */
struct reply {
	uint32_t msgid;
	bool got;
	bool is_error;
	char err_code[32];
	char err_msg[256];
	uint64_t execs;
	uint32_t result_size;
};

struct exec_req {
	uint64_t id;
	const char *const *argv;
	const char *const *env; /* NULL: default_env */
	const char *cwd;	/* NULL: "/" */
	const void *stdin_data;
	size_t stdin_len;
	bool has_stdin;
	uint64_t timeout_ms; /* 0: 10 s */
	uint64_t max_output; /* 0: 1 MiB */
};

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static unsigned count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	unsigned n = 0;

	ck_assert_ptr_nonnull(d);
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1; /* the directory's own fd */
}

static const char *agent_path(void)
{
	static char path[4096];
	const char *dir = getenv("SANDPOOL_BUILDDIR");

	if (!dir)
		return "./sandpool-agent";
	snprintf(path, sizeof(path), "%s/sandpool-agent", dir);
	return path;
}

static void copy_str(const msgpack_object *map, const char *key, char *buf, size_t size)
{
	const char *s;
	uint32_t len;

	buf[0] = '\0';
	if (ipc_get_str(map, key, &s, &len) == 0)
		snprintf(buf, size, "%.*s", (int)len, s);
}

/* Next message within timeout_ms: 1, or 0 on timeout, or -1 at EOF. */
static int agent_read(struct agent *a, struct rpc_msg *m, int timeout_ms)
{
	uint64_t deadline = now_ms() + (uint64_t)timeout_ms;

	for (;;) {
		const char *why = NULL;
		enum ipc_read_status st = ipc_reader_next(&a->reader, m, &why);
		struct pollfd pfd = { .fd = a->fd, .events = POLLIN };
		size_t cap;
		char *dst;
		ssize_t n;
		uint64_t now;

		if (st == IPC_READ_MSG)
			return 1;
		ck_assert_msg(st == IPC_READ_MORE, "agent sent a bad message: %s", why ? why : "too large");
		now = now_ms();
		if (now >= deadline || poll(&pfd, 1, (int)(deadline - now)) == 0)
			return 0;
		dst = ipc_reader_buffer(&a->reader, 64 * 1024, &cap);
		ck_assert_ptr_nonnull(dst);
		n = read(a->fd, dst, cap);
		if (n == 0 || (n < 0 && errno == ECONNRESET))
			return -1;
		ck_assert_int_gt(n, 0);
		ipc_reader_consumed(&a->reader, (size_t)n);
	}
}

static void agent_send(struct agent *a, struct evbuffer *b)
{
	while (evbuffer_get_length(b) > 0)
		ck_assert_int_gt(evbuffer_write(b, a->fd), 0);
	evbuffer_free(b);
}

static void start_agent(struct agent *a, const char *max_frame, bool new_pidns)
{
	const char *argv[] = { "sandpool-agent", "--uid", TEST_UID, "--gid", TEST_UID, NULL, NULL, NULL };
	struct rpc_msg m;
	const char *s;
	uint32_t len;
	int64_t pid;
	int sv[2];

	if (max_frame) {
		argv[5] = "--max-frame";
		argv[6] = max_frame;
	}
	memset(a, 0, sizeof(*a));
	a->next_msgid = 1;
	a->fds_before = count_fds();
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	/* A raw clone, as fork() cannot ask for a new PID namespace. */
	a->pid = new_pidns ? (pid_t)syscall(SYS_clone, CLONE_NEWPID | SIGCHLD, NULL, NULL, NULL, NULL) : fork();
	ck_assert_int_ge(a->pid, 0);
	if (a->pid == 0) {
		if (sv[1] == 3 ? fcntl(3, F_SETFD, 0) < 0 : dup2(sv[1], 3) < 0)
			_exit(126);
		close_range(4, ~0U, 0);
		execv(agent_path(), (char **)argv);
		_exit(127);
	}
	close(sv[1]);
	a->fd = sv[0];
	ck_assert_int_eq(ipc_reader_init(&a->reader, 64u << 20), 0);

	ck_assert_int_eq(agent_read(a, &m, IO_TIMEOUT_MS), 1);
	ck_assert_int_eq(m.type, RPC_NOTIFY);
	ck_assert(ipc_method_is(&m, "ready"));
	ck_assert_int_eq(ipc_get_int(m.params, "pid", &pid), 0);
	ck_assert_int_eq(pid, new_pidns ? 1 : a->pid);
	ck_assert_int_eq(ipc_get_str(m.params, "version", &s, &len), 0);
	ck_assert_uint_gt(len, 0);
}

/* Waits up to timeout_ms for pid; returns its wait status, or -1. */
static int wait_exit(pid_t pid, int timeout_ms)
{
	uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
	int status;

	do {
		pid_t r = waitpid(pid, &status, WNOHANG);

		if (r == pid)
			return status;
		ck_assert_int_eq(r, 0);
		usleep(5000);
	} while (now_ms() < deadline);
	return -1;
}

/* Closes the channel (the agent then exits) and checks that the agent
 * exited with status want and that the test process leaked no fd. */
static void stop_agent_expect(struct agent *a, int want)
{
	int status;

	close(a->fd);
	status = wait_exit(a->pid, IO_TIMEOUT_MS);
	if (status == -1) {
		kill(a->pid, SIGKILL);
		waitpid(a->pid, NULL, 0);
		ck_abort_msg("the agent did not exit after its channel closed");
	}
	ipc_reader_destroy(&a->reader);
	ck_assert_msg(WIFEXITED(status), "agent died of signal %d", WTERMSIG(status));
	ck_assert_int_eq(WEXITSTATUS(status), want);
	ck_assert_uint_eq(count_fds(), a->fds_before);
}

static void stop_agent(struct agent *a)
{
	stop_agent_expect(a, 0);
}

static uint32_t send_exec(struct agent *a, const struct exec_req *r)
{
	const char *const *env = r->env ? r->env : default_env;
	struct evbuffer *b = evbuffer_new();
	uint32_t msgid = a->next_msgid++;
	unsigned argc = 0, envc = 0;
	msgpack_packer pk;

	while (r->argv[argc])
		argc++;
	while (env[envc])
		envc++;
	msgpack_packer_init(&pk, b, ipc_evbuffer_write);
	ipc_pack_request_head(&pk, msgid, "exec");
	msgpack_pack_map(&pk, r->has_stdin ? 7 : 6);
	ipc_pack_kv_uint(&pk, "id", r->id);
	ipc_pack_cstr(&pk, "argv");
	msgpack_pack_array(&pk, argc);
	for (unsigned i = 0; i < argc; i++)
		ipc_pack_cstr(&pk, r->argv[i]);
	ipc_pack_cstr(&pk, "env");
	msgpack_pack_array(&pk, envc);
	for (unsigned i = 0; i < envc; i++)
		ipc_pack_cstr(&pk, env[i]);
	ipc_pack_kv_str(&pk, "cwd", r->cwd ? r->cwd : "/");
	ipc_pack_kv_uint(&pk, "timeout_ms", r->timeout_ms ? r->timeout_ms : 10000);
	ipc_pack_kv_uint(&pk, "max_output", r->max_output ? r->max_output : 1u << 20);
	if (r->has_stdin)
		ipc_pack_kv_bin(&pk, "stdin", r->stdin_data, r->stdin_len);
	agent_send(a, b);
	return msgid;
}

/* A request whose params are one map of nparams pairs the caller packs
 * with pack(). */
static uint32_t send_request(struct agent *a, const char *method, void (*pack)(msgpack_packer *pk),
			     uint32_t nparams)
{
	struct evbuffer *b = evbuffer_new();
	uint32_t msgid = a->next_msgid++;
	msgpack_packer pk;

	msgpack_packer_init(&pk, b, ipc_evbuffer_write);
	ipc_pack_request_head(&pk, msgid, method);
	msgpack_pack_map(&pk, nparams);
	if (pack)
		pack(&pk);
	agent_send(a, b);
	return msgid;
}

static uint64_t kill_target;

static void pack_kill(msgpack_packer *pk)
{
	ipc_pack_kv_uint(pk, "id", kill_target);
}

static uint32_t send_kill(struct agent *a, uint64_t id)
{
	kill_target = id;
	return send_request(a, "kill", pack_kill, 1);
}

static void obs_init(struct obs *o, uint64_t id, uint32_t msgid)
{
	memset(o, 0, sizeof(*o));
	o->id = id;
	o->msgid = msgid;
	o->out[0] = evbuffer_new();
	o->out[1] = evbuffer_new();
}

static void obs_free(struct obs *o)
{
	evbuffer_free(o->out[0]);
	evbuffer_free(o->out[1]);
}

/* The start of stream's (1 or 2) output as a string, valid until the
 * next call. */
static const char *obs_text(struct obs *o, int stream)
{
	ev_ssize_t n = evbuffer_copyout(o->out[stream - 1], o->text, sizeof(o->text) - 1);

	ck_assert_int_ge(n, 0);
	o->text[n] = '\0';
	return o->text;
}

static size_t obs_len(const struct obs *o, int stream)
{
	return evbuffer_get_length(o->out[stream - 1]);
}

static void record_error(const msgpack_object *err, bool *is_error, char *code, size_t csize, char *msg,
			 size_t msize)
{
	*is_error = true;
	copy_str(err, "code", code, csize);
	copy_str(err, "message", msg, msize);
}

static void record_result(struct obs *o, const struct rpc_msg *m)
{
	const msgpack_object *r = m->result;

	o->done = true;
	if (m->error) {
		record_error(m->error, &o->is_error, o->err_code, sizeof(o->err_code), o->err_msg,
			     sizeof(o->err_msg));
		return;
	}
	ck_assert_int_eq(r->type, MSGPACK_OBJECT_MAP);
	/* Every key is present, nil or not. */
	ck_assert_ptr_nonnull(ipc_map_get(r, "exit_code"));
	ck_assert_ptr_nonnull(ipc_map_get(r, "signal"));
	ck_assert_ptr_nonnull(ipc_map_get(r, "limit"));
	o->has_exit = ipc_get_int(r, "exit_code", &o->exit_code) == 0;
	o->has_signal = ipc_get_uint(r, "signal", &o->signal) == 0;
	ck_assert_int_eq(ipc_get_bool(r, "truncated", &o->truncated), 0);
	ck_assert_int_eq(ipc_get_uint(r, "duration_us", &o->duration_us), 0);
	copy_str(r, "limit", o->limit, sizeof(o->limit));
}

/* Handles one message, routing it to the obs it belongs to, or to *other.
 * Returns false on timeout. */
static bool pump_once(struct agent *a, struct obs *obs, size_t n, struct reply *other, int timeout_ms)
{
	struct rpc_msg m;
	int rc = agent_read(a, &m, timeout_ms);

	ck_assert_int_ge(rc, 0);
	if (rc == 0)
		return false;
	if (m.type == RPC_NOTIFY) {
		const char *data;
		uint32_t len;
		uint64_t id, stream;
		size_t i;

		ck_assert(ipc_method_is(&m, "output"));
		ck_assert_int_eq(ipc_get_uint(m.params, "id", &id), 0);
		ck_assert_int_eq(ipc_get_uint(m.params, "stream", &stream), 0);
		ck_assert(stream == 1 || stream == 2);
		ck_assert_int_eq(ipc_map_get(m.params, "data")->type, MSGPACK_OBJECT_BIN);
		ck_assert_int_eq(ipc_get_bytes(m.params, "data", &data, &len), 0);
		ck_assert_uint_gt(len, 0);
		ck_assert_uint_le(len, 64 * 1024);
		for (i = 0; i < n && obs[i].id != id; i++)
			;
		ck_assert_msg(i < n, "output for unknown exec %llu", (unsigned long long)id);
		ck_assert_msg(!obs[i].done, "output after the response");
		evbuffer_add(obs[i].out[stream - 1], data, len);
		if (len > obs[i].max_chunk)
			obs[i].max_chunk = len;
		return true;
	}
	ck_assert_int_eq(m.type, RPC_RESPONSE);
	for (size_t i = 0; i < n; i++) {
		if (obs[i].msgid == m.msgid) {
			ck_assert(!obs[i].done);
			record_result(&obs[i], &m);
			return true;
		}
	}
	ck_assert_ptr_nonnull(other);
	ck_assert_uint_eq(m.msgid, other->msgid);
	other->got = true;
	if (m.error) {
		record_error(m.error, &other->is_error, other->err_code, sizeof(other->err_code),
			     other->err_msg, sizeof(other->err_msg));
		return true;
	}
	ck_assert_int_eq(m.result->type, MSGPACK_OBJECT_MAP);
	other->result_size = m.result->via.map.size;
	ipc_get_uint(m.result, "execs", &other->execs);
	return true;
}

static bool all_done(const struct obs *obs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!obs[i].done)
			return false;
	return true;
}

/* Pumps until *other is answered if given, else until every exec is. */
static void pump(struct agent *a, struct obs *obs, size_t n, struct reply *other, int timeout_ms)
{
	uint64_t deadline = now_ms() + (uint64_t)timeout_ms;

	while (other ? !other->got : !all_done(obs, n)) {
		uint64_t now = now_ms();

		ck_assert_msg(now < deadline && pump_once(a, obs, n, other, (int)(deadline - now)),
			      "no answer within %d ms", timeout_ms);
	}
}

static void call(struct agent *a, struct reply *r, uint32_t msgid, struct obs *obs, size_t n)
{
	memset(r, 0, sizeof(*r));
	r->msgid = msgid;
	pump(a, obs, n, r, IO_TIMEOUT_MS);
}

/* Sends one exec and waits for its answer. */
static void run(struct agent *a, const struct exec_req *r, struct obs *o)
{
	uint32_t msgid = send_exec(a, r);

	obs_init(o, r->id, msgid);
	pump(a, o, 1, NULL, IO_TIMEOUT_MS);
}

static void run_argv(struct agent *a, uint64_t id, const char *const *argv, struct obs *o)
{
	struct exec_req r = { .id = id, .argv = argv };

	run(a, &r, o);
}

/* Pumps until stream 1 of o has a whole line; returns it as a number. */
static long read_pid_line(struct agent *a, struct obs *o)
{
	uint64_t deadline = now_ms() + IO_TIMEOUT_MS;

	while (evbuffer_search(o->out[0], "\n", 1, NULL).pos < 0) {
		ck_assert(now_ms() < deadline);
		pump_once(a, o, 1, NULL, 100);
	}
	return strtol(obs_text(o, 1), NULL, 10);
}

/* True once pid is gone or a zombie (some init will reap it). */
static bool process_dead(pid_t pid)
{
	char path[64], buf[512], *p;
	FILE *f;
	size_t n;

	if (kill(pid, 0) < 0 && errno == ESRCH)
		return true;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return true;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	p = strrchr(buf, ')');
	return p && p[1] == ' ' && p[2] == 'Z';
}

static bool wait_gone(pid_t pid, bool zombie_ok, int timeout_ms)
{
	uint64_t deadline = now_ms() + (uint64_t)timeout_ms;

	do {
		if (kill(pid, 0) < 0 && errno == ESRCH)
			return true;
		if (zombie_ok && process_dead(pid))
			return true;
		usleep(5000);
	} while (now_ms() < deadline);
	return false;
}

/* --- tests -------------------------------------------------------------- */

START_TEST(test_echo)
{
	const char *argv[] = { "/bin/sh", "-c", "echo hi; echo err >&2; exit 3", NULL };
	struct agent a;
	struct obs o;

	start_agent(&a, NULL, false);
	run_argv(&a, 42, argv, &o);
	ck_assert(!o.is_error);
	ck_assert_str_eq(obs_text(&o, 1), "hi\n");
	ck_assert_str_eq(obs_text(&o, 2), "err\n");
	ck_assert(o.has_exit);
	ck_assert_int_eq(o.exit_code, 3);
	ck_assert(!o.has_signal);
	ck_assert(!o.truncated);
	ck_assert_str_eq(o.limit, "");
	ck_assert_uint_gt(o.duration_us, 0);
	obs_free(&o);
	stop_agent(&a);
}
END_TEST

START_TEST(test_runs_as_user)
{
	const char *argv[] = { "sh", "-c",
			       "id -u; id -g; id -G; pwd; "
			       "grep -E '^(NoNewPrivs|CapEff|CapPrm):' /proc/self/status",
			       NULL };
	struct exec_req r = { .id = 1, .argv = argv, .cwd = "/tmp" };
	struct agent a;
	struct obs o;
	const char *out, *want = "65534\n65534\n65534\n/tmp\n";

	start_agent(&a, NULL, false);
	run(&a, &r, &o);
	out = obs_text(&o, 1);
	ck_assert_msg(!strncmp(out, want, strlen(want)), "got: %s", out);
	ck_assert_ptr_nonnull(strstr(out, "NoNewPrivs:\t1\n"));
	ck_assert_ptr_nonnull(strstr(out, "CapEff:\t0000000000000000\n"));
	ck_assert_ptr_nonnull(strstr(out, "CapPrm:\t0000000000000000\n"));
	ck_assert_int_eq(o.exit_code, 0);
	obs_free(&o);
	stop_agent(&a);
}
END_TEST

START_TEST(test_stdin)
{
	const char *cat[] = { "cat", NULL };
	/* More than a pipe holds, so the agent must feed it as cat reads. */
	size_t len = 300 * 1024;
	char *data = malloc(len);
	struct exec_req r = { .id = 1, .argv = cat, .stdin_data = data, .stdin_len = len, .has_stdin = true };
	struct agent a;
	struct obs o;

	for (size_t i = 0; i < len; i++)
		data[i] = (char)(i * 7 % 256);
	start_agent(&a, NULL, false);
	run(&a, &r, &o);
	ck_assert_int_eq(o.exit_code, 0);
	ck_assert_uint_eq(obs_len(&o, 1), len);
	ck_assert_int_eq(memcmp(evbuffer_pullup(o.out[0], -1), data, len), 0);
	obs_free(&o);

	/* Without stdin, and with an empty one, cat sees EOF at once. */
	r.has_stdin = false;
	r.id = 2;
	run(&a, &r, &o);
	ck_assert_int_eq(o.exit_code, 0);
	ck_assert_uint_eq(obs_len(&o, 1), 0);
	obs_free(&o);
	r.has_stdin = true;
	r.stdin_len = 0;
	r.id = 3;
	run(&a, &r, &o);
	ck_assert_int_eq(o.exit_code, 0);
	ck_assert_uint_eq(obs_len(&o, 1), 0);
	obs_free(&o);
	free(data);
	stop_agent(&a);
}
END_TEST

START_TEST(test_signal_death)
{
	const char *argv[] = { "sh", "-c", "kill -TERM $$", NULL };
	struct agent a;
	struct obs o;

	start_agent(&a, NULL, false);
	run_argv(&a, 1, argv, &o);
	ck_assert(!o.has_exit);
	ck_assert(o.has_signal);
	ck_assert_uint_eq(o.signal, SIGTERM);
	ck_assert_str_eq(o.limit, "");
	obs_free(&o);
	stop_agent(&a);
}
END_TEST

START_TEST(test_timeout)
{
	const char *argv[] = { "sleep", "100", NULL };
	struct exec_req r = { .id = 1, .argv = argv, .timeout_ms = 200 };
	struct agent a;
	struct obs o;
	uint64_t t0;

	start_agent(&a, NULL, false);
	t0 = now_ms();
	run(&a, &r, &o);
	ck_assert_uint_lt(now_ms() - t0, 1000);
	ck_assert_str_eq(o.limit, "timeout");
	ck_assert(!o.has_exit);
	ck_assert_uint_eq(o.signal, SIGKILL);
	ck_assert(!o.truncated);
	ck_assert_uint_ge(o.duration_us, 200000);
	obs_free(&o);
	stop_agent(&a);
}
END_TEST

START_TEST(test_output_cap)
{
	const char *yes[] = { "yes", NULL };
	const char *five[] = { "printf", "12345", NULL };
	struct exec_req r = { .id = 1, .argv = yes, .max_output = 10000 };
	struct agent a;
	struct obs o;

	start_agent(&a, NULL, false);
	run(&a, &r, &o);
	ck_assert_uint_eq(obs_len(&o, 1), 10000);
	ck_assert(o.truncated);
	ck_assert_str_eq(o.limit, "output_limit");
	ck_assert(!o.has_exit);
	obs_free(&o);

	/* Exactly max_output bytes is not over the cap. */
	r = (struct exec_req){ .id = 2, .argv = five, .max_output = 5 };
	run(&a, &r, &o);
	ck_assert_uint_eq(obs_len(&o, 1), 5);
	ck_assert(!o.truncated);
	ck_assert_str_eq(o.limit, "");
	ck_assert_int_eq(o.exit_code, 0);
	obs_free(&o);
	stop_agent(&a);
}
END_TEST

START_TEST(test_binary_output)
{
	const char *nul_ff[] = { "printf", "\\0\\377", NULL };
	const char *zeros[] = { "head", "-c", "300000", "/dev/zero", NULL };
	struct agent a;
	struct obs o;
	const unsigned char *p;

	start_agent(&a, NULL, false);
	run_argv(&a, 1, nul_ff, &o);
	ck_assert_uint_eq(obs_len(&o, 1), 2);
	p = evbuffer_pullup(o.out[0], -1);
	ck_assert_uint_eq(p[0], 0);
	ck_assert_uint_eq(p[1], 0xff);
	obs_free(&o);

	run_argv(&a, 2, zeros, &o);
	ck_assert_uint_eq(obs_len(&o, 1), 300000);
	ck_assert_uint_le(o.max_chunk, 64 * 1024);
	p = evbuffer_pullup(o.out[0], -1);
	for (size_t i = 0; i < 300000; i++)
		ck_assert_uint_eq(p[i], 0);
	obs_free(&o);
	stop_agent(&a);
}
END_TEST

START_TEST(test_small_frame_chunks)
{
	const char *zeros[] = { "head", "-c", "10000", "/dev/zero", NULL };
	struct agent a;
	struct obs o;

	/* Chunks never exceed the daemon's frame size either. */
	start_agent(&a, "1024", false);
	run_argv(&a, 1, zeros, &o);
	ck_assert_uint_eq(obs_len(&o, 1), 10000);
	ck_assert_uint_le(o.max_chunk, 1024);
	obs_free(&o);
	stop_agent(&a);
}
END_TEST

START_TEST(test_exec_failure)
{
	const char *missing[] = { "no-such-binary-xyz", NULL };
	const char *abs_missing[] = { "/nonexistent/bin", NULL };
	const char *pwd[] = { "pwd", NULL };
	const char *root_only[] = { "cat", "/proc/1/environ", NULL };
	struct exec_req r = { .id = 1, .argv = missing };
	struct agent a;
	struct obs o;

	start_agent(&a, NULL, false);
	run(&a, &r, &o);
	ck_assert(o.is_error);
	ck_assert_str_eq(o.err_code, "backend_error");
	ck_assert_str_eq(o.err_msg, "execvp no-such-binary-xyz: No such file or directory");
	ck_assert_uint_eq(obs_len(&o, 1) + obs_len(&o, 2), 0);
	obs_free(&o);

	r = (struct exec_req){ .id = 2, .argv = abs_missing };
	run(&a, &r, &o);
	ck_assert_str_eq(o.err_msg, "execvp /nonexistent/bin: No such file or directory");
	obs_free(&o);

	r = (struct exec_req){ .id = 3, .argv = pwd, .cwd = "/nonexistent" };
	run(&a, &r, &o);
	ck_assert_str_eq(o.err_code, "backend_error");
	ck_assert_str_eq(o.err_msg, "chdir /nonexistent: No such file or directory");
	obs_free(&o);

	/* No PATH in the env: the execvp(3) default applies. */
	r = (struct exec_req){ .id = 4, .argv = root_only, .env = (const char *const[]){ "A=b", NULL } };
	run(&a, &r, &o);
	ck_assert(!o.is_error);
	ck_assert_int_ne(o.exit_code, 0); /* really not root */
	obs_free(&o);
	stop_agent(&a);
}
END_TEST

START_TEST(test_concurrent)
{
	enum { N = 10 };
	struct obs o[N];
	struct agent a;
	char script[] = "sleep 0.2; echo $0; exit $1";

	start_agent(&a, NULL, false);
	for (int i = 0; i < N; i++) {
		char name[16], code[16];
		const char *argv[] = { "sh", "-c", script, name, code, NULL };
		struct exec_req r = { .id = 1000 + (uint64_t)i, .argv = argv };

		snprintf(name, sizeof(name), "job-%d", i);
		snprintf(code, sizeof(code), "%d", i);
		obs_init(&o[i], r.id, send_exec(&a, &r));
	}
	pump(&a, o, N, NULL, IO_TIMEOUT_MS);
	for (int i = 0; i < N; i++) {
		char want[16];

		snprintf(want, sizeof(want), "job-%d\n", i);
		ck_assert(!o[i].is_error);
		ck_assert_str_eq(obs_text(&o[i], 1), want);
		ck_assert_int_eq(o[i].exit_code, i);
		obs_free(&o[i]);
	}
	stop_agent(&a);
}
END_TEST

START_TEST(test_exec_limit)
{
	enum { N = 64 };
	const char *argv[] = { "sleep", "100", NULL };
	struct obs o[N + 1];
	struct reply rep;
	struct agent a;

	start_agent(&a, NULL, false);
	for (int i = 0; i < N; i++) {
		struct exec_req r = { .id = (uint64_t)i + 1, .argv = argv };

		obs_init(&o[i], r.id, send_exec(&a, &r));
	}
	{
		struct exec_req r = { .id = N + 1, .argv = argv };

		obs_init(&o[N], r.id, send_exec(&a, &r));
	}
	pump(&a, &o[N], 1, NULL, IO_TIMEOUT_MS);
	ck_assert(o[N].is_error);
	ck_assert_str_eq(o[N].err_code, "limit_exceeded");

	call(&a, &rep, send_request(&a, "ping", NULL, 0), o, N);
	ck_assert(!rep.is_error);
	ck_assert_uint_eq(rep.execs, N);
	for (int i = 0; i <= N; i++) {
		ck_assert(i == N || !o[i].done);
		obs_free(&o[i]);
	}
	stop_agent(&a);
}
END_TEST

START_TEST(test_kill)
{
	const char *argv[] = { "sleep", "100", NULL };
	struct exec_req r = { .id = 7, .argv = argv };
	struct reply rep;
	struct agent a;
	struct obs o;
	uint64_t t0;

	start_agent(&a, NULL, false);
	obs_init(&o, r.id, send_exec(&a, &r));
	/* A second exec with the same id while the first runs. */
	{
		struct obs dup;

		obs_init(&dup, r.id, send_exec(&a, &r));
		dup.id = 0; /* route nothing but its response here */
		pump(&a, &dup, 1, NULL, IO_TIMEOUT_MS);
		ck_assert_str_eq(dup.err_code, "bad_request");
		ck_assert_ptr_nonnull(strstr(dup.err_msg, "already running"));
		obs_free(&dup);
	}
	call(&a, &rep, send_kill(&a, 999), &o, 1); /* unknown ids are ignored */
	ck_assert(!rep.is_error);
	ck_assert_uint_eq(rep.result_size, 0);
	ck_assert(!o.done);

	t0 = now_ms();
	call(&a, &rep, send_kill(&a, 7), &o, 1);
	ck_assert(!rep.is_error);
	pump(&a, &o, 1, NULL, IO_TIMEOUT_MS);
	ck_assert_uint_lt(now_ms() - t0, 1000);
	ck_assert_uint_eq(o.signal, SIGKILL);
	ck_assert_str_eq(o.limit, "");
	obs_free(&o);
	stop_agent(&a);
}
END_TEST

START_TEST(test_background_grandchild)
{
	const char *argv[] = { "sh", "-c", "sleep 30 & echo $!", NULL };
	struct agent a;
	struct obs o;
	uint64_t t0;
	pid_t bg;

	start_agent(&a, NULL, false);
	t0 = now_ms();
	run_argv(&a, 1, argv, &o);
	ck_assert_uint_lt(now_ms() - t0, 1000);
	ck_assert_int_eq(o.exit_code, 0);
	bg = (pid_t)strtol(obs_text(&o, 1), NULL, 10);
	ck_assert_int_gt(bg, 1);
	/* Left behind, it runs on; once killed, the agent (which inherited
	 * it) reaps it: no zombie remains. */
	ck_assert(!process_dead(bg));
	ck_assert_int_eq(kill(bg, SIGKILL), 0);
	ck_assert(wait_gone(bg, false, 2000));
	obs_free(&o);
	stop_agent(&a);
}
END_TEST

static void pack_no_argv(msgpack_packer *pk)
{
	ipc_pack_kv_uint(pk, "id", 1);
	ipc_pack_kv_str(pk, "cwd", "/");
}

static void pack_empty_argv(msgpack_packer *pk)
{
	pack_no_argv(pk);
	ipc_pack_cstr(pk, "argv");
	msgpack_pack_array(pk, 0);
}

static void pack_nul_argv(msgpack_packer *pk)
{
	pack_no_argv(pk);
	ipc_pack_cstr(pk, "argv");
	msgpack_pack_array(pk, 1);
	ipc_pack_strn(pk, "a\0b", 3);
	ipc_pack_cstr(pk, "env");
	msgpack_pack_array(pk, 0);
	ipc_pack_kv_uint(pk, "timeout_ms", 1000);
	ipc_pack_kv_uint(pk, "max_output", 1000);
}

static void pack_zero_timeout(msgpack_packer *pk)
{
	pack_no_argv(pk);
	ipc_pack_cstr(pk, "argv");
	msgpack_pack_array(pk, 1);
	ipc_pack_cstr(pk, "true");
	ipc_pack_cstr(pk, "env");
	msgpack_pack_array(pk, 0);
	ipc_pack_kv_uint(pk, "timeout_ms", 0);
	ipc_pack_kv_uint(pk, "max_output", 1000);
}

static void pack_bad_id(msgpack_packer *pk)
{
	ipc_pack_kv_str(pk, "id", "one");
}

static const struct {
	const char *method;
	void (*pack)(msgpack_packer *pk);
	uint32_t nparams;
	const char *code;
	const char *needle;
} bad_requests[] = {
	{ "exec", pack_no_argv, 2, "bad_request", "argv" },
	{ "exec", pack_empty_argv, 3, "bad_request", "argv" },
	{ "exec", pack_nul_argv, 6, "bad_request", "argv" },
	{ "exec", pack_zero_timeout, 6, "bad_request", "timeout_ms" },
	{ "exec", NULL, 0, "bad_request", "id" },
	{ "kill", pack_bad_id, 1, "bad_request", "id" },
	{ "frobnicate", NULL, 0, "unknown_method", "frobnicate" },
};

START_TEST(test_bad_requests)
{
	struct reply rep;
	struct agent a;

	start_agent(&a, NULL, false);
	for (size_t i = 0; i < sizeof(bad_requests) / sizeof(bad_requests[0]); i++) {
		call(&a, &rep, send_request(&a, bad_requests[i].method, bad_requests[i].pack, bad_requests[i].nparams),
		     NULL, 0);
		ck_assert_msg(rep.is_error, "request %zu was not refused", i);
		ck_assert_str_eq(rep.err_code, bad_requests[i].code);
		ck_assert_msg(strstr(rep.err_msg, bad_requests[i].needle), "request %zu: %s", i, rep.err_msg);
	}
	/* ...and the agent is still there. */
	call(&a, &rep, send_request(&a, "ping", NULL, 0), NULL, 0);
	ck_assert(!rep.is_error);
	ck_assert_uint_eq(rep.execs, 0);
	stop_agent(&a);
}
END_TEST

START_TEST(test_eof_kills_everything)
{
	const char *argv[] = { "sh", "-c", "sleep 100 & echo $$ $!; exec sleep 100", NULL };
	struct exec_req r = { .id = 1, .argv = argv };
	struct agent a;
	struct obs o;
	long leader, bg;

	start_agent(&a, NULL, false);
	obs_init(&o, r.id, send_exec(&a, &r));
	leader = read_pid_line(&a, &o);
	bg = strtol(strchr(obs_text(&o, 1), ' '), NULL, 10);
	ck_assert_int_gt(leader, 1);
	ck_assert_int_gt(bg, 1);
	stop_agent(&a);
	/* The agent reaped the leader before exiting; the other member of
	 * its group is dead too (if perhaps not yet reaped by init). */
	ck_assert(wait_gone((pid_t)leader, false, 0));
	ck_assert(wait_gone((pid_t)bg, true, 2000));
	obs_free(&o);
}
END_TEST

START_TEST(test_malformed_frame)
{
	struct agent a;
	struct evbuffer *b = evbuffer_new();

	start_agent(&a, NULL, false);
	evbuffer_add(b, "\xc1", 1); /* never valid msgpack */
	agent_send(&a, b);
	stop_agent_expect(&a, 1);
}
END_TEST

START_TEST(test_oversized_frame)
{
	static char big[16 * 1024];
	const char *cat[] = { "cat", NULL };
	struct exec_req r = { .id = 1, .argv = cat, .stdin_data = big, .stdin_len = sizeof(big), .has_stdin = true };
	struct agent a;

	start_agent(&a, "1024", false);
	send_exec(&a, &r);
	stop_agent_expect(&a, 1);
}
END_TEST

static long vm_rss_kib(pid_t pid)
{
	char path[64], line[256];
	long kib = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "r");
	ck_assert_ptr_nonnull(f);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

START_TEST(test_back_pressure)
{
	const char *argv[] = { "head", "-c", "48000000", "/dev/zero", NULL };
	struct exec_req r = { .id = 1, .argv = argv, .max_output = 100000000 };
	struct agent a;
	struct obs o;
	long rss;

	start_agent(&a, NULL, false);
	obs_init(&o, r.id, send_exec(&a, &r));
	/* We read nothing: the agent must stop reading the pipe rather than
	 * buffer 48 MB. */
	usleep(1000 * 1000);
	rss = vm_rss_kib(a.pid);
	ck_assert_msg(rss > 0 && rss < 24 * 1024, "agent RSS %ld KiB", rss);
	pump(&a, &o, 1, NULL, 30000);
	ck_assert_uint_eq(obs_len(&o, 1), 48000000);
	ck_assert_int_eq(o.exit_code, 0);
	ck_assert(!o.truncated);
	obs_free(&o);
	stop_agent(&a);
}
END_TEST

START_TEST(test_pid1)
{
	const char *argv[] = { "sh", "-c", "sleep 0.1 & echo $$", NULL };
	struct agent a;
	struct obs o;

	start_agent(&a, NULL, true);
	run_argv(&a, 1, argv, &o);
	/* The first exec is the namespace's second process. */
	ck_assert_str_eq(obs_text(&o, 1), "2\n");
	ck_assert_int_eq(o.exit_code, 0);
	obs_free(&o);
	stop_agent(&a);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("agent");
	TCase *tc = tcase_create("agent");
	SRunner *sr;
	int failed;

	if (geteuid() != 0) {
		fprintf(stderr, "check_agent: needs root (the agent drops to uid %s); skipped\n", TEST_UID);
		return 77; /* automake's "skipped" */
	}
	signal(SIGPIPE, SIG_IGN);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_echo);
	tcase_add_test(tc, test_runs_as_user);
	tcase_add_test(tc, test_stdin);
	tcase_add_test(tc, test_signal_death);
	tcase_add_test(tc, test_timeout);
	tcase_add_test(tc, test_output_cap);
	tcase_add_test(tc, test_binary_output);
	tcase_add_test(tc, test_small_frame_chunks);
	tcase_add_test(tc, test_exec_failure);
	tcase_add_test(tc, test_concurrent);
	tcase_add_test(tc, test_exec_limit);
	tcase_add_test(tc, test_kill);
	tcase_add_test(tc, test_background_grandchild);
	tcase_add_test(tc, test_bad_requests);
	tcase_add_test(tc, test_eof_kills_everything);
	tcase_add_test(tc, test_malformed_frame);
	tcase_add_test(tc, test_oversized_frame);
	tcase_add_test(tc, test_back_pressure);
	tcase_add_test(tc, test_pid1);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
