/*
 * Unit tests of libsandpool's framing: the library talks to a scripted
 * daemon on the other end of a socketpair. The script runs in a thread,
 * reads requests with the codec and writes canned responses, so each test
 * states exactly what the wire carries and in which order.
 */
#include "autoconfig.h"

#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "ipc/codec.h"
#include "ipc/sandpool.h"

/* The daemon's end of the socketpair. */
struct peer {
	int fd;
	struct ipc_reader reader;
	struct rpc_msg msg; /* the last request read, valid until the next */
	msgpack_sbuffer out;
	msgpack_packer pk; /* packs into out until peer_flush() */
	void (*script)(struct peer *p);
	pthread_t thread;
	bool joined;
};

static void *peer_main(void *arg)
{
	struct peer *p = arg;

	p->script(p);
	close(p->fd);
	return NULL;
}

/* Starts script on one end and returns a connection on the other. */
static struct sandpool *peer_start(struct peer *p, void (*script)(struct peer *p))
{
	struct sandpool_error err;
	struct sandpool *sp;
	int sv[2];

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	p->fd = sv[1];
	p->script = script;
	p->joined = false;
	ck_assert_int_eq(ipc_reader_init(&p->reader, 16 << 20), 0);
	msgpack_sbuffer_init(&p->out);
	msgpack_packer_init(&p->pk, &p->out, msgpack_sbuffer_write);
	sp = sandpool_connect_fd(sv[0], &err);
	ck_assert_ptr_nonnull(sp);
	ck_assert_int_eq(pthread_create(&p->thread, NULL, peer_main, p), 0);
	return sp;
}

/* Waits for the script to end and close its socket. */
static void peer_join(struct peer *p)
{
	ck_assert_int_eq(pthread_join(p->thread, NULL), 0);
	p->joined = true;
}

/* Closes the client first, so that a script blocked writing to it ends. */
static void peer_finish(struct peer *p, struct sandpool *sp)
{
	sandpool_close(sp);
	if (!p->joined)
		peer_join(p);
	ipc_reader_destroy(&p->reader);
	msgpack_sbuffer_destroy(&p->out);
}

/* Reads the next request, which must be for method, and returns its msgid. */
static uint32_t peer_expect(struct peer *p, const char *method)
{
	const char *why = NULL;
	enum ipc_read_status st;

	while ((st = ipc_reader_next(&p->reader, &p->msg, &why)) == IPC_READ_MORE) {
		size_t cap;
		char *buf = ipc_reader_buffer(&p->reader, 4096, &cap);
		ssize_t n = read(p->fd, buf, cap);

		ck_assert_int_gt(n, 0);
		ipc_reader_consumed(&p->reader, (size_t)n);
	}
	ck_assert_msg(st == IPC_READ_MSG, "bad request frame: %s", why);
	ck_assert_int_eq(p->msg.type, RPC_REQUEST);
	ck_assert_msg(ipc_method_is(&p->msg, method), "expected %s, got %.*s", method,
		      (int)p->msg.method_len, p->msg.method);
	return p->msg.msgid;
}

/* Writes the first len bytes packed so far (all when len is 0). */
static void peer_flush_n(struct peer *p, size_t len)
{
	const char *d = p->out.data;

	if (len == 0 || len > p->out.size)
		len = p->out.size;
	while (len > 0) {
		/* The client may have gone already; what it saw is for it to check. */
		ssize_t n = send(p->fd, d, len, MSG_NOSIGNAL);

		if (n <= 0)
			break;
		d += n;
		len -= (size_t)n;
	}
	msgpack_sbuffer_clear(&p->out);
}

static void peer_flush(struct peer *p)
{
	peer_flush_n(p, 0);
}

/* Response {n: tag} to msgid. */
static void peer_reply_tag(struct peer *p, uint32_t msgid, const char *tag)
{
	ipc_pack_response_ok_head(&p->pk, msgid);
	msgpack_pack_map(&p->pk, 1);
	ipc_pack_kv_str(&p->pk, "n", tag);
	peer_flush(p);
}

static void peer_output(struct peer *p, uint32_t request, const char *stream, const char *data)
{
	ipc_pack_notify_head(&p->pk, "exec.output");
	msgpack_pack_map(&p->pk, 4);
	ipc_pack_kv_uint(&p->pk, "exec_id", 7);
	ipc_pack_kv_uint(&p->pk, "request", request);
	ipc_pack_kv_str(&p->pk, "stream", stream);
	ipc_pack_kv_bin(&p->pk, "data", data, strlen(data));
	peer_flush(p);
}

static void assert_str(const msgpack_object *map, const char *key, const char *want)
{
	const char *s;
	uint32_t len;

	ck_assert_msg(ipc_get_str(map, key, &s, &len) == 0, "%s is not a string", key);
	ck_assert_msg(len == strlen(want) && memcmp(s, want, len) == 0, "%s is %.*s, not %s", key,
		      (int)len, s, want);
}

