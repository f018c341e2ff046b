#include "autoconfig.h"

#include "daemon/rpc.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/clock.h"
#include "daemon/log.h"
#include "pool/lease.h"
#include "pool/pool.h"
#include "pool/session.h"
#include "sandbox/cgroup.h"
#include "sandbox/local.h"
#include "sandbox/sandbox.h"
#include "store/ledger.h"

#define MAX_ARGS 4096
#define MAX_ENV 512
#define MAX_EXECS_PER_SANDBOX 16
#define MAX_CALLS_PER_SANDBOX 16
/* A files.* message holds max_file_size bytes of data plus at most this
 * much of envelope, path and keys, all within max_frame. */
#define FILE_FRAME_RESERVE (16 * 1024)
#define PATH_BYTES_MAX 4095
#define CONTEXT_ID_MAX 64

struct rpc_client {
	struct ipc_conn *conn;
	struct lease_list leases; /* attached (not detached) leases */
	TAILQ_HEAD(, rpc_wait) waits;
	TAILQ_HEAD(, rpc_exec) execs;
	TAILQ_HEAD(, rpc_call) calls;
	unsigned n_leases;
	char process[17]; /* the peer's /proc/PID/comm, for the ledger */
};

/* An owned copy of an exec's parameters (a run may wait for its lease). */
struct exec_spec {
	char **argv;
	char **env;
	char *cwd;
	char *stdin_data;
	size_t stdin_len;
	uint64_t timeout_ms;
	bool stream;
};

/* A sandbox.lease or run waiting for a sandbox. */
struct rpc_wait {
	struct pool_waiter w;
	struct session_waiter sw; /* queued behind a busy session */
	struct session *session;  /* the session this request is for, if any */
	struct event *session_timer;
	struct rpc_client *cl;
	uint32_t msgid;
	bool detached;
	uint64_t requested_us;
	struct exec_spec *run; /* NULL for sandbox.lease */
	TAILQ_ENTRY(rpc_wait) link;
};

struct rpc_exec {
	struct sandbox_exec ex;
	struct rpc_client *cl; /* NULL once the client has gone */
	uint32_t msgid;
	bool stream;
	struct evbuffer *out[2]; /* stdout, stderr when not streaming */
	struct sandbox *run_sb;	 /* for run: whose lease ends with the exec */
	bool warm;
	uint64_t waited_us;
	char sandbox_id[24];
	char lease_id[24];	 /* for the ledger */
	uint64_t started_us;	 /* monotonic */
	uint64_t bytes_out;	 /* stdout + stderr, streamed or not */
	TAILQ_ENTRY(rpc_exec) link;
};

static const struct config *rpc_cfg;
static struct event_base *rpc_base;
static struct ipc_server *rpc_srv;
static uint64_t next_exec_id = 1;

static void on_session_expired(struct session *s, const char *why);

int rpc_init(struct event_base *base, const struct config *cfg)
{
	rpc_base = base;
	rpc_cfg = cfg;
	return session_table_init(base, on_session_expired);
}

void rpc_set_server(struct ipc_server *srv)
{
	rpc_srv = srv;
}

/* ---- exec specs -------------------------------------------------------- */

static void strv_free(char **v)
{
	if (!v)
		return;
	for (char **p = v; *p; p++)
		free(*p);
	free(v);
}

static void exec_spec_free(struct exec_spec *s)
{
	if (!s)
		return;
	strv_free(s->argv);
	strv_free(s->env);
	free(s->cwd);
	free(s->stdin_data);
	free(s);
}

static size_t key_len(const char *kv)
{
	const char *eq = strchr(kv, '=');

	return eq ? (size_t)(eq - kv) : strlen(kv);
}

/* Sets "K=V" in env (n entries, room for MAX_ENV), replacing K if present. */
static int env_set(char **env, unsigned *n, char *kv)
{
	size_t kl = key_len(kv);

	for (unsigned i = 0; i < *n; i++) {
		if (key_len(env[i]) == kl && memcmp(env[i], kv, kl) == 0) {
			free(env[i]);
			env[i] = kv;
			return 0;
		}
	}
	if (*n >= MAX_ENV) {
		free(kv);
		return -E2BIG;
	}
	env[(*n)++] = kv;
	return 0;
}

#define ENV_ENTRY_RULE "env entries must be non-empty string keys without '=' or NUL, and string values"

static bool env_entry_valid(const msgpack_object *k, const msgpack_object *v)
{
	return k->type == MSGPACK_OBJECT_STR && v->type == MSGPACK_OBJECT_STR && k->via.str.size > 0 &&
	       !memchr(k->via.str.ptr, '=', k->via.str.size) && !memchr(k->via.str.ptr, 0, k->via.str.size) &&
	       !memchr(v->via.str.ptr, 0, v->via.str.size);
}

static int build_env(const msgpack_object *params, const struct template_config *t, char ***out,
		     char *msg, size_t msglen)
{
	const msgpack_object *m = NULL;
	char **env = calloc(MAX_ENV + 1, sizeof(*env));
	unsigned n = 0;
	int rc;

	if (!env)
		return -SANDPOOL_E_INTERNAL;
	*out = env;
	for (size_t i = 0; sandbox_base_env[i]; i++)
		if (env_set(env, &n, strdup(sandbox_base_env[i])) < 0)
			return -SANDPOOL_E_INTERNAL;
	for (unsigned i = 0; i < t->n_env; i++)
		if (env_set(env, &n, strdup(t->env[i])) < 0)
			return -SANDPOOL_E_INTERNAL;
	rc = ipc_get_map(params, "env", &m);
	if (rc == -EINVAL) {
		snprintf(msg, msglen, "env must be a map of strings");
		return -SANDPOOL_E_BAD_REQUEST;
	}
	for (uint32_t i = 0; m && i < m->via.map.size; i++) {
		const msgpack_object *k = &m->via.map.ptr[i].key, *v = &m->via.map.ptr[i].val;
		char *ks, *vs, *kv;

		if (!env_entry_valid(k, v)) {
			snprintf(msg, msglen, ENV_ENTRY_RULE);
			return -SANDPOOL_E_BAD_REQUEST;
		}
		ks = ipc_obj_strdup(k);
		vs = ipc_obj_strdup(v);
		kv = NULL;
		if (ks && vs && asprintf(&kv, "%s=%s", ks, vs) < 0)
			kv = NULL;
		free(ks);
		free(vs);
		if (!kv || env_set(env, &n, kv) < 0) {
			snprintf(msg, msglen, "more than %d environment variables", MAX_ENV);
			return -SANDPOOL_E_LIMIT_EXCEEDED;
		}
	}
	return 0;
}

static int build_argv(const msgpack_object *params, char ***out, char *msg, size_t msglen)
{
	const msgpack_object_array *a = NULL;
	const char *cmd;
	uint32_t len;
	char **argv;

	if (ipc_get_str(params, "cmd", &cmd, &len) == 0) {
		argv = calloc(4, sizeof(*argv));
		if (!argv)
			return -SANDPOOL_E_INTERNAL;
		*out = argv;
		argv[0] = strdup("/bin/sh");
		argv[1] = strdup("-c");
		argv[2] = memchr(cmd, 0, len) ? NULL : strndup(cmd, len);
		if (!argv[2]) {
			snprintf(msg, msglen, "cmd must not contain NUL");
			return -SANDPOOL_E_BAD_REQUEST;
		}
		return 0;
	}
	if (ipc_get_array(params, "argv", &a) < 0 || a->size == 0) {
		snprintf(msg, msglen, "argv (a non-empty array of strings) or cmd (a string) is required");
		return -SANDPOOL_E_BAD_REQUEST;
	}
	if (a->size > MAX_ARGS) {
		snprintf(msg, msglen, "more than %d arguments", MAX_ARGS);
		return -SANDPOOL_E_LIMIT_EXCEEDED;
	}
	argv = calloc(a->size + 1, sizeof(*argv));
	if (!argv)
		return -SANDPOOL_E_INTERNAL;
	*out = argv;
	for (uint32_t i = 0; i < a->size; i++) {
		argv[i] = ipc_obj_strdup(&a->ptr[i]);
		if (!argv[i]) {
			snprintf(msg, msglen, "argv[%u] must be a string without NUL", i);
			return -SANDPOOL_E_BAD_REQUEST;
		}
	}
	return 0;
}

static int get_ms(const msgpack_object *params, const char *key, uint64_t dflt, uint64_t *out,
		  char *msg, size_t msglen)
{
	int rc = ipc_get_uint(params, key, out);

	if (rc == -ENOENT) {
		*out = dflt;
		return 0;
	}
	if (rc < 0 || *out > rpc_cfg->max_timeout_ms) {
		snprintf(msg, msglen, "%s must be an integer from 0 to %" PRIu64, key, rpc_cfg->max_timeout_ms);
		return -SANDPOOL_E_BAD_REQUEST;
	}
	return 0;
}

static int parse_exec_spec(const msgpack_object *params, const struct template_config *t,
			   struct exec_spec **out, char *msg, size_t msglen)
{
	struct exec_spec *s = calloc(1, sizeof(*s));
	const char *p;
	uint32_t len;
	int rc;

