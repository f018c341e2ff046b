#include "autoconfig.h"

#include "sandbox/local.h"

#include <errno.h>
#include <inttypes.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ipc/codec.h"
#include "ipc/sandpool.h"
#include "sandbox/cgroup.h"
#include "sandbox/spawner.h"

/* A sandbox that is not up by then is abandoned as failed. */
#define CREATE_TIMEOUT_MS 30000

struct local_sandbox {
	struct sandbox *sb;
	pid_t pid;
	int pidfd;
	struct bufferevent *ctrl;
	struct ipc_reader reader;
	struct event *exit_ev;
	struct event *create_timer;
	uint32_t next_msgid;
	bool ready;
	bool spawning; /* a spawner request is outstanding */
	bool exited;
	bool gone_reported;
	struct cgroup_events seen; /* limit events already blamed on an exec */
	struct event *health_timer;
	uint32_t ping_outstanding; /* msgid of an unanswered ping, 0 when none */
	uint32_t preload_tag; /* msgid of the template's preload, 0 when none runs */
};

static struct event_base *local_base;
static struct spawner *local_spawner;
static const struct config *local_cfg;
static const struct cgroup_layout *local_cg;
static bool local_nproc_limit;

void local_backend_init(struct event_base *base, struct spawner *sp, const struct config *cfg,
			const struct cgroup_layout *cg, bool nproc_limit)
{
	local_base = base;
	local_spawner = sp;
	local_cfg = cfg;
	local_cg = cg;
	local_nproc_limit = nproc_limit;
}

unsigned local_unenforced_limits(const struct template_config *t)
{
	unsigned miss = 0;

	if (t->backend != BACKEND_LOCAL)
		return 0;
	for (int c = 0; c < CG_NCTRL; c++)
		if (cgroup_limit_key(c) && !cgroup_enforces(local_cg, c) && !(c == CG_PIDS && local_nproc_limit))
			miss |= 1u << c;
	return miss;
}

/* "512M", "256", "0.5": a limit's value as the config would write it. */
static void limit_value(enum cgroup_ctrl c, const struct template_config *t, char *buf, size_t len)
{
	static const char units[] = "KMGT";
	uint64_t v = t->memory;
	int u = -1;

	if (c == CG_PIDS) {
		snprintf(buf, len, "%u", t->pids);
	} else if (c == CG_CPU) {
		snprintf(buf, len, "%g", (double)t->cpu_milli / 1000);
	} else {
		while (u < 3 && v >= 1024 && v % 1024 == 0) {
			v /= 1024;
			u++;
		}
		if (u >= 0)
			snprintf(buf, len, "%" PRIu64 "%c", v, units[u]);
		else
			snprintf(buf, len, "%" PRIu64, v);
	}
}

void local_report_limits(const struct template_config *t)
{
	char line[1400], val[32];
	size_t off = 0;

	if (t->backend != BACKEND_LOCAL)
		return;
	for (int c = 0; c < CG_NCTRL && off < sizeof(line); c++) {
		if (!cgroup_limit_key(c) || cgroup_enforces(local_cg, c))
			continue;
		limit_value(c, t, val, sizeof(val));
		if (c == CG_PIDS && local_nproc_limit)
			off += (size_t)snprintf(line + off, sizeof(line) - off,
						"%spids = %s only by RLIMIT_NPROC (no cgroup: %s; a fork past it "
						"fails with EAGAIN, no \"pids_limit\" outcome)",
						off ? "; " : "", val, local_cg->why[c]);
		else
			off += (size_t)snprintf(line + off, sizeof(line) - off, "%s%s = %s NOT ENFORCED (%s)",
						off ? "; " : "", cgroup_limit_key(c), val, local_cg->why[c]);
	}
	if (off)
		log_warn("template %s: limits: %s", t->name, line);
}

/* An exec that died or failed may have met a cgroup limit; the counters
 * say which. Only read for such execs, so clean ones cost nothing. */
