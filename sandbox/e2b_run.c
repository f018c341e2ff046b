#include "autoconfig.h"

#include <curl/curl.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/clock.h"
#include "ipc/codec.h"
#include "ipc/sandpool.h"
#include "sandbox/e2b_internal.h"
#include "sandbox/json.h"

/* The code interpreter starts with the sandbox; creation waits this long
 * for its /health, probing every HEALTH_PROBE_MS. */
#define HEALTH_PROBE_MS 250
#define HEALTH_TRIES 80
#define UNARY_TIMEOUT_MS 30000
/* A stream silent this long is dead: envd and the code interpreter
 * send keepalives every few seconds while a process or a cell runs. */
#define STREAM_IDLE_MS 120000
/* After a kill, how long the exec's stream may take to report the end. */
#define KILL_GRACE_MS 2000
/* A streamed line or envelope larger than this breaks the stream. */
#define MAX_MESSAGE (8u << 20)

enum op_kind {
	OP_HEALTH,  /* GET /health while starting */
	OP_EXEC,    /* envd Process/Start stream */
	OP_AUX,	    /* envd SendInput/CloseStdin/SendSignal for an exec */
	OP_CODE,    /* POST /execute stream (code.run, and the preload) */
	OP_UNARY,   /* contexts and files */
};

struct e2b_op;
typedef void (*unary_cb)(struct e2b_op *op, long status, struct evbuffer *body);

struct e2b_op {
	struct e2b_sandbox *es;
	enum op_kind kind;
	uint64_t id; /* the exec's or call's id; 0 for set-up */
	struct http_request *http;
	struct evbuffer *in; /* stream bytes not yet parsed */
	struct event *timer;
	uint64_t started_us;
	uint64_t max_output, out_bytes;
	size_t scanned; /* bytes of in known to hold no newline */
	bool truncated;
	/* OP_EXEC */
	uint32_t pid;
	bool ended, killed;
	char *stream_error; /* the Connect end-of-stream error, if any */
	enum exec_limit limit;
	struct exec_result res;
	char *stdin_data;
	size_t stdin_len;
	/* OP_CODE */
	bool preload, timed_out, interrupted;
	char ctx_id[64]; /* its context, "" until known; by id, as removals move entries */
	char *code;
	struct evbuffer *env_json; /* {"K":"V",...} */
	msgpack_sbuffer error; /* the cell's error map, packed; empty: none */
	uint64_t execution_count;
	char lang[16];	       /* a default context still to be created */
	/* OP_UNARY */
	unary_cb on_answer;
	msgpack_unpacked params; /* the agent-shaped request, for the answer */
	char *params_buf;	 /* what params points into */
	bool has_params;
	TAILQ_ENTRY(e2b_op) link;
};

static void op_free(struct e2b_op *op)
{
	TAILQ_REMOVE(&op->es->ops, op, link);
	if (op->es->setup_op == op)
		op->es->setup_op = NULL;
	http_request_free(op->http);
	if (op->in)
		evbuffer_free(op->in);
	if (op->timer)
		event_free(op->timer);
	if (op->env_json)
		evbuffer_free(op->env_json);
	if (op->has_params)
		msgpack_unpacked_destroy(&op->params);
	msgpack_sbuffer_destroy(&op->error);
	free(op->params_buf);
	free(op->stream_error);
	free(op->stdin_data);
	free(op->code);
	free(op);
}

static struct e2b_op *op_new(struct e2b_sandbox *es, enum op_kind kind, uint64_t id)
{
	struct e2b_op *op = calloc(1, sizeof(*op));

	if (!op)
		return NULL;
	op->es = es;
	op->kind = kind;
	op->id = id;
	op->started_us = monotonic_us();
	msgpack_sbuffer_init(&op->error);
	TAILQ_INSERT_TAIL(&es->ops, op, link);
	if (!(op->in = evbuffer_new())) {
		op_free(op);
		return NULL;
	}
	return op;
}

void e2b_run_abandon_all(struct e2b_sandbox *es)
{
	struct e2b_op *op;

	/* Freeing a running request closes its connection: E2B interrupts a
	 * cell whose connection closes. */
	while ((op = TAILQ_FIRST(&es->ops)))
		op_free(op);
}

/* "/workspace" is E2B's home directory; other paths are the sandbox's own. */
static void map_path(const char *p, size_t len, char *out, size_t outlen)
{
	static const char ws[] = "/workspace";
	size_t wl = sizeof(ws) - 1;

	if (len >= wl && !memcmp(p, ws, wl) && (len == wl || p[wl] == '/'))
		snprintf(out, outlen, "%s%.*s", E2B_HOME, (int)(len - wl), p + wl);
	else if (len && p[0] != '/')
		snprintf(out, outlen, "%s/%.*s", E2B_HOME, (int)len, p);
	else
		snprintf(out, outlen, "%.*s", (int)len, p);
}

/* A request to the sandbox's port: through e2b_sandbox_url with routing
 * headers when set (self-hosted E2B, the tests), else E2B's own host. */
static struct http_request *sandbox_request(struct e2b_sandbox *es, int port, const char *method,
					    const char *path)
{
	const struct template_config *t = es->sb->tmpl;
	char url[E2B_URL_MAX], h[512];
	struct http_request *r;
	bool routed = t->e2b_sandbox_url && *t->e2b_sandbox_url;
	int rc = 0, w;

	if (routed) {
		size_t n = strlen(t->e2b_sandbox_url);

		while (n > 0 && t->e2b_sandbox_url[n - 1] == '/')
			n--;
		w = snprintf(url, sizeof(url), "%.*s%s", (int)n, t->e2b_sandbox_url, path);
	} else {
		w = snprintf(url, sizeof(url), "https://%d-%s.%s%s", port, es->sandbox_id, es->domain, path);
	}
	/* A cut URL would name another file: refuse it instead. */
	if (w < 0 || (size_t)w >= sizeof(url))
		return NULL;
	r = http_request_new(method, url);
	if (!r)
		return NULL;
	if (es->access_token[0]) {
		snprintf(h, sizeof(h), "X-Access-Token: %s", es->access_token);
		rc = http_request_header(r, h);
	}
	if (es->traffic_token[0] && rc == 0) {
		snprintf(h, sizeof(h), "E2B-Traffic-Access-Token: %s", es->traffic_token);
		rc = http_request_header(r, h);
	}
	if (routed && rc == 0) {
		snprintf(h, sizeof(h), "E2b-Sandbox-Id: %s", es->sandbox_id);
		rc = http_request_header(r, h);
		snprintf(h, sizeof(h), "E2b-Sandbox-Port: %d", port);
		rc = rc ?: http_request_header(r, h);
	}
	if (rc < 0) {
		http_request_free(r);
		return NULL;
	}
	return r;
}

/* A 502 from inside, or a 404 where nothing but the sandbox can be
 * missing (not a file), may mean E2B reaped the sandbox: ask. */
static void maybe_lost(struct e2b_op *op, int err, long status)
{
	if (!err && (status == 502 || (status == 404 && op->kind != OP_UNARY)))
		e2b_check_alive(op->es);
}

/* A string field as a C string, NULL when absent or not a string. */
static char *dup_field(const msgpack_object *map, const char *key)
{
	const msgpack_object *o = ipc_map_get(map, key);

	return o ? ipc_obj_strdup(o) : NULL;
}

/* ---- exec: envd's Process/Start ----------------------------------------- */

static void exec_finish(struct e2b_op *op, int errcode, const char *msg)
{
	struct sandbox_exec *ex = sandbox_find_exec(op->es->sb, op->id);
	struct exec_result res = op->res;

	res.truncated = op->truncated;
	res.limit = op->limit;
	res.duration_us = monotonic_us() - op->started_us;
	op_free(op);
	if (ex)
		sandbox_exec_finish(ex, errcode ? NULL : &res, errcode, msg);
}

static void send_aux(struct e2b_sandbox *es, uint32_t pid, const char *rpc, const char *input_b64);

static void on_aux_done(struct http_request *r, int err, long status, void *arg)
{
	struct e2b_op *op = arg;
	struct e2b_sandbox *es = op->es;
	uint32_t pid = op->pid;
	bool close_stdin = op->ended;

	op_free(op);
	/* Sent only now: separate connections could deliver it first. */
	if (close_stdin)
		send_aux(es, pid, "CloseStdin", NULL);
}

