/*
 * A sandbox and the backend interface. The pool owns struct sandbox and
 * moves it between states with sandbox_set_state(), the only place that
 * changes sb->state; each state is membership of one list of the owning
 * pool. A backend (local, e2b) only creates, runs execs in, checks and
 * destroys sandboxes, and reports back through the sandbox_backend_*
 * callbacks below; it never decides which sandbox serves whom.
 */
#ifndef SANDPOOL_SANDBOX_H
#define SANDPOOL_SANDBOX_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/types.h>

#include "daemon/clock.h"
#include "daemon/config.h"
#include "daemon/log.h"

struct pool;
struct sandbox;
struct lease;
struct session;
struct msgpack_object;

enum sandbox_state {
	SANDBOX_CREATING,   /* pool->creating: the backend is building it */
	SANDBOX_WARM,	    /* pool->warm: ready, waiting for a lease */
	SANDBOX_LEASED,	    /* pool->leased: serving exactly one lease */
	SANDBOX_HELD,	    /* pool->held: kept for its session between leases */
	SANDBOX_DESTROYING, /* pool->destroying: killed, waiting until nothing is left */
	SANDBOX_DEAD,	    /* on no list: about to be freed */
};

const char *sandbox_state_name(enum sandbox_state st);

/* Why an exec ended early; wire names in docs/PROTOCOL.md. */
enum exec_limit {
	EXEC_LIMIT_NONE,
	EXEC_LIMIT_TIMEOUT,
	EXEC_LIMIT_OUTPUT,
	EXEC_LIMIT_OOM,	 /* the sandbox's memory limit killed it */
	EXEC_LIMIT_PIDS, /* forks were refused at the sandbox's pids limit */
};

const char *exec_limit_name(enum exec_limit l); /* NULL for NONE */

struct exec_result {
	bool exited;   /* exit_code valid */
	int exit_code;
	int signal;    /* 0: not killed by a signal */
	bool truncated;
	enum exec_limit limit;
	uint64_t duration_us;
};

/*
 * One exec in flight. The caller (daemon/rpc.c) owns it; the backend
 * links it on the sandbox while it runs and calls exactly one of on_done
 * (with result or with an error) after any number of on_output calls.
 * After on_done the backend never touches it again.
 */
struct sandbox_exec {
	uint64_t id;
	uint32_t backend_tag; /* the backend's handle for it (local: agent msgid) */
	void (*on_output)(struct sandbox_exec *ex, int stream, const char *data, size_t len);
	void (*on_done)(struct sandbox_exec *ex, const struct exec_result *res, int errcode,
			const char *errmsg);
	struct sandbox *sb; /* set by sandbox_exec_start while running */
	TAILQ_ENTRY(sandbox_exec) sb_link;
};
TAILQ_HEAD(sandbox_exec_list, sandbox_exec);

/* What to run. Pointers need only live for the sandbox_exec_start() call. */
struct exec_request {
	const char *const *argv; /* NULL-terminated */
	const char *const *env;	 /* NULL-terminated "K=V" (full environment) */
	const char *cwd;
	const char *stdin_data; /* NULL: /dev/null */
	size_t stdin_len;
	uint64_t timeout_ms;
	uint64_t max_output;
};

/*
 * A request passed through to the sandbox's agent as is (code.*,
 * files.*, docs/AGENT.md): the caller packs the agent's params map; the
 * backend hands over the agent's notifications for it ("output",
 * "result") and then calls on_done exactly once, with the agent's result
 * or an error. Owned by the caller, linked on the sandbox while running.
 */
struct sandbox_call {
	uint64_t id;	      /* names it in the agent's notifications */
	uint32_t backend_tag; /* the backend's handle for it (local: agent msgid) */
	void (*on_notify)(struct sandbox_call *c, const char *method, size_t method_len,
			  const struct msgpack_object *params);
	void (*on_done)(struct sandbox_call *c, const struct msgpack_object *result, int errcode,
			const char *errmsg);
	struct sandbox *sb; /* set while running */
	TAILQ_ENTRY(sandbox_call) sb_link;
};
TAILQ_HEAD(sandbox_call_list, sandbox_call);

struct sandbox_backend {
	const char *name;
	/* Starts building sb; later calls sandbox_backend_ready() or _failed(). */
	int (*create)(struct sandbox *sb);
	int (*exec)(struct sandbox *sb, struct sandbox_exec *ex, const struct exec_request *req);
	/* Asks the backend to stop ex early; on_done still follows. */
	void (*exec_cancel)(struct sandbox *sb, struct sandbox_exec *ex);
	/* Kills everything; later calls sandbox_backend_gone(). Never fails. */
	void (*destroy)(struct sandbox *sb);
	/* Frees backend state once gone. */
	void (*release)(struct sandbox *sb);
	/* Sends method with params (one packed msgpack map) to the agent; NULL
	 * when the backend has no agent. */
	int (*call)(struct sandbox *sb, struct sandbox_call *c, const char *method, const void *params,
		    size_t len);
	/* Asks the agent to stop c early (a code run is interrupted); on_done still follows. */
	void (*call_cancel)(struct sandbox *sb, struct sandbox_call *c);
};

