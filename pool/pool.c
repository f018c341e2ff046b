#include "autoconfig.h"

#include "pool/pool.h"

#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "ipc/sandpool.h"
#include "pool/sizing.h"
#include "sandbox/e2b.h"
#include "sandbox/local.h"
#include "store/ledger.h"

/* After this many failures in a row a template is degraded: leases that
 * find no warm sandbox fail fast instead of queueing behind a broken
 * backend. */
#define DEGRADED_AFTER 3
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 30000
/* A lease waiting for a sandbox to be built gives up after this. */
#define CREATE_WAIT_MS 30000

struct pool {
	const struct template_config *tmpl;
	const struct sandbox_backend *backend;
	struct sandbox_list lists[SANDBOX_DEAD]; /* by state */
	unsigned count[SANDBOX_DEAD];
	TAILQ_HEAD(, pool_waiter) waiters;
	unsigned n_waiting;
	struct pool_stats stats;
	unsigned consecutive_failures;
	unsigned initial_outcomes; /* creations finished, counted up to min_warm */
	struct event *backoff_timer;
	struct event *sizing_timer; /* once a second: the demand-driven target */
	struct event *age_timer;    /* when the oldest warm sandbox reaches max_warm_age */
	bool backing_off;
	bool degraded;
	int degraded_code; /* what leases get while degraded (backend_error, backend_unavailable) */
	bool halted;	   /* credentials refused: no creations until a reload changes the template */
	bool retired; /* removed by a reload: drains, never refills */
	char last_error[512];
	struct pool_sizing sizing;
	struct sample_ring lease_wait_us;
	struct sample_ring create_us;
};

static struct {
	struct event_base *base;
	struct config *cfg;
	void (*on_lost)(struct sandbox *sb, int reason, const char *why);
	void (*on_empty)(void);
	void (*on_initial_fill)(void);
	unsigned pools_filling; /* pools still short of min_warm outcomes */
	struct pool **pools;
	unsigned n_pools;
	unsigned live;	   /* sandboxes in any state but DEAD */
	unsigned creating; /* across pools */
	unsigned refill_from; /* round-robin start for create slots */
	bool shutting_down;
	struct sandbox_list graveyard;
	struct event *reap_ev;
	struct event *refill_ev;
	struct event *drain_timer;
} ps;

static unsigned pool_total(const struct pool *p)
{
	return p->count[SANDBOX_CREATING] + p->count[SANDBOX_WARM] + p->count[SANDBOX_LEASED] +
	       p->count[SANDBOX_HELD] + p->count[SANDBOX_DESTROYING];
}

/* Counts one finished creation towards the start-up fill. */
static void note_outcome(struct pool *p)
{
	if (p->initial_outcomes >= p->tmpl->min_warm)
		return;
	if (++p->initial_outcomes < p->tmpl->min_warm)
		return;
	if (--ps.pools_filling == 0 && ps.on_initial_fill)
		ps.on_initial_fill();
}

void pool_system_on_initial_fill(void (*cb)(void))
{
	ps.on_initial_fill = cb;
	if (ps.pools_filling == 0)
		cb();
}

/* max_warm, never below min_warm nor above max_total. */
static unsigned max_warm(const struct pool *p)
{
	unsigned m = p->tmpl->max_warm < p->tmpl->min_warm ? p->tmpl->min_warm : p->tmpl->max_warm;

	return m > p->tmpl->max_total ? p->tmpl->max_total : m;
}

static void schedule_refill(void)
{
	event_active(ps.refill_ev, 0, 0);
}

static bool transition_ok(enum sandbox_state from, enum sandbox_state to)
{
	switch (from) {
	case SANDBOX_CREATING:
		return to == SANDBOX_WARM || to == SANDBOX_LEASED || to == SANDBOX_DESTROYING;
	case SANDBOX_WARM:
		return to == SANDBOX_LEASED || to == SANDBOX_DESTROYING;
	case SANDBOX_LEASED:
		return to == SANDBOX_HELD || to == SANDBOX_DESTROYING;
	case SANDBOX_HELD:
		return to == SANDBOX_LEASED || to == SANDBOX_DESTROYING;
	case SANDBOX_DESTROYING:
		return to == SANDBOX_DEAD;
	case SANDBOX_DEAD:
		break;
	}
	return false;
}