/* SendSignal, SendInput (then CloseStdin), CloseStdin: unary Connect
 * calls, fire and forget (the exec's own stream reports what came of
 * them). */
static void send_aux(struct e2b_sandbox *es, uint32_t pid, const char *rpc, const char *input_b64)
{
	struct e2b_op *op = op_new(es, OP_AUX, 0);
	struct evbuffer *b = evbuffer_new();
	char path[64];
	int rc = -ENOMEM;

	if (!op || !b)
		goto out;
	op->pid = pid;
	/* In an aux op, "ended" says: CloseStdin follows this SendInput. */
	op->ended = input_b64 != NULL;
	snprintf(path, sizeof(path), "/process.Process/%s", rpc);
	op->http = sandbox_request(es, E2B_PORT_ENVD, "POST", path);
	if (!op->http)
		goto out;
	evbuffer_add_printf(b, "{\"process\":{\"pid\":%" PRIu32 "}", pid);
	if (!strcmp(rpc, "SendSignal"))
		evbuffer_add_printf(b, ",\"signal\":\"SIGNAL_SIGKILL\"}");
	else if (input_b64)
		evbuffer_add_printf(b, ",\"input\":{\"stdin\":\"%s\"}}", input_b64);
	else
		evbuffer_add_printf(b, "}");
	rc = http_request_header(op->http, "Connect-Protocol-Version: 1");
	rc = rc ?: http_request_body(op->http, b, "application/json");
	http_request_timeout(op->http, UNARY_TIMEOUT_MS, 0);
	rc = rc ?: http_request_start(op->http, NULL, on_aux_done, op);
out:
	if (b)
		evbuffer_free(b);
	if (rc < 0 && op) {
		sb_log_warn(es->sb, "envd %s for pid %" PRIu32 " not sent: %s", rpc, pid, strerror(-rc));
		op_free(op);
	}
}

static void exec_kill(struct e2b_op *op, enum exec_limit why)
{
	struct timeval tv = ms_timeval(KILL_GRACE_MS);

	if (op->limit == EXEC_LIMIT_NONE)
		op->limit = why;
	if (op->killed)
		return;
	op->killed = true;
	if (op->pid)
		send_aux(op->es, op->pid, "SendSignal", NULL);
	/* Still no end event by then: the exec ends here, its stream closed. */
	evtimer_add(op->timer, &tv);
}

static void on_exec_timer(evutil_socket_t fd, short what, void *arg)
{
	struct e2b_op *op = arg;

	if (!op->killed) {
		exec_kill(op, EXEC_LIMIT_TIMEOUT);
		return;
	}
	op->res.signal = SIGKILL;
	exec_finish(op, 0, NULL);
}

static void exec_output(struct e2b_op *op, int stream, const char *b64, uint32_t len)
{
	struct sandbox_exec *ex = sandbox_find_exec(op->es->sb, op->id);
	char *data;
	long n;

	if (!ex) {
		/* The lease ended under it: nobody wants its output. */
		exec_kill(op, EXEC_LIMIT_NONE);
		return;
	}
	data = malloc(len / 4 * 3 + 3);
	if (!data || (n = base64_decode(b64, len, data)) < 0) {
		free(data);
		return;
	}
	if (op->out_bytes + (uint64_t)n > op->max_output) {
		n = (long)(op->max_output - op->out_bytes);
		op->truncated = true;
		exec_kill(op, EXEC_LIMIT_OUTPUT);
	}
	op->out_bytes += (uint64_t)n;
	if (n > 0 && ex->on_output)
		ex->on_output(ex, stream, data, (size_t)n);
	free(data);
}

/* One ProcessEvent of the stream. */
static void exec_event(struct e2b_op *op, const msgpack_object *msg)
{
	const msgpack_object *ev = ipc_map_get(msg, "event"), *x;
	const char *s;
	uint32_t len;

	if (!ev)
		return;
	if ((x = ipc_map_get(ev, "start"))) {
		uint64_t pid;

		if (ipc_get_uint(x, "pid", &pid) == 0 && pid <= UINT32_MAX)
			op->pid = (uint32_t)pid;
		if (op->killed)
			send_aux(op->es, op->pid, "SendSignal", NULL);
		if (op->stdin_data && op->stdin_len) {
			char *b64 = malloc(base64_encoded_len(op->stdin_len) + 1);

			if (b64) {
				b64[base64_encode(op->stdin_data, op->stdin_len, b64)] = '\0';
				send_aux(op->es, op->pid, "SendInput", b64);
				free(b64);
			}
		} else if (op->stdin_data) {
			send_aux(op->es, op->pid, "CloseStdin", NULL);
		}
	} else if ((x = ipc_map_get(ev, "data"))) {
		if (ipc_get_str(x, "stdout", &s, &len) == 0)
			exec_output(op, 1, s, len);
		else if (ipc_get_str(x, "stderr", &s, &len) == 0)
			exec_output(op, 2, s, len);
	} else if ((x = ipc_map_get(ev, "end"))) {
		/* Proto3's JSON leaves out zero values: no exitCode is 0. */
		int64_t code = 0;
		bool exited = false;

		(void)ipc_get_int(x, "exitCode", &code);
		(void)ipc_get_bool(x, "exited", &exited);
		op->ended = true;
		if (exited && !op->killed) {
			op->res.exited = true;
			op->res.exit_code = (int)code;
		} else if (ipc_get_str(x, "status", &s, &len) == 0 && len >= 8 && !memcmp(s, "signal: ", 8)) {
			op->res.signal = !memcmp(s + 8, "killed", len - 8 < 6 ? len - 8 : 6) ? SIGKILL : SIGTERM;
		} else {
			op->res.signal = SIGKILL;
		}
	}
}

/* Connect's envelopes: a flags byte, a big-endian u32 length, JSON. */
static bool on_exec_data(struct http_request *r, const char *data, size_t len, void *arg)
{
	struct e2b_op *op = arg;

	if (evbuffer_add(op->in, data, len) < 0)
		return false;
	for (;;) {
		unsigned char head[5];
		uint32_t n;
		msgpack_unpacked msg;
		char *body;

		if (evbuffer_copyout(op->in, head, 5) < 5)
			return true;
		n = (uint32_t)head[1] << 24 | (uint32_t)head[2] << 16 | (uint32_t)head[3] << 8 | head[4];
		if (n > MAX_MESSAGE)
			return false;
		if (evbuffer_get_length(op->in) < 5 + (size_t)n)
			return true;
		body = (char *)evbuffer_pullup(op->in, 5 + (ssize_t)n) + 5;
		if (json_parse(body, n, &msg) == 0) {
			/* The end-of-stream envelope (flag 2) carries only an error. */
			if (!(head[0] & 2))
				exec_event(op, &msg.data);
			else if (!op->stream_error) {
				op->stream_error = dup_field(ipc_map_get(&msg.data, "error"), "message");
			}
			msgpack_unpacked_destroy(&msg);
		}
		evbuffer_drain(op->in, 5 + (size_t)n);
	}
}

static void on_exec_done(struct http_request *r, int err, long status, void *arg)
{
	struct e2b_op *op = arg;
	char msg[256];

	if (op->ended || (op->killed && !err && status == 200)) {
		if (!op->ended)
			op->res.signal = SIGKILL;
		exec_finish(op, 0, NULL);
		return;
	}
	maybe_lost(op, err, status);
	if (err)
		snprintf(msg, sizeof(msg), "E2B envd stream failed: %s", strerror(-err));
	else if (op->stream_error)
		snprintf(msg, sizeof(msg), "E2B envd: %.200s", op->stream_error);
	else
		snprintf(msg, sizeof(msg), "E2B envd answered HTTP %ld to Process/Start", status);
	exec_finish(op, SANDPOOL_E_BACKEND_ERROR, msg);
}