	if (!s)
		return -SANDPOOL_E_INTERNAL;
	rc = build_argv(params, &s->argv, msg, msglen);
	if (rc == 0)
		rc = build_env(params, t, &s->env, msg, msglen);
	if (rc == 0)
		rc = get_ms(params, "timeout_ms", t->timeout_ms, &s->timeout_ms, msg, msglen);
	if (rc == 0 && s->timeout_ms == 0) {
		snprintf(msg, msglen, "timeout_ms must be positive");
		rc = -SANDPOOL_E_BAD_REQUEST;
	}
	if (rc == 0) {
		int r = ipc_get_str(params, "cwd", &p, &len);

		if (r == -EINVAL || (r == 0 && (len == 0 || p[0] != '/' || memchr(p, 0, len)))) {
			snprintf(msg, msglen, "cwd must be an absolute path");
			rc = -SANDPOOL_E_BAD_REQUEST;
		} else {
			s->cwd = r == 0 ? strndup(p, len) : strdup("/workspace");
		}
	}
	if (rc == 0) {
		int r = ipc_get_bytes(params, "stdin", &p, &len);

		if (r == -EINVAL) {
			snprintf(msg, msglen, "stdin must be bin or str");
			rc = -SANDPOOL_E_BAD_REQUEST;
		} else if (r == 0) {
			s->stdin_data = malloc(len ? len : 1);
			if (s->stdin_data)
				memcpy(s->stdin_data, p, len);
			s->stdin_len = len;
		}
	}
	if (rc == 0 && ipc_get_bool(params, "stream", &s->stream) == -EINVAL) {
		snprintf(msg, msglen, "stream must be a boolean");
		rc = -SANDPOOL_E_BAD_REQUEST;
	}
	if (rc == 0 && (!s->cwd || (s->stdin_len && !s->stdin_data)))
		rc = -SANDPOOL_E_INTERNAL;
	if (rc < 0) {
		if (rc == -SANDPOOL_E_INTERNAL)
			snprintf(msg, msglen, "out of memory");
		exec_spec_free(s);
		return rc;
	}
	*out = s;
	return 0;
}

/* ---- leases ------------------------------------------------------------ */

static void end_session(struct session *s, enum sandpool_errcode code, const char *why,
			enum ledger_reason reason);
static void serve_session(struct session *s);

/* Ends l. A session's sandbox is kept for the session when keep says the
 * lease ended normally; any other sandbox is destroyed. reason is the
 * ledger's word for why. */
static void end_lease(struct lease *l, const char *why, enum ledger_reason reason, bool keep)
{
	struct sandbox *sb = l->sb;
	struct rpc_client *cl = l->owner;
	struct session *s = sb ? sb->session : NULL;

	if (cl) {
		TAILQ_REMOVE(&cl->leases, l, owner_link);
		cl->n_leases--;
	}
	log_debug("lease %s on %s ended: %s", l->id, sb ? sb->id : "-", why);
	ledger_lease_released(l->id, reason);
	/* Unlink first: a run exec aborted below must not end it again. */
	l->sb = NULL;
	if (sb)
		sb->lease = NULL;
	lease_free(l);
	if (!sb)
		return;
	if (s && keep && !pool_system_stopping()) {
		pool_hold(sb);
		s->busy = false;
		session_idle_start(s);
		serve_session(s);
		return;
	}
	if (s)
		end_session(s, SANDPOOL_E_ABORTED, why, keep ? LEDGER_SHUTDOWN : reason);
	else
		pool_release(sb, reason);
}

static void on_lease_expired(struct lease *l)
{
	log_info("lease %s expired (lease_ttl)", l->id);
	lease_note_expired(l);
	end_lease(l, "lease_ttl expired", LEDGER_TTL, false);
}

/* The lease and session come off sb before its execs are aborted, so that
 * an aborted run cannot end (or hold) the sandbox a second time. */
void rpc_sandbox_lost(struct sandbox *sb, int lost_reason, const char *why)
{
	enum ledger_reason reason = pool_system_stopping() ? LEDGER_SHUTDOWN : (enum ledger_reason)lost_reason;

	if (sb->session)
		end_session(sb->session, SANDPOOL_E_BACKEND_ERROR, why, reason);
	else if (sb->lease)
		end_lease(sb->lease, why, reason, false);
	else
		pool_release(sb, reason);
}

static struct lease *grant(struct rpc_client *cl, struct sandbox *sb, bool detached)
{
	struct lease *l = lease_new(sb, ipc_conn_uid(cl->conn), ipc_conn_pid(cl->conn),
				    sb->tmpl->lease_ttl_ms, on_lease_expired);

	if (!l) {
		pool_release(sb, LEDGER_FAILED);
		return NULL;
	}
	if (!detached) {
		l->owner = cl;
		TAILQ_INSERT_TAIL(&cl->leases, l, owner_link);
		cl->n_leases++;
	}
	return l;
}

/* Finds the caller's lease or answers the request with the error. */
static struct lease *lookup_lease(struct rpc_client *cl, const struct rpc_msg *m)
{
	const char *id;
	uint32_t len;
	struct lease *l;
	uid_t uid = ipc_conn_uid(cl->conn);

	if (ipc_get_str(m->params, "lease_id", &id, &len) < 0) {
		ipc_conn_reply_error(cl->conn, m->msgid, SANDPOOL_E_BAD_REQUEST, "lease_id (a string) is required");
		return NULL;
	}
	l = lease_find(id, len);
	if (!l && lease_expired_recently(id, len)) {
		ipc_conn_reply_error(cl->conn, m->msgid, SANDPOOL_E_LEASE_EXPIRED,
				     "lease %.*s expired (lease_ttl) and its sandbox was destroyed", (int)len, id);
		return NULL;
	}
	if (!l || !l->sb) {
		ipc_conn_reply_error(cl->conn, m->msgid, SANDPOOL_E_NOT_FOUND, "no lease %.*s",
				     (int)(len > 64 ? 64 : len), id);
		return NULL;
	}
	if (uid != 0 && uid != l->uid) {
		ipc_conn_reply_error(cl->conn, m->msgid, SANDPOOL_E_FORBIDDEN,
				     "lease %s belongs to another user", l->id);
		return NULL;
	}
	return l;
}

/* ---- execs ------------------------------------------------------------- */

static void rpc_exec_free(struct rpc_exec *re)
{
	if (re->cl)
		TAILQ_REMOVE(&re->cl->execs, re, link);
	for (int i = 0; i < 2; i++)
		if (re->out[i])
			evbuffer_free(re->out[i]);
	free(re);
}

static void on_exec_output(struct sandbox_exec *ex, int stream, const char *data, size_t len)
{
	struct rpc_exec *re = (struct rpc_exec *)ex;
	msgpack_packer *pk;

	re->bytes_out += len;
	if (!re->cl)
		return;
	if (!re->stream) {
		evbuffer_add(re->out[stream - 1], data, len);
		return;
	}
	pk = ipc_conn_notify(re->cl->conn, "exec.output");
	msgpack_pack_map(pk, 4);
	ipc_pack_kv_uint(pk, "exec_id", ex->id);
	ipc_pack_kv_uint(pk, "request", re->msgid);
	ipc_pack_kv_str(pk, "stream", stream == 1 ? "stdout" : "stderr");
	ipc_pack_kv_bin(pk, "data", data, len);
}

static void pack_output(msgpack_packer *pk, const char *key, struct evbuffer *b)
{
	size_t n = b ? evbuffer_get_length(b) : 0;

	ipc_pack_kv_bin(pk, key, n ? (const void *)evbuffer_pullup(b, -1) : "", n);
}

/* What ran is never recorded: only how it went. */
static void record_exec(const struct rpc_exec *re, const struct exec_result *res, int errcode)
{
	struct ledger_exec e = {
		.lease = re->lease_id,
		.started_mono_us = re->started_us,
		.duration_us = res ? res->duration_us : monotonic_us() - re->started_us,
		.bytes_out = re->bytes_out,
	};

	if (res) {
		e.exited = res->exited;
		e.exit_code = res->exit_code;
		e.signal = res->signal;
		e.truncated = res->truncated;
		e.limit = exec_limit_name(res->limit);
	} else {
		e.error_name = sandpool_errcode_name((enum sandpool_errcode)errcode);
	}
	ledger_exec_done(&e);
}