static void arm_age_timer(struct pool *p);

/* The only code that changes sb->state, and with it list membership. */
static void sandbox_set_state(struct sandbox *sb, enum sandbox_state to)
{
	struct pool *p = sb->pool;
	enum sandbox_state from = sb->state;

	if (!transition_ok(from, to))
		fatal("sandbox %s: illegal transition %s -> %s", sb->id, sandbox_state_name(from),
		      sandbox_state_name(to));
	TAILQ_REMOVE(&p->lists[from], sb, pool_link);
	p->count[from]--;
	if (from == SANDBOX_CREATING)
		ps.creating--;
	sb->state = to;
	if (from == SANDBOX_CREATING && to != SANDBOX_DESTROYING)
		ledger_sandbox_ready(sb->id);
	if (to == SANDBOX_WARM)
		arm_age_timer(p);
	if (to == SANDBOX_DEAD) {
		ledger_sandbox_destroyed(sb->id);
		ps.live--;
		TAILQ_INSERT_TAIL(&ps.graveyard, sb, pool_link);
		event_active(ps.reap_ev, 0, 0);
	} else {
		TAILQ_INSERT_TAIL(&p->lists[to], sb, pool_link);
		p->count[to]++;
	}
	sb_log_debug(sb, "%s -> %s", sandbox_state_name(from), sandbox_state_name(to));
}

static void on_reap(evutil_socket_t fd, short what, void *arg)
{
	struct sandbox *sb;

	while ((sb = TAILQ_FIRST(&ps.graveyard))) {
		TAILQ_REMOVE(&ps.graveyard, sb, pool_link);
		sandbox_free(sb);
	}
}

static void destroy(struct sandbox *sb, enum ledger_reason why)
{
	ledger_sandbox_ending(sb->id, why);
	sandbox_set_state(sb, SANDBOX_DESTROYING);
	sb->backend->destroy(sb);
}

static void waiter_dequeue(struct pool_waiter *w)
{
	if (!w->queued)
		return;
	TAILQ_REMOVE(&w->pool->waiters, w, link);
	w->pool->n_waiting--;
	w->queued = false;
	if (w->timer) {
		event_free(w->timer);
		w->timer = NULL;
	}
}

static void waiter_fail(struct pool_waiter *w, int code, const char *msg)
{
	waiter_dequeue(w);
	w->on_done(w, NULL, code, msg);
}

/* A ready sandbox goes to the longest waiter, else to the warm list. */
static void offer(struct sandbox *sb)
{
	struct pool *p = sb->pool;
	struct pool_waiter *w = TAILQ_FIRST(&p->waiters);

	if (!w) {
		sandbox_set_state(sb, SANDBOX_WARM);
		return;
	}
	waiter_dequeue(w);
	sandbox_set_state(sb, SANDBOX_LEASED);
	p->stats.misses++;
	sample_add(&p->lease_wait_us, monotonic_us() - w->since_us);
	w->on_done(w, sb, 0, NULL);
}

static void start_create(struct pool *p)
{
	struct sandbox *sb = sandbox_new(p, p->tmpl, p->backend);
	int rc;

	if (!sb) {
		snprintf(p->last_error, sizeof(p->last_error), "out of memory");
		return;
	}
	sb->state = SANDBOX_CREATING;
	TAILQ_INSERT_TAIL(&p->lists[SANDBOX_CREATING], sb, pool_link);
	p->count[SANDBOX_CREATING]++;
	ps.creating++;
	ps.live++;
	ledger_sandbox_created(sb->id, p->tmpl);
	sb_log_debug(sb, "creating");
	rc = sb->backend->create(sb);
	if (rc < 0) {
		char why[128];

		snprintf(why, sizeof(why), "%s backend: %s", sb->backend->name, strerror(-rc));
		sandbox_backend_failed(sb, why);
	}
}