static void assert_tag(const struct sandpool_reply *reply, const char *want)
{
	assert_str(reply->result, "n", want);
}

/* --- out-of-order responses ------------------------------------------------ */

static void script_out_of_order(struct peer *p)
{
	uint32_t a = peer_expect(p, "first");
	uint32_t b = peer_expect(p, "second");
	uint32_t c = peer_expect(p, "third");

	ck_assert_uint_ne(a, 0);
	ck_assert_uint_ne(a, b);
	ck_assert_uint_ne(b, c);
	peer_reply_tag(p, a + b + c, "nobody's"); /* an id never issued: dropped */
	peer_reply_tag(p, c, "c");
	peer_reply_tag(p, a, "a");
	peer_reply_tag(p, a, "a again"); /* a duplicate: dropped */
	peer_reply_tag(p, b, "b");
}

START_TEST(test_out_of_order_responses)
{
	struct sandpool_reply *ra, *rb, *rc;
	struct sandpool_error err;
	struct peer p;
	struct sandpool *sp = peer_start(&p, script_out_of_order);
	uint32_t a, b, c;

	ck_assert_int_eq(sandpool_send(sp, "first", NULL, 0, &a, &err), 0);
	ck_assert_int_eq(sandpool_send(sp, "second", NULL, 0, &b, &err), 0);
	ck_assert_int_eq(sandpool_send(sp, "third", NULL, 0, &c, &err), 0);
	/* b's wait reads c's and a's responses first and keeps them. */
	ck_assert_int_eq(sandpool_wait(sp, b, NULL, NULL, &rb, &err), 0);
	assert_tag(rb, "b");
	ck_assert_int_eq(sandpool_wait(sp, a, NULL, NULL, &ra, &err), 0);
	assert_tag(ra, "a");
	ck_assert_int_eq(sandpool_wait(sp, c, NULL, NULL, &rc, &err), 0);
	assert_tag(rc, "c");
	/* Collected requests are forgotten. */
	ck_assert_int_eq(sandpool_wait(sp, a, NULL, NULL, &ra, &err), -ENOENT);
	ck_assert_int_eq(err.code, SANDPOOL_E_BAD_REQUEST);
	/* Replies own their memory: they outlive the connection. */
	peer_finish(&p, sp);
	assert_tag(rc, "c");
	sandpool_reply_free(ra);
	sandpool_reply_free(rb);
	sandpool_reply_free(rc);
}
END_TEST

/* A response that arrived before the connection broke is still delivered. */
static void script_reply_then_close(struct peer *p)
{
	uint32_t a = peer_expect(p, "first");
	uint32_t b = peer_expect(p, "second");

	(void)a;
	peer_reply_tag(p, b, "b");
}

START_TEST(test_stashed_reply_survives_close)
{
	struct sandpool_reply *reply = NULL;
	struct sandpool_error err;
	struct peer p;
	struct sandpool *sp = peer_start(&p, script_reply_then_close);
	uint32_t a, b;

	ck_assert_int_eq(sandpool_send(sp, "first", NULL, 0, &a, &err), 0);
	ck_assert_int_eq(sandpool_send(sp, "second", NULL, 0, &b, &err), 0);
	ck_assert_int_eq(sandpool_wait(sp, a, NULL, NULL, &reply, &err), -ECONNRESET);
	ck_assert_int_eq(err.code, SANDPOOL_E_CONNECTION);
	ck_assert_ptr_null(reply);
	ck_assert_int_eq(sandpool_wait(sp, b, NULL, NULL, &reply, &err), 0);
	assert_tag(reply, "b");
	sandpool_reply_free(reply);
	peer_finish(&p, sp);
}
END_TEST

/* --- notifications interleaved with responses ------------------------------ */

struct seen {
	char methods[8][32];
	int n;
};

static void record_notify(void *arg, const char *method, const msgpack_object *params)
{
	struct seen *seen = arg;

	ck_assert_ptr_nonnull(params);
	ck_assert_int_lt(seen->n, 8);
	snprintf(seen->methods[seen->n++], sizeof(seen->methods[0]), "%s", method);
}

static void script_generic_notify(struct peer *p)
{
	uint32_t a = peer_expect(p, "first");
	uint32_t b = peer_expect(p, "second");

	peer_output(p, b, "stdout", "for b");
	ipc_pack_notify_head(&p->pk, "pool.event");
	msgpack_pack_map(&p->pk, 0);
	peer_flush(p);
	peer_reply_tag(p, b, "b");
	peer_output(p, a, "stdout", "for a");
	peer_reply_tag(p, a, "a");
}

