/*
 * End-to-end tests: a real sandpoold from the build tree, driven through
 * libsandpool and raw sockets, with real sandboxes.
 */
#include "autoconfig.h"

#include <check.h>
#include <msgpack.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "ipc/codec.h"
#include "tests/harness.h"

static const char *const templates = "drain_timeout = 1s\n"
				     "[template shell]\nlanguage = shell\nmin_warm = 2\nmax_total = 8\n"
				     "[template python]\nlanguage = python\nmin_warm = 1\nmax_total = 4\n";

static struct fixture fx;

static void setup(void)
{
	fixture_start(&fx, templates);
}

static void teardown(void)
{
	fixture_finish(&fx);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Runs argv on a fresh lease of tmpl through `run`; asserts success. */
static void run_ok(struct sandpool *sp, const char *tmpl, const char *const *argv,
		   struct sandpool_exec_result *res)
{
	struct sandpool_exec_opts o = { .argv = argv };
	struct sandpool_error err;

	memset(res, 0, sizeof(*res));
	ck_assert_msg(sandpool_run(sp, tmpl, 10000, &o, res, &err) == 0, "run %s: %s", argv[0], err.message);
}

START_TEST(test_hello_and_templates)
{
	struct sandpool *sp = fixture_connect(&fx);
	struct sandpool_hello h = { 0 };
	struct sandpool_reply *r = NULL;
	struct sandpool_error err;
	const msgpack_object_array *ts;

	ck_assert_int_eq(sandpool_hello(sp, "check", &h, &err), 0);
	ck_assert_uint_eq(h.protocol, 1);
	ck_assert_uint_gt(h.max_frame, 0);
	sandpool_hello_free(&h);
	ck_assert_int_eq(sandpool_call(sp, "templates.list", NULL, 0, NULL, NULL, &r, &err), 0);
	ck_assert_int_eq(ipc_get_array(r->result, "templates", &ts), 0);
	ck_assert_uint_eq(ts->size, 2);
	sandpool_reply_free(r);
	ck_assert_int_ne(sandpool_call(sp, "no.such.method", NULL, 0, NULL, NULL, &r, &err), 0);
	ck_assert_int_eq(err.code, SANDPOOL_E_UNKNOWN_METHOD);
	sandpool_close(sp);
}
END_TEST

START_TEST(test_run_python_warm)
{
	const char *argv[] = { "python3", "-c", "print(6*7)", NULL };
	struct sandpool *sp;
	struct sandpool_exec_result res;

	ck_assert(fixture_wait_warm(&fx, "python", 1, 20000));
	sp = fixture_connect(&fx);
	run_ok(sp, "python", argv, &res);
	ck_assert_str_eq(res.stdout_buf, "42\n");
	ck_assert(res.has_exit_code);
	ck_assert_int_eq(res.exit_code, 0);
	ck_assert(res.warm);
	sandpool_exec_result_free(&res);
	sandpool_close(sp);
}
END_TEST

START_TEST(test_isolation)
{
	/* Each line prints one fact from inside the sandbox. */
	static const char script[] =
		"echo comm=$(cat /proc/1/comm)\n"
		"echo host=$(hostname)\n"
		"test -e /etc/shadow && echo shadow=visible || echo shadow=hidden\n"
		"test -e \"$SOCK\" && echo sock=visible || echo sock=hidden\n"
		"test -e \"$STATE\" && echo state=visible || echo state=hidden\n"
		"touch /usr/sandpool-probe 2>/dev/null && echo usr=writable || echo usr=readonly\n"
		"echo ifaces=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\\n' ,)\n"
		"echo uid=$(id -u)\n"
		"echo pids=$(ls /proc | grep -c '^[0-9]')\n";
	char host[256] = "", expect[512], state[400];
	const char *argv[] = { "/bin/sh", "-c", script, NULL };
	const char *env[3];
	char e1[400], e2[420];
	struct sandpool *sp = fixture_connect(&fx);
	struct sandpool_exec_opts o = { .argv = argv, .env = env };
	struct sandpool_exec_result res = { 0 };
	struct sandpool_error err;

	snprintf(state, sizeof(state), "%s/state", fx.dir);
	snprintf(e1, sizeof(e1), "SOCK=%s", fx.sock);
	snprintf(e2, sizeof(e2), "STATE=%s", state);
	env[0] = e1;
	env[1] = e2;
	env[2] = NULL;
	gethostname(host, sizeof(host));
	ck_assert_int_eq(sandpool_run(sp, "shell", 10000, &o, &res, &err), 0);
	ck_assert_ptr_nonnull(strstr(res.stdout_buf, "comm=sandpool-agent\n"));
	snprintf(expect, sizeof(expect), "host=%s\n", host);
	ck_assert_ptr_null(strstr(res.stdout_buf, expect));
	ck_assert_ptr_nonnull(strstr(res.stdout_buf, "shadow=hidden\n"));
	ck_assert_ptr_nonnull(strstr(res.stdout_buf, "sock=hidden\n"));
	ck_assert_ptr_nonnull(strstr(res.stdout_buf, "state=hidden\n"));
	ck_assert_ptr_nonnull(strstr(res.stdout_buf, "usr=readonly\n"));
	ck_assert_ptr_nonnull(strstr(res.stdout_buf, "ifaces=lo,\n"));
	ck_assert_ptr_nonnull(strstr(res.stdout_buf, "uid=65534\n"));
	sandpool_exec_result_free(&res);
	sandpool_close(sp);
}
END_TEST

START_TEST(test_lease_exec_release)
{
	struct sandpool *sp = fixture_connect(&fx);
	struct sandpool_lease_opts lo = { .template_name = "shell", .wait_ms = 5000 };
	struct sandpool_lease l = { 0 };
	const char *argv[] = { "sh", "-c", "echo out; echo err >&2; exit 3", NULL };
	const char *argv2[] = { "cat", NULL };
	struct sandpool_exec_opts o = { .argv = argv };
	struct sandpool_exec_result res = { 0 };
	struct sandpool_error err;

	ck_assert_int_eq(sandpool_lease(sp, &lo, &l, &err), 0);
	ck_assert_str_eq(l.template_name, "shell");
	ck_assert_int_eq(sandpool_exec(sp, l.lease_id, &o, &res, &err), 0);
	ck_assert_str_eq(res.stdout_buf, "out\n");
	ck_assert_str_eq(res.stderr_buf, "err\n");
	ck_assert_int_eq(res.exit_code, 3);
	sandpool_exec_result_free(&res);

	/* Files persist across execs of one lease; stdin reaches the process. */
	o.argv = argv2;
	o.stdin_data = "from stdin";
	o.stdin_len = 10;
	ck_assert_int_eq(sandpool_exec(sp, l.lease_id, &o, &res, &err), 0);
	ck_assert_str_eq(res.stdout_buf, "from stdin");
	sandpool_exec_result_free(&res);

	ck_assert_int_eq(sandpool_release(sp, l.lease_id, &err), 0);
	o.stdin_data = NULL;
	ck_assert_int_ne(sandpool_exec(sp, l.lease_id, &o, &res, &err), 0);
	ck_assert_int_eq(err.code, SANDPOOL_E_NOT_FOUND);
	ck_assert_int_ne(sandpool_release(sp, "ls-0000000000000000", &err), 0);
	ck_assert_int_eq(err.code, SANDPOOL_E_NOT_FOUND);
	sandpool_lease_free(&l);
	sandpool_close(sp);
}
END_TEST

START_TEST(test_bad_requests)
{
	struct sandpool *sp = fixture_connect(&fx);
	struct sandpool_lease_opts lo = { .template_name = "nope" };
	struct sandpool_lease l = { 0 };
	struct sandpool_reply *r = NULL;
	struct sandpool_error err;
	char buf[64];
	msgpack_sbuffer sb;
	msgpack_packer pk;

	ck_assert_int_ne(sandpool_lease(sp, &lo, &l, &err), 0);
	ck_assert_int_eq(err.code, SANDPOOL_E_UNKNOWN_TEMPLATE);
	ck_assert_int_ne(sandpool_call(sp, "sandbox.lease", NULL, 0, NULL, NULL, &r, &err), 0);
	ck_assert_int_eq(err.code, SANDPOOL_E_BAD_REQUEST);

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 3);
	ipc_pack_kv_str(&pk, "template", "shell");
	ipc_pack_kv_str(&pk, "cmd", "true");
	ipc_pack_kv_uint(&pk, "timeout_ms", 1ull << 40);
	ck_assert_int_ne(sandpool_call(sp, "run", sb.data, sb.size, NULL, NULL, &r, &err), 0);
	ck_assert_int_eq(err.code, SANDPOOL_E_BAD_REQUEST);
	msgpack_sbuffer_destroy(&sb);

	snprintf(buf, sizeof(buf), "%s", "still serving");
	ck_assert_int_eq(sandpool_call(sp, "hello", NULL, 0, NULL, NULL, &r, &err), 0);
	sandpool_reply_free(r);
	sandpool_close(sp);
}
END_TEST