static void refill_pool(struct pool *p)
{
	if (p->retired)
		return;
	unsigned want = p->sizing.target + p->n_waiting;

	while (!ps.shutting_down && !p->backing_off && !p->halted &&
	       p->count[SANDBOX_WARM] + p->count[SANDBOX_CREATING] < want &&
	       pool_total(p) < p->tmpl->max_total && ps.live < ps.cfg->max_sandboxes &&
	       p->count[SANDBOX_CREATING] < p->tmpl->max_creating &&
	       ps.creating < ps.cfg->create_concurrency)
		start_create(p);
}

static void on_refill(evutil_socket_t fd, short what, void *arg)
{
	for (unsigned i = 0; i < ps.n_pools; i++)
		refill_pool(ps.pools[(ps.refill_from + i) % ps.n_pools]);
	if (ps.n_pools)
		ps.refill_from = (ps.refill_from + 1) % ps.n_pools;
}

/* The warm list is in order of readiness, so only its head can be the
 * next to reach max_warm_age: one timer per pool, armed for it. */
static void arm_age_timer(struct pool *p)
{
	struct sandbox *head = TAILQ_FIRST(&p->lists[SANDBOX_WARM]);
	uint64_t now = monotonic_us(), due, wait;
	struct timeval tv;

	if (!head || evtimer_pending(p->age_timer, NULL))
		return;
	due = head->ready_us + p->tmpl->max_warm_age_ms * 1000;
	wait = due > now ? due - now : 0;
	tv.tv_sec = (time_t)(wait / 1000000);
	tv.tv_usec = (suseconds_t)(wait % 1000000);
	evtimer_add(p->age_timer, &tv);
}

static void on_warm_age(evutil_socket_t fd, short what, void *arg)
{
	struct pool *p = arg;
	uint64_t now = monotonic_us();
	struct sandbox *sb;

	while ((sb = TAILQ_FIRST(&p->lists[SANDBOX_WARM])) &&
	       sb->ready_us + p->tmpl->max_warm_age_ms * 1000 <= now) {
		sb_log_debug(sb, "rotated after max_warm_age");
		p->stats.rotated++;
		destroy(sb, LEDGER_ROTATED);
	}
	arm_age_timer(p);
	schedule_refill();
}

static void on_sizing_tick(evutil_socket_t fd, short what, void *arg)
{
	struct pool *p = arg;
	unsigned before = p->sizing.target;

	if (sizing_tick(&p->sizing, p->tmpl->min_warm, max_warm(p)) > before)
		schedule_refill();
}

static void on_backoff_done(evutil_socket_t fd, short what, void *arg)
{
	struct pool *p = arg;

	p->backing_off = false;
	schedule_refill();
}

static void start_backoff(struct pool *p)
{
	unsigned shift = p->consecutive_failures > 9 ? 9 : p->consecutive_failures - 1;
	uint64_t ms = (uint64_t)BACKOFF_MIN_MS << shift;
	uint32_t rnd = 0;
	struct timeval tv;

	if (ms > BACKOFF_MAX_MS)
		ms = BACKOFF_MAX_MS;
	/* Full jitter in [ms/2, ms): pools failing together retry apart. */
	(void)!getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK);
	ms = ms / 2 + (ms / 2 ? rnd % (ms / 2) : 0);
	tv = ms_timeval(ms);
	p->backing_off = true;
	evtimer_add(p->backoff_timer, &tv);
}

void sandbox_backend_ready(struct sandbox *sb)
{
	struct pool *p = sb->pool;

	if (sb->state != SANDBOX_CREATING)
		return;
	sb->ready_us = monotonic_us();
	sizing_note_create(&p->sizing, sb->ready_us - sb->created_us);
	sample_add(&p->create_us, sb->ready_us - sb->created_us);
	p->stats.created++;
	note_outcome(p);
	p->consecutive_failures = 0;
	if (p->degraded)
		log_info("template %s: recovered", p->tmpl->name);
	p->degraded = false;
	sb_log_debug(sb, "ready in %llu us", (unsigned long long)(sb->ready_us - sb->created_us));
	offer(sb);
	schedule_refill();
}

