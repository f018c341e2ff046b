#include "autoconfig.h"

#include "pool/session.h"

#include <errno.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/clock.h"

/* Sessions are few (each holds a sandbox): a list is enough, and lookup
 * happens once per session lease, not per exec. */
static struct {
	struct event_base *base;
	void (*on_expire)(struct session *s, const char *why);
	TAILQ_HEAD(, session) all;
	unsigned count;
} st;

int session_table_init(struct event_base *base, void (*on_expire)(struct session *s, const char *why))
{
	st.base = base;
	st.on_expire = on_expire;
	TAILQ_INIT(&st.all);
	st.count = 0;
	return 0;
}

void session_table_free(void)
{
	struct session *s;

	while ((s = TAILQ_FIRST(&st.all)))
		session_free(s);
}

unsigned session_count(void)
{
	return st.count;
}

unsigned session_count_in(const struct pool *pool)
{
	const struct session *s;
	unsigned n = 0;

	TAILQ_FOREACH(s, &st.all, link)
		n += s->pool == pool;
	return n;
}

bool session_name_valid(const char *name, size_t len)
{
	if (len == 0 || len > SESSION_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      strchr("._:@-", c)))
			return false;
	}
	return true;
}

struct session *session_find(const char *name, size_t len)
{
	struct session *s;

	TAILQ_FOREACH(s, &st.all, link)
		if (strlen(s->name) == len && !memcmp(s->name, name, len))
			return s;
	return NULL;
}

static void on_idle(evutil_socket_t fd, short what, void *arg)
{
	st.on_expire(arg, "session_idle_ttl reached");
}

static void on_age(evutil_socket_t fd, short what, void *arg)
{
	st.on_expire(arg, "session_max_age reached");
}

struct session *session_new(const char *name, size_t len, uid_t uid, struct pool *pool,
			    uint64_t idle_ttl_ms, uint64_t max_age_ms)
{
	struct session *s = calloc(1, sizeof(*s));
	struct timeval tv = ms_timeval(max_age_ms);

	if (!s)
		return NULL;
	s->idle_timer = evtimer_new(st.base, on_idle, s);
	s->age_timer = evtimer_new(st.base, on_age, s);
	if (!s->idle_timer || !s->age_timer) {
		if (s->idle_timer)
			event_free(s->idle_timer);
		if (s->age_timer)
			event_free(s->age_timer);
		free(s);
		return NULL;
	}
	memcpy(s->name, name, len);
	TAILQ_INIT(&s->waiters);
	s->uid = uid;
	s->pool = pool;
	s->created_us = monotonic_us();
	s->idle_ttl_ms = idle_ttl_ms;
	evtimer_add(s->age_timer, &tv);
	TAILQ_INSERT_TAIL(&st.all, s, link);
	st.count++;
	return s;
}

void session_free(struct session *s)
{
	TAILQ_REMOVE(&st.all, s, link);
	st.count--;
	event_free(s->idle_timer);
	event_free(s->age_timer);
	free(s);
}

void session_idle_start(struct session *s)
{
	struct timeval tv = ms_timeval(s->idle_ttl_ms);

	evtimer_add(s->idle_timer, &tv);
}

void session_idle_stop(struct session *s)
{
	evtimer_del(s->idle_timer);
}