struct collected {
	char out[4096];
	size_t len;
	int chunks;
};

static void collect(void *arg, int stream, const void *data, size_t len)
{
	struct collected *c = arg;

	if (stream == SANDPOOL_STDOUT && c->len + len < sizeof(c->out)) {
		memcpy(c->out + c->len, data, len);
		c->len += len;
		c->chunks++;
	}
}

START_TEST(test_streaming)
{
	const char *argv[] = { "sh", "-c", "for i in 1 2 3; do echo line$i; sleep 0.1; done", NULL };
	struct collected c = { .len = 0 };
	struct sandpool *sp = fixture_connect(&fx);
	struct sandpool_exec_opts o = { .argv = argv, .on_output = collect, .output_arg = &c };
	struct sandpool_exec_result res = { 0 };
	struct sandpool_error err;

	ck_assert_int_eq(sandpool_run(sp, "shell", 10000, &o, &res, &err), 0);
	ck_assert_int_eq(res.exit_code, 0);
	ck_assert_uint_eq(res.stdout_len, 0);
	c.out[c.len] = '\0';
	ck_assert_str_eq(c.out, "line1\nline2\nline3\n");
	ck_assert_int_ge(c.chunks, 3);
	sandpool_exec_result_free(&res);
	sandpool_close(sp);
}
END_TEST