static void blame_limits(struct local_sandbox *ls, struct exec_result *res)
{
	struct cgroup_events ev;

	if ((res->exited && res->exit_code == 0) || cgroup_read_events(local_cg, ls->sb->id, &ev) < 0)
		return;
	if (ev.oom_kills > ls->seen.oom_kills && res->signal == SIGKILL)
		res->limit = EXEC_LIMIT_OOM;
	else if (ev.pids_max > ls->seen.pids_max && res->limit != EXEC_LIMIT_OUTPUT)
		res->limit = EXEC_LIMIT_PIDS;
	ls->seen = ev;
}

static struct local_sandbox *ls_of(struct sandbox *sb)
{
	return sb->backend_state;
}

static void ls_close_ctrl(struct local_sandbox *ls)
{
	if (ls->health_timer)
		event_del(ls->health_timer);
	if (ls->ctrl) {
		bufferevent_free(ls->ctrl);
		ls->ctrl = NULL;
	}
}

/* The agent is unusable: tell the pool once, which will destroy it. */
static void ls_broken(struct local_sandbox *ls, const char *why)
{
	ls_close_ctrl(ls);
	if (ls->create_timer)
		event_del(ls->create_timer);
	sandbox_backend_failed(ls->sb, why);
}

/* An agent notification naming a call by id ("output", "result"). */
static void on_call_notify(struct local_sandbox *ls, const struct rpc_msg *m)
{
	struct sandbox_call *c;
	uint64_t id;

	if (ipc_get_uint(m->params, "id", &id) == 0 && (c = sandbox_find_call(ls->sb, id)))
		c->on_notify(c, m->method, m->method_len, m->params);
}

/* The agent's error map as a code and a message. */
static enum sandpool_errcode agent_error(const msgpack_object *error, char *msg, size_t len)
{
	const char *c = "backend_error", *s;
	uint32_t clen = (uint32_t)strlen(c), slen;

	snprintf(msg, len, "agent error");
	if (ipc_get_str(error, "message", &s, &slen) == 0)
		snprintf(msg, len, "%.*s", (int)slen, s);
	ipc_get_str(error, "code", &c, &clen);
	return sandpool_errcode_from_name(c, clen);
}

static void on_call_response(struct sandbox_call *c, const struct rpc_msg *m)
{
	char msg[512];

	if (m->error)
		sandbox_call_finish(c, NULL, agent_error(m->error, msg, sizeof(msg)), msg);
	else
		sandbox_call_finish(c, m->result, 0, NULL);
}

static void on_output(struct local_sandbox *ls, const struct rpc_msg *m)
{
	struct sandbox_exec *ex;
	const char *data;
	uint32_t len;
	uint64_t id, stream;

	if (ipc_get_uint(m->params, "id", &id) < 0 || ipc_get_uint(m->params, "stream", &stream) < 0 ||
	    ipc_get_bytes(m->params, "data", &data, &len) < 0 || (stream != 1 && stream != 2))
		return;
	ex = sandbox_find_exec(ls->sb, id);
	if (ex && ex->on_output)
		ex->on_output(ex, (int)stream, data, len);
	else if (!ex)
		on_call_notify(ls, m);
}

static void on_preload_done(struct local_sandbox *ls, const struct rpc_msg *m);

