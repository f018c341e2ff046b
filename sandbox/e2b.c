#include "autoconfig.h"

#include "sandbox/e2b.h"

#include <curl/curl.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ipc/codec.h"
#include "sandbox/e2b_internal.h"
#include "sandbox/json.h"
#include "store/ledger.h"

/* How often the sweep looks for sandboxes carrying our label that we do
 * not know: E2B bills them until their own TTL ends. */
#define E2B_SWEEP_INTERVAL_MS 60000
/* Sweep requests in flight at most (a page of orphans is 100). */
#define E2B_SWEEP_MAX_INFLIGHT 128
#define META_INSTANCE "sandpool_instance"
#define META_TEMPLATE "sandpool_template"
#define META_SANDBOX "sandpool_sandbox"

struct event_base *e2b_base;
struct e2b_sandbox_list e2b_live = TAILQ_HEAD_INITIALIZER(e2b_live);

/* One request of the sweep: a listing page, or a kill. */
struct sweep_req {
	struct e2b_api *q;
	const struct template_config *t;
	TAILQ_ENTRY(sweep_req) link;
};

static struct {
	const struct config *cfg;
	char instance[128];
	struct event *sweep_timer;
	TAILQ_HEAD(, sweep_req) sweeps;
	unsigned n_sweeps;
	uint64_t orphans_killed;
} e2b = { .sweeps = TAILQ_HEAD_INITIALIZER(e2b.sweeps) };

static struct e2b_sandbox *es_of(struct sandbox *sb)
{
	return sb->backend_state;
}

static uint64_t ttl_seconds(const struct template_config *t)
{
	return (t->e2b_timeout_ms + 999) / 1000;
}

/* ---- lifecycle --------------------------------------------------------- */

static void report_gone(struct e2b_sandbox *es)
{
	if (es->gone)
		return;
	es->gone = true;
	sandbox_backend_gone(es->sb);
}

static void fail(struct e2b_sandbox *es, enum sandbox_failure kind, const char *why)
{
	if (es->keepalive_timer)
		event_del(es->keepalive_timer);
	sandbox_backend_failed_as(es->sb, kind, why);
}

static enum sandbox_failure failure_of(enum e2b_outcome o)
{
	switch (o) {
	case E2B_DENIED:
		return SANDBOX_FAIL_DENIED;
	case E2B_UNREACHABLE:
		return SANDBOX_FAIL_UNREACHABLE;
	case E2B_NOT_FOUND:
		return SANDBOX_FAIL_LOST;
	default:
		return SANDBOX_FAIL_TRANSIENT;
	}
}

static void on_deleted(struct e2b_api *q, enum e2b_outcome o, long status, const msgpack_object *json,
		       const char *why, void *arg)
{
	struct e2b_sandbox *es = arg;

	es->delete_req = NULL;
	if (o != E2B_OK && o != E2B_NOT_FOUND)
		sb_log_warn(es->sb, "E2B sandbox %s not killed, left to its TTL and the sweep: %s", es->sandbox_id,
			    why);
	report_gone(es);
}

static void start_delete(struct e2b_sandbox *es)
{
	char path[128];

	snprintf(path, sizeof(path), "/sandboxes/%s", es->sandbox_id);
	es->delete_req = e2b_api_start(es->sb->tmpl, "DELETE", path, NULL, on_deleted, es);
	if (!es->delete_req) {
		sb_log_warn(es->sb, "E2B sandbox %s not killed (out of memory), left to its TTL and the sweep",
			    es->sandbox_id);
		report_gone(es);
	}
}

static void on_keepalive_done(struct e2b_api *q, enum e2b_outcome o, long status, const msgpack_object *json,
			      const char *why, void *arg)
{
	struct e2b_sandbox *es = arg;

	es->keepalive_req = NULL;
	if (o == E2B_NOT_FOUND) {
		fail(es, SANDBOX_FAIL_LOST, "E2B no longer has the sandbox (404 on keepalive)");
		return;
	}
	/* Anything else is tried again at the next tick, well before the TTL. */
	if (o != E2B_OK)
		sb_log_warn(es->sb, "keepalive of E2B sandbox %s failed: %s", es->sandbox_id, why);
}