static void on_exec_done(struct sandbox_exec *ex, const struct exec_result *res, int errcode,
			 const char *errmsg)
{
	struct rpc_exec *re = (struct rpc_exec *)ex;
	struct sandbox *run_sb = re->run_sb;

	record_exec(re, res, errcode);
	if (re->cl) {
		if (!res) {
			ipc_conn_reply_error(re->cl->conn, re->msgid, (enum sandpool_errcode)errcode, "%s", errmsg);
		} else {
			msgpack_packer *pk = ipc_conn_reply_ok(re->cl->conn, re->msgid);
			const char *limit = exec_limit_name(res->limit);

			msgpack_pack_map(pk, run_sb ? 11 : 8);
			ipc_pack_kv_uint(pk, "exec_id", ex->id);
			if (res->exited)
				ipc_pack_kv_int(pk, "exit_code", res->exit_code);
			else
				ipc_pack_kv_nil(pk, "exit_code");
			if (res->signal)
				ipc_pack_kv_int(pk, "signal", res->signal);
			else
				ipc_pack_kv_nil(pk, "signal");
			pack_output(pk, "stdout", re->out[0]);
			pack_output(pk, "stderr", re->out[1]);
			ipc_pack_kv_bool(pk, "truncated", res->truncated);
			if (limit)
				ipc_pack_kv_str(pk, "limit", limit);
			else
				ipc_pack_kv_nil(pk, "limit");
			ipc_pack_kv_uint(pk, "duration_us", res->duration_us);
			if (run_sb) {
				ipc_pack_kv_str(pk, "sandbox_id", re->sandbox_id);
				ipc_pack_kv_bool(pk, "warm", re->warm);
				ipc_pack_kv_uint(pk, "waited_us", re->waited_us);
			}
		}
	}
	rpc_exec_free(re);
	if (run_sb && run_sb->lease)
		end_lease(run_sb->lease, "run finished", LEDGER_RUN_DONE, true);
}

/* Starts spec on sb for the client; on failure answers the request. */
static int start_exec(struct rpc_client *cl, uint32_t msgid, struct sandbox *sb,
		      const struct exec_spec *spec, struct rpc_exec **out)
{
	struct rpc_exec *re;
	struct exec_request req = {
		.argv = (const char *const *)spec->argv,
		.env = (const char *const *)spec->env,
		.cwd = spec->cwd,
		.stdin_data = spec->stdin_data,
		.stdin_len = spec->stdin_len,
		.timeout_ms = spec->timeout_ms,
		.max_output = sb->tmpl->max_output,
	};
	int rc;

	if (sb->n_execs >= MAX_EXECS_PER_SANDBOX) {
		ipc_conn_reply_error(cl->conn, msgid, SANDPOOL_E_LIMIT_EXCEEDED,
				     "sandbox %s already runs %d execs", sb->id, MAX_EXECS_PER_SANDBOX);
		return -1;
	}
	re = calloc(1, sizeof(*re));
	if (!re || (!spec->stream && (!(re->out[0] = evbuffer_new()) || !(re->out[1] = evbuffer_new())))) {
		if (re)
			rpc_exec_free(re);
		ipc_conn_reply_error(cl->conn, msgid, SANDPOOL_E_INTERNAL, "out of memory");
		return -1;
	}
	re->ex.id = next_exec_id++;
	re->ex.on_output = on_exec_output;
	re->ex.on_done = on_exec_done;
	re->msgid = msgid;
	re->stream = spec->stream;
	re->started_us = monotonic_us();
	if (sb->lease)
		snprintf(re->lease_id, sizeof(re->lease_id), "%s", sb->lease->id);
	rc = sandbox_exec_start(sb, &re->ex, &req);
	if (rc < 0) {
		rpc_exec_free(re);
		ipc_conn_reply_error(cl->conn, msgid, SANDPOOL_E_BACKEND_ERROR, "sandbox %s: cannot exec: %s",
				     sb->id, strerror(-rc));
		return -1;
	}
	re->cl = cl;
	TAILQ_INSERT_TAIL(&cl->execs, re, link);
	*out = re;
	return 0;
}

/* ---- lease requests ---------------------------------------------------- */

static void pack_lease(msgpack_packer *pk, const struct lease *l, uint64_t waited_us)
{
	msgpack_pack_map(pk, 7);
	ipc_pack_kv_str(pk, "lease_id", l->id);
	ipc_pack_kv_str(pk, "sandbox_id", l->sb->id);
	ipc_pack_kv_str(pk, "template", l->sb->tmpl->name);
	ipc_pack_kv_bool(pk, "warm", l->warm);
	ipc_pack_kv_uint(pk, "waited_us", waited_us);
	ipc_pack_kv_str(pk, "session", l->sb->session ? l->sb->session->name : NULL);
	ipc_pack_kv_bool(pk, "reused", l->reused);
}

static void rpc_wait_free(struct rpc_wait *rw)
{
	if (rw->session_timer) {
		TAILQ_REMOVE(&rw->session->waiters, &rw->sw, link);
		event_free(rw->session_timer);
	}
	if (rw->session && rw->session->acquiring == rw)
		rw->session->acquiring = NULL;
	if (rw->cl)
		TAILQ_REMOVE(&rw->cl->waits, rw, link);
	exec_spec_free(rw->run);
	free(rw);
}

/* A sandbox for a lease or run request: grant it and answer or run. */
static void leased(struct rpc_client *cl, uint32_t msgid, struct sandbox *sb, bool warm, bool reused,
		   bool detached, uint64_t requested_us, const struct exec_spec *run)
{
	uint64_t waited = monotonic_us() - requested_us;
	struct lease *l = grant(cl, sb, detached || run);
	struct rpc_exec *re;

	if (!l) {
		ipc_conn_reply_error(cl->conn, msgid, SANDPOOL_E_INTERNAL, "out of memory");
		return;
	}
	l->warm = warm;
	l->reused = reused;
	l->requested_us = requested_us;
	ledger_lease_acquired(l->id, sb->id, sb->session ? sb->session->name : NULL, l->uid, l->pid,
			      cl->process, requested_us, warm);
	if (!run) {
		pack_lease(ipc_conn_reply_ok(cl->conn, msgid), l, waited);
		return;
	}
	if (start_exec(cl, msgid, sb, run, &re) < 0) {
		end_lease(l, "run could not start", LEDGER_FAILED, true);
		return;
	}
	re->run_sb = sb;
	re->warm = warm;
	re->waited_us = waited;
	snprintf(re->sandbox_id, sizeof(re->sandbox_id), "%s", sb->id);
}

/* A fresh sandbox for a new session: they belong together from now on. */
static void bind_session(struct session *s, struct sandbox *sb)
{
	s->sb = sb;
	sb->session = s;
	ledger_session_bound(s->name, sb->id);
}

static void on_wait_done(struct pool_waiter *w, struct sandbox *sb, int errcode, const char *msg)
{
	struct rpc_wait *rw = (struct rpc_wait *)w;
	struct rpc_client *cl = rw->cl;
	struct session *s = rw->session;

	if (s)
		s->acquiring = NULL;
	if (!sb) {
		ipc_conn_reply_error(cl->conn, rw->msgid, (enum sandpool_errcode)errcode, "%s", msg);
		if (s)
			end_session(s, (enum sandpool_errcode)errcode, msg, LEDGER_FAILED);
	} else {
		if (s)
			bind_session(s, sb);
		leased(cl, rw->msgid, sb, false, false, rw->detached, rw->requested_us, rw->run);
	}
	rw->session = NULL;
	rpc_wait_free(rw);
}

/* Hands a held session sandbox to the next queued request, if any. */
static void take_session(struct rpc_client *cl, uint32_t msgid, struct session *s, bool detached,
			 uint64_t requested_us, const struct exec_spec *run)
{
	session_idle_stop(s);
	s->busy = true;
	pool_reuse(s->sb);
	leased(cl, msgid, s->sb, true, true, detached, requested_us, run);
}

static void serve_session(struct session *s)
{
	struct session_waiter *sw = TAILQ_FIRST(&s->waiters);
	struct rpc_wait *rw;

	if (!sw || s->busy || !s->sb)
		return;
	rw = (struct rpc_wait *)((char *)sw - offsetof(struct rpc_wait, sw));
	take_session(rw->cl, rw->msgid, s, rw->detached, rw->requested_us, rw->run);
	rpc_wait_free(rw);
}

static void on_session_wait_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct rpc_wait *rw = arg;

	ipc_conn_reply_error(rw->cl->conn, rw->msgid, SANDPOOL_E_SESSION_BUSY,
			     "session %s stayed busy for wait_ms", rw->session->name);
	rpc_wait_free(rw);
}

/* Fails every request queued on s, cancels the one building its sandbox,
 * destroys the sandbox and forgets the session. */
static void end_session(struct session *s, enum sandpool_errcode code, const char *why,
			enum ledger_reason reason)
{
	struct session_waiter *sw;
	struct sandbox *sb = s->sb;

	log_debug("session %s ended: %s", s->name, why);
	ledger_session_ended(s->name, reason);
	while ((sw = TAILQ_FIRST(&s->waiters))) {
		struct rpc_wait *rw = (struct rpc_wait *)((char *)sw - offsetof(struct rpc_wait, sw));

		ipc_conn_reply_error(rw->cl->conn, rw->msgid, code, "session %s ended: %s", s->name, why);
		rpc_wait_free(rw);
	}
	if (s->acquiring) {
		struct rpc_wait *rw = s->acquiring;

		pool_waiter_cancel(&rw->w);
		ipc_conn_reply_error(rw->cl->conn, rw->msgid, code, "session %s ended: %s", s->name, why);
		rw->session = NULL;
		rpc_wait_free(rw);
	}
	s->sb = NULL;
	session_free(s);
	if (!sb)
		return;
	sb->session = NULL;
	if (sb->lease)
		end_lease(sb->lease, why, reason, false);
	else
		pool_release(sb, reason);
}