static void on_response(struct local_sandbox *ls, const struct rpc_msg *m)
{
	struct sandbox_call *call;
	struct sandbox_exec *ex;
	struct exec_result res = { 0 };
	const msgpack_object *r = m->result;
	int64_t code;
	uint64_t v;
	const char *s;
	uint32_t len;

	if (m->msgid == ls->ping_outstanding) {
		ls->ping_outstanding = 0;
		return;
	}
	if (m->msgid == ls->preload_tag) {
		on_preload_done(ls, m);
		return;
	}
	TAILQ_FOREACH(call, &ls->sb->calls, sb_link) {
		if (call->backend_tag == m->msgid) {
			on_call_response(call, m);
			return;
		}
	}
	TAILQ_FOREACH(ex, &ls->sb->execs, sb_link)
		if (ex->backend_tag == m->msgid)
			break;
	if (!ex)
		return; /* a kill answer */
	if (m->error) {
		char msg[512];

		sandbox_exec_finish(ex, NULL, agent_error(m->error, msg, sizeof(msg)), msg);
		return;
	}
	if (ipc_get_int(r, "exit_code", &code) == 0) {
		res.exited = true;
		res.exit_code = (int)code;
	}
	if (ipc_get_uint(r, "signal", &v) == 0)
		res.signal = (int)v;
	ipc_get_bool(r, "truncated", &res.truncated);
	ipc_get_uint(r, "duration_us", &res.duration_us);
	if (ipc_get_str(r, "limit", &s, &len) == 0) {
		if (len == 7 && !memcmp(s, "timeout", 7))
			res.limit = EXEC_LIMIT_TIMEOUT;
		else if (len == 12 && !memcmp(s, "output_limit", 12))
			res.limit = EXEC_LIMIT_OUTPUT;
	}
	blame_limits(ls, &res);
	sandbox_exec_finish(ex, &res, 0, NULL);
}

/* A ping per health_interval; one still unanswered at the next tick
 * means a wedged agent, and the sandbox is replaced. */
static void on_health(evutil_socket_t fd, short what, void *arg)
{
	struct local_sandbox *ls = arg;
	msgpack_packer pk;

	if (!ls->ctrl)
		return;
	if (ls->ping_outstanding) {
		ls_broken(ls, "health check: the agent did not answer a ping");
		return;
	}
	ls->ping_outstanding = ls->next_msgid++;
	msgpack_packer_init(&pk, bufferevent_get_output(ls->ctrl), ipc_evbuffer_write);
	ipc_pack_request_head(&pk, ls->ping_outstanding, "ping");
	msgpack_pack_map(&pk, 0);
}

/* The agent is up (and the template's preload done): the sandbox is warm. */
static void ls_ready(struct local_sandbox *ls)
{
	ls->ready = true;
	event_del(ls->create_timer);
	ls->health_timer = event_new(local_base, -1, EV_PERSIST, on_health, ls);
	if (ls->health_timer) {
		struct timeval tv = ms_timeval(local_cfg->health_interval_ms);

		event_add(ls->health_timer, &tv);
	}
	sandbox_backend_ready(ls->sb);
}

/*
 * The template's preload runs in its language's default context before
 * the sandbox counts as ready: the interpreter is up and the preload's
 * imports done when the first code.run arrives. Its failure is the
 * sandbox's (and, repeated, degrades the template).
 */
static void start_preload(struct local_sandbox *ls)
{
	const struct template_config *t = ls->sb->tmpl;
	const char **env = sandbox_template_env(t);
	unsigned n = 0;
	msgpack_packer pk;

	if (!env) {
		ls_broken(ls, "out of memory starting the preload");
		return;
	}
	while (env[n])
		n++;
	ls->preload_tag = ls->next_msgid++;
	msgpack_packer_init(&pk, bufferevent_get_output(ls->ctrl), ipc_evbuffer_write);
	ipc_pack_request_head(&pk, ls->preload_tag, "context.create");
	msgpack_pack_map(&pk, 6);
	ipc_pack_kv_str(&pk, "language", t->language);
	ipc_pack_kv_str(&pk, "cwd", "/workspace");
	ipc_pack_cstr(&pk, "env");
	msgpack_pack_array(&pk, n);
	for (unsigned i = 0; i < n; i++)
		ipc_pack_cstr(&pk, env[i]);
	ipc_pack_kv_str(&pk, "preload", t->preload);
	ipc_pack_kv_uint(&pk, "preload_timeout_ms", t->timeout_ms);
	ipc_pack_kv_bool(&pk, "default", true);
	free(env);
}

