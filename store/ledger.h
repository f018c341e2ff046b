/*
 * The usage and cost ledger (docs/LEDGER.md). The event loop records what
 * happens -- sandboxes created, ready and destroyed, leases, execs,
 * sessions, the daemon's own runs -- by appending to a bounded in-memory
 * queue: a malloc, a clock read and a mutex held for a pointer swap, never
 * a disk access. A writer thread owns the SQLite connection and commits
 * the queue every ledger_flush in one transaction (WAL mode).
 *
 * When the database cannot take a batch (busy, locked, disk full, I/O
 * error) the writer keeps it, logs (at most every 10 s) and retries next
 * interval; records keep queueing up to ledger_backlog, and past that the
 * newest are dropped and counted, so what the ledger has stays consistent
 * from the start. A crash loses at most one flush interval plus one commit.
 *
 * Owns the queue, the writer thread and the database connection. Secrets
 * (argv, env values, code, stdin, output) never reach it: the record
 * functions take no such argument.
 */
#ifndef SANDPOOL_STORE_LEDGER_H
#define SANDPOOL_STORE_LEDGER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "daemon/config.h"

/* Counters, declared once: the struct, pool.stats and the tests share them. */
#define LEDGER_COUNTERS(X)                                                                         \
	X(queued)	  /* records accepted into the queue */                                    \
	X(written)	  /* records committed */                                                  \
	X(dropped)	  /* records refused: the backlog was full (the newest go) */               \
	X(rejected)	  /* records the database refused outright (constraint errors: a bug) */    \
	X(failed_flushes) /* commits that failed (busy, locked, full, I/O) and were retried */

struct ledger_stats {
#define LEDGER_X(name) uint64_t name;
	LEDGER_COUNTERS(LEDGER_X)
#undef LEDGER_X
	uint64_t backlog; /* records queued or held by the writer, not yet committed */
	bool open;	  /* the writer has the database open */
};

/*
 * Why something ended: sandboxes.end_reason, leases.end_reason,
 * sessions.end_reason and daemon_runs.end_reason take these names.
 */
#define LEDGER_REASONS(X)                                                                          \
	X(RELEASED, "released")		  /* the holder released it */                             \
	X(RUN_DONE, "run_done")		  /* the run that held it finished */                      \
	X(DISCONNECTED, "disconnected")	  /* its client's connection closed */                     \
	X(TTL, "ttl")			  /* lease_ttl passed */                                   \
	X(LOST, "lost")			  /* the backend lost the sandbox (died, failed health) */ \
	X(BACKEND_LOST, "backend_lost")	  /* the cloud reaped it under us (E2B: 404 on use) */    \
	X(SHUTDOWN, "shutdown")		  /* the daemon stopped */                                 \
	X(SESSION_ENDED, "session_ended") /* its session ended (session.end, idle, max age) */     \
	X(CREATE_FAILED, "create_failed") /* it never became ready */                              \
	X(ROTATED, "rotated")		  /* warm past max_warm_age */                             \
	X(RELOADED, "reloaded")		  /* its template changed or went away (SIGHUP) */         \
	X(FAILED, "failed")		  /* the request it served failed */                       \
	X(IDLE, "idle")			  /* a session: session_idle_ttl passed */                 \
	X(MAX_AGE, "max_age")		  /* a session: session_max_age passed */                  \
	X(ABANDONED, "abandoned")	  /* its daemon died without saying; set by the next run */

enum ledger_reason {
#define LEDGER_X(id, name) LEDGER_##id,
	LEDGER_REASONS(LEDGER_X)
#undef LEDGER_X
};

const char *ledger_reason_name(enum ledger_reason r);

struct ledger_options {
	const char *path;
	uint64_t flush_ms;
	uint64_t retention_ms; /* 0: keep everything */
	unsigned backlog;
	const char *version;	 /* daemon_runs.version */
	const char *config_hash; /* daemon_runs.config_hash */
};

/*
 * Opens (creating and migrating) the database, closes what a crashed
 * predecessor left open, records this run and starts the writer. A
 * database that is only busy, locked or full now does not stop the start:
 * the writer keeps trying. Returns 0, or -1 with err for what retrying
 * cannot fix (a bad path, not a database, a newer schema).
 */
int ledger_start(const struct ledger_options *o, char *err, size_t errlen)
	__attribute__((warn_unused_result));
/* ledger_start() from the daemon's configuration; 0 when ledger_path = off. */
int ledger_start_config(const struct config *cfg, char *err, size_t errlen)
	__attribute__((warn_unused_result));
/* Records the run's end, commits what is queued (a busy database gets one
 * more attempt, waiting up to ledger_flush, at most a second, for its
 * lock), stops the writer and closes. */
void ledger_stop(void);
bool ledger_enabled(void);
void ledger_get_stats(struct ledger_stats *out);

/* --- records; all no-ops while the ledger is off ------------------------- */

void ledger_sandbox_created(const char *id, const struct template_config *t);
void ledger_sandbox_ready(const char *id);
/* The backend's own name for it (E2B's sandboxID): sandboxes.backend_ref. */
void ledger_sandbox_backend_ref(const char *id, const char *ref);
/* The daemon began to destroy it, and why. */
void ledger_sandbox_ending(const char *id, enum ledger_reason why);
/* Its resources are gone: billing stops here. */
void ledger_sandbox_destroyed(const char *id);

/* A lease was granted; requested_mono_us is when it was asked for
 * (CLOCK_MONOTONIC), session the session's name or NULL. */
void ledger_lease_acquired(const char *lease, const char *sandbox, const char *session, uid_t uid,
			   pid_t pid, const char *process_name, uint64_t requested_mono_us,
			   bool warm_hit);
void ledger_lease_released(const char *lease, enum ledger_reason why);

struct ledger_exec {
	const char *lease;
	bool code;		  /* a code run, not an argv/cmd exec */
	const char *language;	  /* code runs; NULL for execs */
	uint64_t started_mono_us; /* CLOCK_MONOTONIC */
	uint64_t duration_us;
	bool exited;
	int exit_code;
	int signal;		/* 0: none */
	const char *error_name; /* the error code it ended with, or NULL */
	uint64_t bytes_out;	/* stdout + stderr, streamed or not */
	bool truncated;
	const char *limit; /* exec_limit_name(), or NULL */
};
void ledger_exec_done(const struct ledger_exec *e);

void ledger_session_started(const char *name, uid_t uid, const char *tmpl);
void ledger_session_bound(const char *name, const char *sandbox);
void ledger_session_ended(const char *name, enum ledger_reason why);

#endif