static void on_session_expired(struct session *s, const char *why)
{
	uint64_t max_age_us = pool_template(s->pool)->session_max_age_ms * 1000;

	log_info("session %s: %s", s->name, why);
	end_session(s, SANDPOOL_E_ABORTED, why,
		    monotonic_us() - s->created_us >= max_age_us ? LEDGER_MAX_AGE : LEDGER_IDLE);
}

/* sandbox.lease/run naming a session: its own sandbox when it has one. */
static void acquire_session(struct rpc_client *cl, const struct rpc_msg *m, struct pool *p,
			    const char *name, uint32_t len, uint64_t wait_ms, bool detached,
			    struct exec_spec *run)
{
	const struct template_config *t = pool_template(p);
	uid_t uid = ipc_conn_uid(cl->conn);
	struct session *s = session_find(name, len);
	struct sandbox *sb = NULL;
	struct rpc_wait *rw;
	char msg[512];
	int rc;

	if (s && s->uid != uid) {
		ipc_conn_reply_error(cl->conn, m->msgid, SANDPOOL_E_FORBIDDEN, "session %s belongs to another user",
				     s->name);
		goto out;
	}
	if (s && s->pool != p) {
		ipc_conn_reply_error(cl->conn, m->msgid, SANDPOOL_E_BAD_REQUEST,
				     "session %s is bound to template %s", s->name, pool_template(s->pool)->name);
		goto out;
	}
	if (s && !s->busy && s->sb) {
		take_session(cl, m->msgid, s, detached, monotonic_us(), run);
		goto out;
	}
	rw = calloc(1, sizeof(*rw));
	if (!rw) {
		ipc_conn_reply_error(cl->conn, m->msgid, SANDPOOL_E_INTERNAL, "out of memory");
		goto out;
	}
	rw->cl = cl;
	rw->msgid = m->msgid;
	rw->detached = detached;
	rw->requested_us = monotonic_us();
	rw->run = run;
	run = NULL;
	if (s) {
		struct timeval tv = ms_timeval(wait_ms);

		if (wait_ms)
			rw->session_timer = evtimer_new(rpc_base, on_session_wait_timeout, rw);
		if (!rw->session_timer) {
			ipc_conn_reply_error(cl->conn, m->msgid, SANDPOOL_E_SESSION_BUSY,
					     "session %s has a lease already", s->name);
			exec_spec_free(rw->run);
			free(rw);
			goto out;
		}
		rw->session = s;
		TAILQ_INSERT_TAIL(&s->waiters, &rw->sw, link);
		TAILQ_INSERT_TAIL(&cl->waits, rw, link);
		evtimer_add(rw->session_timer, &tv);
		goto out;
	}
	s = session_new(name, len, uid, p, t->session_idle_ttl_ms, t->session_max_age_ms);
	if (!s) {
		ipc_conn_reply_error(cl->conn, m->msgid, SANDPOOL_E_INTERNAL, "out of memory");
		exec_spec_free(rw->run);
		free(rw);
		goto out;
	}
	ledger_session_started(s->name, uid, t->name);
	s->busy = true;
	rw->w.on_done = on_wait_done;
	rc = pool_acquire(p, &rw->w, wait_ms, &sb, msg, sizeof(msg));
	if (rc == 0) {
		bind_session(s, sb);
		leased(cl, m->msgid, sb, true, false, detached, rw->requested_us, rw->run);
		exec_spec_free(rw->run);
		free(rw);
	} else if (rc < 0) {
		ipc_conn_reply_error(cl->conn, m->msgid, (enum sandpool_errcode)-rc, "%s", msg);
		ledger_session_ended(s->name, LEDGER_FAILED);
		session_free(s);
		exec_spec_free(rw->run);
		free(rw);
	} else {
		rw->session = s;
		s->acquiring = rw;
		TAILQ_INSERT_TAIL(&cl->waits, rw, link);
	}
out:
	exec_spec_free(run);
}

static void acquire(struct rpc_client *cl, const struct rpc_msg *m, struct exec_spec *run)
{
	const char *name, *sname = NULL;
	uint32_t len, slen = 0;
	struct pool *p;
	struct sandbox *sb = NULL;
	struct rpc_wait *rw;
	uint64_t wait_ms, now = monotonic_us();
	bool detached = false;
	char msg[512];
	int rc;

	if (ipc_get_str(m->params, "template", &name, &len) < 0) {
		ipc_conn_reply_error(cl->conn, m->msgid, SANDPOOL_E_BAD_REQUEST, "template (a string) is required");
		goto fail;
	}
	p = pool_find(name, len);
	if (!p) {
		ipc_conn_reply_error(cl->conn, m->msgid, SANDPOOL_E_UNKNOWN_TEMPLATE, "no template named '%.*s'",
				     (int)(len > 64 ? 64 : len), name);
		goto fail;
	}
	if (get_ms(m->params, "wait_ms", 0, &wait_ms, msg, sizeof(msg)) < 0) {
		ipc_conn_reply_error(cl->conn, m->msgid, SANDPOOL_E_BAD_REQUEST, "%s", msg);
		goto fail;
	}
	if (ipc_get_bool(m->params, "detached", &detached) == -EINVAL) {
		ipc_conn_reply_error(cl->conn, m->msgid, SANDPOOL_E_BAD_REQUEST, "detached must be a boolean");
		goto fail;
	}
	rc = ipc_get_str(m->params, "session", &sname, &slen);
	if (rc == -EINVAL || (rc == 0 && !session_name_valid(sname, slen))) {
		ipc_conn_reply_error(cl->conn, m->msgid, SANDPOOL_E_BAD_REQUEST,
				     "session must be 1 to %d characters of [A-Za-z0-9._:@-]", SESSION_NAME_MAX);
		goto fail;
	}
	if (!run && !detached && cl->n_leases >= rpc_cfg->max_leases_per_conn) {
		ipc_conn_reply_error(cl->conn, m->msgid, SANDPOOL_E_LIMIT_EXCEEDED,
				     "this connection holds max_leases_per_conn (%u) leases",
				     rpc_cfg->max_leases_per_conn);
		goto fail;
	}
	if (rc == 0) {
		acquire_session(cl, m, p, sname, slen, wait_ms, detached, run);
		return;
	}
	rw = calloc(1, sizeof(*rw));
	if (!rw) {
		ipc_conn_reply_error(cl->conn, m->msgid, SANDPOOL_E_INTERNAL, "out of memory");
		goto fail;
	}
	rw->w.on_done = on_wait_done;
	rc = pool_acquire(p, &rw->w, wait_ms, &sb, msg, sizeof(msg));
	if (rc == 0) {
		free(rw);
		leased(cl, m->msgid, sb, true, false, detached, now, run);
		exec_spec_free(run);
		return;
	}
	if (rc < 0) {
		free(rw);
		ipc_conn_reply_error(cl->conn, m->msgid, (enum sandpool_errcode)-rc, "%s", msg);
		goto fail;
	}
	rw->cl = cl;
	rw->msgid = m->msgid;
	rw->detached = detached;
	rw->requested_us = now;
	rw->run = run;
	TAILQ_INSERT_TAIL(&cl->waits, rw, link);
	return;
fail:
	exec_spec_free(run);
}

/* ---- methods ----------------------------------------------------------- */

static void m_hello(struct rpc_client *cl, const struct rpc_msg *m)
{
	msgpack_packer *pk = ipc_conn_reply_ok(cl->conn, m->msgid);

	msgpack_pack_map(pk, 3);
	ipc_pack_kv_uint(pk, "protocol", SANDPOOL_PROTOCOL_VERSION);
	ipc_pack_kv_str(pk, "server", PACKAGE_NAME " " PACKAGE_VERSION);
	ipc_pack_cstr(pk, "limits");
	msgpack_pack_map(pk, 5);
	ipc_pack_kv_uint(pk, "max_frame", rpc_cfg->max_frame);
	ipc_pack_kv_uint(pk, "max_inflight", rpc_cfg->max_inflight);
	ipc_pack_kv_uint(pk, "max_connections", rpc_cfg->max_connections);
	ipc_pack_kv_uint(pk, "max_leases_per_conn", rpc_cfg->max_leases_per_conn);
	ipc_pack_kv_uint(pk, "max_timeout_ms", rpc_cfg->max_timeout_ms);
}

static void m_templates_list(struct rpc_client *cl, const struct rpc_msg *m)
{
	msgpack_packer *pk = ipc_conn_reply_ok(cl->conn, m->msgid);
	unsigned n = pool_count();

	msgpack_pack_map(pk, 1);
	ipc_pack_cstr(pk, "templates");
	msgpack_pack_array(pk, n);
	for (unsigned i = 0; i < n; i++) {
		const struct template_config *t = pool_template(pool_at(i));

		msgpack_pack_map(pk, 9);
		ipc_pack_kv_str(pk, "name", t->name);
		ipc_pack_kv_str(pk, "backend", t->backend == BACKEND_LOCAL ? "local" : "e2b");
		ipc_pack_kv_str(pk, "language", t->language);
		ipc_pack_kv_uint(pk, "min_warm", t->min_warm);
		ipc_pack_kv_uint(pk, "max_total", t->max_total);
		ipc_pack_kv_uint(pk, "timeout_ms", t->timeout_ms);
		ipc_pack_kv_uint(pk, "max_output", t->max_output);
		ipc_pack_kv_str(pk, "network", t->network == NETWORK_NONE ? "none" : "host");
		ipc_pack_kv_uint(pk, "workspace_size", t->workspace_size);
	}
}