static int put_env_map(struct evbuffer *b, const char *const *env)
{
	int rc = evbuffer_add(b, "{", 1) < 0 ? -ENOMEM : 0;

	for (unsigned i = 0; env && env[i] && rc == 0; i++) {
		size_t k = strcspn(env[i], "=");
		char val[4200];
		const char *v = env[i][k] ? env[i] + k + 1 : "";

		/* The sandbox's home is E2B's, wherever the daemon says /workspace. */
		if (!strncmp(v, "/workspace", 10) && (v[10] == '\0' || v[10] == '/' || v[10] == ':')) {
			map_path(v, strlen(v), val, sizeof(val));
			v = val;
		}
		if (i)
			rc = evbuffer_add(b, ",", 1) < 0 ? -ENOMEM : 0;
		rc = rc ?: json_put_str(b, env[i], k);
		rc = rc ?: (evbuffer_add(b, ":", 1) < 0 ? -ENOMEM : 0);
		rc = rc ?: json_put_cstr(b, v);
	}
	return rc ?: (evbuffer_add(b, "}", 1) < 0 ? -ENOMEM : 0);
}

int e2b_run_exec(struct sandbox *sb, struct sandbox_exec *ex, const struct exec_request *req)
{
	struct e2b_sandbox *es = sb->backend_state;
	struct e2b_op *op;
	struct evbuffer *json = evbuffer_new(), *env = NULL;
	unsigned char head[5];
	char cwd[4200];
	size_t n;
	struct timeval tv = ms_timeval(req->timeout_ms);
	int rc = -ENOMEM;

	if (!es->ready || !json)
		goto out;
	op = op_new(es, OP_EXEC, ex->id);
	if (!op)
		goto out;
	op->max_output = req->max_output;
	if (req->stdin_data) {
		op->stdin_data = malloc(req->stdin_len + 1);
		if (!op->stdin_data)
			goto fail;
		memcpy(op->stdin_data, req->stdin_data, req->stdin_len);
		op->stdin_len = req->stdin_len;
	}
	map_path(req->cwd ? req->cwd : "/workspace", strlen(req->cwd ? req->cwd : "/workspace"), cwd, sizeof(cwd));
	rc = evbuffer_add(json, "{\"process\":{", 12) < 0 ? -ENOMEM : 0;
	rc = rc ?: json_put_key(json, "cmd");
	rc = rc ?: json_put_cstr(json, req->argv[0]);
	rc = rc ?: (evbuffer_add(json, ",\"args\":[", 9) < 0 ? -ENOMEM : 0);
	for (unsigned i = 1; req->argv[i] && rc == 0; i++) {
		if (i > 1)
			rc = evbuffer_add(json, ",", 1) < 0 ? -ENOMEM : 0;
		rc = rc ?: json_put_cstr(json, req->argv[i]);
	}
	rc = rc ?: (evbuffer_add(json, "],\"envs\":", 9) < 0 ? -ENOMEM : 0);
	rc = rc ?: put_env_map(json, req->env);
	rc = rc ?: (evbuffer_add(json, ",", 1) < 0 ? -ENOMEM : 0);
	rc = rc ?: json_put_key(json, "cwd");
	rc = rc ?: json_put_cstr(json, cwd);
	rc = rc ?: (evbuffer_add_printf(json, "},\"stdin\":%s}", req->stdin_data ? "true" : "false") < 0 ? -ENOMEM : 0);
	if (rc < 0)
		goto fail;
	n = evbuffer_get_length(json);
	head[0] = 0;
	head[1] = (unsigned char)(n >> 24);
	head[2] = (unsigned char)(n >> 16);
	head[3] = (unsigned char)(n >> 8);
	head[4] = (unsigned char)n;
	rc = -ENOMEM;
	if (!(env = evbuffer_new()) || evbuffer_add(env, head, 5) < 0 || evbuffer_add_buffer(env, json) < 0)
		goto fail;
	op->http = sandbox_request(es, E2B_PORT_ENVD, "POST", "/process.Process/Start");
	op->timer = evtimer_new(e2b_base, on_exec_timer, op);
	if (!op->http || !op->timer)
		goto fail;
	rc = http_request_body(op->http, env, "application/connect+json");
	http_request_timeout(op->http, 0, STREAM_IDLE_MS);
	rc = rc ?: http_request_start(op->http, on_exec_data, on_exec_done, op);
	if (rc < 0)
		goto fail;
	evtimer_add(op->timer, &tv);
	goto out;
fail:
	op_free(op);
out:
	if (json)
		evbuffer_free(json);
	if (env)
		evbuffer_free(env);
	return es->ready ? rc : -EPIPE;
}

void e2b_run_exec_cancel(struct sandbox *sb, struct sandbox_exec *ex)
{
	struct e2b_sandbox *es = sb->backend_state;
	struct e2b_op *op;

	TAILQ_FOREACH(op, &es->ops, link)
		if (op->kind == OP_EXEC && op->id == ex->id) {
			exec_kill(op, EXEC_LIMIT_NONE);
			return;
		}
}

/* ---- code: the code interpreter's /execute and /contexts --------------- */

static const char *e2b_language(const char *lang, size_t len)
{
	if ((len == 10 && !memcmp(lang, "javascript", 10)) || (len == 2 && !memcmp(lang, "js", 2)))
		return "js";
	if ((len == 4 && !memcmp(lang, "bash", 4)) || (len == 5 && !memcmp(lang, "shell", 5)))
		return "bash";
	if (len == 6 && !memcmp(lang, "python", 6))
		return "python";
	return NULL;
}

/* Our name for E2B's language, as local sandboxes report it. */
static const char *our_language(const char *e2b_lang)
{
	return !strcmp(e2b_lang, "js") ? "javascript" : e2b_lang;
}

static int find_context(const struct e2b_sandbox *es, const char *id, size_t len)
{
	for (unsigned i = 0; i < es->n_contexts; i++)
		if (strlen(es->contexts[i].id) == len && !memcmp(es->contexts[i].id, id, len))
			return (int)i;
	return -1;
}

/* The op's context, or NULL when it was removed meanwhile. */
static struct e2b_context *op_context(struct e2b_op *op)
{
	int i = op->ctx_id[0] ? find_context(op->es, op->ctx_id, strlen(op->ctx_id)) : -1;

	return i < 0 ? NULL : &op->es->contexts[i];
}

static void op_set_context(struct e2b_op *op, int i)
{
	snprintf(op->ctx_id, sizeof(op->ctx_id), "%s", op->es->contexts[i].id);
}

static int default_context(const struct e2b_sandbox *es, const char *lang)
{
	for (unsigned i = 0; i < es->n_contexts; i++)
		if (es->contexts[i].is_default && !strcmp(es->contexts[i].language, lang))
			return (int)i;
	return -1;
}

/* Hands a packed msgpack map to a callback as an object. */
static void with_object(const msgpack_sbuffer *sb, void (*fn)(const msgpack_object *o, void *arg), void *arg)
{
	msgpack_unpacked u;
	size_t off = 0;

	msgpack_unpacked_init(&u);
	if (msgpack_unpack_next(&u, sb->data, sb->size, &off) == MSGPACK_UNPACK_SUCCESS)
		fn(&u.data, arg);
	msgpack_unpacked_destroy(&u);
}

struct notify_arg {
	struct sandbox_call *c;
	const char *method;
};

static void notify_fn(const msgpack_object *o, void *arg)
{
	struct notify_arg *na = arg;

	na->c->on_notify(na->c, na->method, strlen(na->method), o);
}

static void call_notify(struct sandbox_call *c, const char *method, const msgpack_sbuffer *sb)
{
	struct notify_arg na = { c, method };

	with_object(sb, notify_fn, &na);
}

static void finish_fn(const msgpack_object *o, void *arg)
{
	sandbox_call_finish(arg, o, 0, NULL);
}

/* Ends a call with a packed answer and frees op. */
static void call_answer(struct e2b_op *op, const msgpack_sbuffer *answer)
{
	struct sandbox_call *c = sandbox_find_call(op->es->sb, op->id);

	op_free(op);
	if (c)
		with_object(answer, finish_fn, c);
}

