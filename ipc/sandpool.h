/*
 * libsandpool: the client library for sandpoold's msgpack-RPC Unix socket.
 * The wire contract is docs/PROTOCOL.md; this header is its C face.
 *
 * A struct sandpool is one blocking connection. It is not thread-safe: use
 * one per thread. Strings returned inside result structs belong to the
 * struct and are released by the matching *_free() call.
 */
#ifndef SANDPOOL_H
#define SANDPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <msgpack.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SANDPOOL_PROTOCOL_VERSION 1

/* Stable error codes carried in {code, message} error maps. X(name, text):
 * name is the C suffix, text the wire string. */
#define SANDPOOL_ERRORS(X)                                                                         \
	X(BAD_REQUEST, "bad_request")                                                              \
	X(UNKNOWN_METHOD, "unknown_method")                                                        \
	X(UNKNOWN_TEMPLATE, "unknown_template")                                                    \
	X(NOT_FOUND, "not_found")                                                                  \
	X(FORBIDDEN, "forbidden")                                                                  \
	X(POOL_EXHAUSTED, "pool_exhausted")                                                        \
	X(SESSION_BUSY, "session_busy")                                                            \
	X(LEASE_EXPIRED, "lease_expired")                                                          \
	X(TIMEOUT, "timeout")                                                                      \
	X(LIMIT_EXCEEDED, "limit_exceeded")                                                        \
	X(BACKEND_ERROR, "backend_error")                                                          \
	X(ABORTED, "aborted")                                                                      \
	X(SHUTTING_DOWN, "shutting_down")                                                          \
	X(INTERNAL, "internal")                                                                    \
	X(CONNECTION, "connection") /* client side only: the socket failed */                     \
	X(BACKEND_UNAVAILABLE, "backend_unavailable")

enum sandpool_errcode {
	SANDPOOL_OK = 0,
#define SANDPOOL_X(name, text) SANDPOOL_E_##name,
	SANDPOOL_ERRORS(SANDPOOL_X)
#undef SANDPOOL_X
};

/* Wire string of a code, and back (unknown strings map to INTERNAL). */
const char *sandpool_errcode_name(enum sandpool_errcode code);
enum sandpool_errcode sandpool_errcode_from_name(const char *name, size_t len);

/*
 * Every call that can fail takes a struct sandpool_error (NULL allowed),
 * written only on failure, and returns 0 or a negative errno:
 *   -EREMOTEIO   the daemon answered the request with an error; code and
 *                message are the daemon's.
 *   -ECONNRESET  the connection is gone. When the daemon said why before
 *                hanging up (an error with msgid 0: shutting_down,
 *                limit_exceeded), code and message are that; otherwise code
 *                is SANDPOOL_E_CONNECTION.
 *   other        a local failure: SANDPOOL_E_CONNECTION for the socket
 *                (-ETIMEDOUT for the call timeout, -EPROTO for a malformed
 *                message, -EMSGSIZE for an oversized one, -errno of a failed
 *                syscall), SANDPOOL_E_BAD_REQUEST for bad arguments,
 *                SANDPOOL_E_INTERNAL for a result that breaks the protocol
 *                (-EPROTO) or no memory (-ENOMEM).
 * After -ECONNRESET, and after any SANDPOOL_E_CONNECTION failure but a
 * sandpool_wait() timeout, the connection only repeats that error: close it.
 */
struct sandpool_error {
	enum sandpool_errcode code;
	char message[256];
};

/* --- connection ----------------------------------------------------------- */

struct sandpool;

/* Connects to socket_path; NULL means $SANDPOOL_SOCKET, else
 * /run/sandpool/sandpool.sock for root, else
 * $XDG_RUNTIME_DIR/sandpool/sandpool.sock, else /tmp/sandpool-UID/sandpool.sock.
 * Returns NULL with err filled on failure. */