static void pack_ledger_stats(msgpack_packer *pk)
{
	struct ledger_stats ls;

	ledger_get_stats(&ls);
	ipc_pack_cstr(pk, "ledger");
#define LEDGER_X(name) +1
	msgpack_pack_map(pk, 3 + (0 LEDGER_COUNTERS(LEDGER_X)));
#undef LEDGER_X
	ipc_pack_kv_bool(pk, "enabled", ledger_enabled());
	ipc_pack_kv_bool(pk, "open", ls.open);
	ipc_pack_kv_uint(pk, "backlog", ls.backlog);
#define LEDGER_X(name) ipc_pack_kv_uint(pk, #name, ls.name);
	LEDGER_COUNTERS(LEDGER_X)
#undef LEDGER_X
}

/* The template's limits nothing enforces (rootless, or no cgroups). */
static void pack_unenforced(msgpack_packer *pk, const struct template_config *t)
{
	unsigned miss = local_unenforced_limits(t);

	ipc_pack_cstr(pk, "limits_unenforced");
	msgpack_pack_array(pk, (size_t)__builtin_popcount(miss));
	for (int c = 0; c < CG_NCTRL; c++)
		if (miss & (1u << c))
			ipc_pack_cstr(pk, cgroup_limit_key(c));
}

static void m_pool_stats(struct rpc_client *cl, const struct rpc_msg *m)
{
	msgpack_packer *pk = ipc_conn_reply_ok(cl->conn, m->msgid);
	unsigned n = pool_count();

	msgpack_pack_map(pk, 5);
	pack_ledger_stats(pk);
	ipc_pack_kv_uint(pk, "sessions", session_count());
	ipc_pack_cstr(pk, "templates");
	msgpack_pack_array(pk, n);
	for (unsigned i = 0; i < n; i++) {
		struct pool_figures f;

		pool_get_figures(pool_at(i), &f);
#define POOL_X(name) +1
		msgpack_pack_map(pk, 18 + (0 POOL_COUNTERS(POOL_X)));
#undef POOL_X
		ipc_pack_kv_str(pk, "name", pool_template(pool_at(i))->name);
		ipc_pack_kv_uint(pk, "held", f.held);
		ipc_pack_kv_uint(pk, "target", f.target);
		ipc_pack_cstr(pk, "arrival_rate");
		msgpack_pack_double(pk, f.arrival_rate);
		ipc_pack_cstr(pk, "replenish_ms");
		msgpack_pack_double(pk, f.replenish_ms);
		ipc_pack_kv_uint(pk, "lease_wait_p50_us", f.lease_wait_p50_us);
		ipc_pack_kv_uint(pk, "lease_wait_p99_us", f.lease_wait_p99_us);
		ipc_pack_kv_uint(pk, "create_p50_us", f.create_p50_us);
		ipc_pack_kv_uint(pk, "create_p99_us", f.create_p99_us);
		ipc_pack_kv_uint(pk, "sessions", session_count_in(pool_at(i)));
		ipc_pack_kv_uint(pk, "warm", f.warm);
		ipc_pack_kv_uint(pk, "leased", f.leased);
		ipc_pack_kv_uint(pk, "creating", f.creating);
		ipc_pack_kv_uint(pk, "destroying", f.destroying);
		ipc_pack_kv_uint(pk, "waiting", f.waiting);
		ipc_pack_kv_bool(pk, "degraded", f.degraded);
		ipc_pack_kv_str(pk, "last_error", f.last_error);
		pack_unenforced(pk, pool_template(pool_at(i)));
#define POOL_X(name) ipc_pack_kv_uint(pk, #name, f.stats.name);
		POOL_COUNTERS(POOL_X)
#undef POOL_X
	}
	ipc_pack_kv_uint(pk, "connections", rpc_srv ? ipc_server_connection_count(rpc_srv) : 0);
	ipc_pack_kv_uint(pk, "leases", lease_count());
}

static void m_lease(struct rpc_client *cl, const struct rpc_msg *m)
{
	acquire(cl, m, NULL);
}

static void m_release(struct rpc_client *cl, const struct rpc_msg *m)
{
	struct lease *l = lookup_lease(cl, m);
	msgpack_packer *pk;

	if (!l)
		return;
	end_lease(l, "released", LEDGER_RELEASED, true);
	pk = ipc_conn_reply_ok(cl->conn, m->msgid);
	msgpack_pack_map(pk, 1);
	ipc_pack_kv_bool(pk, "released", true);
}

static void m_exec(struct rpc_client *cl, const struct rpc_msg *m)
{
	struct lease *l = lookup_lease(cl, m);
	struct exec_spec *spec;
	struct rpc_exec *re;
	char msg[512];
	int rc;

	if (!l)
		return;
	rc = parse_exec_spec(m->params, l->sb->tmpl, &spec, msg, sizeof(msg));
	if (rc < 0) {
		ipc_conn_reply_error(cl->conn, m->msgid, (enum sandpool_errcode)-rc, "%s", msg);
		return;
	}
	start_exec(cl, m->msgid, l->sb, spec, &re);
	exec_spec_free(spec);
}

static void m_run(struct rpc_client *cl, const struct rpc_msg *m)
{
	const struct template_config *t;
	struct exec_spec *spec;
	const char *name;
	uint32_t len;
	char msg[512];
	int rc;

	/* The template's defaults shape the spec, so look it up first; the
	 * lease path reports a missing or unknown template itself. */
	if (ipc_get_str(m->params, "template", &name, &len) < 0 || !pool_find(name, len)) {
		acquire(cl, m, NULL);
		return;
	}
	t = pool_template(pool_find(name, len));
	rc = parse_exec_spec(m->params, t, &spec, msg, sizeof(msg));
	if (rc < 0) {
		ipc_conn_reply_error(cl->conn, m->msgid, (enum sandpool_errcode)-rc, "%s", msg);
		return;
	}
	acquire(cl, m, spec);
}

static void m_renew(struct rpc_client *cl, const struct rpc_msg *m)
{
	struct lease *l = lookup_lease(cl, m);
	msgpack_packer *pk;

	if (!l)
		return;
	lease_renew(l, l->sb->tmpl->lease_ttl_ms);
	pk = ipc_conn_reply_ok(cl->conn, m->msgid);
	msgpack_pack_map(pk, 2);
	ipc_pack_kv_str(pk, "lease_id", l->id);
	ipc_pack_kv_uint(pk, "ttl_ms", l->sb->tmpl->lease_ttl_ms);
}

static void m_session_end(struct rpc_client *cl, const struct rpc_msg *m)
{
	const char *name;
	uint32_t len;
	struct session *s;
	uid_t uid = ipc_conn_uid(cl->conn);
	msgpack_packer *pk;

	if (ipc_get_str(m->params, "session", &name, &len) < 0) {
		ipc_conn_reply_error(cl->conn, m->msgid, SANDPOOL_E_BAD_REQUEST, "session (a string) is required");
		return;
	}
	s = session_find(name, len);
	if (!s) {
		ipc_conn_reply_error(cl->conn, m->msgid, SANDPOOL_E_NOT_FOUND, "no session %.*s",
				     (int)(len > 128 ? 128 : len), name);
		return;
	}
	if (s->uid != uid && uid != 0) {
		ipc_conn_reply_error(cl->conn, m->msgid, SANDPOOL_E_FORBIDDEN, "session %s belongs to another user",
				     s->name);
		return;
	}
	end_session(s, SANDPOOL_E_ABORTED, "session.end", LEDGER_SESSION_ENDED);
	pk = ipc_conn_reply_ok(cl->conn, m->msgid);
	msgpack_pack_map(pk, 1);
	ipc_pack_kv_bool(pk, "ended", true);
}

/* ---- code and files: requests passed through to the lease's agent ------ */

/* A code.*, files.* request in flight. */
struct rpc_call {
	struct sandbox_call call;
	struct rpc_client *cl; /* NULL once the client has gone */
	uint32_t msgid;
	bool code_run;		 /* output and results are gathered or streamed */
	bool stream;
	struct evbuffer *out[2]; /* code.run without stream: stdout, stderr */
	msgpack_sbuffer results; /* code.run without stream: the result maps, packed */
	uint32_t n_results;
	char lease_id[24];	 /* code.run, for the ledger */
	char language[16];	 /* code.run: the default context's; "" when it named one */
	uint64_t started_us;	 /* code.run: monotonic */
	uint64_t bytes_out;	 /* code.run: stdout + stderr, streamed or not */
	TAILQ_ENTRY(rpc_call) link;
};

static void rpc_call_free(struct rpc_call *rc)
{
	if (rc->cl)
		TAILQ_REMOVE(&rc->cl->calls, rc, link);
	for (int i = 0; i < 2; i++)
		if (rc->out[i])
			evbuffer_free(rc->out[i]);
	msgpack_sbuffer_destroy(&rc->results);
	free(rc);
}