static void on_preload_done(struct local_sandbox *ls, const struct rpc_msg *m)
{
	char msg[512];

	ls->preload_tag = 0;
	if (m->error) {
		agent_error(m->error, msg, sizeof(msg));
		ls_broken(ls, msg);
		return;
	}
	ls_ready(ls);
}

static void on_notify(struct local_sandbox *ls, const struct rpc_msg *m)
{
	if (ipc_method_is(m, "output")) {
		on_output(ls, m);
	} else if (ipc_method_is(m, "result")) {
		on_call_notify(ls, m);
	} else if (ipc_method_is(m, "ready")) {
		if (ls->ready || ls->preload_tag)
			return;
		if (ls->sb->tmpl->preload && *ls->sb->tmpl->preload)
			start_preload(ls);
		else
			ls_ready(ls);
	} else if (ipc_method_is(m, "failed")) {
		char why[600] = "set-up failed";
		const char *s;
		uint32_t len;

		if (ipc_get_str(m->params, "message", &s, &len) == 0)
			snprintf(why, sizeof(why), "set-up failed: %.*s", (int)len, s);
		ls_broken(ls, why);
	}
}

static void on_ctrl_read(struct bufferevent *bev, void *arg)
{
	struct local_sandbox *ls = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	struct sandbox *sb = ls->sb;

	while (evbuffer_get_length(in) > 0) {
		size_t avail = evbuffer_get_length(in), cap;
		char *dst = ipc_reader_buffer(&ls->reader, avail, &cap);
		int n;

		if (!dst) {
			ls_broken(ls, "out of memory reading agent");
			return;
		}
		n = evbuffer_remove(in, dst, avail < cap ? avail : cap);
		if (n <= 0)
			break;
		ipc_reader_consumed(&ls->reader, (size_t)n);
		for (;;) {
			struct rpc_msg m;
			const char *why = NULL;
			enum ipc_read_status st = ipc_reader_next(&ls->reader, &m, &why);

			if (st == IPC_READ_MORE)
				break;
			if (st != IPC_READ_MSG) {
				sb_log_error(sb, "agent sent a bad message: %s",
					     why ? why : "message too large");
				ls_broken(ls, "agent protocol error");
				return;
			}
			if (m.type == RPC_NOTIFY)
				on_notify(ls, &m);
			else if (m.type == RPC_RESPONSE)
				on_response(ls, &m);
			/* The callbacks above may have closed the channel. */
			if (!ls->ctrl)
				return;
		}
	}
}

static void on_ctrl_event(struct bufferevent *bev, short what, void *arg)
{
	struct local_sandbox *ls = arg;

	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
		ls_broken(ls, ls->ready ? "agent exited" : "agent exited during set-up");
}

static void report_gone(struct local_sandbox *ls)
{
	if (ls->gone_reported)
		return;
	ls->gone_reported = true;
	if (spawner_reap(local_spawner, ls->sb->id) < 0)
		sb_log_warn(ls->sb, "could not ask the spawner to remove its cgroup");
	sandbox_backend_gone(ls->sb);
}

static void on_exit_ev(evutil_socket_t fd, short what, void *arg)
{
	struct local_sandbox *ls = arg;

	ls->exited = true;
	event_del(ls->exit_ev);
	if (ls->sb->state == SANDBOX_DESTROYING)
		report_gone(ls);
	else
		ls_broken(ls, "sandbox init exited");
}

static void on_create_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct local_sandbox *ls = arg;

	ls_broken(ls, ls->preload_tag ? "timed out running the template's preload" : "timed out waiting for the agent");
}