struct sandpool *sandpool_connect(const char *socket_path, struct sandpool_error *err)
	__attribute__((warn_unused_result));
/* Adopts an already connected SOCK_STREAM socket: made non-blocking, and
 * closed by sandpool_close(), or at once when this fails. */
struct sandpool *sandpool_connect_fd(int fd, struct sandpool_error *err)
	__attribute__((warn_unused_result));
/* Closes the socket and frees every outstanding request and stashed reply. */
void sandpool_close(struct sandpool *sp);

/* Bounds each call (sending a request, or waiting for its response) to
 * timeout_ms; 0, the default, waits as long as the daemon takes. A wait that
 * times out abandons its request, whose late response is then dropped, and
 * the connection stays usable; a send that times out has left part of a
 * request on the wire, which breaks it. */
void sandpool_set_timeout_ms(struct sandpool *sp, int timeout_ms);
/* Largest message accepted from the daemon (default 64 MiB, well above any
 * exec result the daemon's max_output allows). A bigger one breaks the
 * connection with -EMSGSIZE. */
void sandpool_set_max_frame(struct sandpool *sp, size_t bytes);

/* --- generic calls -------------------------------------------------------- */

/* A response's result and the zone that owns it. */
struct sandpool_reply {
	const msgpack_object *result; /* never NULL; nil when the method returns nothing */
	msgpack_zone *zone;	      /* private */
};
void sandpool_reply_free(struct sandpool_reply *reply);

/* A notification that arrived while waiting; params is its map or NULL. It
 * and method are valid only during the callback, which must not call into
 * the same connection. */
typedef void (*sandpool_notify_fn)(void *arg, const char *method, const msgpack_object *params);

/* Sends a request without waiting; params is exactly one packed msgpack map
 * (NULL/0 sends an empty one). Several requests may be in flight at once. */
int sandpool_send(struct sandpool *sp, const char *method, const void *params, size_t len,
		  uint32_t *msgid, struct sandpool_error *err) __attribute__((warn_unused_result));
/* Waits for the response to msgid. Responses to other outstanding requests
 * are kept for their own sandpool_wait(); every notification that arrives
 * meanwhile, for whatever request, goes to on_notify (may be NULL). On a
 * timeout the request is abandoned. *out is set only on success. */
int sandpool_wait(struct sandpool *sp, uint32_t msgid, sandpool_notify_fn on_notify, void *arg,
		  struct sandpool_reply **out, struct sandpool_error *err)
	__attribute__((warn_unused_result));
/* sandpool_send() then sandpool_wait(). */
int sandpool_call(struct sandpool *sp, const char *method, const void *params, size_t len,
		  sandpool_notify_fn on_notify, void *arg, struct sandpool_reply **out,
		  struct sandpool_error *err) __attribute__((warn_unused_result));

/* --- typed calls ---------------------------------------------------------- *
 * Result structs must start zeroed or freed; on failure they are left zeroed.
 * Their *_free() accepts a zeroed struct and zeroes it again. Each keeps the
 * whole result in .reply, for fields it does not map. Notifications that do
 * not belong to a typed call are dropped: pipeline with sandpool_send(). */

struct sandpool_hello {
	uint64_t protocol;
	char *server;
	uint64_t max_frame;
	uint64_t max_inflight;
	uint64_t max_connections;
	uint64_t max_leases_per_conn;
	uint64_t max_timeout_ms;
	struct sandpool_reply *reply;
};
/* client names the caller in the daemon's logs; may be NULL. */
int sandpool_hello(struct sandpool *sp, const char *client, struct sandpool_hello *out,
		   struct sandpool_error *err) __attribute__((warn_unused_result));
void sandpool_hello_free(struct sandpool_hello *hello);

struct sandpool_lease_opts {
	const char *template_name;
	uint32_t wait_ms;  /* how long to queue at max_total; 0 fails at once */
	bool detached;	   /* outlive this connection (until release or lease_ttl) */
	const char *session; /* NULL, or a session name: its own sandbox comes back */
};