static void on_keepalive(evutil_socket_t fd, short what, void *arg)
{
	struct e2b_sandbox *es = arg;
	struct evbuffer *b;
	char path[128];

	if (es->keepalive_req || es->destroying)
		return;
	b = evbuffer_new();
	if (!b)
		return;
	evbuffer_add_printf(b, "{\"timeout\":%llu}", (unsigned long long)ttl_seconds(es->sb->tmpl));
	snprintf(path, sizeof(path), "/sandboxes/%s/timeout", es->sandbox_id);
	es->keepalive_req = e2b_api_start(es->sb->tmpl, "POST", path, b, on_keepalive_done, es);
	evbuffer_free(b);
}

static void on_alive_checked(struct e2b_api *q, enum e2b_outcome o, long status, const msgpack_object *json,
			     const char *why, void *arg)
{
	struct e2b_sandbox *es = arg;

	es->check_req = NULL;
	if (o == E2B_NOT_FOUND)
		fail(es, SANDBOX_FAIL_LOST, "E2B no longer has the sandbox (404)");
}

void e2b_check_alive(struct e2b_sandbox *es)
{
	char path[128];

	if (es->check_req || es->destroying || !es->sandbox_id[0])
		return;
	snprintf(path, sizeof(path), "/sandboxes/%s", es->sandbox_id);
	es->check_req = e2b_api_start(es->sb->tmpl, "GET", path, NULL, on_alive_checked, es);
}

void e2b_setup_done(struct e2b_sandbox *es, int err, const char *why)
{
	if (err) {
		fail(es, err == -ENOENT ? SANDBOX_FAIL_LOST : SANDBOX_FAIL_TRANSIENT, why);
		return;
	}
	es->ready = true;
	sandbox_backend_ready(es->sb);
}

static int copy_str(const msgpack_object *json, const char *key, char *out, size_t len)
{
	const char *s;
	uint32_t n;

	if (ipc_get_str(json, key, &s, &n) < 0 || n >= len)
		return -EINVAL;
	memcpy(out, s, n);
	out[n] = '\0';
	return 0;
}

static void on_created(struct e2b_api *q, enum e2b_outcome o, long status, const msgpack_object *json,
		       const char *why, void *arg)
{
	struct e2b_sandbox *es = arg;
	const struct template_config *t = es->sb->tmpl;
	uint64_t every_ms = t->e2b_timeout_ms / 3;
	struct timeval tv;

	es->create_req = NULL;
	if (o == E2B_OK && (!json || copy_str(json, "sandboxID", es->sandbox_id, sizeof(es->sandbox_id)) < 0)) {
		o = E2B_FAILED;
		why = "POST /sandboxes: the answer has no sandboxID";
	}
	if (o != E2B_OK) {
		if (es->destroying)
			report_gone(es);
		else
			fail(es, o == E2B_NOT_FOUND ? SANDBOX_FAIL_TRANSIENT : failure_of(o), why);
		return;
	}
	ledger_sandbox_backend_ref(es->sb->id, es->sandbox_id);
	if (es->destroying) {
		start_delete(es);
		return;
	}
	(void)copy_str(json, "envdAccessToken", es->access_token, sizeof(es->access_token));
	(void)copy_str(json, "trafficAccessToken", es->traffic_token, sizeof(es->traffic_token));
	if (copy_str(json, "domain", es->domain, sizeof(es->domain)) < 0 || !es->domain[0])
		snprintf(es->domain, sizeof(es->domain), "%s", t->e2b_domain);
	sb_log_debug(es->sb, "E2B sandbox %s created", es->sandbox_id);
	/* A third of the TTL: two keepalives may fail before it runs out. */
	tv = ms_timeval(every_ms < 500 ? 500 : every_ms);
	es->keepalive_timer = event_new(e2b_base, -1, EV_PERSIST, on_keepalive, es);
	if (!es->keepalive_timer) {
		fail(es, SANDBOX_FAIL_TRANSIENT, "out of memory");
		return;
	}
	event_add(es->keepalive_timer, &tv);
	e2b_run_setup(es);
}

