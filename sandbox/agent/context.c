/*
 * Interpreter contexts (docs/AGENT.md, "Contexts and code runs"). Each is
 * one interpreter process around a driver (driver.py, driver.js,
 * driver.sh) started like any user code, with a socketpair at fd 4 as its
 * channel: the agent writes cells to it, and the driver answers "ready"
 * once, then "result" (any number) and "done" for each cell. The process's
 * stdout and stderr are pipes read like an exec's, so output of the
 * cell's subprocesses is captured too.
 *
 * A cell past its timeout gets SIGINT (python raises KeyboardInterrupt,
 * node breaks out of the script, bash returns from the cell); one still
 * running CONTEXT_GRACE_MS later has its process group killed, and the
 * context is started afresh: its state is lost, its queue survives.
 */
#include "autoconfig.h"

#include "sandbox/agent/context.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon/log.h"
#include "sandbox/agent/agent.h"
#include "sandbox/agent/drivers.h"

#define CONTEXT_MAX 16
#define CONTEXT_MAX_QUEUE 16	 /* cells waiting on one context */
#define CONTEXT_START_MS 30000	 /* a driver must say ready by then */
#define CONTEXT_GRACE_MS 500	 /* after SIGINT, before the kill */
#define CONTEXT_STDERR_KEEP 400	 /* stderr kept from start-up for the failure message */
#define CONTEXT_LINE_MAX 64	 /* longest line of the bash driver */
#define CONTEXT_DEFAULT_CWD "/workspace"
#define CONTEXT_MSG_SLACK 4096	 /* a driver message may be max_frame plus this */

enum driver_protocol {
	DRIVER_MSGPACK, /* msgpack maps {type: "ready" | "result" | "done", ...} */
	DRIVER_LINES,	/* "ready\n", then "done STATUS\n" per cell */
};

struct driver {
	const char *language;
	const char *aliases[3];
	const char *path; /* the interpreter; must exist in the sandbox */
	const char *flags[4]; /* argv between path and the source */
	const char *source;
	enum driver_protocol protocol;
};

static const struct driver drivers[] = {
	{ "python", { "python3", "py" }, "/usr/bin/python3", { "-c" }, agent_driver_python, DRIVER_MSGPACK },
	{ "javascript", { "js", "node" }, "/usr/bin/node", { "-e" }, agent_driver_javascript, DRIVER_MSGPACK },
	{ "bash", { "shell", "sh" }, "/bin/bash", { "--noprofile", "--norc", "-c" }, agent_driver_bash,
	  DRIVER_LINES },
};

enum context_state {
	CONTEXT_STARTING, /* contexts.lists[STARTING]: spawned, its driver has not said ready */
	CONTEXT_IDLE,	  /* contexts.lists[IDLE]: waits for a cell */
	CONTEXT_BUSY,	  /* contexts.lists[BUSY]: runs one (or its preload) */
	CONTEXT_DEAD,	  /* contexts.lists[DEAD]: killed or gone; restarted or freed once reaped */
	CONTEXT_N_STATES,
};

struct context;

struct context_pipe {
	struct context *ctx;
	int fd; /* -1 once at EOF or closed */
	int stream; /* 1 stdout, 2 stderr: the wire value */
	struct event *ev;
};

/* A cell queued on or running in a context. */
struct code_run {
	TAILQ_ENTRY(code_run) link; /* on its context's queue */
	uint64_t id;
	uint32_t msgid; /* of the request to answer; 0 for a preload */
	uint64_t timeout_ms;
	uint64_t max_output;
	uint64_t sent; /* output and result bytes passed on */
	uint64_t start_us;
	bool truncated;
	bool interrupted; /* SIGINT sent: its timeout, or the daemon's kill */
	bool timed_out;
	size_t len;
	char cell[]; /* framed for the driver */
};
TAILQ_HEAD(run_queue, code_run);

struct context {
	enum context_state state;
	TAILQ_ENTRY(context) link; /* on the list of its state */
	char id[32];
	const struct driver *drv;
	bool is_default;  /* its language's default context */
	bool removing;	  /* freed, not restarted, once its process is reaped */
	bool restarting;  /* killed on purpose: started afresh once reaped */
	bool ready;	  /* this process's driver said ready */
	bool has_unpacker;
	const char *kill_why; /* the error name a running cell gets when killed on purpose */
	char *cwd;
	char **env; /* NULL-terminated, one allocation */
	char *preload; /* run after every start; NULL: none */
	uint64_t preload_timeout_ms;
	pid_t pid; /* also its process group; 0 once reaped */
	int report_fd;
	struct bufferevent *chan;
	msgpack_unpacker unpacker;
	struct context_pipe out[2];
	uint64_t execution_count;
	struct run_queue queue;
	struct code_run *run; /* the cell running, while BUSY */
	struct event *timer;  /* start-up deadline; the cell's timeout, then its grace */
	uint32_t reply_msgid; /* a create or restart answered once ready; 0: none */
	char stderr_tail[CONTEXT_STDERR_KEEP];
	size_t stderr_len;
};
TAILQ_HEAD(context_list, context);

static struct {
	struct context_list lists[CONTEXT_N_STATES];
	unsigned count;
	unsigned next_id;
} contexts;

/* Output pipes are read one chunk at a time into this. */
static char chunk_buf[AGENT_CHUNK_MAX];

static void context_next(struct context *ctx);
static void context_kill(struct context *ctx);

/* --- lifecycle ----------------------------------------------------------- */

static const char *context_state_name(enum context_state st)
{
	static const char *const names[] = { "starting", "idle", "busy", "dead" };

	return st < CONTEXT_N_STATES ? names[st] : "?";
}

void contexts_init(void)
{
	for (int i = 0; i < CONTEXT_N_STATES; i++)
		TAILQ_INIT(&contexts.lists[i]);
}

static void context_set_state(struct context *ctx, enum context_state state)
{
	bool legal;

	switch (ctx->state) {
	case CONTEXT_STARTING:
		legal = state == CONTEXT_IDLE || state == CONTEXT_DEAD;
		break;
	case CONTEXT_IDLE:
		legal = state == CONTEXT_BUSY || state == CONTEXT_DEAD;
		break;
	case CONTEXT_BUSY:
		legal = state == CONTEXT_IDLE || state == CONTEXT_DEAD;
		break;
	case CONTEXT_DEAD:
		legal = state == CONTEXT_STARTING;
		break;
	default:
		legal = false;
	}
	if (!legal)
		fatal("context %s: illegal transition %s -> %s", ctx->id, context_state_name(ctx->state),
		      context_state_name(state));
	log_debug("context %s: %s -> %s", ctx->id, context_state_name(ctx->state), context_state_name(state));
	TAILQ_REMOVE(&contexts.lists[ctx->state], ctx, link);
	TAILQ_INSERT_TAIL(&contexts.lists[state], ctx, link);
	ctx->state = state;
}