START_TEST(test_generic_call_sees_every_notification)
{
	struct sandpool_reply *ra, *rb;
	struct sandpool_error err;
	struct seen seen = {.n = 0};
	struct peer p;
	struct sandpool *sp = peer_start(&p, script_generic_notify);
	uint32_t a, b;

	ck_assert_int_eq(sandpool_send(sp, "first", NULL, 0, &a, &err), 0);
	ck_assert_int_eq(sandpool_send(sp, "second", NULL, 0, &b, &err), 0);
	/* a's wait passes on the notifications of b and the unsolicited one. */
	ck_assert_int_eq(sandpool_wait(sp, a, record_notify, &seen, &ra, &err), 0);
	ck_assert_int_eq(seen.n, 3);
	ck_assert_str_eq(seen.methods[0], "exec.output");
	ck_assert_str_eq(seen.methods[1], "pool.event");
	ck_assert_str_eq(seen.methods[2], "exec.output");
	ck_assert_int_eq(sandpool_wait(sp, b, record_notify, &seen, &rb, &err), 0);
	ck_assert_int_eq(seen.n, 3);
	sandpool_reply_free(ra);
	sandpool_reply_free(rb);
	peer_finish(&p, sp);
}
END_TEST

struct captured {
	char out[64], err[64];
	size_t out_len, err_len;
};

static void capture_output(void *arg, int stream, const void *data, size_t len)
{
	struct captured *c = arg;
	char *buf = stream == SANDPOOL_STDOUT ? c->out : c->err;
	size_t *n = stream == SANDPOOL_STDOUT ? &c->out_len : &c->err_len;

	ck_assert(stream == SANDPOOL_STDOUT || stream == SANDPOOL_STDERR);
	ck_assert_uint_le(*n + len, sizeof(c->out));
	memcpy(buf + *n, data, len);
	*n += len;
}

static void script_streamed_exec(struct peer *p)
{
	const msgpack_object_array *argv;
	const msgpack_object *env;
	const char *in;
	uint32_t len;
	uint64_t u;
	bool stream;
	uint32_t id = peer_expect(p, "sandbox.exec");

	/* The request as the protocol has it: env a map, stdin bin, stream on. */
	assert_str(p->msg.params, "lease_id", "l-1");
	ck_assert_int_eq(ipc_get_array(p->msg.params, "argv", &argv), 0);
	ck_assert_uint_eq(argv->size, 2);
	ck_assert_ptr_null(ipc_map_get(p->msg.params, "cmd"));
	ck_assert_int_eq(ipc_get_map(p->msg.params, "env", &env), 0);
	assert_str(env, "A", "1");
	assert_str(env, "B", "x=y");
	assert_str(p->msg.params, "cwd", "/tmp");
	ck_assert_int_eq(ipc_get_bytes(p->msg.params, "stdin", &in, &len), 0);
	ck_assert_int_eq(ipc_map_get(p->msg.params, "stdin")->type, MSGPACK_OBJECT_BIN);
	ck_assert(len == 3 && memcmp(in, "a\0b", 3) == 0);
	ck_assert_int_eq(ipc_get_uint(p->msg.params, "timeout_ms", &u), 0);
	ck_assert_uint_eq(u, 500);
	ck_assert_int_eq(ipc_get_bool(p->msg.params, "stream", &stream), 0);
	ck_assert(stream);

	peer_output(p, id, "stdout", "hel");
	peer_output(p, id + 1, "stderr", "not ours");
	ipc_pack_notify_head(&p->pk, "pool.event");
	msgpack_pack_map(&p->pk, 0);
	peer_flush(p);
	peer_output(p, id, "stderr", "warn");
	peer_output(p, id, "stdout", "lo");

	ipc_pack_response_ok_head(&p->pk, id);
	msgpack_pack_map(&p->pk, 8);
	ipc_pack_kv_uint(&p->pk, "exec_id", 7);
	ipc_pack_kv_int(&p->pk, "exit_code", 3);
	ipc_pack_kv_nil(&p->pk, "signal");
	ipc_pack_kv_bin(&p->pk, "stdout", "", 0);
	ipc_pack_kv_bin(&p->pk, "stderr", "", 0);
	ipc_pack_kv_bool(&p->pk, "truncated", false);
	ipc_pack_kv_nil(&p->pk, "limit");
	ipc_pack_kv_uint(&p->pk, "duration_us", 1234);
	peer_flush(p);
}