static int put_metadata(struct evbuffer *b, const char *instance, const struct sandbox *sb)
{
	int rc = json_put_key(b, "metadata");

	rc = rc ?: (evbuffer_add(b, "{", 1) < 0 ? -ENOMEM : 0);
	rc = rc ?: json_put_key(b, META_INSTANCE);
	rc = rc ?: json_put_cstr(b, instance);
	rc = rc ?: (evbuffer_add(b, ",", 1) < 0 ? -ENOMEM : 0);
	rc = rc ?: json_put_key(b, META_TEMPLATE);
	rc = rc ?: json_put_cstr(b, sb->tmpl->name);
	rc = rc ?: (evbuffer_add(b, ",", 1) < 0 ? -ENOMEM : 0);
	rc = rc ?: json_put_key(b, META_SANDBOX);
	rc = rc ?: json_put_cstr(b, sb->id);
	return rc ?: (evbuffer_add(b, "}", 1) < 0 ? -ENOMEM : 0);
}

static int e2b_create(struct sandbox *sb)
{
	const struct template_config *t = sb->tmpl;
	struct e2b_sandbox *es = calloc(1, sizeof(*es));
	struct evbuffer *b = evbuffer_new();
	int rc = -ENOMEM;

	if (!es || !b)
		goto out;
	es->sb = sb;
	TAILQ_INIT(&es->ops);
	rc = evbuffer_add(b, "{", 1) < 0 ? -ENOMEM : 0;
	rc = rc ?: json_put_key(b, "templateID");
	rc = rc ?: json_put_cstr(b, t->e2b_template);
	rc = rc ?: (evbuffer_add_printf(b, ",\"timeout\":%llu,", (unsigned long long)ttl_seconds(t)) < 0 ? -ENOMEM : 0);
	rc = rc ?: put_metadata(b, e2b.instance, sb);
	rc = rc ?: (evbuffer_add_printf(b, ",\"allow_internet_access\":%s}",
				       t->network == NETWORK_HOST ? "true" : "false") < 0 ? -ENOMEM : 0);
	if (rc < 0)
		goto out;
	es->create_req = e2b_api_start(t, "POST", "/sandboxes", b, on_created, es);
	if (!es->create_req) {
		rc = -ENOMEM;
		goto out;
	}
	sb->backend_state = es;
	TAILQ_INSERT_TAIL(&e2b_live, es, link);
	es = NULL;
out:
	free(es);
	if (b)
		evbuffer_free(b);
	return rc;
}

static void e2b_destroy(struct sandbox *sb)
{
	struct e2b_sandbox *es = es_of(sb);

	if (!es) {
		/* e2b_create failed before there was anything to kill. */
		sandbox_backend_gone(sb);
		return;
	}
	es->destroying = true;
	if (es->keepalive_timer)
		event_del(es->keepalive_timer);
	if (es->setup_timer)
		event_del(es->setup_timer);
	e2b_api_cancel(es->keepalive_req);
	e2b_api_cancel(es->check_req);
	es->keepalive_req = es->check_req = NULL;
	e2b_run_abandon_all(es);
	/* A create in flight is let finish: only then is there a sandbox to
	 * kill (on_created sees destroying). */
	if (es->create_req)
		return;
	if (!es->sandbox_id[0]) {
		report_gone(es);
		return;
	}
	start_delete(es);
}