static const struct driver *driver_find(const char *name, uint32_t len)
{
	for (size_t i = 0; i < ARRAY_SIZE(drivers); i++) {
		if (strlen(drivers[i].language) == len && !memcmp(drivers[i].language, name, len))
			return &drivers[i];
		for (size_t j = 0; j < ARRAY_SIZE(drivers[i].aliases) && drivers[i].aliases[j]; j++)
			if (strlen(drivers[i].aliases[j]) == len && !memcmp(drivers[i].aliases[j], name, len))
				return &drivers[i];
	}
	return NULL;
}

/* A live context (not being removed) by id, or its language's default. */
static struct context *context_find(const char *id, uint32_t len, const struct driver *default_of)
{
	struct context *ctx;

	for (int st = 0; st < CONTEXT_N_STATES; st++) {
		TAILQ_FOREACH(ctx, &contexts.lists[st], link) {
			if (ctx->removing)
				continue;
			if (default_of ? ctx->is_default && ctx->drv == default_of
				       : strlen(ctx->id) == len && !memcmp(ctx->id, id, len))
				return ctx;
		}
	}
	return NULL;
}

static struct code_run *run_find(uint64_t id, struct context **owner)
{
	struct context *ctx;
	struct code_run *run;

	for (int st = 0; st < CONTEXT_N_STATES; st++) {
		TAILQ_FOREACH(ctx, &contexts.lists[st], link) {
			*owner = ctx;
			if (ctx->run && ctx->run->id == id)
				return ctx->run;
			TAILQ_FOREACH(run, &ctx->queue, link)
				if (run->id == id)
					return run;
		}
	}
	return NULL;
}

static void pipe_close(struct context_pipe *p)
{
	if (p->ev) {
		event_free(p->ev);
		p->ev = NULL;
	}
	agent_close_fd(&p->fd);
}

/* Everything the running process holds; the context itself stays. */
static void context_close_process(struct context *ctx)
{
	pipe_close(&ctx->out[0]);
	pipe_close(&ctx->out[1]);
	if (ctx->chan) {
		bufferevent_free(ctx->chan);
		ctx->chan = NULL;
	}
	agent_close_fd(&ctx->report_fd);
	if (ctx->timer)
		event_del(ctx->timer);
}

static void reply_ready(struct context *ctx)
{
	msgpack_packer *pk = agent_packer();

	if (!ctx->reply_msgid)
		return;
	ipc_pack_response_ok_head(pk, ctx->reply_msgid);
	msgpack_pack_map(pk, 5);
	ipc_pack_kv_str(pk, "context_id", ctx->id);
	ipc_pack_kv_str(pk, "language", ctx->drv->language);
	ipc_pack_kv_str(pk, "cwd", ctx->cwd);
	ipc_pack_kv_bool(pk, "default", ctx->is_default);
	ipc_pack_kv_int(pk, "pid", ctx->pid);
	ctx->reply_msgid = 0;
}

/* Fails every queued run with code and why (not the running one). */
static void queue_fail(struct context *ctx, enum sandpool_errcode code, const char *why)
{
	struct code_run *run;

	while ((run = TAILQ_FIRST(&ctx->queue))) {
		TAILQ_REMOVE(&ctx->queue, run, link);
		if (run->msgid)
			agent_reply_error(run->msgid, code, "%s", why);
		free(run);
	}
}

static void context_free(struct context *ctx)
{
	context_close_process(ctx);
	free(ctx->run);
	queue_fail(ctx, SANDPOOL_E_ABORTED, "the context went away");
	if (ctx->timer)
		event_free(ctx->timer);
	if (ctx->has_unpacker)
		msgpack_unpacker_destroy(&ctx->unpacker);
	TAILQ_REMOVE(&contexts.lists[ctx->state], ctx, link);
	contexts.count--;
	free(ctx->cwd);
	free(ctx->env);
	free(ctx->preload);
	free(ctx);
}

/* --- output ---------------------------------------------------------------- */

/* Output nobody asked for (start-up, a preload, between cells): stderr's
 * tail is kept for the start-up failure message, the rest is dropped. */
static void keep_stderr(struct context *ctx, const char *data, size_t len)
{
	size_t keep = sizeof(ctx->stderr_tail);

	if (len >= keep) {
		memcpy(ctx->stderr_tail, data + len - keep, keep);
		ctx->stderr_len = keep;
		return;
	}
	if (ctx->stderr_len + len > keep) {
		size_t drop = ctx->stderr_len + len - keep;

		memmove(ctx->stderr_tail, ctx->stderr_tail + drop, ctx->stderr_len - drop);
		ctx->stderr_len -= drop;
	}
	memcpy(ctx->stderr_tail + ctx->stderr_len, data, len);
	ctx->stderr_len += len;
}

/* Whether len more bytes fit the run's max_output; past it, output is
 * dropped (the cell runs on until done or timed out) and the run says so. */
static bool run_budget(struct code_run *run, size_t len)
{
	if (run->max_output - run->sent >= len) {
		run->sent += len;
		return true;
	}
	run->truncated = true;
	return false;
}

static void deliver_output(struct context *ctx, int stream, const char *data, size_t len)
{
	struct code_run *run = ctx->run;
	msgpack_packer *pk = agent_packer();
	size_t room;

	if (!run || !run->msgid) {
		if (stream == 2)
			keep_stderr(ctx, data, len);
		return;
	}
	room = run->max_output - run->sent;
	if (len > room) {
		run->truncated = true;
		len = room;
	}
	if (len == 0)
		return;
	run->sent += len;
	ipc_pack_notify_head(pk, "output");
	msgpack_pack_map(pk, 4);
	ipc_pack_kv_uint(pk, "id", run->id);
	ipc_pack_kv_str(pk, "context_id", ctx->id);
	ipc_pack_kv_uint(pk, "stream", (uint64_t)stream);
	ipc_pack_kv_bin(pk, "data", data, len);
	agent_check_pressure();
}