static void call_error(struct e2b_op *op, enum sandpool_errcode code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void call_error(struct e2b_op *op, enum sandpool_errcode code, const char *fmt, ...)
{
	struct e2b_sandbox *es = op->es;
	struct sandbox_call *c = sandbox_find_call(es->sb, op->id);
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (es->setup_op == op) {
		op_free(op);
		e2b_setup_done(es, -EIO, msg);
		return;
	}
	op_free(op);
	if (c)
		sandbox_call_finish(c, NULL, code, msg);
}

static void code_output(struct e2b_op *op, int stream, const char *text, uint32_t len)
{
	struct sandbox_call *c = sandbox_find_call(op->es->sb, op->id);
	msgpack_sbuffer sb;
	msgpack_packer pk;

	if (op->out_bytes >= op->max_output) {
		op->truncated = op->truncated || len > 0;
		return;
	}
	if (op->out_bytes + len > op->max_output) {
		len = (uint32_t)(op->max_output - op->out_bytes);
		op->truncated = true;
	}
	op->out_bytes += len;
	if (!c || len == 0)
		return;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 4);
	ipc_pack_kv_uint(&pk, "id", op->id);
	ipc_pack_kv_str(&pk, "context_id", op->ctx_id);
	ipc_pack_kv_uint(&pk, "stream", (uint64_t)stream);
	ipc_pack_kv_bin(&pk, "data", text, len);
	call_notify(c, "output", &sb);
	msgpack_sbuffer_destroy(&sb);
}

/* A result line, passed on without its "type" and E2B's null fields. */
static void code_result(struct e2b_op *op, const msgpack_object *line)
{
	struct sandbox_call *c = sandbox_find_call(op->es->sb, op->id);
	const msgpack_object_map *m = &line->via.map;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	uint32_t keep = 0;
	size_t before = 0;

	for (uint32_t i = 0; i < m->size; i++)
		if (m->ptr[i].val.type != MSGPACK_OBJECT_NIL && !(m->ptr[i].key.type == MSGPACK_OBJECT_STR &&
								   m->ptr[i].key.via.str.size == 4 &&
								   !memcmp(m->ptr[i].key.via.str.ptr, "type", 4)))
			keep++;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 3);
	ipc_pack_kv_uint(&pk, "id", op->id);
	ipc_pack_kv_str(&pk, "context_id", op->ctx_id);
	ipc_pack_cstr(&pk, "result");
	before = sb.size;
	msgpack_pack_map(&pk, keep);
	for (uint32_t i = 0; i < m->size; i++) {
		if (m->ptr[i].val.type == MSGPACK_OBJECT_NIL || (m->ptr[i].key.type == MSGPACK_OBJECT_STR &&
								 m->ptr[i].key.via.str.size == 4 &&
								 !memcmp(m->ptr[i].key.via.str.ptr, "type", 4)))
			continue;
		msgpack_pack_object(&pk, m->ptr[i].key);
		msgpack_pack_object(&pk, m->ptr[i].val);
	}
	/* Results count towards max_output like local sandboxes' do; one
	 * that does not fit is dropped whole. */
	if (op->out_bytes + (sb.size - before) > op->max_output) {
		op->truncated = true;
	} else {
		op->out_bytes += sb.size - before;
		if (c)
			call_notify(c, "result", &sb);
	}
	msgpack_sbuffer_destroy(&sb);
}

static void pack_error(struct e2b_op *op, const char *name, const char *value, const char *traceback)
{
	msgpack_packer pk;

	op->error.size = 0;
	msgpack_packer_init(&pk, &op->error, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 3);
	ipc_pack_kv_str(&pk, "name", name);
	ipc_pack_kv_str(&pk, "value", value);
	ipc_pack_kv_str(&pk, "traceback", traceback);
}

static void code_line(struct e2b_op *op, const char *line, size_t len)
{
	msgpack_unpacked u;
	const char *type, *s;
	uint32_t tlen, slen;

	if (json_parse(line, len, &u) < 0)
		return;
	if (ipc_get_str(&u.data, "type", &type, &tlen) < 0)
		goto out;
#define IS(w) (tlen == sizeof(w) - 1 && !memcmp(type, w, tlen))
	if (IS("stdout") || IS("stderr")) {
		if (ipc_get_str(&u.data, "text", &s, &slen) == 0 && !op->preload)
			code_output(op, IS("stdout") ? 1 : 2, s, slen);
	} else if (IS("result")) {
		if (!op->preload)
			code_result(op, &u.data);
	} else if (IS("error")) {
		char *name = dup_field(&u.data, "name");
		char *value = dup_field(&u.data, "value");
		char *tb = dup_field(&u.data, "traceback");

		pack_error(op, name ? name : "Error", value ? value : "", tb ? tb : "");
		free(name);
		free(value);
		free(tb);
	} else if (IS("number_of_executions")) {
		(void)ipc_get_uint(&u.data, "execution_count", &op->execution_count);
	} else if (IS("unexpected_end_of_execution")) {
		pack_error(op, "ContextDied", "the code interpreter ended the cell unexpectedly", "");
	}
#undef IS
out:
	msgpack_unpacked_destroy(&u);
}

static bool on_code_data(struct http_request *r, const char *data, size_t len, void *arg)
{
	struct e2b_op *op = arg;
	struct evbuffer_ptr p, from;

	if (evbuffer_add(op->in, data, len) < 0)
		return false;
	/* Resume the search where the last one stopped: a long line arrives
	 * in many pieces and must not be rescanned for each. */
	for (;;) {
		if (evbuffer_ptr_set(op->in, &from, op->scanned, EVBUFFER_PTR_SET) < 0)
			break;
		p = evbuffer_search(op->in, "\n", 1, &from);
		if (p.pos < 0) {
			op->scanned = evbuffer_get_length(op->in);
			break;
		}
		code_line(op, (const char *)evbuffer_pullup(op->in, (ssize_t)p.pos + 1), (size_t)p.pos);
		evbuffer_drain(op->in, (size_t)p.pos + 1);
		op->scanned = 0;
	}
	return evbuffer_get_length(op->in) <= MAX_MESSAGE;
}

/* code.run's answer, as the local agent gives it (docs/AGENT.md). */
static void code_finish(struct e2b_op *op)
{
	struct e2b_sandbox *es = op->es;
	struct e2b_context *ctx = op_context(op);
	msgpack_sbuffer sb;
	msgpack_packer pk;

	if (ctx && ctx->busy)
		ctx->busy--;
	if (ctx && op->execution_count)
		ctx->execution_count = op->execution_count;
	else if (ctx)
		op->execution_count = ++ctx->execution_count;
	if (op->preload) {
		char why[512] = "";

		if (op->error.size) {
			msgpack_unpacked u;
			size_t off = 0;
			const char *n = "", *v = "";
			uint32_t nl = 0, vl = 0;

			msgpack_unpacked_init(&u);
			if (msgpack_unpack_next(&u, op->error.data, op->error.size, &off) == MSGPACK_UNPACK_SUCCESS) {
				(void)ipc_get_str(&u.data, "name", &n, &nl);
				(void)ipc_get_str(&u.data, "value", &v, &vl);
			}
			snprintf(why, sizeof(why), "the template's preload failed: %.*s: %.*s", (int)nl, n, (int)vl, v);
			msgpack_unpacked_destroy(&u);
		}
		op_free(op);
		e2b_setup_done(es, why[0] ? -EIO : 0, why);
		return;
	}
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 7);
	ipc_pack_kv_str(&pk, "context_id", op->ctx_id);
	ipc_pack_kv_uint(&pk, "execution_count", op->execution_count);
	ipc_pack_cstr(&pk, "error");
	if (op->error.size)
		pk.callback(pk.data, op->error.data, op->error.size);
	else
		msgpack_pack_nil(&pk);
	ipc_pack_kv_bool(&pk, "truncated", op->truncated);
	if (op->timed_out)
		ipc_pack_kv_str(&pk, "limit", "timeout");
	else
		ipc_pack_kv_nil(&pk, "limit");
	ipc_pack_kv_bool(&pk, "restarted", false);
	ipc_pack_kv_uint(&pk, "duration_us", monotonic_us() - op->started_us);
	call_answer(op, &sb);
	msgpack_sbuffer_destroy(&sb);
}

static void on_code_done(struct http_request *r, int err, long status, void *arg)
{
	struct e2b_op *op = arg;

	if (!err && status == 200) {
		if (evbuffer_get_length(op->in))
			code_line(op, (const char *)evbuffer_pullup(op->in, -1), evbuffer_get_length(op->in));
		code_finish(op);
		return;
	}
	maybe_lost(op, err, status);
	if (op_context(op) && op_context(op)->busy)
		op_context(op)->busy--;
	if (err)
		call_error(op, SANDPOOL_E_BACKEND_ERROR, "E2B code interpreter: %s", strerror(-err));
	else if (status == 404)
		/* The daemon made the context, so its sandbox is more likely gone
		 * (e2b_check_alive asks E2B) than the context. */
		call_error(op, SANDPOOL_E_BACKEND_ERROR,
			   "E2B code interpreter: HTTP 404: the sandbox or its context is gone");
	else
		call_error(op, SANDPOOL_E_BACKEND_ERROR, "E2B code interpreter answered HTTP %ld", status);
}

