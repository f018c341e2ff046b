/*
 * What the e2b backend's files share (sandbox/e2b.h says who owns what).
 * Not for use outside sandbox/e2b*.c.
 */
#ifndef SANDPOOL_SANDBOX_E2B_INTERNAL_H
#define SANDPOOL_SANDBOX_E2B_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include <msgpack.h>

#include "sandbox/http.h"
#include "sandbox/sandbox.h"

struct evbuffer;
struct event;

#define E2B_PORT_CODE 49999
#define E2B_PORT_ENVD 49983
/* Where E2B's user works; the daemon's /workspace maps to it. */
#define E2B_HOME "/home/user"
#define E2B_MAX_CONTEXTS 16
#define E2B_URL_MAX 2048

/* How a control-plane request ended, after its retries. */
enum e2b_outcome {
	E2B_OK,
	E2B_NOT_FOUND,	 /* 404: the sandbox is gone */
	E2B_DENIED,	 /* 401/403: the API key is refused */
	E2B_UNREACHABLE, /* no answer at all: connection refused, timed out, DNS */
	E2B_FAILED,	 /* any other answer: 429 or 5xx past the retry budget, 4xx, bad JSON */
};

struct e2b_api;
/* json: the answer's body parsed (NULL when empty or not JSON); why: a
 * message for logs and clients (never the API key). */
typedef void (*e2b_api_cb)(struct e2b_api *q, enum e2b_outcome o, long status, const msgpack_object *json,
			   const char *why, void *arg);

/*
 * A control-plane request with E2B's fault rules: 429 and 503 wait for
 * Retry-After, other 5xx and connection errors back off with full jitter,
 * both until E2B_RETRY_BUDGET_MS or E2B_MAX_ATTEMPTS; 401/403/404 and
 * other 4xx end at once. The request frees itself after calling cb; the
 * owner forgets its pointer in cb, or calls e2b_api_cancel() (no cb).
 */
struct e2b_api *e2b_api_start(const struct template_config *t, const char *method, const char *path,
			      struct evbuffer *json_body, e2b_api_cb cb, void *arg);
void e2b_api_cancel(struct e2b_api *q);
/* In cb: an answer header (X-Next-Token). */
const char *e2b_api_header(const struct e2b_api *q, const char *name);
/* The control-plane base URL of t, without a trailing slash. */
int e2b_api_base(const struct template_config *t, char *out, size_t len);
/* The value of t's api_key_env, or NULL when unset or empty. */
const char *e2b_api_key(const struct template_config *t);

struct e2b_context {
	char id[64];
	char language[16]; /* E2B's name: python, js, bash */
	char cwd[256];
	bool is_default;
	unsigned busy; /* cells in flight */
	uint64_t execution_count;
};

struct e2b_op;
TAILQ_HEAD(e2b_op_list, e2b_op);

struct e2b_sandbox {
	struct sandbox *sb;
	char sandbox_id[64]; /* E2B's sandboxID; "" until created */
	char access_token[256];
	char traffic_token[256]; /* E2B-Traffic-Access-Token, when E2B issued one */
	char domain[128];
	struct e2b_api *create_req, *keepalive_req, *delete_req, *check_req;
	struct event *keepalive_timer;
	struct event *setup_timer; /* between health probes while starting */
	struct e2b_op *setup_op;   /* health probe, default context, preload */
	unsigned health_tries;
	struct e2b_op_list ops;	   /* in-sandbox requests in flight */
	struct e2b_context contexts[E2B_MAX_CONTEXTS];
	unsigned n_contexts;
	bool ready;
	bool destroying;
	bool gone;
	TAILQ_ENTRY(e2b_sandbox) link; /* e2b_live: every e2b sandbox not yet released */
};
TAILQ_HEAD(e2b_sandbox_list, e2b_sandbox);

/* e2b.c */
extern struct event_base *e2b_base;
extern struct e2b_sandbox_list e2b_live;
/* A request inside the sandbox failed as if it were gone: ask E2B. */
void e2b_check_alive(struct e2b_sandbox *es);
/* The sandbox is ready (health, default context and preload done). */
void e2b_setup_done(struct e2b_sandbox *es, int err, const char *why);

/* e2b_run.c */
/* Starts the in-sandbox part of creation: health probe, then the
 * template's preload in its language's default context. */
void e2b_run_setup(struct e2b_sandbox *es);
/* Cancels every in-flight in-sandbox request (closing its connection). */
void e2b_run_abandon_all(struct e2b_sandbox *es);
int e2b_run_exec(struct sandbox *sb, struct sandbox_exec *ex, const struct exec_request *req);
void e2b_run_exec_cancel(struct sandbox *sb, struct sandbox_exec *ex);
int e2b_run_call(struct sandbox *sb, struct sandbox_call *c, const char *method, const void *params, size_t len);
void e2b_run_call_cancel(struct sandbox *sb, struct sandbox_call *c);

#endif