/* A code run's "output" ({stream, data}) or "result" ({result}). */
static void on_call_notify(struct sandbox_call *c, const char *method, size_t method_len,
			   const msgpack_object *params)
{
	struct rpc_call *rc = (struct rpc_call *)c;
	bool is_output = method_len == 6 && !memcmp(method, "output", 6);
	const msgpack_object *result = NULL, *context_id;
	const char *data = NULL;
	uint32_t len = 0;
	uint64_t stream = 0;
	msgpack_packer *pk, rp;

	if (!rc->code_run)
		return;
	if (is_output ? ipc_get_uint(params, "stream", &stream) < 0 || (stream != 1 && stream != 2) ||
				ipc_get_bytes(params, "data", &data, &len) < 0
		      : ipc_get_map(params, "result", &result) < 0)
		return;
	rc->bytes_out += len;
	if (!rc->cl)
		return;
	if (!rc->stream) {
		if (is_output) {
			evbuffer_add(rc->out[stream - 1], data, len);
		} else {
			msgpack_packer_init(&rp, &rc->results, msgpack_sbuffer_write);
			msgpack_pack_object(&rp, *result);
			rc->n_results++;
		}
		return;
	}
	pk = ipc_conn_notify(rc->cl->conn, "code.output");
	msgpack_pack_map(pk, 4);
	ipc_pack_kv_uint(pk, "request", rc->msgid);
	context_id = ipc_map_get(params, "context_id");
	ipc_pack_cstr(pk, "context_id");
	if (context_id && context_id->type == MSGPACK_OBJECT_STR)
		msgpack_pack_object(pk, *context_id);
	else
		msgpack_pack_nil(pk);
	ipc_pack_kv_str(pk, "type", !is_output ? "result" : stream == 1 ? "stdout" : "stderr");
	if (is_output) {
		ipc_pack_kv_bin(pk, "data", data, len);
	} else {
		ipc_pack_cstr(pk, "result");
		msgpack_pack_object(pk, *result);
	}
}

/* code.run's answer: the agent's map (context_id, execution_count, error,
 * truncated, limit, restarted, duration_us) plus what was gathered. */
static void pack_execution(msgpack_packer *pk, struct rpc_call *rc, const msgpack_object *result)
{
	const msgpack_object_map *m = &result->via.map;

	msgpack_pack_map(pk, m->size + 3);
	for (uint32_t i = 0; i < m->size; i++) {
		msgpack_pack_object(pk, m->ptr[i].key);
		msgpack_pack_object(pk, m->ptr[i].val);
	}
	ipc_pack_cstr(pk, "results");
	msgpack_pack_array(pk, rc->n_results);
	if (rc->results.size)
		pk->callback(pk->data, rc->results.data, rc->results.size);
	pack_output(pk, "stdout", rc->out[0]);
	pack_output(pk, "stderr", rc->out[1]);
}

/* A code run as the ledger keeps it: how it went, never the code; of an
 * error only its name ("ZeroDivisionError", "TimeoutError"). */
static void record_code_run(const struct rpc_call *rc, const msgpack_object *result, int errcode)
{
	struct ledger_exec e = {
		.lease = rc->lease_id,
		.code = true,
		.language = rc->language[0] ? rc->language : NULL,
		.started_mono_us = rc->started_us,
		.duration_us = monotonic_us() - rc->started_us,
		.bytes_out = rc->bytes_out,
	};
	char name[32], limit[16];
	const char *s;
	uint32_t len;
	uint64_t us;

	if (!result || result->type != MSGPACK_OBJECT_MAP) {
		e.error_name = sandpool_errcode_name(result ? SANDPOOL_E_INTERNAL : (enum sandpool_errcode)errcode);
		ledger_exec_done(&e);
		return;
	}
	if (ipc_get_uint(result, "duration_us", &us) == 0)
		e.duration_us = us;
	(void)ipc_get_bool(result, "truncated", &e.truncated);
	if (ipc_get_str(result, "limit", &s, &len) == 0) {
		snprintf(limit, sizeof(limit), "%.*s", (int)len, s);
		e.limit = limit;
	}
	if (ipc_get_str(ipc_map_get(result, "error"), "name", &s, &len) == 0) {
		snprintf(name, sizeof(name), "%.*s", (int)len, s);
		e.error_name = name;
	}
	ledger_exec_done(&e);
}

static void on_call_done(struct sandbox_call *c, const msgpack_object *result, int errcode, const char *errmsg)
{
	struct rpc_call *rc = (struct rpc_call *)c;

	if (rc->code_run)
		record_code_run(rc, result, errcode);
	if (rc->cl && !result) {
		ipc_conn_reply_error(rc->cl->conn, rc->msgid, (enum sandpool_errcode)errcode, "%s", errmsg);
	} else if (rc->cl && result->type != MSGPACK_OBJECT_MAP) {
		ipc_conn_reply_error(rc->cl->conn, rc->msgid, SANDPOOL_E_INTERNAL, "the agent answered a non-map");
	} else if (rc->cl && rc->code_run) {
		pack_execution(ipc_conn_reply_ok(rc->cl->conn, rc->msgid), rc, result);
	} else if (rc->cl) {
		msgpack_pack_object(ipc_conn_reply_ok(rc->cl->conn, rc->msgid), *result);
	}
	rpc_call_free(rc);
}

/* Sends method with params (a packed map) to sb's agent for the client;
 * on failure answers the request. id names the call in the agent's
 * notifications (code.run's params carry it too). code_language is NULL
 * but for code.run: its language, "" when it names a context. */
static void start_call(struct rpc_client *cl, uint32_t msgid, struct sandbox *sb, const char *method,
		       const msgpack_sbuffer *params, uint64_t id, const char *code_language, bool stream)
{
	bool code_run = code_language != NULL;
	struct rpc_call *rc;
	int err;

	if (sb->n_calls >= MAX_CALLS_PER_SANDBOX) {
		ipc_conn_reply_error(cl->conn, msgid, SANDPOOL_E_LIMIT_EXCEEDED,
				     "sandbox %s already runs %d code and file requests", sb->id, MAX_CALLS_PER_SANDBOX);
		return;
	}
	rc = calloc(1, sizeof(*rc));
	if (rc) {
		msgpack_sbuffer_init(&rc->results);
		if (code_run && !stream && (!(rc->out[0] = evbuffer_new()) || !(rc->out[1] = evbuffer_new()))) {
			rpc_call_free(rc);
			rc = NULL;
		}
	}
	if (!rc) {
		ipc_conn_reply_error(cl->conn, msgid, SANDPOOL_E_INTERNAL, "out of memory");
		return;
	}
	rc->call.id = id;
	rc->call.on_notify = on_call_notify;
	rc->call.on_done = on_call_done;
	rc->msgid = msgid;
	rc->code_run = code_run;
	rc->stream = stream;
	if (code_run) {
		snprintf(rc->lease_id, sizeof(rc->lease_id), "%s", sb->lease ? sb->lease->id : "");
		snprintf(rc->language, sizeof(rc->language), "%s", code_language);
		rc->started_us = monotonic_us();
	}
	err = sandbox_call_start(sb, &rc->call, method, params->data, params->size);
	if (err < 0) {
		rpc_call_free(rc);
		if (err == -ENOTSUP)
			ipc_conn_reply_error(cl->conn, msgid, SANDPOOL_E_BAD_REQUEST,
					     "template %s's backend does not run %s", sb->tmpl->name, method);
		else if (err == -ENOENT)
			ipc_conn_reply_error(cl->conn, msgid, SANDPOOL_E_NOT_FOUND, "sandbox %s has no such context",
					     sb->id);
		else if (err == -EPROTONOSUPPORT || err == -EINVAL)
			ipc_conn_reply_error(cl->conn, msgid, SANDPOOL_E_BAD_REQUEST,
					     "template %s's backend cannot run this %s", sb->tmpl->name, method);
		else if (err == -EMFILE)
			ipc_conn_reply_error(cl->conn, msgid, SANDPOOL_E_LIMIT_EXCEEDED,
					     "sandbox %s has as many contexts as it may", sb->id);
		else
			ipc_conn_reply_error(cl->conn, msgid, SANDPOOL_E_BACKEND_ERROR, "sandbox %s: cannot reach its agent: %s",
					     sb->id, strerror(-err));
		return;
	}
	rc->cl = cl;
	TAILQ_INSERT_TAIL(&cl->calls, rc, link);
}

/* The params map being built for the agent; one per request. */
struct call_params {
	msgpack_sbuffer buf;
	msgpack_packer pk;
};

static void call_params_init(struct call_params *cp)
{
	msgpack_sbuffer_init(&cp->buf);
	msgpack_packer_init(&cp->pk, &cp->buf, msgpack_sbuffer_write);
}

/* A str param naming a context: 1 to CONTEXT_ID_MAX bytes. */
static int get_context_id(const msgpack_object *params, const char **id, uint32_t *len, bool required,
			  char *msg, size_t msglen)
{
	int rc = ipc_get_str(params, "context_id", id, len);

	if (rc == -ENOENT && !required)
		return -ENOENT;
	if (rc < 0 || *len == 0 || *len > CONTEXT_ID_MAX) {
		snprintf(msg, msglen, "context_id must be a string of 1 to %d bytes", CONTEXT_ID_MAX);
		return -SANDPOOL_E_BAD_REQUEST;
	}
	return 0;
}