struct sandpool_lease {
	char *lease_id;
	char *sandbox_id;
	char *template_name;
	bool warm;	    /* handed a sandbox that was already running */
	bool reused;	    /* the session's own sandbox, with its state */
	uint64_t waited_us;
	struct sandpool_reply *reply;
};
int sandpool_lease(struct sandpool *sp, const struct sandpool_lease_opts *opts,
		   struct sandpool_lease *out, struct sandpool_error *err)
	__attribute__((warn_unused_result));
void sandpool_lease_free(struct sandpool_lease *lease);
int sandpool_release(struct sandpool *sp, const char *lease_id, struct sandpool_error *err)
	__attribute__((warn_unused_result));
/* Restarts a lease's lease_ttl. */
int sandpool_renew(struct sandpool *sp, const char *lease_id, struct sandpool_error *err)
	__attribute__((warn_unused_result));
/* Ends a session and destroys its sandbox. */
int sandpool_session_end(struct sandpool *sp, const char *session, struct sandpool_error *err)
	__attribute__((warn_unused_result));

enum sandpool_stream {
	SANDPOOL_STDOUT = 1,
	SANDPOOL_STDERR = 2,
};

/* Output as it happens; stream is an enum sandpool_stream. */
typedef void (*sandpool_output_fn)(void *arg, int stream, const void *data, size_t len);

struct sandpool_exec_opts {
	const char *const *argv; /* NULL-terminated, non-empty; argv[0] looked up in PATH */
	const char *cmd;	 /* or a /bin/sh -c command line: exactly one of the two */
	const char *const *env;	 /* NULL-terminated "KEY=VALUE" strings added to the base env */
	const char *cwd;	 /* NULL: /workspace */
	const void *stdin_data;	 /* NULL: stdin is /dev/null */
	size_t stdin_len;
	uint32_t timeout_ms;	 /* 0: the template's timeout */
	/* Non-NULL streams the output here instead of into the result. */
	sandpool_output_fn on_output;
	void *output_arg;
	const char *session; /* sandpool_run() only: run in this session's sandbox */
};

struct sandpool_exec_result {
	uint64_t exec_id;
	bool has_exit_code; /* false when the process was killed */
	int exit_code;
	int signal;	    /* the signal that killed it, else 0 */
	/* NUL-terminated for convenience; empty when the output was streamed. */
	char *stdout_buf;
	size_t stdout_len;
	char *stderr_buf;
	size_t stderr_len;
	bool truncated;
	char *limit; /* NULL, "timeout" or "output_limit" */
	uint64_t duration_us;
	/* sandpool_run() only */
	char *sandbox_id;
	bool warm;
	uint64_t waited_us;
	struct sandpool_reply *reply;
};
int sandpool_exec(struct sandpool *sp, const char *lease_id, const struct sandpool_exec_opts *opts,
		  struct sandpool_exec_result *out, struct sandpool_error *err)
	__attribute__((warn_unused_result));
/* Lease, exec and release in one round trip. */
int sandpool_run(struct sandpool *sp, const char *template_name, uint32_t wait_ms,
		 const struct sandpool_exec_opts *opts, struct sandpool_exec_result *out,
		 struct sandpool_error *err) __attribute__((warn_unused_result));
void sandpool_exec_result_free(struct sandpool_exec_result *result);

/* --- code: cells in persistent interpreter contexts ------------------------ */

/* A result as it is streamed; result is its map (is_main_result, text,
 * html, png, json, ...), valid during the call only. */
typedef void (*sandpool_result_fn)(void *arg, const msgpack_object *result);