/* One read from p: false at EOF or when nothing is waiting. */
static bool pipe_read(struct context_pipe *p)
{
	ssize_t n = read(p->fd, chunk_buf, agent_chunk_size());

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return false;
	if (n <= 0) {
		pipe_close(p);
		return false;
	}
	deliver_output(p->ctx, p->stream, chunk_buf, (size_t)n);
	return true;
}

static void pipe_on_read(evutil_socket_t fd, short what, void *arg)
{
	pipe_read(arg);
}

/* Before a cell is answered: the driver flushed its output before "done",
 * so whatever the cell wrote is in the pipes now. The bound keeps a
 * process that never stops writing from holding the answer. */
static void drain_pipes(struct context *ctx)
{
	for (int i = 0; i < 2; i++)
		for (int n = 0; n < 256 && ctx->out[i].fd >= 0 && pipe_read(&ctx->out[i]); n++)
			;
}

void contexts_arm_pipes(bool on)
{
	struct context *ctx;

	for (int st = 0; st < CONTEXT_N_STATES; st++) {
		TAILQ_FOREACH(ctx, &contexts.lists[st], link) {
			for (int i = 0; i < 2; i++) {
				if (ctx->out[i].fd < 0)
					continue;
				if (on)
					event_add(ctx->out[i].ev, NULL);
				else
					event_del(ctx->out[i].ev);
			}
		}
	}
}

/* --- answering a cell ---------------------------------------------------- */

static void pack_error(msgpack_packer *pk, const char *name, const char *value, const msgpack_object *tb)
{
	msgpack_pack_map(pk, 3);
	ipc_pack_kv_str(pk, "name", name);
	ipc_pack_kv_str(pk, "value", value);
	ipc_pack_cstr(pk, "traceback");
	if (tb && (tb->type == MSGPACK_OBJECT_STR || tb->type == MSGPACK_OBJECT_BIN))
		msgpack_pack_object(pk, *tb);
	else
		ipc_pack_cstr(pk, "");
}

/* A failed preload fails the create that asked for it, which removes the
 * context; after a restart it is only logged. */
static void preload_failed(struct context *ctx, const msgpack_object *error, int status, const char *died)
{
	const char *name = "ExitStatus", *value = "";
	uint32_t name_len = 10, value_len = 0;
	char why[300];

	if (died) {
		snprintf(why, sizeof(why), "the %s context %s", ctx->drv->language, died);
	} else if (error) {
		(void)ipc_get_str(error, "name", &name, &name_len);
		(void)ipc_get_str(error, "value", &value, &value_len);
		snprintf(why, sizeof(why), "%.*s: %.*s", (int)name_len, name, (int)value_len, value);
	} else {
		snprintf(why, sizeof(why), "exit status %d", status);
	}
	log_warn("context %s: preload failed: %s", ctx->id, why);
	if (!ctx->reply_msgid)
		return;
	agent_reply_error(ctx->reply_msgid, SANDPOOL_E_BACKEND_ERROR, "preload failed: %s", why);
	ctx->reply_msgid = 0;
	ctx->removing = true;
	context_kill(ctx);
}

/*
 * Answers the running cell and forgets it. error is the driver's error map
 * (or NULL); status the bash cell's exit status; died, when the process
 * went away during the cell, says how.
 */
static void run_finish(struct context *ctx, const msgpack_object *error, int status, const char *died)
{
	struct code_run *run = ctx->run;
	msgpack_packer *pk = agent_packer();
	char value[256], status_text[16];
	bool restarted = died && !ctx->removing;

	ctx->run = NULL;
	if (!run->msgid) {
		if (error || died || status || run->timed_out)
			preload_failed(ctx, error, status, run->timed_out ? "it timed out" : died);
		reply_ready(ctx);
		free(run);
		return;
	}
	ctx->execution_count++;
	ipc_pack_response_ok_head(pk, run->msgid);
	msgpack_pack_map(pk, 7);
	ipc_pack_kv_str(pk, "context_id", ctx->id);
	ipc_pack_kv_uint(pk, "execution_count", ctx->execution_count);
	ipc_pack_cstr(pk, "error");
	if (run->timed_out) {
		snprintf(value, sizeof(value), "the cell ran longer than timeout_ms (%" PRIu64 " ms) and was interrupted%s",
			 run->timeout_ms,
			 died ? "; it did not stop, so the context was restarted and its state is lost" : "");
		pack_error(pk, "TimeoutError", value, ipc_map_get(error, "traceback"));
	} else if (died) {
		snprintf(value, sizeof(value), "the %s context %s%s", ctx->drv->language, died,
			 restarted ? "; it was restarted and its state is lost" : "");
		pack_error(pk, ctx->kill_why ? ctx->kill_why : "ContextDied", value, NULL);
	} else if (error && error->type == MSGPACK_OBJECT_MAP) {
		msgpack_pack_object(pk, *error);
	} else if (status) {
		snprintf(status_text, sizeof(status_text), "%d", status);
		pack_error(pk, "ExitStatus", status_text, NULL);
	} else {
		msgpack_pack_nil(pk);
	}
	ipc_pack_kv_bool(pk, "truncated", run->truncated);
	ipc_pack_kv_str(pk, "limit", run->timed_out ? "timeout" : NULL);
	ipc_pack_kv_bool(pk, "restarted", restarted);
	ipc_pack_kv_uint(pk, "duration_us", agent_now_us() - run->start_us);
	free(run);
}

/* The driver said "done": answer, then start the next cell. */
static void context_cell_done(struct context *ctx, const msgpack_object *error, int status)
{
	if (ctx->state != CONTEXT_BUSY || !ctx->run)
		return;
	event_del(ctx->timer);
	drain_pipes(ctx);
	run_finish(ctx, error, status, NULL);
	if (ctx->state != CONTEXT_BUSY)
		return; /* a failed preload killed it */
	context_set_state(ctx, CONTEXT_IDLE);
	context_next(ctx);
}

static void context_next(struct context *ctx)
{
	struct code_run *run = TAILQ_FIRST(&ctx->queue);
	struct timeval tv;

	if (ctx->state != CONTEXT_IDLE || !run)
		return;
	TAILQ_REMOVE(&ctx->queue, run, link);
	ctx->run = run;
	context_set_state(ctx, CONTEXT_BUSY);
	run->start_us = agent_now_us();
	if (bufferevent_write(ctx->chan, run->cell, run->len) < 0) {
		log_error("context %s: out of memory writing a cell", ctx->id);
		context_kill(ctx);
		return;
	}
	agent_ms_to_tv(run->timeout_ms, &tv);
	evtimer_add(ctx->timer, &tv);
}

