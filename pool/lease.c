#include "autoconfig.h"

#include "pool/lease.h"

#include <errno.h>
#include <event2/event.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "daemon/clock.h"
#include "sandbox/sandbox.h"

/* Expired ids remembered for lease_expired answers; older ones fall out. */
#define EXPIRED_MEMORY 1024

/* Ids are random, so their low bits index the table directly. */
static struct {
	struct event_base *base;
	struct lease **buckets;
	unsigned mask;
	unsigned count;
	uint64_t expired[EXPIRED_MEMORY];
	unsigned expired_next;
} lt;

int lease_table_init(struct event_base *base)
{
	lt.base = base;
	lt.mask = 255;
	lt.buckets = calloc(lt.mask + 1, sizeof(*lt.buckets));
	return lt.buckets ? 0 : -ENOMEM;
}

void lease_table_free(void)
{
	free(lt.buckets);
	memset(&lt, 0, sizeof(lt));
}

unsigned lease_count(void)
{
	return lt.count;
}

static void grow(void)
{
	unsigned nmask = lt.mask * 2 + 1;
	struct lease **nb = calloc(nmask + 1, sizeof(*nb));

	if (!nb)
		return; /* longer chains, still correct */
	for (unsigned i = 0; i <= lt.mask; i++) {
		struct lease *l = lt.buckets[i], *next;

		for (; l; l = next) {
			next = l->hash_next;
			l->hash_next = nb[l->key & nmask];
			nb[l->key & nmask] = l;
		}
	}
	free(lt.buckets);
	lt.buckets = nb;
	lt.mask = nmask;
}

static void on_ttl(evutil_socket_t fd, short what, void *arg)
{
	struct lease *l = arg;

	l->on_expire(l);
}

static struct lease *find_key(uint64_t key)
{
	struct lease *l = lt.buckets[key & lt.mask];

	while (l && l->key != key)
		l = l->hash_next;
	return l;
}

/* Lease ids are unguessable (a detached lease is used by id alone), but
 * a getrandom() per lease is a syscall on the hot path: draw 64 at once. */
static int next_key(uint64_t *key)
{
	static uint64_t pool[64];
	static unsigned left;

	if (left == 0) {
		if (getrandom(pool, sizeof(pool), 0) != sizeof(pool))
			return -EIO;
		left = 64;
	}
	*key = pool[--left];
	pool[left] = 0;
	return 0;
}

struct lease *lease_new(struct sandbox *sb, uid_t uid, pid_t pid, uint64_t ttl_ms,
			void (*on_expire)(struct lease *l))
{
	struct lease *l = calloc(1, sizeof(*l));
	struct timeval tv = ms_timeval(ttl_ms);

	if (!l)
		return NULL;
	do {
		if (next_key(&l->key) < 0) {
			free(l);
			return NULL;
		}
	} while (find_key(l->key));
	l->ttl_timer = evtimer_new(lt.base, on_ttl, l);
	if (!l->ttl_timer) {
		free(l);
		return NULL;
	}
	snprintf(l->id, sizeof(l->id), "ls-%016" PRIx64, l->key);
	l->sb = sb;
	l->uid = uid;
	l->pid = pid;
	l->on_expire = on_expire;
	l->acquired_us = monotonic_us();
	evtimer_add(l->ttl_timer, &tv);
	sb->lease = l;
	if (lt.count >= lt.mask)
		grow();
	l->hash_next = lt.buckets[l->key & lt.mask];
	lt.buckets[l->key & lt.mask] = l;
	lt.count++;
	return l;
}

static int parse_id(const char *id, size_t len, uint64_t *out)
{
	uint64_t key = 0;

	if (len != 19 || memcmp(id, "ls-", 3) != 0)
		return -EINVAL;
	for (size_t i = 3; i < len; i++) {
		char c = id[i];
		unsigned d;

		if (c >= '0' && c <= '9')
			d = (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			d = (unsigned)(c - 'a' + 10);
		else
			return -EINVAL;
		key = key << 4 | d;
	}
	*out = key;
	return 0;
}

struct lease *lease_find(const char *id, size_t len)
{
	uint64_t key;

	return parse_id(id, len, &key) == 0 ? find_key(key) : NULL;
}

void lease_renew(struct lease *l, uint64_t ttl_ms)
{
	struct timeval tv = ms_timeval(ttl_ms);

	evtimer_add(l->ttl_timer, &tv);
}

void lease_note_expired(const struct lease *l)
{
	lt.expired[lt.expired_next++ % EXPIRED_MEMORY] = l->key;
}

bool lease_expired_recently(const char *id, size_t len)
{
	uint64_t key;

	if (parse_id(id, len, &key) < 0)
		return false;
	for (unsigned i = 0; i < EXPIRED_MEMORY; i++)
		if (lt.expired[i] == key && key)
			return true;
	return false;
}

void lease_free(struct lease *l)
{
	struct lease **pp = &lt.buckets[l->key & lt.mask];

	while (*pp && *pp != l)
		pp = &(*pp)->hash_next;
	if (*pp) {
		*pp = l->hash_next;
		lt.count--;
	}
	if (l->sb && l->sb->lease == l)
		l->sb->lease = NULL;
	event_free(l->ttl_timer);
	free(l);
}