static void on_spawned(void *arg, int err, const char *errmsg, pid_t pid, int ctrl_fd, int pidfd)
{
	struct local_sandbox *ls = arg;

	ls->spawning = false;
	if (err) {
		sandbox_backend_failed(ls->sb, errmsg ? errmsg : "spawn failed");
		return;
	}
	ls->pid = pid;
	ls->pidfd = pidfd;
	evutil_make_socket_nonblocking(ctrl_fd);
	ls->ctrl = bufferevent_socket_new(local_base, ctrl_fd, BEV_OPT_CLOSE_ON_FREE);
	ls->exit_ev = event_new(local_base, pidfd, EV_READ, on_exit_ev, ls);
	if (!ls->ctrl || !ls->exit_ev) {
		if (!ls->ctrl)
			close(ctrl_fd);
		ls_broken(ls, "out of memory attaching sandbox");
		return;
	}
	bufferevent_setcb(ls->ctrl, on_ctrl_read, NULL, on_ctrl_event, ls);
	bufferevent_enable(ls->ctrl, EV_READ | EV_WRITE);
	event_add(ls->exit_ev, NULL);
	sb_log_debug(ls->sb, "spawned as pid %d", (int)pid);
}

static int local_create(struct sandbox *sb)
{
	const struct template_config *t = sb->tmpl;
	struct local_sandbox *ls = calloc(1, sizeof(*ls));
	struct spawn_params *p = NULL;
	struct timeval tv = { CREATE_TIMEOUT_MS / 1000, 0 };
	int rc = -ENOMEM;

	if (!ls)
		return -ENOMEM;
	ls->sb = sb;
	ls->pidfd = -1;
	ls->pid = -1;
	ls->next_msgid = 1;
	if (ipc_reader_init(&ls->reader, local_cfg->max_frame + 4096) < 0) {
		free(ls);
		return -ENOMEM;
	}
	sb->backend_state = ls;
	ls->create_timer = evtimer_new(local_base, on_create_timeout, ls);
	p = calloc(1, sizeof(*p));
	if (!ls->create_timer || !p)
		goto out;
	snprintf(p->id, sizeof(p->id), "%s", sb->id);
	p->uid = local_cfg->sandbox_uid;
	p->gid = local_cfg->sandbox_gid;
	p->network = t->network;
	p->workspace_size = t->workspace_size;
	p->limits.memory = t->memory;
	p->limits.pids = t->pids;
	p->limits.cpu_milli = t->cpu_milli;
	p->max_frame = local_cfg->max_frame;
	if (t->rootfs && strcmp(t->rootfs, "host") != 0)
		snprintf(p->rootfs, sizeof(p->rootfs), "%s", t->rootfs);
	for (unsigned i = 0; i < t->n_binds; i++)
		p->binds[i] = t->binds[i];
	p->n_binds = t->n_binds;
	rc = spawner_request(local_spawner, p, on_spawned, ls);
	if (rc == 0) {
		ls->spawning = true;
		evtimer_add(ls->create_timer, &tv);
	}
out:
	free(p);
	return rc;
}

static int pack_exec(msgpack_packer *pk, uint32_t msgid, const struct sandbox_exec *ex,
		     const struct exec_request *req)
{
	unsigned argc = 0, envc = 0;

	while (req->argv[argc])
		argc++;
	while (req->env[envc])
		envc++;
	ipc_pack_request_head(pk, msgid, "exec");
	msgpack_pack_map(pk, req->stdin_data ? 7 : 6);
	ipc_pack_kv_uint(pk, "id", ex->id);
	ipc_pack_cstr(pk, "argv");
	msgpack_pack_array(pk, argc);
	for (unsigned i = 0; i < argc; i++)
		ipc_pack_cstr(pk, req->argv[i]);
	ipc_pack_cstr(pk, "env");
	msgpack_pack_array(pk, envc);
	for (unsigned i = 0; i < envc; i++)
		ipc_pack_cstr(pk, req->env[i]);
	ipc_pack_kv_str(pk, "cwd", req->cwd);
	ipc_pack_kv_uint(pk, "timeout_ms", req->timeout_ms);
	ipc_pack_kv_uint(pk, "max_output", req->max_output);
	if (req->stdin_data)
		ipc_pack_kv_bin(pk, "stdin", req->stdin_data, req->stdin_len);
	return 0;
}