/* --- the driver's channel --------------------------------------------------- */

static void forward_result(struct context *ctx, const msgpack_object *result)
{
	struct code_run *run = ctx->run;
	msgpack_packer *pk = agent_packer();
	msgpack_sbuffer sb;
	msgpack_packer tmp;

	if (!run || !run->msgid || !result || result->type != MSGPACK_OBJECT_MAP)
		return;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&tmp, &sb, msgpack_sbuffer_write);
	msgpack_pack_object(&tmp, *result);
	if (run_budget(run, sb.size)) {
		ipc_pack_notify_head(pk, "result");
		msgpack_pack_map(pk, 3);
		ipc_pack_kv_uint(pk, "id", run->id);
		ipc_pack_kv_str(pk, "context_id", ctx->id);
		ipc_pack_cstr(pk, "result");
		pk->callback(pk->data, sb.data, sb.size);
		agent_check_pressure();
	}
	msgpack_sbuffer_destroy(&sb);
}

static void context_ready(struct context *ctx)
{
	if (ctx->state != CONTEXT_STARTING)
		return;
	event_del(ctx->timer);
	ctx->stderr_len = 0;
	ctx->ready = true;
	context_set_state(ctx, CONTEXT_IDLE);
	if (ctx->preload) {
		size_t n = strlen(ctx->preload);
		struct code_run *run = NULL;

		/* Framed like any cell: the drivers know no other kind. */
		if (ctx->drv->protocol == DRIVER_LINES) {
			run = calloc(1, sizeof(*run) + n + 1);
			if (run) {
				memcpy(run->cell, ctx->preload, n + 1);
				run->len = n + 1;
			}
		} else {
			run = calloc(1, sizeof(*run) + 12 + n);
			if (run) {
				uint32_t be[3] = { htonl((uint32_t)(8 + n)), htonl(1), htonl((uint32_t)n) };

				memcpy(run->cell, be, 12);
				memcpy(run->cell + 12, ctx->preload, n);
				run->len = 12 + n;
			}
		}
		if (run) {
			run->timeout_ms = ctx->preload_timeout_ms;
			TAILQ_INSERT_HEAD(&ctx->queue, run, link);
		} else {
			log_error("context %s: out of memory for its preload", ctx->id);
		}
	} else {
		reply_ready(ctx);
	}
	context_next(ctx);
}

/* A driver that breaks its protocol is killed and started afresh. */
static void context_broken(struct context *ctx, const char *why)
{
	log_warn("context %s: %s; restarting it", ctx->id, why);
	ctx->restarting = true;
	context_kill(ctx);
}

static void handle_msgpack(struct context *ctx, const msgpack_object *msg)
{
	const char *type;
	uint32_t len;

	if (ipc_get_str(msg, "type", &type, &len) < 0) {
		context_broken(ctx, "its driver sent a message without a type");
	} else if (len == 5 && !memcmp(type, "ready", 5)) {
		context_ready(ctx);
	} else if (len == 6 && !memcmp(type, "result", 6)) {
		/* The driver flushed before sending it: what the cell printed
		 * first is in the pipes, and goes out first. */
		drain_pipes(ctx);
		forward_result(ctx, ipc_map_get(msg, "result"));
	} else if (len == 4 && !memcmp(type, "done", 4)) {
		const msgpack_object *error = ipc_map_get(msg, "error");

		context_cell_done(ctx, error && error->type == MSGPACK_OBJECT_MAP ? error : NULL, 0);
	}
}

static void read_msgpack(struct context *ctx, struct evbuffer *in)
{
	msgpack_unpacked msg;

	msgpack_unpacked_init(&msg);
	while (ctx->chan && evbuffer_get_length(in) > 0) {
		size_t n = evbuffer_get_length(in);

		if (!msgpack_unpacker_reserve_buffer(&ctx->unpacker, n)) {
			context_broken(ctx, "out of memory reading its driver");
			break;
		}
		n = (size_t)evbuffer_remove(in, msgpack_unpacker_buffer(&ctx->unpacker), n);
		msgpack_unpacker_buffer_consumed(&ctx->unpacker, n);
		for (;;) {
			msgpack_unpack_return rc = msgpack_unpacker_next(&ctx->unpacker, &msg);

			if (rc == MSGPACK_UNPACK_SUCCESS) {
				handle_msgpack(ctx, &msg.data);
				if (!ctx->chan)
					break; /* killed meanwhile */
				continue;
			}
			if (rc == MSGPACK_UNPACK_CONTINUE &&
			    msgpack_unpacker_message_size(&ctx->unpacker) <= agent_max_frame() + CONTEXT_MSG_SLACK)
				break;
			context_broken(ctx, rc == MSGPACK_UNPACK_CONTINUE ? "its driver sent a message past max_frame"
									  : "its driver sent malformed msgpack");
			break;
		}
	}
	msgpack_unpacked_destroy(&msg);
}

static void read_lines(struct context *ctx, struct evbuffer *in)
{
	char *line;
	size_t n;
	int status;

	while (ctx->chan && (line = evbuffer_readln(in, &n, EVBUFFER_EOL_LF))) {
		if (!strcmp(line, "ready"))
			context_ready(ctx);
		else if (sscanf(line, "done %d", &status) == 1)
			context_cell_done(ctx, NULL, status);
		else
			context_broken(ctx, "its driver sent a line it should not have");
		free(line);
	}
	if (ctx->chan && evbuffer_get_length(in) > CONTEXT_LINE_MAX)
		context_broken(ctx, "its driver sent an overlong line");
}

static void chan_on_read(struct bufferevent *bev, void *arg)
{
	struct context *ctx = arg;

	if (ctx->drv->protocol == DRIVER_MSGPACK)
		read_msgpack(ctx, bufferevent_get_input(bev));
	else
		read_lines(ctx, bufferevent_get_input(bev));
}

/* EOF or an error: the process is going; its reaping does the rest. */
static void chan_on_event(struct bufferevent *bev, short what, void *arg)
{
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
		bufferevent_disable(bev, EV_READ);
}

/* --- the process ------------------------------------------------------------ */

/* Only while the process is unreaped: until then its pid, which is also
 * its group id, cannot have been reused. */
static void context_kill(struct context *ctx)
{
	if (ctx->pid > 0) {
		kill(-ctx->pid, SIGKILL);
		kill(ctx->pid, SIGKILL);
	}
	if (ctx->state != CONTEXT_DEAD)
		context_set_state(ctx, CONTEXT_DEAD);
}