START_TEST(test_timeout_kills)
{
	const char *argv[] = { "sh", "-c", "echo before; sleep 100", NULL };
	struct sandpool *sp = fixture_connect(&fx);
	struct sandpool_exec_opts o = { .argv = argv, .timeout_ms = 300 };
	struct sandpool_exec_result res = { 0 };
	struct sandpool_error err;
	double t0 = now_s();

	ck_assert_int_eq(sandpool_run(sp, "shell", 10000, &o, &res, &err), 0);
	ck_assert_double_lt(now_s() - t0, 3.0);
	ck_assert_ptr_nonnull(res.limit);
	ck_assert_str_eq(res.limit, "timeout");
	ck_assert(!res.has_exit_code);
	ck_assert_int_eq(res.signal, SIGKILL);
	ck_assert_str_eq(res.stdout_buf, "before\n");
	sandpool_exec_result_free(&res);
	sandpool_close(sp);
}
END_TEST

START_TEST(test_output_cap_binary)
{
	const char *big[] = { "sh", "-c", "head -c 5000000 /dev/zero", NULL };
	const char *bin[] = { "printf", "a\\000\\377b", NULL };
	struct sandpool *sp = fixture_connect(&fx);
	struct sandpool_exec_result res;

	run_ok(sp, "shell", big, &res);
	ck_assert(res.truncated);
	ck_assert_str_eq(res.limit, "output_limit");
	ck_assert_uint_eq(res.stdout_len, 1u << 20);
	sandpool_exec_result_free(&res);
	run_ok(sp, "shell", bin, &res);
	ck_assert_uint_eq(res.stdout_len, 4);
	ck_assert_int_eq(memcmp(res.stdout_buf, "a\0\377b", 4), 0);
	sandpool_exec_result_free(&res);
	sandpool_close(sp);
}
END_TEST

#define CLIENTS 50
#define ROUNDS 20