/* At timeout_ms the cell's connection is closed, which interrupts it in
 * E2B's kernel; its state stays, as a SIGINTed local cell's does. */
static void on_code_timer(evutil_socket_t fd, short what, void *arg)
{
	struct e2b_op *op = arg;
	char value[160];

	http_request_free(op->http);
	op->http = NULL;
	op->timed_out = true;
	snprintf(value, sizeof(value), "the cell ran longer than timeout_ms and was interrupted");
	pack_error(op, "TimeoutError", value, "");
	code_finish(op);
}

static void start_execute(struct e2b_op *op, uint64_t timeout_ms)
{
	struct e2b_context *ctx = op_context(op);
	struct evbuffer *b = ctx ? evbuffer_new() : NULL;
	struct timeval tv = ms_timeval(timeout_ms);
	int rc = b ? 0 : -ENOMEM;

	if (!ctx) {
		call_error(op, SANDPOOL_E_NOT_FOUND, "the context was removed");
		return;
	}

	rc = rc ?: (evbuffer_add(b, "{", 1) < 0 ? -ENOMEM : 0);
	rc = rc ?: json_put_key(b, "code");
	rc = rc ?: json_put_cstr(b, op->code);
	rc = rc ?: (evbuffer_add(b, ",", 1) < 0 ? -ENOMEM : 0);
	rc = rc ?: json_put_key(b, "context_id");
	rc = rc ?: json_put_cstr(b, ctx->id);
	if (rc == 0 && op->env_json) {
		rc = evbuffer_add(b, ",\"env_vars\":", 12) < 0 ? -ENOMEM : 0;
		rc = rc ?: (evbuffer_add_buffer(b, op->env_json) < 0 ? -ENOMEM : 0);
	}
	rc = rc ?: (evbuffer_add(b, "}", 1) < 0 ? -ENOMEM : 0);
	if (rc == 0) {
		op->http = sandbox_request(op->es, E2B_PORT_CODE, "POST", "/execute");
		op->timer = evtimer_new(e2b_base, on_code_timer, op);
		rc = op->http && op->timer ? 0 : -ENOMEM;
	}
	rc = rc ?: http_request_body(op->http, b, "application/json");
	http_request_timeout(op->http, 0, STREAM_IDLE_MS);
	rc = rc ?: http_request_start(op->http, on_code_data, on_code_done, op);
	if (b)
		evbuffer_free(b);
	if (rc < 0) {
		call_error(op, SANDPOOL_E_INTERNAL, "starting /execute: %s", strerror(-rc));
		return;
	}
	ctx->busy++;
	evtimer_add(op->timer, &tv);
}

/* ---- unary requests: contexts, files ----------------------------------- */

static void on_unary_done(struct http_request *r, int err, long status, void *arg)
{
	struct e2b_op *op = arg;

	if (err) {
		call_error(op, SANDPOOL_E_BACKEND_ERROR, "E2B: %s", strerror(-err));
		return;
	}
	maybe_lost(op, err, status);
	op->on_answer(op, status, http_response_body(r));
}

static int start_unary(struct e2b_op *op, int port, const char *method, const char *path, struct evbuffer *json,
		       const char *content_type, unary_cb cb)
{
	int rc;

	op->on_answer = cb;
	op->http = sandbox_request(op->es, port, method, path);
	if (!op->http)
		return -ENOMEM;
	rc = port == E2B_PORT_ENVD && json ? http_request_header(op->http, "Connect-Protocol-Version: 1") : 0;
	if (rc == 0 && json)
		rc = http_request_body(op->http, json, content_type);
	http_request_timeout(op->http, UNARY_TIMEOUT_MS, 0);
	return rc ?: http_request_start(op->http, NULL, on_unary_done, op);
}

/* The answer's JSON, or NULL (the op answered with an error). */
static bool answer_json(struct e2b_op *op, long status, struct evbuffer *body, msgpack_unpacked *u)
{
	size_t n = evbuffer_get_length(body);
	const char *m = "";
	uint32_t ml = 0;
	bool parsed = n && json_parse((const char *)evbuffer_pullup(body, -1), n, u) == 0;

	if (status >= 200 && status < 300 && (parsed || n == 0)) {
		if (!parsed)
			msgpack_unpacked_init(u);
		return true;
	}
	if (parsed)
		(void)ipc_get_str(&u->data, "message", &m, &ml);
	if (status == 404)
		call_error(op, SANDPOOL_E_NOT_FOUND, "%.*s", (int)ml, ml ? m : "not found");
	else if (status == 401 || status == 403)
		call_error(op, SANDPOOL_E_FORBIDDEN, "%.*s", (int)ml, ml ? m : "permission denied");
	else if (status == 400)
		call_error(op, SANDPOOL_E_BAD_REQUEST, "%.*s", (int)ml, ml ? m : "bad request");
	else
		call_error(op, SANDPOOL_E_BACKEND_ERROR, "E2B answered HTTP %ld%s%.*s", status, ml ? ": " : "",
			   (int)ml, m);
	if (parsed)
		msgpack_unpacked_destroy(u);
	return false;
}

static void pack_context(msgpack_packer *pk, const struct e2b_context *ctx, unsigned extra)
{
	msgpack_pack_map(pk, 4 + extra);
	ipc_pack_kv_str(pk, "context_id", ctx->id);
	ipc_pack_kv_str(pk, "language", our_language(ctx->language));
	ipc_pack_kv_str(pk, "cwd", ctx->cwd);
	ipc_pack_kv_bool(pk, "default", ctx->is_default);
}

static void start_code_run(struct e2b_op *op);

/* POST /contexts answered: a context of ours now (for code.run: its
 * language's default one, and the cell runs next). */
static void on_context_created(struct e2b_op *op, long status, struct evbuffer *body)
{
	struct e2b_sandbox *es = op->es;
	struct e2b_context *ctx;
	msgpack_unpacked u;
	const char *id, *cwd = E2B_HOME;
	uint32_t idlen, cwdlen = (uint32_t)strlen(E2B_HOME);

	if (!answer_json(op, status, body, &u))
		return;
	if (ipc_get_str(&u.data, "id", &id, &idlen) < 0 || idlen >= sizeof(ctx->id) ||
	    es->n_contexts == E2B_MAX_CONTEXTS) {
		msgpack_unpacked_destroy(&u);
		call_error(op, SANDPOOL_E_BACKEND_ERROR, "E2B: POST /contexts answered without an id");
		return;
	}
	ctx = &es->contexts[es->n_contexts];
	memset(ctx, 0, sizeof(*ctx));
	memcpy(ctx->id, id, idlen);
	(void)ipc_get_str(&u.data, "cwd", &cwd, &cwdlen);
	snprintf(ctx->cwd, sizeof(ctx->cwd), "%.*s", (int)cwdlen, cwd);
	msgpack_unpacked_destroy(&u);
	op_set_context(op, (int)es->n_contexts++);
	if (op->kind == OP_CODE) {
		snprintf(ctx->language, sizeof(ctx->language), "%s", op->lang);
		ctx->is_default = true;
		op->lang[0] = '\0';
		start_code_run(op);
		return;
	}
	{
		const char *lang = "python";
		uint32_t ll = 6;
		msgpack_sbuffer sb;
		msgpack_packer pk;

		(void)ipc_get_str(&op->params.data, "language", &lang, &ll);
		snprintf(ctx->language, sizeof(ctx->language), "%s", e2b_language(lang, ll));
		msgpack_sbuffer_init(&sb);
		msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
		pack_context(&pk, ctx, 1);
		ipc_pack_kv_nil(&pk, "pid");
		call_answer(op, &sb);
		msgpack_sbuffer_destroy(&sb);
	}
}