static void context_on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct context *ctx = arg;
	struct code_run *run = ctx->run;
	struct timeval tv;

	if (ctx->state == CONTEXT_STARTING) {
		log_warn("context %s: its driver did not start within %d ms", ctx->id, CONTEXT_START_MS);
		context_kill(ctx);
	} else if (ctx->state == CONTEXT_BUSY && run && !run->interrupted) {
		log_debug("context %s: cell %" PRIu64 " timed out, interrupting it", ctx->id, run->id);
		run->interrupted = run->timed_out = true;
		kill(-ctx->pid, SIGINT);
		agent_ms_to_tv(CONTEXT_GRACE_MS, &tv);
		evtimer_add(ctx->timer, &tv);
	} else if (ctx->state == CONTEXT_BUSY) {
		log_debug("context %s: cell still running after SIGINT, restarting the context", ctx->id);
		ctx->restarting = true;
		context_kill(ctx);
	}
}

/* The interpreter's argv: path, flags, the driver's source. */
static char **driver_argv(const struct driver *drv)
{
	static char *argv[8];
	size_t n = 0;

	argv[n++] = (char *)drv->path;
	for (size_t i = 0; i < ARRAY_SIZE(drv->flags) && drv->flags[i]; i++)
		argv[n++] = (char *)drv->flags[i];
	argv[n++] = (char *)drv->source;
	argv[n] = NULL;
	return argv;
}

/* Starts ctx's process; STARTING on success. */
static int context_spawn(struct context *ctx, const char **what)
{
	int sv[2] = { -1, -1 }, out[2] = { -1, -1 }, err[2] = { -1, -1 }, rep[2] = { -1, -1 };
	struct child_plan c = { .stdin_fd = -1, .chan_fd = -1, .report_fd = -1 };
	struct timeval tv;
	int rc = 0;

	ctx->stderr_len = 0;
	ctx->execution_count = 0;
	ctx->restarting = false;
	ctx->ready = false;
	ctx->kill_why = NULL;
	/* A fresh unpacker: the old process may have left half a message. */
	if (ctx->has_unpacker)
		msgpack_unpacker_destroy(&ctx->unpacker);
	*what = "allocating the context";
	ctx->has_unpacker = msgpack_unpacker_init(&ctx->unpacker, MSGPACK_UNPACKER_INIT_BUFFER_SIZE);
	if (!ctx->has_unpacker)
		return -ENOMEM;
	*what = "pipe";
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0 || (rc = agent_pipe(out, 0)) < 0 ||
	    (rc = agent_pipe(err, 0)) < 0 || (rc = agent_pipe(rep, 0)) < 0) {
		rc = rc ? rc : -errno;
		goto out;
	}
	c.argv = driver_argv(ctx->drv);
	c.envp = ctx->env;
	c.cwd = ctx->cwd;
	c.out_fd = out[1];
	c.err_fd = err[1];
	c.chan_fd = sv[1];
	c.report_fd = rep[1];
	*what = "fork";
	if ((rc = agent_spawn(&c, &ctx->pid)) < 0)
		goto out;
	log_debug("context %s: %s started as pid %d", ctx->id, ctx->drv->language, (int)ctx->pid);
	ctx->out[0].fd = out[0];
	ctx->out[1].fd = err[0];
	ctx->report_fd = rep[0];
	out[0] = err[0] = rep[0] = -1;
	evutil_make_socket_nonblocking(sv[0]);
	ctx->chan = bufferevent_socket_new(agent_base(), sv[0], BEV_OPT_CLOSE_ON_FREE);
	if (ctx->chan)
		sv[0] = -1;
	for (int i = 0; i < 2; i++)
		ctx->out[i].ev = event_new(agent_base(), ctx->out[i].fd, EV_READ | EV_PERSIST, pipe_on_read, &ctx->out[i]);
	if (ctx->state != CONTEXT_STARTING)
		context_set_state(ctx, CONTEXT_STARTING);
	if (!ctx->chan || !ctx->out[0].ev || !ctx->out[1].ev) {
		/* The process exists: it is killed, and its reaping frees ctx. */
		log_error("context %s: out of memory attaching its process", ctx->id);
		ctx->removing = true;
		context_kill(ctx);
	} else {
		bufferevent_setcb(ctx->chan, chan_on_read, NULL, chan_on_event, ctx);
		bufferevent_enable(ctx->chan, EV_READ | EV_WRITE);
		if (!agent_output_paused())
			for (int i = 0; i < 2; i++)
				event_add(ctx->out[i].ev, NULL);
		agent_ms_to_tv(CONTEXT_START_MS, &tv);
		evtimer_add(ctx->timer, &tv);
	}
out:
	agent_close_fd(&sv[0]);
	agent_close_fd(&sv[1]);
	agent_close_fd(&out[0]);
	agent_close_fd(&out[1]);
	agent_close_fd(&err[0]);
	agent_close_fd(&err[1]);
	agent_close_fd(&rep[0]);
	agent_close_fd(&rep[1]);
	return rc;
}

/* Why a process that never said ready went away, for the create's error. */
static void startup_failure(struct context *ctx, int status, char *buf, size_t len)
{
	char report[AGENT_REPORT_MAX];
	ssize_t n = ctx->report_fd >= 0 ? read(ctx->report_fd, report, sizeof(report) - 1) : 0;
	size_t tail = ctx->stderr_len;

	if (n > 0) {
		report[n] = '\0';
		snprintf(buf, len, "%s", report);
		return;
	}
	while (tail > 0 && (ctx->stderr_tail[tail - 1] == '\n' || ctx->stderr_tail[tail - 1] == ' '))
		tail--;
	if (WIFSIGNALED(status))
		snprintf(buf, len, "%s was killed by signal %d%s%.*s", ctx->drv->path, WTERMSIG(status),
			 tail ? ": " : "", (int)tail, ctx->stderr_tail);
	else
		snprintf(buf, len, "%s exited with status %d during start-up%s%.*s", ctx->drv->path,
			 WEXITSTATUS(status), tail ? ": " : "", (int)tail, ctx->stderr_tail);
}