START_TEST(test_streamed_exec_routes_its_output)
{
	static const char *const argv[] = {"echo", "hi", NULL};
	static const char *const env[] = {"A=1", "B=x=y", NULL};
	struct captured cap = {.out_len = 0};
	struct sandpool_exec_opts opts = {
		.argv = argv,
		.env = env,
		.cwd = "/tmp",
		.stdin_data = "a\0b",
		.stdin_len = 3,
		.timeout_ms = 500,
		.on_output = capture_output,
		.output_arg = &cap,
	};
	struct sandpool_exec_result res = {0};
	struct sandpool_error err;
	struct peer p;
	struct sandpool *sp = peer_start(&p, script_streamed_exec);

	ck_assert_int_eq(sandpool_exec(sp, "l-1", &opts, &res, &err), 0);
	ck_assert(cap.out_len == 5 && memcmp(cap.out, "hello", 5) == 0);
	ck_assert(cap.err_len == 4 && memcmp(cap.err, "warn", 4) == 0);
	ck_assert_uint_eq(res.exec_id, 7);
	ck_assert(res.has_exit_code);
	ck_assert_int_eq(res.exit_code, 3);
	ck_assert_int_eq(res.signal, 0);
	ck_assert_uint_eq(res.stdout_len, 0);
	ck_assert_str_eq(res.stdout_buf, "");
	ck_assert_ptr_null(res.limit);
	ck_assert(!res.truncated);
	ck_assert_uint_eq(res.duration_us, 1234);
	ck_assert_ptr_null(res.sandbox_id);
	ck_assert_ptr_nonnull(res.reply);
	sandpool_exec_result_free(&res);
	ck_assert_ptr_null(res.stdout_buf);
	peer_finish(&p, sp);
}
END_TEST

/* --- error maps and error codes -------------------------------------------- */

static const struct {
	const char *wire;
	enum sandpool_errcode code;
} wire_codes[] = {
#define SANDPOOL_X(name, text) {text, SANDPOOL_E_##name},
	SANDPOOL_ERRORS(SANDPOOL_X)
#undef SANDPOOL_X
};

static void script_errors(struct peer *p)
{
	uint32_t id;

	for (size_t i = 0; i < sizeof(wire_codes) / sizeof(wire_codes[0]); i++) {
		id = peer_expect(p, "fail");
		ipc_pack_response_error(&p->pk, id, wire_codes[i].wire, "it said no");
		peer_flush(p);
	}
	id = peer_expect(p, "fail");
	ipc_pack_response_error(&p->pk, id, "brand_new", "from the future");
	peer_flush(p);

	id = peer_expect(p, "fail");
	msgpack_pack_array(&p->pk, 4);
	msgpack_pack_uint8(&p->pk, RPC_RESPONSE);
	msgpack_pack_uint32(&p->pk, id);
	ipc_pack_cstr(&p->pk, "not a map");
	msgpack_pack_nil(&p->pk);
	peer_flush(p);

	id = peer_expect(p, "sandbox.release");
	ipc_pack_response_error(&p->pk, id, "not_found", "no lease l-9");
	peer_flush(p);

	/* A connection-wide error, then the daemon hangs up. */
	peer_expect(p, "hello");
	ipc_pack_response_error(&p->pk, 0, "shutting_down", "sandpoold is stopping");
	peer_flush(p);
}

START_TEST(test_error_maps_become_codes)
{
	struct sandpool_reply *reply = NULL;
	struct sandpool_error err;
	struct peer p;
	struct sandpool *sp = peer_start(&p, script_errors);
	uint32_t id;

	for (size_t i = 0; i < sizeof(wire_codes) / sizeof(wire_codes[0]); i++) {
		ck_assert_int_eq(sandpool_call(sp, "fail", NULL, 0, NULL, NULL, &reply, &err),
				 -EREMOTEIO);
		ck_assert_int_eq(err.code, wire_codes[i].code);
		ck_assert_str_eq(sandpool_errcode_name(err.code), wire_codes[i].wire);
		ck_assert_str_eq(err.message, "it said no");
		ck_assert_ptr_null(reply);
	}
	/* An unknown code is internal but keeps its name. */
	ck_assert_int_eq(sandpool_call(sp, "fail", NULL, 0, NULL, NULL, &reply, &err), -EREMOTEIO);
	ck_assert_int_eq(err.code, SANDPOOL_E_INTERNAL);
	ck_assert_str_eq(err.message, "brand_new: from the future");
	ck_assert_int_eq(sandpool_call(sp, "fail", NULL, 0, NULL, NULL, &reply, &err), -EREMOTEIO);
	ck_assert_int_eq(err.code, SANDPOOL_E_INTERNAL);
	ck_assert_int_eq(sandpool_release(sp, "l-9", &err), -EREMOTEIO);
	ck_assert_int_eq(err.code, SANDPOOL_E_NOT_FOUND);
	ck_assert_str_eq(err.message, "no lease l-9");

	ck_assert_int_eq(sandpool_call(sp, "hello", NULL, 0, NULL, NULL, &reply, &err), -ECONNRESET);
	ck_assert_int_eq(err.code, SANDPOOL_E_SHUTTING_DOWN);
	ck_assert_str_eq(err.message, "sandpoold is stopping");
	/* The connection now only repeats why it ended. */
	memset(&err, 0, sizeof(err));
	ck_assert_int_eq(sandpool_send(sp, "hello", NULL, 0, &id, &err), -ECONNRESET);
	ck_assert_int_eq(err.code, SANDPOOL_E_SHUTTING_DOWN);
	peer_finish(&p, sp);
}
END_TEST