static void creation_failed(struct sandbox *sb, enum sandbox_failure kind, const char *why)
{
	struct pool *p = sb->pool;
	struct pool_waiter *w;

	p->stats.create_failures++;
	note_outcome(p);
	p->consecutive_failures++;
	snprintf(p->last_error, sizeof(p->last_error), "%s", why);
	sb_log_error(sb, "creation failed: %s", why);
	/* An unreachable service or a refused key will not get better by
	 * itself within three tries: say so to clients at once. */
	p->degraded_code = kind == SANDBOX_FAIL_UNREACHABLE ? SANDPOOL_E_BACKEND_UNAVAILABLE : SANDPOOL_E_BACKEND_ERROR;
	if (kind == SANDBOX_FAIL_DENIED && !p->halted) {
		p->halted = true;
		log_error("template %s: the backend refused its credentials; no more sandboxes are created "
			  "until a reload changes the template: %s", p->tmpl->name, why);
	}
	if ((p->consecutive_failures >= DEGRADED_AFTER || kind == SANDBOX_FAIL_UNREACHABLE ||
	     kind == SANDBOX_FAIL_DENIED) && !p->degraded) {
		p->degraded = true;
		log_warn("template %s: degraded after %u failed creations: %s", p->tmpl->name,
			 p->consecutive_failures, why);
	}
	/* Tell a waiting client now rather than after the backoff; when the
	 * template is degraded nobody should keep waiting. */
	while ((w = TAILQ_FIRST(&p->waiters))) {
		waiter_fail(w, p->degraded_code, why);
		if (!p->degraded)
			break;
	}
	if (!p->halted)
		start_backoff(p);
}

void sandbox_backend_failed_as(struct sandbox *sb, enum sandbox_failure kind, const char *why)
{
	enum ledger_reason reason = kind == SANDBOX_FAIL_LOST ? LEDGER_BACKEND_LOST : LEDGER_LOST;

	switch (sb->state) {
	case SANDBOX_CREATING:
		destroy(sb, LEDGER_CREATE_FAILED);
		creation_failed(sb, kind, why);
		break;
	case SANDBOX_WARM:
		sb_log_warn(sb, "lost while warm: %s", why);
		destroy(sb, reason);
		break;
	case SANDBOX_LEASED:
	case SANDBOX_HELD:
		sb_log_warn(sb, "lost while %s: %s", sandbox_state_name(sb->state), why);
		ps.on_lost(sb, reason, why);
		break;
	case SANDBOX_DESTROYING:
	case SANDBOX_DEAD:
		break;
	}
}

void sandbox_backend_failed(struct sandbox *sb, const char *why)
{
	sandbox_backend_failed_as(sb, SANDBOX_FAIL_TRANSIENT, why);
}

void sandbox_backend_gone(struct sandbox *sb)
{
	struct pool *p = sb->pool;

	p->stats.destroyed++;
	sandbox_set_state(sb, SANDBOX_DEAD);
	if (ps.shutting_down) {
		if (ps.live == 0 && ps.on_empty)
			ps.on_empty();
		return;
	}
	schedule_refill();
}

static const struct sandbox_backend *backend_for(const struct template_config *t)
{
	switch (t->backend) {
	case BACKEND_LOCAL:
		return &local_backend;
	case BACKEND_E2B:
		return &e2b_backend;
	}
	return NULL;
}

static struct pool *pool_lookup(const char *name)
{
	for (unsigned i = 0; i < ps.n_pools; i++)
		if (!strcmp(ps.pools[i]->tmpl->name, name))
			return ps.pools[i];
	return NULL;
}

static struct pool *pool_new(struct template_config *t)
{
	struct pool *p;

	if (ps.n_pools == CONFIG_MAX_TEMPLATES)
		return NULL;
	p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	ps.pools[ps.n_pools++] = p;
	p->tmpl = t;
	for (int s = 0; s < SANDBOX_DEAD; s++)
		TAILQ_INIT(&p->lists[s]);
	TAILQ_INIT(&p->waiters);
	sizing_init(&p->sizing, t->min_warm);
	p->backoff_timer = evtimer_new(ps.base, on_backoff_done, p);
	p->sizing_timer = event_new(ps.base, -1, EV_PERSIST, on_sizing_tick, p);
	p->age_timer = evtimer_new(ps.base, on_warm_age, p);
	if (!p->backoff_timer || !p->sizing_timer || !p->age_timer)
		return NULL;
	event_add(p->sizing_timer, &(struct timeval){ 1, 0 });
	p->backend = backend_for(t);
	if (!p->backend)
		log_error("template %s: backend not available in this build", t->name);
	return p->backend ? p : NULL;
}