/* A path param: absolute (in the sandbox) or relative to /workspace. */
static int get_path(const msgpack_object *params, const char *dflt, const char **p, uint32_t *len, char *msg,
		    size_t msglen)
{
	int rc = ipc_get_str(params, "path", p, len);

	if (rc == -ENOENT && dflt) {
		*p = dflt;
		*len = (uint32_t)strlen(dflt);
		return 0;
	}
	if (rc < 0 || *len == 0 || *len > PATH_BYTES_MAX || memchr(*p, 0, *len)) {
		snprintf(msg, msglen, "path must be a string of 1 to %d bytes without NUL", PATH_BYTES_MAX);
		return -SANDPOOL_E_BAD_REQUEST;
	}
	return 0;
}

/* The most data one files.write or files.read moves for template t. */
static uint64_t file_limit(const struct template_config *t)
{
	uint64_t frame = rpc_cfg->max_frame > 2 * FILE_FRAME_RESERVE ? rpc_cfg->max_frame - FILE_FRAME_RESERVE
								     : rpc_cfg->max_frame / 2;

	return t->max_file_size < frame ? t->max_file_size : frame;
}

static void pack_template_env(msgpack_packer *pk, const char *key, const struct template_config *t)
{
	const char **env = sandbox_template_env(t);
	uint32_t n = 0;

	while (env && env[n])
		n++;
	ipc_pack_cstr(pk, key);
	msgpack_pack_array(pk, n);
	for (uint32_t i = 0; i < n; i++)
		ipc_pack_cstr(pk, env[i]);
	free(env);
}

/* The request's env map as the agent's "K=V" array; 0 or -code. */
static int pack_request_env(msgpack_packer *pk, const msgpack_object *params, char *msg, size_t msglen)
{
	const msgpack_object *m = NULL;
	int rc = ipc_get_map(params, "env", &m);

	if (rc == -EINVAL) {
		snprintf(msg, msglen, "env must be a map of strings");
		return -SANDPOOL_E_BAD_REQUEST;
	}
	for (uint32_t i = 0; m && i < m->via.map.size; i++) {
		if (!env_entry_valid(&m->via.map.ptr[i].key, &m->via.map.ptr[i].val)) {
			snprintf(msg, msglen, ENV_ENTRY_RULE);
			return -SANDPOOL_E_BAD_REQUEST;
		}
	}
	if (m && m->via.map.size > MAX_ENV) {
		snprintf(msg, msglen, "more than %d environment variables", MAX_ENV);
		return -SANDPOOL_E_LIMIT_EXCEEDED;
	}
	ipc_pack_cstr(pk, "env");
	msgpack_pack_array(pk, m ? m->via.map.size : 0);
	for (uint32_t i = 0; m && i < m->via.map.size; i++) {
		const msgpack_object_str *k = &m->via.map.ptr[i].key.via.str, *v = &m->via.map.ptr[i].val.via.str;

		msgpack_pack_str(pk, k->size + 1 + v->size);
		msgpack_pack_str_body(pk, k->ptr, k->size);
		msgpack_pack_str_body(pk, "=", 1);
		msgpack_pack_str_body(pk, v->ptr, v->size);
	}
	return 0;
}

/* code.run {lease_id, code, language? | context_id?, env?, timeout_ms?, stream?} */
static void m_code_run(struct rpc_client *cl, const struct rpc_msg *m)
{
	struct lease *l = lookup_lease(cl, m);
	const struct template_config *t;
	const char *code, *lang, *ctx_id;
	uint32_t code_len, lang_len, ctx_len;
	uint64_t timeout_ms, id = next_exec_id++;
	struct call_params cp;
	bool stream = false, has_ctx;
	char msg[512], language[16];
	int rc = 0;

	if (!l)
		return;
	t = l->sb->tmpl;
	call_params_init(&cp);
	if (ipc_get_bytes(m->params, "code", &code, &code_len) < 0 || memchr(code, 0, code_len)) {
		snprintf(msg, sizeof(msg), "code (a string without NUL) is required");
		rc = -SANDPOOL_E_BAD_REQUEST;
	}
	if (rc == 0) {
		rc = get_context_id(m->params, &ctx_id, &ctx_len, false, msg, sizeof(msg));
		has_ctx = rc == 0;
		rc = rc == -ENOENT ? 0 : rc;
	}
	if (rc == 0) {
		int r = ipc_get_str(m->params, "language", &lang, &lang_len);

		if (r == -EINVAL || (r == 0 && has_ctx)) {
			snprintf(msg, sizeof(msg), "language must be a string, and not given with context_id");
			rc = -SANDPOOL_E_BAD_REQUEST;
		} else if (r == -ENOENT) {
			/* The template's language picks the default context. */
			lang = t->language;
			lang_len = (uint32_t)strlen(lang);
		}
	}
	if (rc == 0)
		rc = get_ms(m->params, "timeout_ms", t->timeout_ms, &timeout_ms, msg, sizeof(msg));
	if (rc == 0 && timeout_ms == 0) {
		snprintf(msg, sizeof(msg), "timeout_ms must be positive");
		rc = -SANDPOOL_E_BAD_REQUEST;
	}
	if (rc == 0 && ipc_get_bool(m->params, "stream", &stream) == -EINVAL) {
		snprintf(msg, sizeof(msg), "stream must be a boolean");
		rc = -SANDPOOL_E_BAD_REQUEST;
	}
	if (rc == 0) {
		msgpack_pack_map(&cp.pk, 8);
		ipc_pack_kv_uint(&cp.pk, "id", id);
		ipc_pack_cstr(&cp.pk, "code");
		msgpack_pack_str(&cp.pk, code_len);
		msgpack_pack_str_body(&cp.pk, code, code_len);
		ipc_pack_cstr(&cp.pk, has_ctx ? "context_id" : "language");
		ipc_pack_strn(&cp.pk, has_ctx ? ctx_id : lang, has_ctx ? ctx_len : lang_len);
		rc = pack_request_env(&cp.pk, m->params, msg, sizeof(msg));
	}
	if (rc == 0) {
		ipc_pack_kv_uint(&cp.pk, "timeout_ms", timeout_ms);
		ipc_pack_kv_uint(&cp.pk, "max_output", t->max_output);
		/* For the language's default context, should it not exist yet. */
		pack_template_env(&cp.pk, "context_env", t);
		ipc_pack_kv_str(&cp.pk, "cwd", "/workspace");
		snprintf(language, sizeof(language), "%.*s", has_ctx ? 0 : (int)lang_len, has_ctx ? "" : lang);
		start_call(cl, m->msgid, l->sb, "code.run", &cp.buf, id, language, stream);
	} else {
		ipc_conn_reply_error(cl->conn, m->msgid, (enum sandpool_errcode)-rc, "%s", msg);
	}
	msgpack_sbuffer_destroy(&cp.buf);
}

/* code.context.create {lease_id, language?, cwd?} */
static void m_context_create(struct rpc_client *cl, const struct rpc_msg *m)
{
	struct lease *l = lookup_lease(cl, m);
	const char *lang, *cwd = NULL;
	uint32_t lang_len, cwd_len = 0;
	struct call_params cp;
	int rc;

	if (!l)
		return;
	rc = ipc_get_str(m->params, "language", &lang, &lang_len);
	if (rc == -ENOENT) {
		lang = l->sb->tmpl->language;
		lang_len = (uint32_t)strlen(lang);
	}
	if (rc == -EINVAL) {
		ipc_conn_reply_error(cl->conn, m->msgid, SANDPOOL_E_BAD_REQUEST, "language must be a string");
		return;
	}
	rc = ipc_get_str(m->params, "cwd", &cwd, &cwd_len);
	if (rc == -EINVAL || (rc == 0 && (cwd_len == 0 || cwd_len > PATH_BYTES_MAX || cwd[0] != '/' ||
					  memchr(cwd, 0, cwd_len)))) {
		ipc_conn_reply_error(cl->conn, m->msgid, SANDPOOL_E_BAD_REQUEST, "cwd must be an absolute path");
		return;
	}
	call_params_init(&cp);
	msgpack_pack_map(&cp.pk, cwd ? 3 : 2);
	ipc_pack_cstr(&cp.pk, "language");
	ipc_pack_strn(&cp.pk, lang, lang_len);
	if (cwd) {
		ipc_pack_cstr(&cp.pk, "cwd");
		ipc_pack_strn(&cp.pk, cwd, cwd_len);
	}
	pack_template_env(&cp.pk, "env", l->sb->tmpl);
	start_call(cl, m->msgid, l->sb, "context.create", &cp.buf, next_exec_id++, NULL, false);
	msgpack_sbuffer_destroy(&cp.buf);
}