/* --- broken streams -------------------------------------------------------- */

static void script_close_mid_response(struct peer *p)
{
	static const char big[1000];
	uint32_t id = peer_expect(p, "run");

	ipc_pack_response_ok_head(&p->pk, id);
	msgpack_pack_map(&p->pk, 1);
	ipc_pack_kv_bin(&p->pk, "stdout", big, sizeof(big));
	peer_flush_n(p, p->out.size / 2);
}

START_TEST(test_peer_closes_mid_response)
{
	static const char *const argv[] = {"true", NULL};
	struct sandpool_exec_opts opts = {.argv = argv};
	struct sandpool_exec_result res = {0};
	struct sandpool_error err;
	struct peer p;
	struct sandpool *sp = peer_start(&p, script_close_mid_response);
	uint32_t id;

	ck_assert_int_eq(sandpool_run(sp, "shell", 0, &opts, &res, &err), -ECONNRESET);
	ck_assert_int_eq(err.code, SANDPOOL_E_CONNECTION);
	ck_assert_msg(strstr(err.message, "middle of a message"), "message: %s", err.message);
	ck_assert_ptr_null(res.reply);
	/* Later calls fail at once instead of writing into a dead stream. */
	ck_assert_int_eq(sandpool_send(sp, "hello", NULL, 0, &id, &err), -ECONNRESET);
	ck_assert_int_eq(err.code, SANDPOOL_E_CONNECTION);
	peer_finish(&p, sp);
}
END_TEST

static void script_refuse(struct peer *p)
{
	/* What the daemon does past max_connections: say why, hang up unread. */
	ipc_pack_response_error(&p->pk, 0, "limit_exceeded", "too many connections");
	peer_flush(p);
}

START_TEST(test_refused_connection_says_why)
{
	struct sandpool_error err;
	struct peer p;
	struct sandpool *sp = peer_start(&p, script_refuse);
	uint32_t id;

	peer_join(&p);
	/* The write fails (EPIPE); the error waiting unread explains it. */
	ck_assert_int_eq(sandpool_send(sp, "hello", NULL, 0, &id, &err), -ECONNRESET);
	ck_assert_int_eq(err.code, SANDPOOL_E_LIMIT_EXCEEDED);
	ck_assert_str_eq(err.message, "too many connections");
	peer_finish(&p, sp);
}
END_TEST

static void script_too_large(struct peer *p)
{
	uint32_t id = peer_expect(p, "templates.list");
	char *big = calloc(1, 1 << 20);

	ck_assert_ptr_nonnull(big);
	ipc_pack_response_ok_head(&p->pk, id);
	msgpack_pack_map(&p->pk, 1);
	ipc_pack_kv_bin(&p->pk, "blob", big, 1 << 20);
	free(big);
	peer_flush(p);
}

START_TEST(test_too_large_frame)
{
	struct sandpool_reply *reply = NULL;
	struct sandpool_error err;
	struct peer p;
	struct sandpool *sp = peer_start(&p, script_too_large);

	sandpool_set_max_frame(sp, 64 * 1024);
	ck_assert_int_eq(sandpool_call(sp, "templates.list", NULL, 0, NULL, NULL, &reply, &err),
			 -EMSGSIZE);
	ck_assert_int_eq(err.code, SANDPOOL_E_CONNECTION);
	ck_assert_ptr_null(reply);
	peer_finish(&p, sp);
}
END_TEST

static void script_garbage(struct peer *p)
{
	peer_expect(p, "hello");
	/* A well-formed msgpack value that is no msgpack-RPC message. */
	msgpack_pack_array(&p->pk, 2);
	msgpack_pack_uint8(&p->pk, 7);
	msgpack_pack_nil(&p->pk);
	peer_flush(p);
}

START_TEST(test_malformed_message)
{
	struct sandpool_reply *reply = NULL;
	struct sandpool_error err;
	struct peer p;
	struct sandpool *sp = peer_start(&p, script_garbage);

	ck_assert_int_eq(sandpool_call(sp, "hello", NULL, 0, NULL, NULL, &reply, &err), -EPROTO);
	ck_assert_int_eq(err.code, SANDPOOL_E_CONNECTION);
	peer_finish(&p, sp);
}
END_TEST

/* --- timeouts -------------------------------------------------------------- */