int pool_system_init(struct event_base *base, struct config *cfg,
		     void (*on_lost)(struct sandbox *sb, int reason, const char *why))
{
	memset(&ps, 0, sizeof(ps));
	ps.base = base;
	ps.cfg = cfg;
	ps.on_lost = on_lost;
	TAILQ_INIT(&ps.graveyard);
	ps.reap_ev = event_new(base, -1, 0, on_reap, NULL);
	ps.refill_ev = event_new(base, -1, 0, on_refill, NULL);
	/* Room for every template a reload may add over the daemon's life. */
	ps.pools = calloc(CONFIG_MAX_TEMPLATES, sizeof(*ps.pools));
	if (!ps.reap_ev || !ps.refill_ev || !ps.pools)
		return -ENOMEM;
	for (unsigned i = 0; i < cfg->n_templates; i++) {
		struct pool *p;

		if (!backend_for(cfg->templates[i])) {
			log_error("template %s: its backend is not available in this build",
				  cfg->templates[i]->name);
			return -ENOTSUP;
		}
		p = pool_new(cfg->templates[i]);
		if (!p)
			return -ENOMEM;
		if (p->tmpl->min_warm > 0)
			ps.pools_filling++;
	}
	schedule_refill();
	return 0;
}

/* Removed from the configuration: no new leases; what runs may finish. */
static void retire(struct pool *p)
{
	struct pool_waiter *w;
	struct sandbox *sb;

	log_info("template %s removed: draining", p->tmpl->name);
	p->retired = true;
	while ((w = TAILQ_FIRST(&p->waiters)))
		waiter_fail(w, SANDPOOL_E_UNKNOWN_TEMPLATE, "the template was removed");
	while ((sb = TAILQ_FIRST(&p->lists[SANDBOX_WARM])))
		destroy(sb, LEDGER_RELOADED);
}

/* New settings for a known template take effect for every sandbox created
 * from now on; warm ones were made with the old settings and are replaced. */
static void update(struct pool *p, struct template_config *fresh)
{
	struct template_config *t = (struct template_config *)p->tmpl;
	struct template_config old = *t;
	struct sandbox *sb;

	/* Swap contents, not pointers: sandboxes keep pointing at t. */
	*t = *fresh;
	*fresh = old;
	if (p->retired)
		log_info("template %s added back", t->name);
	else
		log_info("template %s changed: replacing its warm sandboxes", t->name);
	p->retired = false;
	p->degraded = false;
	p->halted = false;
	p->consecutive_failures = 0;
	p->backing_off = false;
	evtimer_del(p->backoff_timer);
	while ((sb = TAILQ_FIRST(&p->lists[SANDBOX_WARM])))
		destroy(sb, LEDGER_RELOADED);
}

int pool_system_reload(struct config *cur, struct config *next, char *err, size_t errlen)
{
	unsigned added = 0;

	for (unsigned i = 0; i < next->n_templates; i++)
		if (!pool_lookup(next->templates[i]->name))
			added++;
	if (ps.n_pools + added > CONFIG_MAX_TEMPLATES || cur->n_templates + added > CONFIG_MAX_TEMPLATES) {
		snprintf(err, errlen, "more than %d templates over the daemon's life; restart it",
			 CONFIG_MAX_TEMPLATES);
		return -E2BIG;
	}
	for (unsigned i = 0; i < ps.n_pools; i++) {
		struct pool *p = ps.pools[i];

		if (!p->retired && !config_template(next, p->tmpl->name))
			retire(p);
	}
	for (unsigned i = 0; i < next->n_templates;) {
		struct template_config *t = next->templates[i];
		struct pool *p = pool_lookup(t->name);

		if (p) {
			if (p->retired || !config_template_equal(p->tmpl, t))
				update(p, t);
			i++;
			continue;
		}
		/* A new template: the running configuration takes it over. */
		next->templates[i] = next->templates[--next->n_templates];
		cur->templates[cur->n_templates++] = t;
		p = pool_new(t);
		if (!p) {
			snprintf(err, errlen, "template %s: cannot create its pool", t->name);
			return -ENOMEM;
		}
		/* The start-up fill was counted once; a later pool is not part of it. */
		p->initial_outcomes = t->min_warm;
		log_info("template %s added", t->name);
	}
	schedule_refill();
	return 0;
}