/* code.context.list/restart/remove: the lease and, but for list, a context. */
static void context_call(struct rpc_client *cl, const struct rpc_msg *m, const char *method, bool needs_id)
{
	struct lease *l = lookup_lease(cl, m);
	struct call_params cp;
	const char *id;
	uint32_t len;
	char msg[128];

	if (!l)
		return;
	if (needs_id && get_context_id(m->params, &id, &len, true, msg, sizeof(msg)) < 0) {
		ipc_conn_reply_error(cl->conn, m->msgid, SANDPOOL_E_BAD_REQUEST, "%s", msg);
		return;
	}
	call_params_init(&cp);
	msgpack_pack_map(&cp.pk, needs_id ? 1 : 0);
	if (needs_id) {
		ipc_pack_cstr(&cp.pk, "context_id");
		ipc_pack_strn(&cp.pk, id, len);
	}
	start_call(cl, m->msgid, l->sb, method, &cp.buf, next_exec_id++, NULL, false);
	msgpack_sbuffer_destroy(&cp.buf);
}

static void m_context_list(struct rpc_client *cl, const struct rpc_msg *m)
{
	context_call(cl, m, "context.list", false);
}

static void m_context_restart(struct rpc_client *cl, const struct rpc_msg *m)
{
	context_call(cl, m, "context.restart", true);
}

static void m_context_remove(struct rpc_client *cl, const struct rpc_msg *m)
{
	context_call(cl, m, "context.remove", true);
}

/* files.*: the lease, a path, and what each method adds. */
static void files_call(struct rpc_client *cl, const struct rpc_msg *m, const char *method)
{
	struct lease *l = lookup_lease(cl, m);
	bool is_write = !strcmp(method, "files.write"), is_read = !strcmp(method, "files.read");
	const char *path, *data = NULL;
	uint32_t path_len, data_len = 0;
	uint64_t limit, mode = 0644, offset = 0, length = 0;
	bool append = false, has_length = false;
	struct call_params cp;
	char msg[512];
	int rc;

	if (!l)
		return;
	limit = file_limit(l->sb->tmpl);
	rc = get_path(m->params, !strcmp(method, "files.list") ? "/workspace" : NULL, &path, &path_len, msg,
		      sizeof(msg));
	if (rc == 0 && is_write && ipc_get_bytes(m->params, "data", &data, &data_len) < 0) {
		snprintf(msg, sizeof(msg), "data (bin) is required");
		rc = -SANDPOOL_E_BAD_REQUEST;
	}
	if (rc == 0 && is_write && data_len > limit) {
		snprintf(msg, sizeof(msg), "%u bytes is more than one files.write takes (%" PRIu64 ": max_file_size, max_frame)",
			 data_len, limit);
		rc = -SANDPOOL_E_LIMIT_EXCEEDED;
	}
	if (rc == 0 && is_write &&
	    ((ipc_get_uint(m->params, "mode", &mode) == -EINVAL || mode > 07777) ||
	     ipc_get_bool(m->params, "append", &append) == -EINVAL)) {
		snprintf(msg, sizeof(msg), "mode must be 0 to 07777, append a boolean");
		rc = -SANDPOOL_E_BAD_REQUEST;
	}
	if (rc == 0 && is_read) {
		int r = ipc_get_uint(m->params, "length", &length);

		has_length = r == 0;
		if (r == -EINVAL || ipc_get_uint(m->params, "offset", &offset) == -EINVAL) {
			snprintf(msg, sizeof(msg), "offset and length must be unsigned integers");
			rc = -SANDPOOL_E_BAD_REQUEST;
		}
	}
	if (rc < 0) {
		ipc_conn_reply_error(cl->conn, m->msgid, (enum sandpool_errcode)-rc, "%s", msg);
		return;
	}
	call_params_init(&cp);
	msgpack_pack_map(&cp.pk, 2 + (is_write ? 3 : 0) + (is_read ? 1 + has_length : 0));
	ipc_pack_cstr(&cp.pk, "path");
	ipc_pack_strn(&cp.pk, path, path_len);
	ipc_pack_kv_uint(&cp.pk, "max_size", limit);
	if (is_write) {
		ipc_pack_kv_bin(&cp.pk, "data", data, data_len);
		ipc_pack_kv_uint(&cp.pk, "mode", mode);
		ipc_pack_kv_bool(&cp.pk, "append", append);
	}
	if (is_read) {
		ipc_pack_kv_uint(&cp.pk, "offset", offset);
		if (has_length)
			ipc_pack_kv_uint(&cp.pk, "length", length);
	}
	start_call(cl, m->msgid, l->sb, method, &cp.buf, next_exec_id++, NULL, false);
	msgpack_sbuffer_destroy(&cp.buf);
}

static void m_files_write(struct rpc_client *cl, const struct rpc_msg *m)
{
	files_call(cl, m, "files.write");
}

static void m_files_read(struct rpc_client *cl, const struct rpc_msg *m)
{
	files_call(cl, m, "files.read");
}

static void m_files_list(struct rpc_client *cl, const struct rpc_msg *m)
{
	files_call(cl, m, "files.list");
}

static void m_files_remove(struct rpc_client *cl, const struct rpc_msg *m)
{
	files_call(cl, m, "files.remove");
}

static const struct rpc_method {
	const char *name;
	void (*fn)(struct rpc_client *cl, const struct rpc_msg *m);
} methods[] = {
	{ "hello", m_hello },
	{ "templates.list", m_templates_list },
	{ "pool.stats", m_pool_stats },
	{ "sandbox.lease", m_lease },
	{ "sandbox.release", m_release },
	{ "sandbox.renew", m_renew },
	{ "session.end", m_session_end },
	{ "sandbox.exec", m_exec },
	{ "run", m_run },
	{ "code.run", m_code_run },
	{ "code.context.create", m_context_create },
	{ "code.context.list", m_context_list },
	{ "code.context.restart", m_context_restart },
	{ "code.context.remove", m_context_remove },
	{ "files.write", m_files_write },
	{ "files.read", m_files_read },
	{ "files.list", m_files_list },
	{ "files.remove", m_files_remove },
};

/* The peer's process name, read once per connection (it names the client
 * in the ledger); empty when it cannot be read. */
static void read_comm(pid_t pid, char *buf, size_t len)
{
	char path[64];
	FILE *f;

	buf[0] = '\0';
	snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return;
	if (!fgets(buf, (int)len, f))
		buf[0] = '\0';
	fclose(f);
	buf[strcspn(buf, "\n")] = '\0';
}

static void on_request(struct ipc_conn *c, const struct rpc_msg *m)
{
	struct rpc_client *cl = ipc_conn_get_data(c);

	if (!cl) {
		cl = calloc(1, sizeof(*cl));
		if (!cl) {
			ipc_conn_reply_error(c, m->msgid, SANDPOOL_E_INTERNAL, "out of memory");
			return;
		}
		cl->conn = c;
		TAILQ_INIT(&cl->leases);
		TAILQ_INIT(&cl->waits);
		TAILQ_INIT(&cl->execs);
		TAILQ_INIT(&cl->calls);
		if (ledger_enabled())
			read_comm(ipc_conn_pid(c), cl->process, sizeof(cl->process));
		ipc_conn_set_data(c, cl);
	}
	for (size_t i = 0; i < ARRAY_SIZE(methods); i++) {
		if (ipc_method_is(m, methods[i].name)) {
			methods[i].fn(cl, m);
			return;
		}
	}
	ipc_conn_reply_error(c, m->msgid, SANDPOOL_E_UNKNOWN_METHOD, "unknown method '%.*s'",
			     (int)(m->method_len > 64 ? 64 : m->method_len), m->method);
}

static void on_close(struct ipc_conn *c)
{
	struct rpc_client *cl = ipc_conn_get_data(c);
	struct rpc_wait *rw;
	struct rpc_exec *re;
	struct rpc_call *rcall;
	struct lease *l;

	if (!cl)
		return;
	while ((rw = TAILQ_FIRST(&cl->waits))) {
		struct session *s = rw->session;

		pool_waiter_cancel(&rw->w);
		rw->cl = NULL;
		TAILQ_REMOVE(&cl->waits, rw, link);
		/* A session whose first sandbox was still coming ends with it. */
		if (s && s->acquiring == rw) {
			rw->session = NULL;
			s->acquiring = NULL;
			if (!s->sb) {
				ledger_session_ended(s->name, LEDGER_DISCONNECTED);
				session_free(s);
			}
		}
		rpc_wait_free(rw);
	}
	/* Execs keep running until the agent confirms the kill; they only
	 * forget their client. */
	while ((re = TAILQ_FIRST(&cl->execs))) {
		TAILQ_REMOVE(&cl->execs, re, link);
		re->cl = NULL;
		sandbox_exec_cancel(&re->ex);
	}
	/* Likewise calls; a code run's cell is interrupted, file operations finish. */
	while ((rcall = TAILQ_FIRST(&cl->calls))) {
		TAILQ_REMOVE(&cl->calls, rcall, link);
		rcall->cl = NULL;
		if (rcall->code_run)
			sandbox_call_cancel(&rcall->call);
	}
	while ((l = TAILQ_FIRST(&cl->leases)))
		end_lease(l, "client disconnected", LEDGER_DISCONNECTED, true);
	ipc_conn_set_data(c, NULL);
	free(cl);
}

const struct ipc_handlers rpc_handlers = {
	.on_request = on_request,
	.on_close = on_close,
};