static void e2b_release(struct sandbox *sb)
{
	struct e2b_sandbox *es = es_of(sb);

	if (!es)
		return;
	e2b_run_abandon_all(es);
	e2b_api_cancel(es->create_req);
	e2b_api_cancel(es->keepalive_req);
	e2b_api_cancel(es->delete_req);
	e2b_api_cancel(es->check_req);
	if (es->keepalive_timer)
		event_free(es->keepalive_timer);
	if (es->setup_timer)
		event_free(es->setup_timer);
	TAILQ_REMOVE(&e2b_live, es, link);
	free(es);
	sb->backend_state = NULL;
}

/* ---- the sweep --------------------------------------------------------- */

static void sweep_list(const struct template_config *t, const char *next_token);

static void sweep_req_free(struct sweep_req *r)
{
	TAILQ_REMOVE(&e2b.sweeps, r, link);
	e2b.n_sweeps--;
	free(r);
}

static struct sweep_req *sweep_req_new(const struct template_config *t)
{
	struct sweep_req *r;

	if (e2b.n_sweeps >= E2B_SWEEP_MAX_INFLIGHT || !(r = calloc(1, sizeof(*r))))
		return NULL;
	r->t = t;
	TAILQ_INSERT_TAIL(&e2b.sweeps, r, link);
	e2b.n_sweeps++;
	return r;
}

static void on_orphan_killed(struct e2b_api *q, enum e2b_outcome o, long status, const msgpack_object *json,
			     const char *why, void *arg)
{
	struct sweep_req *r = arg;

	if (o == E2B_OK || o == E2B_NOT_FOUND)
		e2b.orphans_killed++;
	else
		log_warn("template %s: killing an orphaned E2B sandbox failed: %s", r->t->name, why);
	sweep_req_free(r);
}

/* Ours and known: a live sandbox carries its label, and either is still
 * being created (its create answer may not be here yet) or has this id.
 * Anything else with our instance label is an orphan: a sandbox of an
 * earlier run, or a create that was answered twice. */
static bool known(const char *sandbox_id, const char *label, uint32_t label_len)
{
	struct e2b_sandbox *es;

	TAILQ_FOREACH(es, &e2b_live, link) {
		if (!es->sandbox_id[0] && strlen(es->sb->id) == label_len &&
		    !memcmp(es->sb->id, label, label_len))
			return true;
		if (!strcmp(es->sandbox_id, sandbox_id))
			return true;
	}
	return false;
}

static void sweep_one(const struct template_config *t, const msgpack_object *s)
{
	const msgpack_object *meta = ipc_map_get(s, "metadata");
	const char *inst, *label = "";
	uint32_t inst_len, label_len = 0;
	char id[64], path[128];
	struct sweep_req *r;

	if (copy_str(s, "sandboxID", id, sizeof(id)) < 0 ||
	    ipc_get_str(meta, META_INSTANCE, &inst, &inst_len) < 0)
		return;
	/* The server filtered on the label; sandboxes of others are never
	 * touched, whatever a server answers. */
	if (inst_len != strlen(e2b.instance) || memcmp(inst, e2b.instance, inst_len))
		return;
	(void)ipc_get_str(meta, META_SANDBOX, &label, &label_len);
	if (known(id, label, label_len))
		return;
	r = sweep_req_new(t);
	if (!r)
		return;
	log_info("template %s: killing E2B sandbox %s, labelled as ours but unknown (%.*s)", t->name, id,
		 (int)label_len, label);
	snprintf(path, sizeof(path), "/sandboxes/%s", id);
	r->q = e2b_api_start(t, "DELETE", path, NULL, on_orphan_killed, r);
	if (!r->q)
		sweep_req_free(r);
}

static void on_listed(struct e2b_api *q, enum e2b_outcome o, long status, const msgpack_object *json,
		      const char *why, void *arg)
{
	struct sweep_req *r = arg;
	const struct template_config *t = r->t;
	const char *next = e2b_api_header(q, "X-Next-Token");
	char token[512];

	if (o != E2B_OK || !json || json->type != MSGPACK_OBJECT_ARRAY) {
		log_warn("template %s: listing E2B sandboxes for the sweep failed: %s", t->name,
			 o == E2B_OK ? "the answer is not an array" : why);
		sweep_req_free(r);
		return;
	}
	for (uint32_t i = 0; i < json->via.array.size; i++)
		sweep_one(t, &json->via.array.ptr[i]);
	snprintf(token, sizeof(token), "%s", next && *next ? next : "");
	sweep_req_free(r);
	if (token[0])
		sweep_list(t, token);
}