static void context_on_exit(struct context *ctx, int status)
{
	bool never_ready = !ctx->ready && !ctx->restarting;
	char why[CONTEXT_STDERR_KEEP + 128];
	const char *what;

	ctx->pid = 0;
	if (ctx->state != CONTEXT_DEAD)
		context_set_state(ctx, CONTEXT_DEAD);
	drain_pipes(ctx);
	if (WIFSIGNALED(status))
		snprintf(why, sizeof(why), "was killed by signal %d", WTERMSIG(status));
	else
		snprintf(why, sizeof(why), "exited with status %d", WEXITSTATUS(status));
	if (ctx->run)
		run_finish(ctx, NULL, 0, why);
	if (never_ready && !ctx->removing) {
		startup_failure(ctx, status, why, sizeof(why));
		log_warn("context %s: %s", ctx->id, why);
		if (ctx->reply_msgid)
			agent_reply_error(ctx->reply_msgid, SANDPOOL_E_BACKEND_ERROR, "%s", why);
		ctx->reply_msgid = 0;
		queue_fail(ctx, SANDPOOL_E_BACKEND_ERROR, why);
		context_free(ctx);
		return;
	}
	context_close_process(ctx);
	if (ctx->removing) {
		if (ctx->reply_msgid)
			agent_reply_error(ctx->reply_msgid, SANDPOOL_E_ABORTED, "context %s was removed", ctx->id);
		ctx->reply_msgid = 0;
		context_free(ctx);
		return;
	}
	log_info("context %s: %s; starting it afresh", ctx->id, why);
	if (context_spawn(ctx, &what) < 0) {
		snprintf(why, sizeof(why), "context %s could not be restarted: %s: %s", ctx->id, what, strerror(errno));
		log_error("%s", why);
		if (ctx->reply_msgid)
			agent_reply_error(ctx->reply_msgid, SANDPOOL_E_BACKEND_ERROR, "%s", why);
		ctx->reply_msgid = 0;
		queue_fail(ctx, SANDPOOL_E_BACKEND_ERROR, why);
		context_free(ctx);
	}
}

bool context_on_reap(pid_t pid, int status)
{
	struct context *ctx;

	for (int st = 0; st < CONTEXT_N_STATES; st++) {
		TAILQ_FOREACH(ctx, &contexts.lists[st], link) {
			if (ctx->pid == pid) {
				context_on_exit(ctx, status);
				return true;
			}
		}
	}
	return false;
}

void contexts_teardown(void)
{
	struct context *ctx;

	for (int st = 0; st < CONTEXT_N_STATES; st++) {
		while ((ctx = TAILQ_FIRST(&contexts.lists[st]))) {
			if (ctx->pid > 0) {
				kill(-ctx->pid, SIGKILL);
				kill(ctx->pid, SIGKILL);
				while (waitpid(ctx->pid, NULL, 0) < 0 && errno == EINTR)
					;
			}
			/* Nobody is left to answer. */
			ctx->reply_msgid = 0;
			free(ctx->run);
			ctx->run = NULL;
			queue_fail(ctx, SANDPOOL_E_ABORTED, "the agent is exiting");
			context_free(ctx);
		}
	}
}

/* --- requests -------------------------------------------------------------- */

/* Whether a is an array of "K=V" str/bin without NULs; adds their bytes. */
static bool env_valid(const msgpack_object_array *a, size_t *bytes)
{
	const char *p;
	uint32_t len;

	for (uint32_t i = 0; a && i < a->size; i++) {
		if (!agent_obj_bytes(&a->ptr[i], &p, &len) || memchr(p, '\0', len) || !memchr(p, '=', len))
			return false;
		*bytes += (size_t)len + 1;
	}
	return true;
}

/* A NULL-terminated copy of a valid env array, in one allocation; NULL
 * (with *bad set) when the array is not valid. */
static char **copy_env(const msgpack_object_array *a, bool *bad)
{
	size_t bytes = 0, nptr = (a ? a->size : 0) + 1;
	const char *p;
	uint32_t len;
	char **env, *pos;

	*bad = !env_valid(a, &bytes);
	if (*bad)
		return NULL;
	env = malloc(nptr * sizeof(char *) + bytes);
	if (!env)
		return NULL;
	pos = (char *)(env + nptr);
	for (uint32_t i = 0; a && i < a->size; i++) {
		(void)agent_obj_bytes(&a->ptr[i], &p, &len);
		memcpy(pos, p, len);
		pos[len] = '\0';
		env[i] = pos;
		pos += len + 1;
	}
	env[nptr - 1] = NULL;
	return env;
}

/* A path param, or dflt when absent; NULL (with *bad) when malformed. */
static char *copy_path(const msgpack_object *params, const char *key, const char *dflt, bool *bad)
{
	const char *p;
	uint32_t len;
	int rc = ipc_get_bytes(params, key, &p, &len);

	*bad = false;
	if (rc == -ENOENT)
		return strdup(dflt);
	if (rc < 0 || len == 0 || len >= 4096 || p[0] != '/' || memchr(p, '\0', len)) {
		*bad = true;
		return NULL;
	}
	return strndup(p, len);
}

/*
 * A new context in STARTING, its process spawned; or NULL with the request
 * answered. params: language (already resolved to drv), cwd, env, preload,
 * preload_timeout_ms; env_key names the env array (code.run's lazily created
 * default context takes "context_env").
 */