static int local_exec(struct sandbox *sb, struct sandbox_exec *ex, const struct exec_request *req)
{
	struct local_sandbox *ls = ls_of(sb);
	msgpack_packer pk;

	if (!ls->ctrl || !ls->ready)
		return -EPIPE;
	msgpack_packer_init(&pk, bufferevent_get_output(ls->ctrl), ipc_evbuffer_write);
	ex->backend_tag = ls->next_msgid++;
	return pack_exec(&pk, ex->backend_tag, ex, req);
}

/* The agent's kill: an exec's process group dies, a code run is interrupted. */
static void send_kill(struct local_sandbox *ls, uint64_t id)
{
	msgpack_packer pk;

	if (!ls->ctrl)
		return;
	msgpack_packer_init(&pk, bufferevent_get_output(ls->ctrl), ipc_evbuffer_write);
	ipc_pack_request_head(&pk, ls->next_msgid++, "kill");
	msgpack_pack_map(&pk, 1);
	ipc_pack_kv_uint(&pk, "id", id);
}

static void local_exec_cancel(struct sandbox *sb, struct sandbox_exec *ex)
{
	send_kill(ls_of(sb), ex->id);
}

static int local_call(struct sandbox *sb, struct sandbox_call *c, const char *method, const void *params,
		      size_t len)
{
	struct local_sandbox *ls = ls_of(sb);
	struct evbuffer *out;
	msgpack_packer pk;

	if (!ls->ctrl || !ls->ready)
		return -EPIPE;
	out = bufferevent_get_output(ls->ctrl);
	msgpack_packer_init(&pk, out, ipc_evbuffer_write);
	c->backend_tag = ls->next_msgid++;
	ipc_pack_request_head(&pk, c->backend_tag, method);
	return evbuffer_add(out, params, len) < 0 ? -ENOMEM : 0;
}

static void local_call_cancel(struct sandbox *sb, struct sandbox_call *c)
{
	send_kill(ls_of(sb), c->id);
}

static void local_destroy(struct sandbox *sb)
{
	struct local_sandbox *ls = ls_of(sb);

	ls_close_ctrl(ls);
	if (ls->create_timer)
		event_del(ls->create_timer);
	if (ls->spawning) {
		/* The spawner will kill it when its reply arrives. */
		spawner_cancel(local_spawner, ls);
		ls->spawning = false;
		report_gone(ls);
		return;
	}
	if (ls->pidfd < 0 || ls->exited) {
		report_gone(ls);
		return;
	}
	/* PID 1 dying takes the whole PID namespace with it. */
	if (syscall(SYS_pidfd_send_signal, ls->pidfd, SIGKILL, NULL, 0) < 0 && errno != ESRCH)
		sb_log_warn(sb, "pidfd_send_signal: %s", strerror(errno));
}

static void local_release(struct sandbox *sb)
{
	struct local_sandbox *ls = ls_of(sb);

	ls_close_ctrl(ls);
	if (ls->exit_ev)
		event_free(ls->exit_ev);
	if (ls->health_timer)
		event_free(ls->health_timer);
	if (ls->create_timer)
		event_free(ls->create_timer);
	if (ls->pidfd >= 0)
		close(ls->pidfd);
	ipc_reader_destroy(&ls->reader);
	free(ls);
	sb->backend_state = NULL;
}

const struct sandbox_backend local_backend = {
	.name = "local",
	.create = local_create,
	.exec = local_exec,
	.exec_cancel = local_exec_cancel,
	.destroy = local_destroy,
	.release = local_release,
	.call = local_call,
	.call_cancel = local_call_cancel,
};
