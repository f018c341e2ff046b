#include "autoconfig.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "daemon/clock.h"
#include "daemon/log.h"
#include "ipc/codec.h"
#include "sandbox/e2b_internal.h"
#include "sandbox/json.h"

/* A request gives up when its next try would start later than this. */
#define E2B_RETRY_BUDGET_MS 30000
#define E2B_MAX_ATTEMPTS 6
#define E2B_BACKOFF_MIN_MS 200
#define E2B_REQUEST_TIMEOUT_MS 20000

struct e2b_api {
	const struct template_config *t;
	char method[8];
	char url[E2B_URL_MAX];
	char *body; /* JSON, kept for retries */
	size_t body_len;
	struct http_request *http;
	struct event *retry_timer;
	unsigned attempts;
	uint64_t deadline_us;
	e2b_api_cb cb;
	void *arg;
};

static void api_send(struct e2b_api *q);

int e2b_api_base(const struct template_config *t, char *out, size_t len)
{
	size_t n;
	int w;

	if (t->e2b_api_url && *t->e2b_api_url)
		w = snprintf(out, len, "%s", t->e2b_api_url);
	else
		w = snprintf(out, len, "https://api.%s", t->e2b_domain);
	if (w < 0 || (size_t)w >= len)
		return -ENAMETOOLONG;
	n = (size_t)w;
	while (n > 0 && out[n - 1] == '/')
		out[--n] = '\0';
	return 0;
}

const char *e2b_api_key(const struct template_config *t)
{
	const char *k = getenv(t->api_key_env);

	return k && *k ? k : NULL;
}

static void api_free(struct e2b_api *q)
{
	http_request_free(q->http);
	if (q->retry_timer)
		event_free(q->retry_timer);
	free(q->body);
	free(q);
}

void e2b_api_cancel(struct e2b_api *q)
{
	if (q)
		api_free(q);
}

const char *e2b_api_header(const struct e2b_api *q, const char *name)
{
	return q->http ? http_response_header(q->http, name) : NULL;
}

static void finish(struct e2b_api *q, enum e2b_outcome o, long status, const char *why)
{
	msgpack_unpacked parsed;
	const msgpack_object *json = NULL;
	struct evbuffer *b = q->http ? http_response_body(q->http) : NULL;
	size_t n = b ? evbuffer_get_length(b) : 0;
	char msg[800];

	if (n && json_parse((const char *)evbuffer_pullup(b, -1), n, &parsed) == 0)
		json = &parsed.data;
	else
		n = 0;
	if (!why) {
		const char *m;
		uint32_t mlen;

		/* E2B's errors are {code, message}. */
		if (json && ipc_get_str(json, "message", &m, &mlen) == 0)
			snprintf(msg, sizeof(msg), "%s %.300s: HTTP %ld: %.*s", q->method, q->url, status,
				 (int)(mlen > 300 ? 300 : mlen), m);
		else
			snprintf(msg, sizeof(msg), "%s %.300s: HTTP %ld", q->method, q->url, status);
		why = msg;
	}
	if (o == E2B_OK && status != 204 && !json && !(q->http && evbuffer_get_length(b) == 0)) {
		o = E2B_FAILED;
		snprintf(msg, sizeof(msg), "%s %.300s: the answer is not JSON", q->method, q->url);
		why = msg;
	}
	q->cb(q, o, status, json, why, q->arg);
	if (n)
		msgpack_unpacked_destroy(&parsed);
	api_free(q);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
	api_send(arg);
}

/* Retries after delay_ms if the budget allows; false when it does not. */
static bool retry_later(struct e2b_api *q, uint64_t delay_ms)
{
	struct timeval tv = ms_timeval(delay_ms);

	if (q->attempts >= E2B_MAX_ATTEMPTS || monotonic_us() + delay_ms * 1000 > q->deadline_us)
		return false;
	if (!q->retry_timer && !(q->retry_timer = evtimer_new(e2b_base, on_retry, q)))
		return false;
	http_request_free(q->http);
	q->http = NULL;
	evtimer_add(q->retry_timer, &tv);
	return true;
}