static void *client_thread(void *arg)
{
	long idx = (long)arg;
	struct sandpool_error err;
	struct sandpool *sp = sandpool_connect(fx.sock, &err);
	long ok = 0;

	if (!sp)
		return (void *)0;
	sandpool_set_timeout_ms(sp, 120000);
	for (int i = 0; i < ROUNDS; i++) {
		struct sandpool_lease_opts lo = { .template_name = "shell", .wait_ms = 120000 };
		struct sandpool_lease l = { 0 };
		char want[64];
		const char *argv[] = { "echo", want, NULL };
		struct sandpool_exec_opts o = { .argv = argv };
		struct sandpool_exec_result res = { 0 };

		snprintf(want, sizeof(want), "c%ld-r%d", idx, i);
		if (sandpool_lease(sp, &lo, &l, &err) != 0) {
			fprintf(stderr, "client %ld lease: %s\n", idx, err.message);
			break;
		}
		if (sandpool_exec(sp, l.lease_id, &o, &res, &err) == 0 && res.stdout_len == strlen(want) + 1 &&
		    memcmp(res.stdout_buf, want, strlen(want)) == 0)
			ok++;
		sandpool_exec_result_free(&res);
		if (sandpool_release(sp, l.lease_id, &err) != 0)
			ok--;
		sandpool_lease_free(&l);
	}
	sandpool_close(sp);
	return (void *)ok;
}

START_TEST(test_concurrent_clients)
{
	pthread_t th[CLIENTS];
	long total = 0;

	for (long i = 0; i < CLIENTS; i++)
		ck_assert_int_eq(pthread_create(&th[i], NULL, client_thread, (void *)i), 0);
	for (int i = 0; i < CLIENTS; i++) {
		void *r;

		pthread_join(th[i], &r);
		total += (long)r;
	}
	ck_assert_int_eq(total, CLIENTS * ROUNDS);
	ck_assert_int_eq(fixture_stat(&fx, "shell", "leased"), 0);
}
END_TEST