static void script_late_reply(struct peer *p)
{
	uint32_t slow = peer_expect(p, "slow");
	/* Sent by the client only once its wait for "slow" timed out. */
	uint32_t next = peer_expect(p, "next");

	peer_reply_tag(p, slow, "stale");
	peer_reply_tag(p, next, "fresh");
}

START_TEST(test_timeout_abandons_request)
{
	struct sandpool_reply *reply = NULL;
	struct sandpool_error err;
	struct peer p;
	struct sandpool *sp = peer_start(&p, script_late_reply);

	sandpool_set_timeout_ms(sp, 50);
	ck_assert_int_eq(sandpool_call(sp, "slow", NULL, 0, NULL, NULL, &reply, &err), -ETIMEDOUT);
	ck_assert_int_eq(err.code, SANDPOOL_E_CONNECTION);
	ck_assert_ptr_null(reply);
	/* The connection stays usable and the stale response is dropped. */
	sandpool_set_timeout_ms(sp, 0);
	ck_assert_int_eq(sandpool_call(sp, "next", NULL, 0, NULL, NULL, &reply, &err), 0);
	assert_tag(reply, "fresh");
	sandpool_reply_free(reply);
	peer_finish(&p, sp);
}
END_TEST

/* --- typed calls ----------------------------------------------------------- */

static void script_typed(struct peer *p)
{
	uint64_t u;
	bool b;
	uint32_t id;

	id = peer_expect(p, "hello");
	assert_str(p->msg.params, "client", "check");
	ipc_pack_response_ok_head(&p->pk, id);
	msgpack_pack_map(&p->pk, 3);
	ipc_pack_kv_uint(&p->pk, "protocol", 1);
	ipc_pack_kv_str(&p->pk, "server", "sandpool 0.1.0");
	ipc_pack_cstr(&p->pk, "limits");
	msgpack_pack_map(&p->pk, 2);
	ipc_pack_kv_uint(&p->pk, "max_frame", 4194304);
	ipc_pack_kv_uint(&p->pk, "max_timeout_ms", 3600000);
	peer_flush(p);

	id = peer_expect(p, "sandbox.lease");
	assert_str(p->msg.params, "template", "py");
	ck_assert_int_eq(ipc_get_uint(p->msg.params, "wait_ms", &u), 0);
	ck_assert_uint_eq(u, 250);
	ck_assert_int_eq(ipc_get_bool(p->msg.params, "detached", &b), 0);
	ck_assert(b);
	ipc_pack_response_ok_head(&p->pk, id);
	msgpack_pack_map(&p->pk, 5);
	ipc_pack_kv_str(&p->pk, "lease_id", "l-1");
	ipc_pack_kv_str(&p->pk, "sandbox_id", "sb-9");
	ipc_pack_kv_str(&p->pk, "template", "py");
	ipc_pack_kv_bool(&p->pk, "warm", true);
	ipc_pack_kv_uint(&p->pk, "waited_us", 17);
	peer_flush(p);

	id = peer_expect(p, "sandbox.release");
	assert_str(p->msg.params, "lease_id", "l-1");
	ipc_pack_response_ok_head(&p->pk, id);
	msgpack_pack_map(&p->pk, 1);
	ipc_pack_kv_bool(&p->pk, "released", true);
	peer_flush(p);

	/* A result that breaks the protocol: no lease_id. */
	id = peer_expect(p, "sandbox.lease");
	ipc_pack_response_ok_head(&p->pk, id);
	msgpack_pack_map(&p->pk, 1);
	ipc_pack_kv_str(&p->pk, "sandbox_id", "sb-10");
	peer_flush(p);

	/* A field of the wrong type. */
	id = peer_expect(p, "sandbox.lease");
	ipc_pack_response_ok_head(&p->pk, id);
	msgpack_pack_map(&p->pk, 2);
	ipc_pack_kv_str(&p->pk, "lease_id", "l-2");
	ipc_pack_kv_str(&p->pk, "warm", "yes");
	peer_flush(p);
}