static void end_leased(const char *why)
{
	for (unsigned i = 0; i < ps.n_pools; i++) {
		struct sandbox *sb;

		while ((sb = TAILQ_FIRST(&ps.pools[i]->lists[SANDBOX_LEASED])))
			ps.on_lost(sb, LEDGER_LOST, why);
	}
}

static void on_drain_timeout(evutil_socket_t fd, short what, void *arg)
{
	log_warn("drain_timeout passed: ending the leases still held");
	end_leased("the daemon is shutting down (drain_timeout passed)");
}

void pool_system_shutdown(void (*on_empty)(void), uint64_t drain_ms)
{
	struct timeval tv = ms_timeval(drain_ms);
	unsigned leased = 0;

	ps.shutting_down = true;
	ps.on_empty = on_empty;
	for (unsigned i = 0; i < ps.n_pools; i++) {
		struct pool *p = ps.pools[i];
		struct pool_waiter *w;
		struct sandbox *sb;

		while ((w = TAILQ_FIRST(&p->waiters)))
			waiter_fail(w, SANDPOOL_E_SHUTTING_DOWN, "the daemon is shutting down");
		while ((sb = TAILQ_FIRST(&p->lists[SANDBOX_HELD])))
			ps.on_lost(sb, LEDGER_SHUTDOWN, "the daemon is shutting down");
		while ((sb = TAILQ_FIRST(&p->lists[SANDBOX_WARM])))
			destroy(sb, LEDGER_SHUTDOWN);
		while ((sb = TAILQ_FIRST(&p->lists[SANDBOX_CREATING])))
			destroy(sb, LEDGER_SHUTDOWN);
		leased += p->count[SANDBOX_LEASED];
	}
	/* Leases in use may finish their work, up to drain_ms. */
	if (leased && drain_ms) {
		log_info("draining %u leases for up to %llu ms", leased, (unsigned long long)drain_ms);
		ps.drain_timer = evtimer_new(ps.base, on_drain_timeout, NULL);
		if (ps.drain_timer)
			evtimer_add(ps.drain_timer, &tv);
	}
	if (leased && (!drain_ms || !ps.drain_timer))
		end_leased("the daemon is shutting down");
	if (ps.live == 0)
		on_empty();
}

bool pool_system_stopping(void)
{
	return ps.shutting_down;
}

unsigned pool_system_live_sandboxes(void)
{
	return ps.live;
}

void pool_system_free(void)
{
	on_reap(-1, 0, NULL);
	for (unsigned i = 0; i < ps.n_pools; i++) {
		if (ps.pools[i]->backoff_timer)
			event_free(ps.pools[i]->backoff_timer);
		if (ps.pools[i]->sizing_timer)
			event_free(ps.pools[i]->sizing_timer);
		if (ps.pools[i]->age_timer)
			event_free(ps.pools[i]->age_timer);
		free(ps.pools[i]);
	}
	free(ps.pools);
	if (ps.drain_timer)
		event_free(ps.drain_timer);
	if (ps.reap_ev)
		event_free(ps.reap_ev);
	if (ps.refill_ev)
		event_free(ps.refill_ev);
	memset(&ps, 0, sizeof(ps));
}

struct pool *pool_find(const char *name, size_t len)
{
	for (unsigned i = 0; i < ps.n_pools; i++) {
		const char *n = ps.pools[i]->tmpl->name;

		if (!ps.pools[i]->retired && strlen(n) == len && memcmp(n, name, len) == 0)
			return ps.pools[i];
	}
	return NULL;
}

unsigned pool_count(void)
{
	unsigned n = 0;

	for (unsigned i = 0; i < ps.n_pools; i++)
		n += !ps.pools[i]->retired;
	return n;
}

struct pool *pool_at(unsigned i)
{
	for (unsigned j = 0; j < ps.n_pools; j++)
		if (!ps.pools[j]->retired && i-- == 0)
			return ps.pools[j];
	return NULL;
}

const struct template_config *pool_template(const struct pool *p)
{
	return p->tmpl;
}