static struct context *context_create(uint32_t msgid, const struct driver *drv, const msgpack_object *params,
				      const char *env_key, bool is_default)
{
	const msgpack_object_array *env_arr = NULL;
	const char *preload = NULL, *what;
	uint32_t preload_len = 0;
	struct context *ctx;
	bool bad_env, bad_cwd;
	int rc;

	if (contexts.count >= CONTEXT_MAX) {
		agent_reply_error(msgid, SANDPOOL_E_LIMIT_EXCEEDED, "at most %d contexts per sandbox", CONTEXT_MAX);
		return NULL;
	}
	if (access(drv->path, X_OK) < 0) {
		agent_reply_error(msgid, SANDPOOL_E_BAD_REQUEST, "%s is not available in this sandbox: %s: %s",
				  drv->language, drv->path, strerror(errno));
		return NULL;
	}
	if (ipc_get_array(params, env_key, &env_arr) < 0) {
		agent_reply_error(msgid, SANDPOOL_E_BAD_REQUEST, "%s must be an array of \"K=V\" strings", env_key);
		return NULL;
	}
	rc = ipc_get_bytes(params, "preload", &preload, &preload_len);
	if (rc == -EINVAL || (rc == 0 && memchr(preload, '\0', preload_len))) {
		agent_reply_error(msgid, SANDPOOL_E_BAD_REQUEST, "preload must be a string without NUL bytes");
		return NULL;
	}
	ctx = calloc(1, sizeof(*ctx));
	if (!ctx) {
		agent_reply_error(msgid, SANDPOOL_E_INTERNAL, "out of memory");
		return NULL;
	}
	ctx->drv = drv;
	ctx->is_default = is_default;
	ctx->report_fd = ctx->out[0].fd = ctx->out[1].fd = -1;
	ctx->out[0] = (struct context_pipe){ .ctx = ctx, .fd = -1, .stream = 1 };
	ctx->out[1] = (struct context_pipe){ .ctx = ctx, .fd = -1, .stream = 2 };
	TAILQ_INIT(&ctx->queue);
	snprintf(ctx->id, sizeof(ctx->id), "%s-%u", drv->language, ++contexts.next_id);
	ctx->cwd = copy_path(params, "cwd", CONTEXT_DEFAULT_CWD, &bad_cwd);
	ctx->env = copy_env(env_arr, &bad_env);
	if (preload_len)
		ctx->preload = strndup(preload, preload_len);
	ctx->preload_timeout_ms = 30000;
	(void)ipc_get_uint(params, "preload_timeout_ms", &ctx->preload_timeout_ms);
	ctx->timer = evtimer_new(agent_base(), context_on_timer, ctx);
	/* A fresh context's state: DEAD is where spawning starts from. */
	ctx->state = CONTEXT_DEAD;
	TAILQ_INSERT_TAIL(&contexts.lists[CONTEXT_DEAD], ctx, link);
	contexts.count++;
	if (bad_cwd || bad_env) {
		agent_reply_error(msgid, SANDPOOL_E_BAD_REQUEST,
				  bad_cwd ? "cwd must be an absolute path without NUL bytes"
					  : "%s entries must be \"K=V\" strings without NUL bytes", env_key);
		context_free(ctx);
		return NULL;
	}
	if (!ctx->cwd || !ctx->env || !ctx->timer || (preload_len && !ctx->preload)) {
		agent_reply_error(msgid, SANDPOOL_E_INTERNAL, "out of memory");
		context_free(ctx);
		return NULL;
	}
	if ((rc = context_spawn(ctx, &what)) < 0) {
		agent_reply_error(msgid, SANDPOOL_E_BACKEND_ERROR, "starting %s: %s: %s", drv->language, what,
				  strerror(-rc));
		context_free(ctx);
		return NULL;
	}
	return ctx;
}

static const struct driver *language_param(const struct rpc_msg *m, const char *key)
{
	const struct driver *drv;
	const char *lang;
	uint32_t len;

	if (ipc_get_str(m->params, key, &lang, &len) < 0) {
		agent_reply_error(m->msgid, SANDPOOL_E_BAD_REQUEST, "%s (a string) is required", key);
		return NULL;
	}
	drv = driver_find(lang, len);
	if (!drv)
		agent_reply_error(m->msgid, SANDPOOL_E_BAD_REQUEST,
				  "unknown language '%.*s' (python, javascript or bash)", (int)(len > 32 ? 32 : len),
				  lang);
	return drv;
}

void context_req_create(const struct rpc_msg *m)
{
	const struct driver *drv;
	struct context *ctx;
	bool is_default = false;

	if (!(drv = language_param(m, "language")))
		return;
	(void)ipc_get_bool(m->params, "default", &is_default);
	if (is_default && context_find(NULL, 0, drv)) {
		agent_reply_error(m->msgid, SANDPOOL_E_BAD_REQUEST, "%s has a default context already", drv->language);
		return;
	}
	ctx = context_create(m->msgid, drv, m->params, "env", is_default);
	if (ctx)
		ctx->reply_msgid = m->msgid;
}

/* The context named by params' context_id, or NULL with the request answered. */
static struct context *context_param(const struct rpc_msg *m)
{
	struct context *ctx;
	const char *id;
	uint32_t len;

	if (ipc_get_str(m->params, "context_id", &id, &len) < 0) {
		agent_reply_error(m->msgid, SANDPOOL_E_BAD_REQUEST, "context_id (a string) is required");
		return NULL;
	}
	ctx = context_find(id, len, NULL);
	if (!ctx)
		agent_reply_error(m->msgid, SANDPOOL_E_NOT_FOUND, "no context %.*s", (int)(len > 64 ? 64 : len), id);
	return ctx;
}

void context_req_list(const struct rpc_msg *m)
{
	msgpack_packer *pk = agent_packer();
	struct context *ctx;
	unsigned n = 0;

	for (int st = 0; st < CONTEXT_N_STATES; st++)
		TAILQ_FOREACH(ctx, &contexts.lists[st], link)
			n += !ctx->removing;
	ipc_pack_response_ok_head(pk, m->msgid);
	msgpack_pack_map(pk, 1);
	ipc_pack_cstr(pk, "contexts");
	msgpack_pack_array(pk, n);
	for (int st = 0; st < CONTEXT_N_STATES; st++) {
		TAILQ_FOREACH(ctx, &contexts.lists[st], link) {
			unsigned queued = 0;
			struct code_run *run;

			if (ctx->removing)
				continue;
			TAILQ_FOREACH(run, &ctx->queue, link)
				queued++;
			msgpack_pack_map(pk, 7);
			ipc_pack_kv_str(pk, "context_id", ctx->id);
			ipc_pack_kv_str(pk, "language", ctx->drv->language);
			ipc_pack_kv_str(pk, "cwd", ctx->cwd);
			ipc_pack_kv_bool(pk, "default", ctx->is_default);
			ipc_pack_kv_str(pk, "state", context_state_name(ctx->state));
			ipc_pack_kv_uint(pk, "execution_count", ctx->execution_count);
			ipc_pack_kv_uint(pk, "queued", queued);
		}
	}
}

void context_req_restart(const struct rpc_msg *m)
{
	struct context *ctx;

	if (!(ctx = context_param(m)))
		return;
	if (ctx->reply_msgid) {
		agent_reply_error(m->msgid, SANDPOOL_E_BAD_REQUEST, "context %s is starting already", ctx->id);
		return;
	}
	ctx->reply_msgid = m->msgid;
	ctx->restarting = true;
	ctx->kill_why = "ContextRestarted";
	context_kill(ctx);
}