START_TEST(test_typed_hello_lease_release)
{
	struct sandpool_lease_opts lopts = {.template_name = "py", .wait_ms = 250, .detached = true};
	struct sandpool_hello hello = {0};
	struct sandpool_lease lease = {0};
	struct sandpool_error err;
	struct peer p;
	struct sandpool *sp = peer_start(&p, script_typed);

	ck_assert_int_eq(sandpool_hello(sp, "check", &hello, &err), 0);
	ck_assert_uint_eq(hello.protocol, SANDPOOL_PROTOCOL_VERSION);
	ck_assert_str_eq(hello.server, "sandpool 0.1.0");
	ck_assert_uint_eq(hello.max_frame, 4194304);
	ck_assert_uint_eq(hello.max_timeout_ms, 3600000);
	ck_assert_uint_eq(hello.max_inflight, 0);
	sandpool_hello_free(&hello);

	ck_assert_int_eq(sandpool_lease(sp, &lopts, &lease, &err), 0);
	ck_assert_str_eq(lease.lease_id, "l-1");
	ck_assert_str_eq(lease.sandbox_id, "sb-9");
	ck_assert_str_eq(lease.template_name, "py");
	ck_assert(lease.warm);
	ck_assert_uint_eq(lease.waited_us, 17);
	ck_assert_int_eq(sandpool_release(sp, lease.lease_id, &err), 0);
	sandpool_lease_free(&lease);
	ck_assert_ptr_null(lease.lease_id);

	ck_assert_int_eq(sandpool_lease(sp, &lopts, &lease, &err), -EPROTO);
	ck_assert_int_eq(err.code, SANDPOOL_E_INTERNAL);
	ck_assert_msg(strstr(err.message, "lease_id"), "message: %s", err.message);
	ck_assert_ptr_null(lease.sandbox_id);
	ck_assert_ptr_null(lease.reply);
	ck_assert_int_eq(sandpool_lease(sp, &lopts, &lease, &err), -EPROTO);
	ck_assert_msg(strstr(err.message, "warm"), "message: %s", err.message);
	ck_assert_ptr_null(lease.lease_id);
	peer_finish(&p, sp);
}
END_TEST

static void script_run(struct peer *p)
{
	uint64_t u;
	uint32_t id = peer_expect(p, "run");

	assert_str(p->msg.params, "template", "shell");
	assert_str(p->msg.params, "cmd", "kill -9 $$");
	ck_assert_int_eq(ipc_get_uint(p->msg.params, "wait_ms", &u), 0);
	ck_assert_uint_eq(u, 0);
	/* Unset options stay off the wire: the daemon's defaults apply. */
	ck_assert_ptr_null(ipc_map_get(p->msg.params, "argv"));
	ck_assert_ptr_null(ipc_map_get(p->msg.params, "stream"));
	ck_assert_ptr_null(ipc_map_get(p->msg.params, "env"));
	ck_assert_ptr_null(ipc_map_get(p->msg.params, "stdin"));
	ck_assert_ptr_null(ipc_map_get(p->msg.params, "timeout_ms"));

	ipc_pack_response_ok_head(&p->pk, id);
	msgpack_pack_map(&p->pk, 11);
	ipc_pack_kv_uint(&p->pk, "exec_id", 1);
	ipc_pack_kv_nil(&p->pk, "exit_code");
	ipc_pack_kv_int(&p->pk, "signal", 9);
	ipc_pack_kv_bin(&p->pk, "stdout", "a\0b", 3);
	ipc_pack_kv_str(&p->pk, "stderr", "e");
	ipc_pack_kv_bool(&p->pk, "truncated", true);
	ipc_pack_kv_str(&p->pk, "limit", "timeout");
	ipc_pack_kv_uint(&p->pk, "duration_us", 5);
	ipc_pack_kv_str(&p->pk, "sandbox_id", "sb");
	ipc_pack_kv_bool(&p->pk, "warm", false);
	ipc_pack_kv_uint(&p->pk, "waited_us", 8);
	peer_flush(p);
}

START_TEST(test_run_result)
{
	static const char *const argv[] = {"true", NULL};
	static const char *const empty[] = {NULL};
	static const char *const bad_env[] = {"NOEQUALS", NULL};
	struct sandpool_exec_opts opts = {.cmd = "kill -9 $$"};
	struct sandpool_exec_opts both = {.cmd = "true", .argv = argv};
	struct sandpool_exec_opts no_argv = {.argv = empty};
	struct sandpool_exec_opts env_opts = {.argv = argv, .env = bad_env};
	struct sandpool_exec_result res = {0};
	struct sandpool_error err;
	struct peer p;
	struct sandpool *sp = peer_start(&p, script_run);

	/* Bad options are refused before anything is sent. */
	ck_assert_int_eq(sandpool_run(sp, "shell", 0, &both, &res, &err), -EINVAL);
	ck_assert_int_eq(err.code, SANDPOOL_E_BAD_REQUEST);
	ck_assert_int_eq(sandpool_run(sp, "shell", 0, &no_argv, &res, &err), -EINVAL);
	ck_assert_int_eq(sandpool_run(sp, "shell", 0, &env_opts, &res, &err), -EINVAL);
	ck_assert_int_eq(sandpool_run(sp, NULL, 0, &opts, &res, &err), -EINVAL);

	ck_assert_int_eq(sandpool_run(sp, "shell", 0, &opts, &res, &err), 0);
	ck_assert(!res.has_exit_code);
	ck_assert_int_eq(res.signal, 9);
	ck_assert_uint_eq(res.stdout_len, 3);
	ck_assert(memcmp(res.stdout_buf, "a\0b", 4) == 0);
	ck_assert_uint_eq(res.stderr_len, 1);
	ck_assert_str_eq(res.stderr_buf, "e");
	ck_assert(res.truncated);
	ck_assert_str_eq(res.limit, "timeout");
	ck_assert_uint_eq(res.duration_us, 5);
	ck_assert_str_eq(res.sandbox_id, "sb");
	ck_assert(!res.warm);
	ck_assert_uint_eq(res.waited_us, 8);
	sandpool_exec_result_free(&res);
	peer_finish(&p, sp);
}
END_TEST