static void on_wait_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct pool_waiter *w = arg;
	struct pool *p = w->pool;

	p->stats.exhausted++;
	waiter_fail(w, SANDPOOL_E_POOL_EXHAUSTED, "no sandbox became available in time");
}

int pool_acquire(struct pool *p, struct pool_waiter *w, uint64_t wait_ms, struct sandbox **out,
		 char *msg, size_t msglen)
{
	struct sandbox *sb = TAILQ_FIRST(&p->lists[SANDBOX_WARM]);
	struct timeval tv;
	bool below_cap;
	uint64_t ms;

	if (ps.shutting_down) {
		snprintf(msg, msglen, "the daemon is shutting down");
		return -SANDPOOL_E_SHUTTING_DOWN;
	}
	sizing_note_arrival(&p->sizing);
	if (sb) {
		sandbox_set_state(sb, SANDBOX_LEASED);
		p->stats.hits++;
		sample_add(&p->lease_wait_us, 0);
		schedule_refill();
		*out = sb;
		return 0;
	}
	if (p->degraded) {
		snprintf(msg, msglen, "template %s is degraded: %s", p->tmpl->name, p->last_error);
		return -p->degraded_code;
	}
	below_cap = pool_total(p) < p->tmpl->max_total && ps.live < ps.cfg->max_sandboxes;
	if (!below_cap && wait_ms == 0) {
		p->stats.exhausted++;
		snprintf(msg, msglen, "template %s has %u of max_total %u sandboxes in use", p->tmpl->name,
			 pool_total(p), p->tmpl->max_total);
		return -SANDPOOL_E_POOL_EXHAUSTED;
	}
	/* Below the cap the lease waits for the sandbox built for it, however
	 * long wait_ms; at the cap it waits up to wait_ms for capacity. */
	ms = below_cap ? CREATE_WAIT_MS + wait_ms : wait_ms;
	w->pool = p;
	w->since_us = monotonic_us();
	w->timer = evtimer_new(ps.base, on_wait_timeout, w);
	if (!w->timer) {
		snprintf(msg, msglen, "out of memory");
		return -SANDPOOL_E_INTERNAL;
	}
	tv = ms_timeval(ms);
	evtimer_add(w->timer, &tv);
	TAILQ_INSERT_TAIL(&p->waiters, w, link);
	p->n_waiting++;
	w->queued = true;
	schedule_refill();
	return 1;
}

void pool_waiter_cancel(struct pool_waiter *w)
{
	waiter_dequeue(w);
}

void pool_release(struct sandbox *sb, enum ledger_reason why)
{
	sandbox_execs_abort(sb, SANDPOOL_E_ABORTED, "the lease ended");
	sb->lease = NULL;
	destroy(sb, why);
}

void pool_hold(struct sandbox *sb)
{
	sandbox_execs_abort(sb, SANDPOOL_E_ABORTED, "the lease ended");
	sb->lease = NULL;
	sandbox_set_state(sb, SANDBOX_HELD);
}

void pool_reuse(struct sandbox *sb)
{
	sandbox_set_state(sb, SANDBOX_LEASED);
	sb->pool->stats.session_reuses++;
}

void pool_get_figures(const struct pool *p, struct pool_figures *out)
{
	out->warm = p->count[SANDBOX_WARM];
	out->creating = p->count[SANDBOX_CREATING];
	out->leased = p->count[SANDBOX_LEASED];
	out->held = p->count[SANDBOX_HELD];
	out->destroying = p->count[SANDBOX_DESTROYING];
	out->waiting = p->n_waiting;
	out->stats = p->stats;
	out->target = p->sizing.target;
	out->arrival_rate = p->sizing.arrival_rate;
	out->replenish_ms = p->sizing.replenish_s * 1000.0;
	out->lease_wait_p50_us = sample_percentile(&p->lease_wait_us, 50);
	out->lease_wait_p99_us = sample_percentile(&p->lease_wait_us, 99);
	out->create_p50_us = sample_percentile(&p->create_us, 50);
	out->create_p99_us = sample_percentile(&p->create_us, 99);
	out->last_error = p->last_error[0] ? p->last_error : NULL;
	out->degraded = p->degraded;
}
