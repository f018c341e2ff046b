/*
 * Sessions: a name that brings a client back to the same sandbox, with
 * its processes, files and interpreter state. Owns struct session and the
 * name table; the RPC layer decides when a session's sandbox is leased,
 * held between leases, or ended, and this module keeps the timers that
 * end a session (idle too long, too old).
 */
#ifndef SANDPOOL_POOL_SESSION_H
#define SANDPOOL_POOL_SESSION_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/types.h>

struct event_base;
struct pool;
struct sandbox;

#define SESSION_NAME_MAX 128

/* Embedded by whoever queues for a busy session. */
struct session_waiter {
	TAILQ_ENTRY(session_waiter) link;
};
TAILQ_HEAD(session_waiter_list, session_waiter);

struct session {
	char name[SESSION_NAME_MAX + 1];
	uid_t uid;
	struct pool *pool;
	struct sandbox *sb; /* NULL until its first lease is granted */
	bool busy;	    /* a lease holds it, or is being acquired for it */
	uint64_t created_us;
	uint64_t idle_ttl_ms;
	struct event *idle_timer; /* armed while held without a lease */
	struct event *age_timer;
	struct session_waiter_list waiters; /* lease requests queued while busy, FIFO */
	void *acquiring;		    /* the RPC layer's request building its sandbox */
	TAILQ_ENTRY(session) link;
};

int session_table_init(struct event_base *base, void (*on_expire)(struct session *s, const char *why))
	__attribute__((warn_unused_result));
void session_table_free(void);
unsigned session_count(void);
/* Sessions bound to pool (for pool.stats; walks the list). */
unsigned session_count_in(const struct pool *pool);

/* A name is 1..128 bytes of [A-Za-z0-9._:@-]. */
bool session_name_valid(const char *name, size_t len);
struct session *session_find(const char *name, size_t len);
struct session *session_new(const char *name, size_t len, uid_t uid, struct pool *pool,
			    uint64_t idle_ttl_ms, uint64_t max_age_ms);
void session_free(struct session *s);
/* The session's sandbox is held without a lease: start the idle clock. */
void session_idle_start(struct session *s);
void session_idle_stop(struct session *s);

#endif