#define BIG_STDIN (3u << 20)

static void script_big_request(struct peer *p)
{
	const char *in;
	uint32_t len;
	uint32_t id = peer_expect(p, "sandbox.exec");

	ck_assert_int_eq(ipc_get_bytes(p->msg.params, "stdin", &in, &len), 0);
	ck_assert_uint_eq(len, BIG_STDIN);
	ck_assert(in[0] == 'x' && in[len - 1] == 'x');
	ipc_pack_response_ok_head(&p->pk, id);
	msgpack_pack_map(&p->pk, 1);
	ipc_pack_kv_int(&p->pk, "exit_code", 0);
	peer_flush(p);
}

/* A request bigger than the socket buffer goes out in pieces. */
START_TEST(test_big_request)
{
	static const char *const argv[] = {"wc", "-c", NULL};
	struct sandpool_exec_opts opts = {.argv = argv, .stdin_len = BIG_STDIN};
	struct sandpool_exec_result res = {0};
	struct sandpool_error err;
	struct peer p;
	struct sandpool *sp = peer_start(&p, script_big_request);
	char *in = malloc(BIG_STDIN);

	ck_assert_ptr_nonnull(in);
	memset(in, 'x', BIG_STDIN);
	opts.stdin_data = in;
	ck_assert_int_eq(sandpool_exec(sp, "l-1", &opts, &res, &err), 0);
	ck_assert(res.has_exit_code);
	ck_assert_int_eq(res.exit_code, 0);
	sandpool_exec_result_free(&res);
	free(in);
	peer_finish(&p, sp);
}
END_TEST

/* --- connecting ------------------------------------------------------------ */

START_TEST(test_connect_socket_path)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	char dir[] = "/tmp/check_client.XXXXXX";
	char missing[sizeof(dir) + 16], longpath[200];
	struct sandpool_error err;
	struct sandpool *sp;
	int lfd;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s/s.sock", dir);
	lfd = socket(AF_UNIX, SOCK_STREAM, 0);
	ck_assert_int_ge(lfd, 0);
	ck_assert_int_eq(bind(lfd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	ck_assert_int_eq(listen(lfd, 4), 0);

	/* NULL takes $SANDPOOL_SOCKET. */
	ck_assert_int_eq(setenv("SANDPOOL_SOCKET", addr.sun_path, 1), 0);
	sp = sandpool_connect(NULL, &err);
	ck_assert_ptr_nonnull(sp);
	sandpool_close(sp);

	snprintf(missing, sizeof(missing), "%s/nothing", dir);
	ck_assert_ptr_null(sandpool_connect(missing, &err));
	ck_assert_int_eq(err.code, SANDPOOL_E_CONNECTION);
	ck_assert_msg(strstr(err.message, missing), "message: %s", err.message);

	memset(longpath, 'x', sizeof(longpath) - 1);
	longpath[0] = '/';
	longpath[sizeof(longpath) - 1] = '\0';
	ck_assert_ptr_null(sandpool_connect(longpath, &err));
	ck_assert_int_eq(err.code, SANDPOOL_E_CONNECTION);

	unsetenv("SANDPOOL_SOCKET");
	close(lfd);
	unlink(addr.sun_path);
	rmdir(dir);
}
END_TEST

static Suite *client_suite(void)
{
	Suite *s = suite_create("client");
	TCase *framing = tcase_create("framing");
	TCase *calls = tcase_create("calls");

	tcase_add_test(framing, test_out_of_order_responses);
	tcase_add_test(framing, test_stashed_reply_survives_close);
	tcase_add_test(framing, test_generic_call_sees_every_notification);
	tcase_add_test(framing, test_streamed_exec_routes_its_output);
	tcase_add_test(framing, test_error_maps_become_codes);
	tcase_add_test(framing, test_peer_closes_mid_response);
	tcase_add_test(framing, test_refused_connection_says_why);
	tcase_add_test(framing, test_too_large_frame);
	tcase_add_test(framing, test_malformed_message);
	tcase_add_test(framing, test_timeout_abandons_request);
	tcase_add_test(calls, test_typed_hello_lease_release);
	tcase_add_test(calls, test_run_result);
	tcase_add_test(calls, test_big_request);
	tcase_add_test(calls, test_connect_socket_path);
	suite_add_tcase(s, framing);
	suite_add_tcase(s, calls);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(client_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