struct sandpool_code_opts {
	const char *code;
	const char *language;	/* NULL: the template's; names the language's default context */
	const char *context_id; /* or a context from sandpool_context_create(): not both */
	const char *const *env; /* NULL-terminated "KEY=VALUE" for this cell only */
	uint32_t timeout_ms;	/* 0: the template's timeout */
	/* Either non-NULL streams the cell's output and results to the two
	 * callbacks (a NULL one drops its kind) instead of into the result. */
	sandpool_output_fn on_output;
	sandpool_result_fn on_result;
	void *output_arg;
};

/* One of an execution's results. */
struct sandpool_code_result {
	bool is_main_result; /* the value of the cell's last expression */
	const char *text;    /* its repr(), or NULL */
	const msgpack_object *map; /* every format it came with */
};

struct sandpool_execution {
	struct sandpool_code_result *results;
	size_t n_results;
	const char *text; /* the main result's text, or NULL */
	/* NUL-terminated for convenience; empty when streamed. */
	char *stdout_buf;
	size_t stdout_len;
	char *stderr_buf;
	size_t stderr_len;
	/* The cell failed: an exception, a timeout ("TimeoutError"), a bash
	 * exit status ("ExitStatus"), or its context died ("ContextDied"). */
	char *error_name;
	char *error_value;
	char *error_traceback;
	uint64_t execution_count;
	char *context_id;
	bool truncated; /* output and results past the template's max_output were dropped */
	char *limit;	/* NULL, or "timeout" */
	bool restarted; /* the context had to be restarted: its state is lost */
	uint64_t duration_us;
	struct sandpool_reply *reply;
};
int sandpool_code_run(struct sandpool *sp, const char *lease_id, const struct sandpool_code_opts *opts,
		      struct sandpool_execution *out, struct sandpool_error *err)
	__attribute__((warn_unused_result));
void sandpool_execution_free(struct sandpool_execution *execution);

struct sandpool_context {
	char *context_id;
	char *language;
	char *cwd;
	struct sandpool_reply *reply;
};
/* language NULL: the template's; cwd NULL: /workspace. */
int sandpool_context_create(struct sandpool *sp, const char *lease_id, const char *language,
			    const char *cwd, struct sandpool_context *out, struct sandpool_error *err)
	__attribute__((warn_unused_result));
void sandpool_context_free(struct sandpool_context *context);
/* A fresh process for the context: its state is lost. */
int sandpool_context_restart(struct sandpool *sp, const char *lease_id, const char *context_id,
			     struct sandpool_error *err) __attribute__((warn_unused_result));
int sandpool_context_remove(struct sandpool *sp, const char *lease_id, const char *context_id,
			    struct sandpool_error *err) __attribute__((warn_unused_result));

/* --- files in a leased sandbox --------------------------------------------- *
 * Paths are absolute in the sandbox or relative to /workspace (and cannot
 * leave it). One call moves at most the template's max_file_size (and less
 * than the daemon's max_frame). code.context.list and files.list have no
 * typed call: use sandpool_call(). */

/* mode 0: 0644 for a new file; append adds to the file instead of replacing it. */
int sandpool_file_write(struct sandpool *sp, const char *lease_id, const char *path, const void *data,
			size_t len, unsigned mode, bool append, struct sandpool_error *err)
	__attribute__((warn_unused_result));

struct sandpool_file_data {
	char *data; /* NUL-terminated for convenience */
	size_t len;
	uint64_t size; /* the whole file's */
	bool eof;      /* the read reached the end of the file */
	struct sandpool_reply *reply;
};
/* length 0 reads to the end of the file. */
int sandpool_file_read(struct sandpool *sp, const char *lease_id, const char *path, uint64_t offset,
		       uint64_t length, struct sandpool_file_data *out, struct sandpool_error *err)
	__attribute__((warn_unused_result));
void sandpool_file_data_free(struct sandpool_file_data *data);
/* Removes a file, or a directory with everything in it. */
int sandpool_file_remove(struct sandpool *sp, const char *lease_id, const char *path,
			 struct sandpool_error *err) __attribute__((warn_unused_result));

#ifdef __cplusplus
}
#endif

#endif