static int raw_connect(const char *path)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	ck_assert_int_ge(fd, 0);
	ck_assert_uint_lt(strlen(path), sizeof(sun.sun_path));
	memcpy(sun.sun_path, path, strlen(path) + 1);
	ck_assert_int_eq(connect(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	return fd;
}

/* Reads until EOF (or 5 s); returns bytes read. */
static size_t read_to_eof(int fd, char *buf, size_t cap)
{
	size_t n = 0;
	struct pollfd p = { .fd = fd, .events = POLLIN };

	while (n < cap && poll(&p, 1, 5000) == 1) {
		ssize_t r = read(fd, buf + n, cap - n);

		if (r <= 0)
			break;
		n += (size_t)r;
	}
	return n;
}

START_TEST(test_garbage_and_vanishing_clients)
{
	static const char garbage[] = "\xc1\xc1\xc1 this is not msgpack";
	struct sandpool *good = fixture_connect(&fx);
	struct sandpool_reply *r = NULL;
	struct sandpool_error err;
	char buf[512];
	msgpack_unpacked up;
	struct rpc_msg m;
	const char *why, *code;
	uint32_t clen;
	size_t n;
	int fd;

	/* Garbage earns an error frame, then EOF. */
	fd = raw_connect(fx.sock);
	ck_assert_int_eq(write(fd, garbage, sizeof(garbage) - 1), (ssize_t)sizeof(garbage) - 1);
	n = read_to_eof(fd, buf, sizeof(buf));
	close(fd);
	msgpack_unpacked_init(&up);
	ck_assert_int_eq(msgpack_unpack_next(&up, buf, n, NULL), MSGPACK_UNPACK_SUCCESS);
	ck_assert_int_eq(ipc_msg_parse(&up.data, &m, &why), 0);
	ck_assert_int_eq(m.type, RPC_RESPONSE);
	ck_assert_ptr_nonnull(m.error);
	ck_assert_int_eq(ipc_get_str(m.error, "code", &code, &clen), 0);
	ck_assert_int_eq(strncmp(code, "bad_request", clen), 0);
	msgpack_unpacked_destroy(&up);

	/* A client that asks for a lease and vanishes leaves nothing leased. */
	for (int i = 0; i < 5; i++) {
		msgpack_sbuffer sb;
		msgpack_packer pk;

		fd = raw_connect(fx.sock);
		msgpack_sbuffer_init(&sb);
		msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
		ipc_pack_request_head(&pk, 7, "run");
		msgpack_pack_map(&pk, 2);
		ipc_pack_kv_str(&pk, "template", "shell");
		ipc_pack_kv_str(&pk, "cmd", "sleep 30");
		ck_assert_int_eq(write(fd, sb.data, sb.size), (ssize_t)sb.size);
		/* Half a frame, then gone. */
		ck_assert_int_eq(write(fd, "\x94\x00", 2), 2);
		msgpack_sbuffer_destroy(&sb);
		usleep(50000);
		close(fd);
	}
	for (int i = 0; i < 300 && fixture_stat(&fx, "shell", "leased") != 0; i++)
		usleep(10000);
	ck_assert_int_eq(fixture_stat(&fx, "shell", "leased"), 0);

	ck_assert_int_eq(sandpool_call(good, "hello", NULL, 0, NULL, NULL, &r, &err), 0);
	sandpool_reply_free(r);
	sandpool_close(good);
}
END_TEST

/* Reads the one error frame a refused peer gets and the EOF after it;
 * asserts its code. */
static void expect_error_then_eof(int fd, const char *want)
{
	char buf[512];
	size_t n = read_to_eof(fd, buf, sizeof(buf));
	msgpack_unpacked up;
	struct rpc_msg m;
	const char *why, *code;
	uint32_t clen;
	size_t off = 0;

	msgpack_unpacked_init(&up);
	ck_assert_int_eq(msgpack_unpack_next(&up, buf, n, &off), MSGPACK_UNPACK_SUCCESS);
	ck_assert_int_eq(ipc_msg_parse(&up.data, &m, &why), 0);
	ck_assert_int_eq(m.type, RPC_RESPONSE);
	ck_assert_uint_eq(m.msgid, 0);
	ck_assert_ptr_nonnull(m.error);
	ck_assert_int_eq(ipc_get_str(m.error, "code", &code, &clen), 0);
	ck_assert_msg(clen == strlen(want) && strncmp(code, want, clen) == 0, "code %.*s", (int)clen, code);
	ck_assert_uint_eq(off, n); /* nothing after it: the connection was closed */
	msgpack_unpacked_destroy(&up);
}

static long daemon_vm_kib(pid_t pid)
{
	char path[64], line[256];
	long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "r");
	ck_assert_ptr_nonnull(f);
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, "VmSize:", 7) == 0)
			v = strtol(line + 7, NULL, 10);
	fclose(f);
	return v;
}

/* Container headers declaring more than a message can hold are refused
 * before their elements arrive, and plausible ones cost no memory until
 * their bytes do; the daemon serves everyone else meanwhile. */