void context_req_remove(const struct rpc_msg *m)
{
	msgpack_packer *pk = agent_packer();
	struct context *ctx;

	if (!(ctx = context_param(m)))
		return;
	ctx->removing = true;
	ctx->kill_why = "ContextRemoved";
	context_kill(ctx);
	ipc_pack_response_ok_head(pk, m->msgid);
	msgpack_pack_map(pk, 1);
	ipc_pack_kv_bool(pk, "removed", true);
}

/* bash's cell: `export 'K=V'` lines for the cell's env, the code, a NUL. */
static size_t frame_lines(char *out, const char *code, uint32_t code_len, const msgpack_object_array *env)
{
	size_t n = 0;
	const char *p;
	uint32_t len;

	for (uint32_t i = 0; env && i < env->size; i++) {
		(void)agent_obj_bytes(&env->ptr[i], &p, &len);
		if (out)
			memcpy(out + n, "export '", 8);
		n += 8;
		for (uint32_t j = 0; j < len; j++) {
			if (p[j] == '\'') {
				if (out)
					memcpy(out + n, "'\\''", 4);
				n += 4;
			} else {
				if (out)
					out[n] = p[j];
				n++;
			}
		}
		if (out)
			memcpy(out + n, "'\n", 2);
		n += 2;
	}
	if (out) {
		memcpy(out + n, code, code_len);
		out[n + code_len] = '\0';
	}
	return n + code_len + 1;
}

static void put_u32(char *out, size_t *n, uint32_t v)
{
	uint32_t be = htonl(v);

	if (out)
		memcpy(out + *n, &be, 4);
	*n += 4;
}

/* The other drivers' frame: u32 size, u32 count, then count items of u32
 * length and bytes: the code, then the "K=V" entries. */
static size_t frame_items(char *out, const char *code, uint32_t code_len, const msgpack_object_array *env)
{
	uint32_t count = 1 + (env ? env->size : 0);
	size_t n = 4, size;
	const char *p;
	uint32_t len;

	put_u32(out, &n, count);
	put_u32(out, &n, code_len);
	if (out)
		memcpy(out + n, code, code_len);
	n += code_len;
	for (uint32_t i = 0; env && i < env->size; i++) {
		(void)agent_obj_bytes(&env->ptr[i], &p, &len);
		put_u32(out, &n, len);
		if (out)
			memcpy(out + n, p, len);
		n += len;
	}
	size = 0;
	put_u32(out, &size, (uint32_t)(n - 4));
	return n;
}

static struct code_run *run_new(const struct driver *drv, const char *code, uint32_t code_len,
				const msgpack_object_array *env)
{
	size_t (*frame)(char *, const char *, uint32_t, const msgpack_object_array *) =
		drv->protocol == DRIVER_LINES ? frame_lines : frame_items;
	size_t len = frame(NULL, code, code_len, env);
	struct code_run *run = calloc(1, sizeof(*run) + len);

	if (!run)
		return NULL;
	run->len = frame(run->cell, code, code_len, env);
	return run;
}

void context_req_run(const struct rpc_msg *m)
{
	const msgpack_object_array *env = NULL;
	const struct driver *drv = NULL;
	struct context *ctx, *owner;
	struct code_run *run;
	const char *code, *name;
	uint32_t code_len, name_len, queued = 0;
	uint64_t id, timeout_ms, max_output;
	size_t env_bytes = 0;

	if (ipc_get_uint(m->params, "id", &id) < 0 || ipc_get_bytes(m->params, "code", &code, &code_len) < 0 ||
	    memchr(code, '\0', code_len) || ipc_get_uint(m->params, "timeout_ms", &timeout_ms) < 0 ||
	    timeout_ms == 0 || timeout_ms > UINT32_MAX || ipc_get_uint(m->params, "max_output", &max_output) < 0) {
		agent_reply_error(m->msgid, SANDPOOL_E_BAD_REQUEST,
				  "code.run: id, code (without NUL bytes), timeout_ms (1 to %u) and max_output are required",
				  UINT32_MAX);
		return;
	}
	if (ipc_get_array(m->params, "env", &env) == -EINVAL || !env_valid(env, &env_bytes)) {
		agent_reply_error(m->msgid, SANDPOOL_E_BAD_REQUEST, "env must be an array of \"K=V\" strings");
		return;
	}
	if (run_find(id, &owner)) {
		agent_reply_error(m->msgid, SANDPOOL_E_BAD_REQUEST, "code.run: id %" PRIu64 " is already running", id);
		return;
	}
	if (ipc_get_str(m->params, "context_id", &name, &name_len) == 0) {
		ctx = context_find(name, name_len, NULL);
		if (!ctx) {
			agent_reply_error(m->msgid, SANDPOOL_E_NOT_FOUND, "no context %.*s",
					  (int)(name_len > 64 ? 64 : name_len), name);
			return;
		}
	} else {
		if (!(drv = language_param(m, "language")))
			return;
		ctx = context_find(NULL, 0, drv);
	}
	if (ctx) {
		TAILQ_FOREACH(run, &ctx->queue, link)
			queued++;
		if (queued >= CONTEXT_MAX_QUEUE) {
			agent_reply_error(m->msgid, SANDPOOL_E_LIMIT_EXCEEDED, "context %s has %d cells waiting already",
					  ctx->id, CONTEXT_MAX_QUEUE);
			return;
		}
	}
	run = run_new(ctx ? ctx->drv : drv, code, code_len, env);
	if (!run) {
		agent_reply_error(m->msgid, SANDPOOL_E_INTERNAL, "out of memory");
		return;
	}
	if (!ctx && !(ctx = context_create(m->msgid, drv, m->params, "context_env", true))) {
		free(run);
		return;
	}
	run->id = id;
	run->msgid = m->msgid;
	run->timeout_ms = timeout_ms;
	run->max_output = max_output;
	TAILQ_INSERT_TAIL(&ctx->queue, run, link);
	context_next(ctx);
}

void context_interrupt_run(uint64_t id)
{
	struct context *ctx;
	struct code_run *run = run_find(id, &ctx);
	struct timeval tv;

	if (!run)
		return;
	if (run != ctx->run) {
		TAILQ_REMOVE(&ctx->queue, run, link);
		agent_reply_error(run->msgid, SANDPOOL_E_ABORTED, "code run %" PRIu64 " was cancelled", id);
		free(run);
		return;
	}
	if (run->interrupted || ctx->state != CONTEXT_BUSY)
		return;
	run->interrupted = true;
	kill(-ctx->pid, SIGINT);
	agent_ms_to_tv(CONTEXT_GRACE_MS, &tv);
	evtimer_add(ctx->timer, &tv);
}