static int create_context(struct e2b_op *op, const char *lang, const char *cwd, size_t cwd_len)
{
	struct evbuffer *b = evbuffer_new();
	char mapped[4200];
	int rc = b ? 0 : -ENOMEM;

	if (op->es->n_contexts == E2B_MAX_CONTEXTS) {
		if (b)
			evbuffer_free(b);
		return -EMFILE;
	}
	map_path(cwd, cwd_len, mapped, sizeof(mapped));
	rc = rc ?: (evbuffer_add(b, "{", 1) < 0 ? -ENOMEM : 0);
	rc = rc ?: json_put_key(b, "language");
	rc = rc ?: json_put_cstr(b, lang);
	rc = rc ?: (evbuffer_add(b, ",", 1) < 0 ? -ENOMEM : 0);
	rc = rc ?: json_put_key(b, "cwd");
	rc = rc ?: json_put_cstr(b, mapped);
	rc = rc ?: (evbuffer_add(b, "}", 1) < 0 ? -ENOMEM : 0);
	rc = rc ?: start_unary(op, E2B_PORT_CODE, "POST", "/contexts", b, "application/json", on_context_created);
	if (b)
		evbuffer_free(b);
	return rc;
}

static void start_code_run(struct e2b_op *op)
{
	uint64_t timeout_ms = 30000;

	if (op->has_params)
		(void)ipc_get_uint(&op->params.data, "timeout_ms", &timeout_ms);
	else
		timeout_ms = op->es->sb->tmpl->timeout_ms;
	http_request_free(op->http);
	op->http = NULL;
	evbuffer_drain(op->in, evbuffer_get_length(op->in));
	op->scanned = 0;
	start_execute(op, timeout_ms);
}

/* code.run {id, code, context_id | language, env, timeout_ms, max_output} */
static int code_run(struct e2b_op *op)
{
	const msgpack_object *p = &op->params.data;
	const msgpack_object_array *env = NULL;
	const char *s;
	uint32_t len;
	int rc = 0;

	if (ipc_get_str(p, "code", &s, &len) < 0 || !(op->code = strndup(s, len)))
		return -EINVAL;
	(void)ipc_get_uint(p, "max_output", &op->max_output);
	if (ipc_get_array(p, "env", &env) == 0 && env->size) {
		op->env_json = evbuffer_new();
		rc = op->env_json && evbuffer_add(op->env_json, "{", 1) == 0 ? 0 : -ENOMEM;
		for (uint32_t i = 0; i < env->size && rc == 0; i++) {
			const msgpack_object *e = &env->ptr[i];
			const char *eq;

			if (e->type != MSGPACK_OBJECT_STR || !(eq = memchr(e->via.str.ptr, '=', e->via.str.size)))
				continue;
			if (evbuffer_get_length(op->env_json) > 1)
				rc = evbuffer_add(op->env_json, ",", 1);
			rc = rc ?: json_put_str(op->env_json, e->via.str.ptr, (size_t)(eq - e->via.str.ptr));
			rc = rc ?: evbuffer_add(op->env_json, ":", 1);
			rc = rc ?: json_put_str(op->env_json, eq + 1,
						e->via.str.size - (size_t)(eq - e->via.str.ptr) - 1);
		}
		rc = rc ?: evbuffer_add(op->env_json, "}", 1);
		if (rc)
			return -ENOMEM;
	}
	if (ipc_get_str(p, "context_id", &s, &len) == 0) {
		int i = find_context(op->es, s, len);

		if (i < 0)
			return -ENOENT;
		op_set_context(op, i);
		start_code_run(op);
		return 0;
	}
	if (ipc_get_str(p, "language", &s, &len) < 0 || !e2b_language(s, len))
		return -EPROTONOSUPPORT;
	snprintf(op->lang, sizeof(op->lang), "%s", e2b_language(s, len));
	if (default_context(op->es, op->lang) >= 0) {
		op_set_context(op, default_context(op->es, op->lang));
		start_code_run(op);
		return 0;
	}
	return create_context(op, op->lang, "/workspace", 10);
}

static void on_context_changed(struct e2b_op *op, long status, struct evbuffer *body)
{
	struct e2b_sandbox *es = op->es;
	struct e2b_context *ctx = op_context(op);
	msgpack_unpacked u;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	bool removed = op->http && !strcmp(op->lang, "remove");

	if (!answer_json(op, status, body, &u))
		return;
	msgpack_unpacked_destroy(&u);
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	if (removed) {
		if (ctx)
			*ctx = es->contexts[--es->n_contexts];
		msgpack_pack_map(&pk, 1);
		ipc_pack_kv_bool(&pk, "removed", true);
	} else if (ctx) {
		ctx->execution_count = 0;
		pack_context(&pk, ctx, 1);
		ipc_pack_kv_nil(&pk, "pid");
	} else {
		msgpack_sbuffer_destroy(&sb);
		call_error(op, SANDPOOL_E_NOT_FOUND, "the context was removed meanwhile");
		return;
	}
	call_answer(op, &sb);
	msgpack_sbuffer_destroy(&sb);
}

/* context.restart / context.remove {context_id} */
static int context_change(struct e2b_op *op, bool remove)
{
	const char *id;
	uint32_t len;
	char path[160];

	if (ipc_get_str(&op->params.data, "context_id", &id, &len) < 0)
		return -EINVAL;
	if (find_context(op->es, id, len) < 0)
		return -ENOENT;
	op_set_context(op, find_context(op->es, id, len));
	snprintf(op->lang, sizeof(op->lang), "%s", remove ? "remove" : "restart");
	snprintf(path, sizeof(path), remove ? "/contexts/%s" : "/contexts/%s/restart", op->ctx_id);
	return start_unary(op, E2B_PORT_CODE, remove ? "DELETE" : "POST", path, NULL, NULL, on_context_changed);
}

static void context_list(struct e2b_op *op)
{
	const struct e2b_sandbox *es = op->es;
	msgpack_sbuffer sb;
	msgpack_packer pk;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 1);
	ipc_pack_cstr(&pk, "contexts");
	msgpack_pack_array(&pk, es->n_contexts);
	for (unsigned i = 0; i < es->n_contexts; i++) {
		const struct e2b_context *ctx = &es->contexts[i];

		pack_context(&pk, ctx, 3);
		ipc_pack_kv_str(&pk, "state", ctx->busy ? "busy" : "idle");
		ipc_pack_kv_uint(&pk, "execution_count", ctx->execution_count);
		ipc_pack_kv_uint(&pk, "queued", ctx->busy > 1 ? ctx->busy - 1 : 0);
	}
	call_answer(op, &sb);
	msgpack_sbuffer_destroy(&sb);
}

/* ---- files: envd's /files and Filesystem service ------------------------ */

static char *files_query(const char *path, uint32_t len)
{
	char mapped[4200], *enc, *q;

	map_path(path, len, mapped, sizeof(mapped));
	enc = curl_easy_escape(NULL, mapped, 0);
	if (!enc)
		return NULL;
	q = malloc(strlen(enc) + 16);
	if (q)
		sprintf(q, "/files?path=%s", enc);
	curl_free(enc);
	return q;
}

static void mapped_path(const struct e2b_op *op, char *out, size_t len)
{
	const char *p = "";
	uint32_t n = 0;

	(void)ipc_get_str(&op->params.data, "path", &p, &n);
	map_path(p, n, out, len);
}

static void on_file_read(struct e2b_op *op, long status, struct evbuffer *body)
{
	uint64_t offset = 0, length, max_size = 0, size = evbuffer_get_length(body);
	bool has_length = ipc_get_uint(&op->params.data, "length", &length) == 0;
	char path[4200];
	msgpack_sbuffer sb;
	msgpack_packer pk;

	if (status != 200) {
		msgpack_unpacked u;

		if (answer_json(op, status, body, &u)) {
			msgpack_unpacked_destroy(&u);
			call_error(op, SANDPOOL_E_BACKEND_ERROR, "E2B answered HTTP %ld to a download", status);
		}
		return;
	}
	(void)ipc_get_uint(&op->params.data, "offset", &offset);
	(void)ipc_get_uint(&op->params.data, "max_size", &max_size);
	if (offset > size)
		offset = size;
	if (!has_length)
		length = size - offset;
	if (length > max_size) {
		call_error(op, SANDPOOL_E_LIMIT_EXCEEDED, "%" PRIu64 " bytes is more than one files.read gives (%" PRIu64 ")",
			   length, max_size);
		return;
	}
	if (length > size - offset)
		length = size - offset;
	mapped_path(op, path, sizeof(path));
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 5);
	ipc_pack_kv_str(&pk, "path", path);
	ipc_pack_kv_bin(&pk, "data", (const char *)evbuffer_pullup(body, -1) + offset, length);
	ipc_pack_kv_uint(&pk, "size", size);
	ipc_pack_kv_uint(&pk, "offset", offset);
	ipc_pack_kv_bool(&pk, "eof", offset + length == size);
	call_answer(op, &sb);
	msgpack_sbuffer_destroy(&sb);
}