START_TEST(test_declared_sizes_refused)
{
	/* [0, 1, "hello", [{"k": <header>...  (max_frame is 4 MiB) */
	static const char prefix[] = "\x94\x00\x01\xa5hello\x91\x81\xa1k";
	static const char huge[] = "\xdd\xff\xff\xff\xff";	 /* 2^32 - 1 elements */
	static const char plausible[] = "\xdd\x00\x20\x00\x00"; /* 2^21: libmsgpackc would reserve 48 MiB */
	enum { HOLDERS = 32 };
	struct sandpool *good = fixture_connect(&fx);
	struct sandpool_reply *r = NULL;
	struct sandpool_error err;
	char frame[64];
	int holders[HOLDERS], fd;
	long before, during = 0;
	size_t n;

	ck_assert(fixture_wait_warm(&fx, "shell", 2, 20000));
	ck_assert_int_eq(sandpool_call(good, "hello", NULL, 0, NULL, NULL, &r, &err), 0);
	sandpool_reply_free(r);
	before = daemon_vm_kib(fx.pid);

	memcpy(frame, prefix, sizeof(prefix) - 1);
	memcpy(frame + sizeof(prefix) - 1, plausible, sizeof(plausible) - 1);
	n = sizeof(prefix) - 1 + sizeof(plausible) - 1;
	for (int i = 0; i < HOLDERS; i++) {
		holders[i] = raw_connect(fx.sock);
		ck_assert_int_eq(write(holders[i], frame, n), (ssize_t)n);
	}
	for (int i = 0; i < 10; i++) {
		long v;

		ck_assert_int_eq(sandpool_call(good, "hello", NULL, 0, NULL, NULL, &r, &err), 0);
		sandpool_reply_free(r);
		v = daemon_vm_kib(fx.pid);
		if (v > during)
			during = v;
		usleep(20000);
	}
	/* 32 reservations of 48 MiB would be 1.5 GiB. */
	ck_assert_msg(during - before < 256 * 1024, "daemon address space grew by %ld KiB", during - before);

	/* A header over max_frame: limit_exceeded, then EOF. */
	fd = raw_connect(fx.sock);
	memcpy(frame + sizeof(prefix) - 1, huge, sizeof(huge) - 1);
	ck_assert_int_eq(write(fd, frame, n), (ssize_t)n);
	expect_error_then_eof(fd, "limit_exceeded");
	close(fd);

	/* Nesting deeper than the codec decodes: bad_request, then EOF. */
	fd = raw_connect(fx.sock);
	memset(frame, '\x91', 40);
	ck_assert_int_eq(write(fd, frame, 40), 40);
	expect_error_then_eof(fd, "bad_request");
	close(fd);

	for (int i = 0; i < HOLDERS; i++)
		close(holders[i]);
	ck_assert_int_eq(sandpool_call(good, "hello", NULL, 0, NULL, NULL, &r, &err), 0);
	sandpool_reply_free(r);
	sandpool_close(good);
}
END_TEST

START_TEST(test_sigterm_leaves_nothing)
{
	struct sandpool *sp;
	struct sandpool_lease_opts lo = { .template_name = "shell", .wait_ms = 5000 };
	struct sandpool_lease l = { 0 };
	const char *argv[] = { "sh", "-c", "sleep 1000 & sleep 1000", NULL };
	struct sandpool_error err;
	uint32_t msgid;
	msgpack_sbuffer sb;
	msgpack_packer pk;

	ck_assert(fixture_wait_warm(&fx, "shell", 2, 20000));
	ck_assert_uint_ge(count_agents(&fx), 2);
	sp = fixture_connect(&fx);
	ck_assert_int_eq(sandpool_lease(sp, &lo, &l, &err), 0);
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 2);
	ipc_pack_kv_str(&pk, "lease_id", l.lease_id);
	ipc_pack_cstr(&pk, "argv");
	msgpack_pack_array(&pk, 3);
	for (int i = 0; i < 3; i++)
		ipc_pack_cstr(&pk, argv[i]);
	ck_assert_int_eq(sandpool_send(sp, "sandbox.exec", sb.data, sb.size, &msgid, &err), 0);
	msgpack_sbuffer_destroy(&sb);
	usleep(200000);

	ck_assert_int_eq(fixture_stop(&fx), 0);
	ck_assert_uint_eq(count_orphans(), 0);
	sandpool_lease_free(&l);
	sandpool_close(sp);
}
END_TEST

static Suite *daemon_suite(void)
{
	Suite *s = suite_create("daemon");
	TCase *tc = tcase_create("e2e");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_hello_and_templates);
	tcase_add_test(tc, test_run_python_warm);
	tcase_add_test(tc, test_isolation);
	tcase_add_test(tc, test_lease_exec_release);
	tcase_add_test(tc, test_bad_requests);
	tcase_add_test(tc, test_streaming);
	tcase_add_test(tc, test_timeout_kills);
	tcase_add_test(tc, test_output_cap_binary);
	tcase_add_test(tc, test_concurrent_clients);
	tcase_add_test(tc, test_garbage_and_vanishing_clients);
	tcase_add_test(tc, test_declared_sizes_refused);
	tcase_add_test(tc, test_sigterm_leaves_nothing);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return run_suite(daemon_suite());
}
