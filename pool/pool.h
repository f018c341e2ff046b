/*
 * Warm pools, one per template. A pool owns its sandboxes and keeps each
 * on the list of its state (creating, warm, leased, destroying); only
 * sandbox_set_state() moves them. It keeps min_warm sandboxes ready,
 * hands them out in O(1), queues lease requests FIFO when it cannot, and
 * destroys every sandbox when its lease ends: a sandbox never serves two
 * leases. Creation runs asynchronously under a per-template cap
 * (max_total) and global caps (max_sandboxes, create_concurrency), with
 * exponential backoff after failures.
 */
#ifndef SANDPOOL_POOL_H
#define SANDPOOL_POOL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include "daemon/config.h"
#include "sandbox/sandbox.h"
#include "store/ledger.h"

struct event_base;
struct pool;

/* Counters, declared once: the struct and pool.stats both come from here. */
#define POOL_COUNTERS(X)                                                                           \
	X(hits)		  /* leases served from a warm sandbox */                                  \
	X(misses)	  /* leases that waited for a new sandbox */                               \
	X(exhausted)	  /* leases refused with pool_exhausted */                                 \
	X(created)	  /* sandboxes that became ready */                                       \
	X(create_failures) /* sandboxes that failed to come up */                                  \
	X(destroyed)	  /* sandboxes destroyed */                                               \
	X(session_reuses) /* leases served by a session's own sandbox */                          \
	X(rotated)	  /* warm sandboxes replaced after max_warm_age */

struct pool_stats {
#define POOL_X(name) uint64_t name;
	POOL_COUNTERS(POOL_X)
#undef POOL_X
};

/*
 * A lease request that could not be served at once. The caller owns the
 * struct (embeds it) and must keep it alive until on_done runs or it
 * calls pool_waiter_cancel(). on_done gets a LEASED sandbox, or NULL with
 * an error code and message.
 */
struct pool_waiter {
	struct pool *pool;
	void (*on_done)(struct pool_waiter *w, struct sandbox *sb, int errcode, const char *msg);
	uint64_t since_us;
	struct event *timer;
	bool queued;
	TAILQ_ENTRY(pool_waiter) link;
};

/* on_lost: a LEASED or HELD sandbox died or must go (shutdown); the
 * callee ends its lease or session, which releases the sandbox, and
 * records reason (a ledger_reason). */
int pool_system_init(struct event_base *base, struct config *cfg,
		     void (*on_lost)(struct sandbox *sb, int reason, const char *why))
	__attribute__((warn_unused_result));
/* cb runs once, when every template has seen min_warm creations finish
 * (ready or failed): the moment a service manager should hear READY. */
void pool_system_on_initial_fill(void (*cb)(void));
/*
 * Applies a reloaded configuration: templates only in next are added (cur
 * takes them over), removed ones drain, changed ones take the new
 * settings (copied into cur's template) and replace their warm
 * sandboxes. next keeps what cur no longer needs; the caller frees it.
 */
int pool_system_reload(struct config *cur, struct config *next, char *err, size_t errlen)
	__attribute__((warn_unused_result));
/* Refuses new leases and destroys every sandbox not leased; leased ones
 * go when their lease ends or drain_ms passes. on_empty runs once the
 * last one is gone (at once if none is left). */
void pool_system_shutdown(void (*on_empty)(void), uint64_t drain_ms);
/* Shutting down: a released session sandbox is destroyed, not held. */
bool pool_system_stopping(void);
unsigned pool_system_live_sandboxes(void);
void pool_system_free(void);

struct pool *pool_find(const char *name, size_t len);
unsigned pool_count(void);
struct pool *pool_at(unsigned i);
const struct template_config *pool_template(const struct pool *p);

/*
 * Leases a sandbox of p. Returns 0 with *out (a warm one), 1 when w was
 * queued (its on_done follows), or a negative sandpool error code
 * (-SANDPOOL_E_POOL_EXHAUSTED, -SANDPOOL_E_SHUTTING_DOWN, ...) with msg.
 */
int pool_acquire(struct pool *p, struct pool_waiter *w, uint64_t wait_ms, struct sandbox **out,
		 char *msg, size_t msglen);
void pool_waiter_cancel(struct pool_waiter *w);
/* Ends a LEASED or HELD sandbox's service: it is destroyed, never reused;
 * why goes to the ledger. */
void pool_release(struct sandbox *sb, enum ledger_reason why);
/* A session's sandbox between leases: LEASED -> HELD, kept for it alone. */
void pool_hold(struct sandbox *sb);
/* HELD -> LEASED for the next lease of its session. */
void pool_reuse(struct sandbox *sb);

struct pool_figures {
	unsigned warm, creating, leased, held, destroying, waiting;
	unsigned target;     /* warm sandboxes wanted now (docs/POOL.md) */
	double arrival_rate; /* leases per second */
	double replenish_ms; /* time to create one */
	uint32_t lease_wait_p50_us, lease_wait_p99_us;
	uint32_t create_p50_us, create_p99_us;
	struct pool_stats stats;
	const char *last_error; /* NULL when none */
	bool degraded;
};
void pool_get_figures(const struct pool *p, struct pool_figures *out);

#endif