static void sweep_list(const struct template_config *t, const char *next_token)
{
	char path[1024], *enc;
	struct sweep_req *r = sweep_req_new(t);
	size_t n;

	if (!r)
		return;
	/* metadata=<urlencoded "k=v">: '=' encodes as %3D. */
	n = (size_t)snprintf(path, sizeof(path), "/v2/sandboxes?metadata=" META_INSTANCE "%%3D");
	enc = curl_easy_escape(NULL, e2b.instance, 0);
	n += (size_t)snprintf(path + n, sizeof(path) - n, "%s&state=running&limit=100", enc ? enc : "");
	curl_free(enc);
	if (next_token && n < sizeof(path)) {
		enc = curl_easy_escape(NULL, next_token, 0);
		snprintf(path + n, sizeof(path) - n, "&nextToken=%s", enc ? enc : "");
		curl_free(enc);
	}
	r->q = e2b_api_start(t, "GET", path, NULL, on_listed, r);
	if (!r->q)
		sweep_req_free(r);
}

static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
	const struct config *cfg = e2b.cfg;

	/* Templates sharing an API and key would list the same sandboxes. */
	for (unsigned i = 0; i < cfg->n_templates; i++) {
		const struct template_config *t = cfg->templates[i];
		bool seen = false;

		if (t->backend != BACKEND_E2B)
			continue;
		for (unsigned j = 0; j < i && !seen; j++) {
			const struct template_config *u = cfg->templates[j];
			char a[E2B_URL_MAX], b[E2B_URL_MAX];

			seen = u->backend == BACKEND_E2B && !strcmp(u->api_key_env, t->api_key_env) &&
			       e2b_api_base(t, a, sizeof(a)) == 0 && e2b_api_base(u, b, sizeof(b)) == 0 &&
			       !strcmp(a, b);
		}
		if (!seen)
			sweep_list(t, NULL);
	}
}

int e2b_backend_init(struct event_base *base, const struct config *cfg, const char *instance)
{
	struct timeval tv = ms_timeval(E2B_SWEEP_INTERVAL_MS);

	e2b_base = base;
	e2b.cfg = cfg;
	snprintf(e2b.instance, sizeof(e2b.instance), "%s", instance);
	e2b.sweep_timer = event_new(base, -1, EV_PERSIST, on_sweep, NULL);
	if (!e2b.sweep_timer)
		return -ENOMEM;
	event_add(e2b.sweep_timer, &tv);
	/* At start: what an earlier run of this daemon left behind. */
	event_active(e2b.sweep_timer, EV_TIMEOUT, 0);
	return 0;
}

void e2b_backend_reconfigure(const struct config *cfg)
{
	struct sweep_req *r;

	/* Sweep requests point at the old templates. */
	while ((r = TAILQ_FIRST(&e2b.sweeps))) {
		e2b_api_cancel(r->q);
		sweep_req_free(r);
	}
	e2b.cfg = cfg;
}

void e2b_backend_shutdown(void)
{
	struct sweep_req *r;

	while ((r = TAILQ_FIRST(&e2b.sweeps))) {
		e2b_api_cancel(r->q);
		sweep_req_free(r);
	}
	if (e2b.sweep_timer)
		event_free(e2b.sweep_timer);
	e2b.sweep_timer = NULL;
}

const struct sandbox_backend e2b_backend = {
	.name = "e2b",
	.create = e2b_create,
	.exec = e2b_run_exec,
	.exec_cancel = e2b_run_exec_cancel,
	.destroy = e2b_destroy,
	.release = e2b_release,
	.call = e2b_run_call,
	.call_cancel = e2b_run_call_cancel,
};