static uint64_t backoff_ms(const struct e2b_api *q)
{
	unsigned shift = q->attempts > 8 ? 8 : q->attempts - 1;
	uint64_t ms = (uint64_t)E2B_BACKOFF_MIN_MS << shift;
	uint32_t rnd = 0;

	/* Full jitter: many sandboxes failing together retry apart. */
	(void)!getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK);
	return ms / 2 + rnd % (ms / 2 + 1);
}

static void on_done(struct http_request *r, int err, long status, void *arg)
{
	struct e2b_api *q = arg;
	char why[800];

	if (err < 0) {
		if (retry_later(q, backoff_ms(q)))
			return;
		snprintf(why, sizeof(why), "%s %.300s: %s (after %u tries)", q->method, q->url, strerror(-err),
			 q->attempts);
		finish(q, E2B_UNREACHABLE, 0, why);
		return;
	}
	if (status == 429 || status == 503) {
		unsigned ra = http_response_retry_after(r);

		if (retry_later(q, ra ? ra * 1000ull : backoff_ms(q)))
			return;
	} else if (status >= 500) {
		if (retry_later(q, backoff_ms(q)))
			return;
	}
	if (status >= 200 && status < 300)
		finish(q, E2B_OK, status, NULL);
	else if (status == 404)
		finish(q, E2B_NOT_FOUND, status, NULL);
	else if (status == 401 || status == 403)
		finish(q, E2B_DENIED, status, NULL);
	else
		finish(q, E2B_FAILED, status, NULL);
}

static void api_send(struct e2b_api *q)
{
	const char *key = e2b_api_key(q->t);
	char h[1024];
	struct evbuffer *b;
	int rc = -ENOMEM;

	q->attempts++;
	if (!key) {
		snprintf(h, sizeof(h), "environment variable %s (api_key_env) is not set", q->t->api_key_env);
		q->cb(q, E2B_DENIED, 0, NULL, h, q->arg);
		api_free(q);
		return;
	}
	q->http = http_request_new(q->method, q->url);
	if (!q->http)
		goto fail;
	snprintf(h, sizeof(h), "X-API-Key: %s", key);
	rc = http_request_header(q->http, h);
	if (rc == 0 && q->body) {
		b = evbuffer_new();
		rc = b && evbuffer_add(b, q->body, q->body_len) == 0 ? 0 : -ENOMEM;
		if (rc == 0)
			rc = http_request_body(q->http, b, "application/json");
		if (b)
			evbuffer_free(b);
	}
	http_request_timeout(q->http, E2B_REQUEST_TIMEOUT_MS, 0);
	if (rc == 0)
		rc = http_request_start(q->http, NULL, on_done, q);
	if (rc == 0)
		return;
fail:
	snprintf(h, sizeof(h), "%s %.300s: %s", q->method, q->url, strerror(-rc));
	q->cb(q, E2B_FAILED, 0, NULL, h, q->arg);
	api_free(q);
}

struct e2b_api *e2b_api_start(const struct template_config *t, const char *method, const char *path,
			      struct evbuffer *json_body, e2b_api_cb cb, void *arg)
{
	struct e2b_api *q = calloc(1, sizeof(*q));
	char base[E2B_URL_MAX];

	if (!q)
		return NULL;
	q->t = t;
	q->cb = cb;
	q->arg = arg;
	snprintf(q->method, sizeof(q->method), "%s", method);
	if (e2b_api_base(t, base, sizeof(base)) < 0 ||
	    (size_t)snprintf(q->url, sizeof(q->url), "%s%s", base, path) >= sizeof(q->url))
		goto fail;
	if (json_body) {
		q->body_len = evbuffer_get_length(json_body);
		q->body = malloc(q->body_len + 1);
		if (!q->body || evbuffer_remove(json_body, q->body, q->body_len) != (int)q->body_len)
			goto fail;
	}
	q->deadline_us = monotonic_us() + E2B_RETRY_BUDGET_MS * 1000ull;
	/* Sent from the loop, never from inside the caller: cb may free the
	 * caller's state, and the caller must first store the pointer. */
	q->retry_timer = evtimer_new(e2b_base, on_retry, q);
	if (!q->retry_timer)
		goto fail;
	event_active(q->retry_timer, EV_TIMEOUT, 0);
	return q;
fail:
	api_free(q);
	return NULL;
}