static void on_file_written(struct e2b_op *op, long status, struct evbuffer *body)
{
	msgpack_unpacked u;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	char path[4200];

	if (!answer_json(op, status, body, &u))
		return;
	msgpack_unpacked_destroy(&u);
	mapped_path(op, path, sizeof(path));
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 3);
	ipc_pack_kv_str(&pk, "path", path);
	ipc_pack_kv_uint(&pk, "size", op->out_bytes);
	ipc_pack_kv_uint(&pk, "written", op->max_output);
	call_answer(op, &sb);
	msgpack_sbuffer_destroy(&sb);
}

/* The upload: multipart/form-data with one part named "file". */
static int upload(struct e2b_op *op, const char *prefix, size_t prefix_len, const char *data, size_t len)
{
	static const char boundary[] = "sandpool-6f1e0c2b9d4a";
	const char *p;
	uint32_t plen;
	char *q;
	struct evbuffer *b = evbuffer_new();
	char ct[96];
	int rc = b ? 0 : -ENOMEM;

	if (ipc_get_str(&op->params.data, "path", &p, &plen) < 0 || !(q = files_query(p, plen))) {
		if (b)
			evbuffer_free(b);
		return -ENOMEM;
	}
	op->out_bytes = prefix_len + len; /* the file's size after the write */
	op->max_output = len;		   /* bytes this call wrote */
	rc = rc ?: evbuffer_add_printf(b, "--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"file\"\r\n"
				       "Content-Type: application/octet-stream\r\n\r\n", boundary) < 0 ? -ENOMEM : 0;
	rc = rc ?: (evbuffer_add(b, prefix, prefix_len) < 0 ? -ENOMEM : 0);
	rc = rc ?: (evbuffer_add(b, data, len) < 0 ? -ENOMEM : 0);
	rc = rc ?: (evbuffer_add_printf(b, "\r\n--%s--\r\n", boundary) < 0 ? -ENOMEM : 0);
	snprintf(ct, sizeof(ct), "multipart/form-data; boundary=%s", boundary);
	rc = rc ?: start_unary(op, E2B_PORT_ENVD, "POST", q, b, ct, on_file_written);
	free(q);
	if (b)
		evbuffer_free(b);
	return rc;
}

/* files.write with append: E2B's upload replaces, so the old contents
 * are read first and sent again in front (within max_size). */
static void on_append_read(struct e2b_op *op, long status, struct evbuffer *body)
{
	const char *data = NULL;
	uint32_t len = 0;
	uint64_t max_size = 0;
	size_t old = status == 200 ? evbuffer_get_length(body) : 0;
	struct evbuffer *prefix;
	int rc;

	if (status != 200 && status != 404) {
		msgpack_unpacked u;

		if (answer_json(op, status, body, &u)) {
			msgpack_unpacked_destroy(&u);
			call_error(op, SANDPOOL_E_BACKEND_ERROR, "E2B answered HTTP %ld to a download", status);
		}
		return;
	}
	(void)ipc_get_bytes(&op->params.data, "data", &data, &len);
	(void)ipc_get_uint(&op->params.data, "max_size", &max_size);
	if (old + len > max_size) {
		call_error(op, SANDPOOL_E_LIMIT_EXCEEDED,
			   "appending to a %zu-byte file would send more than max_file_size in one upload", old);
		return;
	}
	prefix = evbuffer_new();
	rc = prefix && evbuffer_add_buffer(prefix, body) == 0 ? 0 : -ENOMEM;
	http_request_free(op->http); /* body belonged to it */
	op->http = NULL;
	rc = rc ?: upload(op, old ? (const char *)evbuffer_pullup(prefix, -1) : "", old, data, len);
	if (prefix)
		evbuffer_free(prefix);
	if (rc < 0)
		call_error(op, SANDPOOL_E_INTERNAL, "upload: %s", strerror(-rc));
}

static const char *entry_type(const char *t, uint32_t len)
{
	if (len == 14 && !memcmp(t, "FILE_TYPE_FILE", 14))
		return "file";
	if (len == 19 && !memcmp(t, "FILE_TYPE_DIRECTORY", 19))
		return "dir";
	if (len == 17 && !memcmp(t, "FILE_TYPE_SYMLINK", 17))
		return "symlink";
	return "other";
}

static int cmp_entries(const void *a, const void *b)
{
	const msgpack_object *x = *(const msgpack_object *const *)a, *y = *(const msgpack_object *const *)b;
	const char *s = "", *t = "";
	uint32_t sl = 0, tl = 0;
	int c;

	(void)ipc_get_str(x, "name", &s, &sl);
	(void)ipc_get_str(y, "name", &t, &tl);
	c = memcmp(s, t, sl < tl ? sl : tl);
	return c ? c : (sl > tl) - (sl < tl);
}

#define FILES_LIST_MAX 10000

static void on_listed(struct e2b_op *op, long status, struct evbuffer *body)
{
	const msgpack_object_array *entries = NULL;
	const msgpack_object **sorted = NULL;
	msgpack_unpacked u;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	char path[4200];
	uint32_t n;

	if (!answer_json(op, status, body, &u))
		return;
	if (ipc_get_array(&u.data, "entries", &entries) < 0) {
		static const msgpack_object_array none = { 0, NULL };

		entries = &none;
	}
	n = entries->size > FILES_LIST_MAX ? FILES_LIST_MAX : entries->size;
	sorted = calloc(entries->size + 1, sizeof(*sorted));
	if (!sorted) {
		msgpack_unpacked_destroy(&u);
		call_error(op, SANDPOOL_E_INTERNAL, "out of memory");
		return;
	}
	for (uint32_t i = 0; i < entries->size; i++)
		sorted[i] = &entries->ptr[i];
	qsort(sorted, entries->size, sizeof(*sorted), cmp_entries);
	mapped_path(op, path, sizeof(path));
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 3);
	ipc_pack_kv_str(&pk, "path", path);
	ipc_pack_cstr(&pk, "entries");
	msgpack_pack_array(&pk, n);
	for (uint32_t i = 0; i < n; i++) {
		const msgpack_object *e = sorted[i];
		const char *name = "", *type = "";
		uint32_t nl = 0, tl = 0;
		const char *sz;
		uint32_t szl;
		int64_t size = 0;
		uint64_t mode = 0;

		(void)ipc_get_str(e, "name", &name, &nl);
		(void)ipc_get_str(e, "type", &type, &tl);
		/* An int64: protojson writes it as a decimal string. */
		if (ipc_get_str(e, "size", &sz, &szl) == 0) {
			char digits[24];

			snprintf(digits, sizeof(digits), "%.*s", (int)(szl < sizeof(digits) ? szl : 0), sz);
			size = strtoll(digits, NULL, 10);
		} else {
			(void)ipc_get_int(e, "size", &size);
		}
		(void)ipc_get_uint(e, "mode", &mode);
		msgpack_pack_map(&pk, 5);
		ipc_pack_cstr(&pk, "name");
		ipc_pack_strn(&pk, name, nl);
		ipc_pack_kv_str(&pk, "type", entry_type(type, tl));
		ipc_pack_kv_uint(&pk, "size", size > 0 ? (uint64_t)size : 0);
		ipc_pack_kv_uint(&pk, "mode", mode & 07777);
		/* modifiedTime is an RFC 3339 string; not worth a date parser. */
		ipc_pack_kv_nil(&pk, "mtime_ms");
	}
	ipc_pack_kv_bool(&pk, "truncated", entries->size > n);
	free(sorted);
	msgpack_unpacked_destroy(&u);
	call_answer(op, &sb);
	msgpack_sbuffer_destroy(&sb);
}