struct sandbox {
	char id[24]; /* "sb-" + 16 hex digits; also the hostname suffix */
	enum sandbox_state state;
	struct pool *pool;
	const struct template_config *tmpl;
	const struct sandbox_backend *backend;
	void *backend_state; /* owned by the backend */
	struct lease *lease; /* while LEASED */
	struct session *session; /* the session it is bound to, if any */
	struct sandbox_exec_list execs;
	unsigned n_execs;
	struct sandbox_call_list calls;
	unsigned n_calls;
	uint64_t created_us; /* monotonic */
	uint64_t ready_us;
	TAILQ_ENTRY(sandbox) pool_link; /* on the list of its state */
};
TAILQ_HEAD(sandbox_list, sandbox);

#define sb_log(lvl, sb, fmt, ...)                                                                  \
	log_msg(lvl, "sandbox %s [%s]: " fmt, (sb)->id, (sb)->tmpl->name, ##__VA_ARGS__)
#define sb_log_error(sb, ...) sb_log(LOG_ERR, sb, __VA_ARGS__)
#define sb_log_warn(sb, ...) sb_log(LOG_WARNING, sb, __VA_ARGS__)
#define sb_log_info(sb, ...) sb_log(LOG_INFO, sb, __VA_ARGS__)
#define sb_log_debug(sb, ...) sb_log(LOG_DEBUG, sb, __VA_ARGS__)

struct sandbox *sandbox_new(struct pool *pool, const struct template_config *tmpl,
			    const struct sandbox_backend *backend);
void sandbox_free(struct sandbox *sb);

/* Starts an exec; on error ex is untouched and no callback follows. */
int sandbox_exec_start(struct sandbox *sb, struct sandbox_exec *ex, const struct exec_request *req)
	__attribute__((warn_unused_result));
void sandbox_exec_cancel(struct sandbox_exec *ex);
/* Fails every exec and call still running with errcode/msg (the sandbox is going away). */
void sandbox_execs_abort(struct sandbox *sb, int errcode, const char *msg);

/* Starts a call; on error c is untouched and no callback follows
 * (-ENOTSUP: the backend has no agent). */
int sandbox_call_start(struct sandbox *sb, struct sandbox_call *c, const char *method, const void *params,
		       size_t len) __attribute__((warn_unused_result));
void sandbox_call_cancel(struct sandbox_call *c);
/* Backend helper: unlinks c and calls its on_done. */
void sandbox_call_finish(struct sandbox_call *c, const struct msgpack_object *result, int errcode,
			 const char *errmsg);

/* The environment every process in a sandbox starts from (PATH, HOME,
 * LANG, ...), NULL-terminated; templates and requests add to it. */
extern const char *const sandbox_base_env[];
/* sandbox_base_env with t's env added (t's entries replace same-named
 * ones): a malloc'd NULL-terminated array of borrowed strings, or NULL. */
const char **sandbox_template_env(const struct template_config *t);

/* Backend -> pool notifications (implemented by pool/pool.c). */
void sandbox_backend_ready(struct sandbox *sb);
void sandbox_backend_failed(struct sandbox *sb, const char *why);
/* How a backend failure should weigh on the template (sandbox_backend_failed
 * is TRANSIENT). */
enum sandbox_failure {
	SANDBOX_FAIL_TRANSIENT,	  /* counts towards degraded (3 creations in a row) */
	SANDBOX_FAIL_UNREACHABLE, /* the backend's service does not answer: leases that
				   * find no warm sandbox fail fast with backend_unavailable */
	SANDBOX_FAIL_DENIED,	  /* credentials refused: degraded, no more creations
				   * until a reload changes the template */
	SANDBOX_FAIL_LOST,	  /* the service reaped the sandbox (end_reason backend_lost) */
};
void sandbox_backend_failed_as(struct sandbox *sb, enum sandbox_failure kind, const char *why);
void sandbox_backend_gone(struct sandbox *sb);

/* The exec or call running in sb with this id, or NULL once it ended
 * (a backend's answer may come after the lease aborted it). */
struct sandbox_exec *sandbox_find_exec(struct sandbox *sb, uint64_t id);
struct sandbox_call *sandbox_find_call(struct sandbox *sb, uint64_t id);

/* Backend helpers for exec bookkeeping. */
void sandbox_exec_finish(struct sandbox_exec *ex, const struct exec_result *res, int errcode,
			 const char *errmsg);

#endif
