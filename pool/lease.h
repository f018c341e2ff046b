/*
 * Leases: the binding of one client to one LEASED sandbox, found by an
 * unguessable id in O(1). Owns struct lease and the id table; the lease
 * does not own its sandbox (the pool does) and does not know about
 * connections beyond an opaque owner pointer set by the RPC layer.
 */
#ifndef SANDPOOL_POOL_LEASE_H
#define SANDPOOL_POOL_LEASE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/types.h>

struct event_base;
struct sandbox;

struct lease {
	char id[24]; /* "ls-" + 16 hex digits */
	uint64_t key;
	struct sandbox *sb;
	uid_t uid;
	pid_t pid;
	bool warm;
	bool reused; /* a session's own sandbox, not a fresh one */
	uint64_t requested_us;
	uint64_t acquired_us;
	void *owner; /* the RPC layer's client, NULL when detached */
	struct event *ttl_timer;
	void (*on_expire)(struct lease *l);
	TAILQ_ENTRY(lease) owner_link;
	struct lease *hash_next;
};
TAILQ_HEAD(lease_list, lease);

int lease_table_init(struct event_base *base) __attribute__((warn_unused_result));
void lease_table_free(void);
unsigned lease_count(void);

/* Creates a lease on sb (sets sb->lease); on_expire runs when ttl_ms passes. */
struct lease *lease_new(struct sandbox *sb, uid_t uid, pid_t pid, uint64_t ttl_ms,
			void (*on_expire)(struct lease *l));
struct lease *lease_find(const char *id, size_t len);
/* Removes l from the table and frees it; the caller deals with l->sb. */
void lease_free(struct lease *l);
/* Restarts l's lifetime: it now ends ttl_ms from now. */
void lease_renew(struct lease *l, uint64_t ttl_ms);
/* Remembers (boundedly) that id expired, so its holder hears why. */
void lease_note_expired(const struct lease *l);
bool lease_expired_recently(const char *id, size_t len);

#endif