static void on_removed(struct e2b_op *op, long status, struct evbuffer *body)
{
	msgpack_unpacked u;
	msgpack_sbuffer sb;
	msgpack_packer pk;

	if (!answer_json(op, status, body, &u))
		return;
	msgpack_unpacked_destroy(&u);
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 1);
	ipc_pack_kv_bool(&pk, "removed", true);
	call_answer(op, &sb);
	msgpack_sbuffer_destroy(&sb);
}

/* files.* {path, ...}: the path as E2B sees it, in a Filesystem request. */
static int files_call(struct e2b_op *op, const char *method)
{
	const msgpack_object *p = &op->params.data;
	const char *path, *data;
	uint32_t plen, dlen;
	bool append = false;
	char *q;
	int rc;

	if (ipc_get_str(p, "path", &path, &plen) < 0)
		return -EINVAL;
	if (!strcmp(method, "files.read") || !strcmp(method, "files.write")) {
		if (!strcmp(method, "files.write")) {
			if (ipc_get_bytes(p, "data", &data, &dlen) < 0)
				return -EINVAL;
			(void)ipc_get_bool(p, "append", &append);
			if (!append)
				return upload(op, "", 0, data, dlen);
		}
		if (!(q = files_query(path, plen)))
			return -ENOMEM;
		rc = start_unary(op, E2B_PORT_ENVD, "GET", q, NULL, NULL, append ? on_append_read : on_file_read);
		free(q);
		return rc;
	}
	{
		struct evbuffer *b = evbuffer_new();
		char mapped[4200];
		bool list = !strcmp(method, "files.list");

		map_path(path, plen, mapped, sizeof(mapped));
		rc = b ? 0 : -ENOMEM;
		rc = rc ?: (evbuffer_add(b, "{", 1) < 0 ? -ENOMEM : 0);
		rc = rc ?: json_put_key(b, "path");
		rc = rc ?: json_put_cstr(b, mapped);
		rc = rc ?: (evbuffer_add_printf(b, list ? ",\"depth\":1}" : "}") < 0 ? -ENOMEM : 0);
		rc = rc ?: start_unary(op, E2B_PORT_ENVD, "POST",
				       list ? "/filesystem.Filesystem/ListDir" : "/filesystem.Filesystem/Remove", b,
				       "application/json", list ? on_listed : on_removed);
		if (b)
			evbuffer_free(b);
		return rc;
	}
}

static void on_list_timer(evutil_socket_t fd, short what, void *arg)
{
	context_list(arg);
}

int e2b_run_call(struct sandbox *sb, struct sandbox_call *c, const char *method, const void *params, size_t len)
{
	struct e2b_sandbox *es = sb->backend_state;
	bool is_code = !strcmp(method, "code.run");
	struct e2b_op *op;
	size_t off = 0;
	int rc;

	if (!es->ready)
		return -EPIPE;
	op = op_new(es, is_code ? OP_CODE : OP_UNARY, c->id);
	if (!op)
		return -ENOMEM;
	msgpack_unpacked_init(&op->params);
	op->has_params = true;
	/* params lives only for this call; the op outlives it. */
	op->params_buf = malloc(len ? len : 1);
	if (!op->params_buf) {
		op_free(op);
		return -ENOMEM;
	}
	memcpy(op->params_buf, params, len);
	if (msgpack_unpack_next(&op->params, op->params_buf, len, &off) != MSGPACK_UNPACK_SUCCESS ||
	    op->params.data.type != MSGPACK_OBJECT_MAP) {
		op_free(op);
		return -EINVAL;
	}
	c->backend_tag = 0;
	if (is_code) {
		rc = code_run(op);
	} else if (!strcmp(method, "context.create")) {
		const char *lang = "python", *cwd = "/workspace";
		uint32_t ll = 6, cl = 10;

		(void)ipc_get_str(&op->params.data, "language", &lang, &ll);
		(void)ipc_get_str(&op->params.data, "cwd", &cwd, &cl);
		rc = e2b_language(lang, ll) ? create_context(op, e2b_language(lang, ll), cwd, cl) : -EPROTONOSUPPORT;
	} else if (!strcmp(method, "context.list")) {
		/* Answered from what this backend knows, from the loop: the
		 * caller links c only when this returns. */
		op->timer = evtimer_new(e2b_base, on_list_timer, op);
		if (!op->timer) {
			op_free(op);
			return -ENOMEM;
		}
		event_active(op->timer, EV_TIMEOUT, 0);
		return 0;
	} else if (!strcmp(method, "context.restart") || !strcmp(method, "context.remove")) {
		rc = context_change(op, !strcmp(method, "context.remove"));
	} else if (!strncmp(method, "files.", 6)) {
		rc = files_call(op, method);
	} else {
		rc = -ENOTSUP;
	}
	if (rc < 0)
		op_free(op);
	return rc;
}

void e2b_run_call_cancel(struct sandbox *sb, struct sandbox_call *c)
{
	struct e2b_sandbox *es = sb->backend_state;
	struct e2b_op *op;

	TAILQ_FOREACH(op, &es->ops, link) {
		if (op->id != c->id || (op->kind != OP_CODE && op->kind != OP_UNARY))
			continue;
		/* Closing the connection interrupts the cell. */
		if (op->kind == OP_CODE) {
			http_request_free(op->http);
			op->http = NULL;
			op->interrupted = true;
			pack_error(op, "KeyboardInterrupt", "the cell was interrupted", "");
			if (op->ctx_id[0])
				code_finish(op);
			else
				call_error(op, SANDPOOL_E_ABORTED, "cancelled");
		} else {
			call_error(op, SANDPOOL_E_ABORTED, "cancelled");
		}
		return;
	}
}

/* ---- set-up: health, then the preload ----------------------------------- */

static void probe_health(struct e2b_sandbox *es);

static void on_probe_timer(evutil_socket_t fd, short what, void *arg)
{
	probe_health(arg);
}

static void start_preload(struct e2b_sandbox *es)
{
	const struct template_config *t = es->sb->tmpl;
	struct e2b_op *op = op_new(es, OP_CODE, 0);
	const char *lang = e2b_language(t->language, strlen(t->language));
	int rc;

	if (!op || !lang || !(op->code = strdup(t->preload))) {
		if (op)
			op_free(op);
		e2b_setup_done(es, -ENOMEM, "out of memory starting the preload");
		return;
	}
	op->preload = true;
	op->max_output = UINT64_MAX;
	es->setup_op = op;
	snprintf(op->lang, sizeof(op->lang), "%s", lang);
	rc = create_context(op, lang, "/workspace", 10);
	if (rc < 0)
		call_error(op, SANDPOOL_E_INTERNAL, "creating the default context: %s", strerror(-rc));
}

static void on_health(struct http_request *r, int err, long status, void *arg)
{
	struct e2b_op *op = arg;
	struct e2b_sandbox *es = op->es;
	struct timeval tv = ms_timeval(HEALTH_PROBE_MS);

	op_free(op);
	if (!err && status == 200) {
		if (es->sb->tmpl->preload && *es->sb->tmpl->preload)
			start_preload(es);
		else
			e2b_setup_done(es, 0, NULL);
		return;
	}
	if (!err && status == 404)
		e2b_check_alive(es);
	if (++es->health_tries >= HEALTH_TRIES) {
		char why[160];

		snprintf(why, sizeof(why), "E2B sandbox %s: the code interpreter did not become healthy (%s)",
			 es->sandbox_id, err ? strerror(-err) : "HTTP error");
		e2b_setup_done(es, -ETIMEDOUT, why);
		return;
	}
	if (!es->setup_timer && !(es->setup_timer = evtimer_new(e2b_base, on_probe_timer, es))) {
		e2b_setup_done(es, -ENOMEM, "out of memory");
		return;
	}
	evtimer_add(es->setup_timer, &tv);
}

static void probe_health(struct e2b_sandbox *es)
{
	struct e2b_op *op = op_new(es, OP_HEALTH, 0);

	if (!op || !(op->http = sandbox_request(es, E2B_PORT_CODE, "GET", "/health"))) {
		if (op)
			op_free(op);
		e2b_setup_done(es, -ENOMEM, "out of memory");
		return;
	}
	es->setup_op = op;
	http_request_timeout(op->http, 5000, 0);
	if (http_request_start(op->http, NULL, on_health, op) < 0) {
		op_free(op);
		e2b_setup_done(es, -ENOMEM, "out of memory");
	}
}

void e2b_run_setup(struct e2b_sandbox *es)
{
	probe_health(es);
}
