#include "autoconfig.h"

#include "sandbox/http.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

#include "daemon/clock.h"
#include "daemon/log.h"

/* Answer headers kept per request (E2B sends a handful). */
#define HTTP_MAX_HEADERS 32
#define HTTP_MAX_HEADER_BYTES 8192
#define HTTP_CONNECT_TIMEOUT_MS 10000

struct http_request {
	CURL *easy;
	char *method;
	char *url;
	struct curl_slist *headers;
	struct evbuffer *body_out; /* what we send, linearised at start */
	struct evbuffer *body_in;  /* the answer, when not streamed */
	uint64_t timeout_ms, idle_ms;
	http_data_cb on_data;
	http_done_cb on_done;
	void *arg;
	bool running;
	bool pending; /* on http.pending, to be added to the multi handle */
	bool aborted; /* on_data said stop */
	TAILQ_ENTRY(http_request) pending_link;
	char *resp_headers[HTTP_MAX_HEADERS];
	unsigned n_resp_headers;
	size_t resp_header_bytes;
};

/* Per socket curl watches: one libevent event. */
struct http_socket {
	curl_socket_t fd;
	struct event *ev;
};

static struct {
	struct event_base *base;
	CURLM *multi;
	struct event *timer;
	/* libcurl refuses new transfers from inside its own callbacks (an
	 * exec's output may ask for a kill): they start from the loop. */
	struct event *kick;
	TAILQ_HEAD(, http_request) pending;
	bool global_init;
} http = { .pending = TAILQ_HEAD_INITIALIZER(http.pending) };

static void check_done(void)
{
	CURLMsg *msg;
	int left;

	while ((msg = curl_multi_info_read(http.multi, &left))) {
		struct http_request *r;
		long status = 0;
		int err = 0;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
		curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
		switch (msg->data.result) {
		case CURLE_OK:
			break;
		case CURLE_OPERATION_TIMEDOUT:
			err = -ETIMEDOUT;
			break;
		case CURLE_COULDNT_CONNECT:
			err = -ECONNREFUSED;
			break;
		case CURLE_COULDNT_RESOLVE_HOST:
		case CURLE_COULDNT_RESOLVE_PROXY:
			err = -EHOSTUNREACH;
			break;
		case CURLE_WRITE_ERROR:
			err = r->aborted ? -ECANCELED : -EMSGSIZE;
			break;
		case CURLE_GOT_NOTHING:
		case CURLE_RECV_ERROR:
		case CURLE_SEND_ERROR:
		case CURLE_PARTIAL_FILE:
			err = -ECONNRESET;
			break;
		default:
			err = -EIO;
			break;
		}
		curl_multi_remove_handle(http.multi, r->easy);
		r->running = false;
		r->on_done(r, err, err ? 0 : status, r->arg);
	}
}

static void on_socket_event(evutil_socket_t fd, short what, void *arg)
{
	int action = (what & EV_READ ? CURL_CSELECT_IN : 0) | (what & EV_WRITE ? CURL_CSELECT_OUT : 0);
	int running;

	curl_multi_socket_action(http.multi, fd, action, &running);
	check_done();
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	int running;

	curl_multi_socket_action(http.multi, CURL_SOCKET_TIMEOUT, 0, &running);
	check_done();
}

static int socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *sockp)
{
	struct http_socket *s = sockp;
	short ev = (what & CURL_POLL_IN ? EV_READ : 0) | (what & CURL_POLL_OUT ? EV_WRITE : 0);

	if (what == CURL_POLL_REMOVE) {
		if (s) {
			event_free(s->ev);
			free(s);
			curl_multi_assign(http.multi, fd, NULL);
		}
		return 0;
	}
	if (!s) {
		s = calloc(1, sizeof(*s));
		if (!s)
			return -1;
		s->fd = fd;
		curl_multi_assign(http.multi, fd, s);
	} else {
		event_free(s->ev);
	}
	s->ev = event_new(http.base, fd, ev | EV_PERSIST, on_socket_event, NULL);
	if (!s->ev)
		return -1;
	event_add(s->ev, NULL);
	return 0;
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	struct timeval tv;

	if (timeout_ms < 0) {
		evtimer_del(http.timer);
		return 0;
	}
	tv = ms_timeval((uint64_t)timeout_ms);
	evtimer_add(http.timer, &tv);
	return 0;
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
	struct http_request *r;
	int running;

	while ((r = TAILQ_FIRST(&http.pending))) {
		TAILQ_REMOVE(&http.pending, r, pending_link);
		r->pending = false;
		if (curl_multi_add_handle(http.multi, r->easy) != CURLM_OK) {
			r->on_done(r, -ENOMEM, 0, r->arg);
			continue;
		}
		r->running = true;
	}
	curl_multi_socket_action(http.multi, CURL_SOCKET_TIMEOUT, 0, &running);
	check_done();
}

int http_init(struct event_base *base)
{
	if (!http.global_init) {
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
			return -EIO;
		http.global_init = true;
	}
	http.base = base;
	http.multi = curl_multi_init();
	http.timer = evtimer_new(base, on_timer, NULL);
	http.kick = event_new(base, -1, 0, on_kick, NULL);
	if (!http.multi || !http.timer || !http.kick) {
		http_shutdown();
		return -ENOMEM;
	}
	curl_multi_setopt(http.multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
	curl_multi_setopt(http.multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	/* Bounded cache of idle connections, a few per E2B host. */
	curl_multi_setopt(http.multi, CURLMOPT_MAXCONNECTS, 64L);
	return 0;
}

void http_shutdown(void)
{
	if (http.multi)
		curl_multi_cleanup(http.multi);
	if (http.timer)
		event_free(http.timer);
	if (http.kick)
		event_free(http.kick);
	http.multi = NULL;
	http.timer = NULL;
	http.kick = NULL;
	if (http.global_init) {
		curl_global_cleanup();
		http.global_init = false;
	}
}

struct http_request *http_request_new(const char *method, const char *url)
{
	struct http_request *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->method = strdup(method);
	r->url = strdup(url);
	r->body_in = evbuffer_new();
	r->timeout_ms = 30000;
	if (!r->method || !r->url || !r->body_in) {
		http_request_free(r);
		return NULL;
	}
	return r;
}

int http_request_header(struct http_request *r, const char *header)
{
	struct curl_slist *l = curl_slist_append(r->headers, header);

	if (!l)
		return -ENOMEM;
	r->headers = l;
	return 0;
}

int http_request_body(struct http_request *r, struct evbuffer *body, const char *content_type)
{
	char h[128];

	if (!r->body_out && !(r->body_out = evbuffer_new()))
		return -ENOMEM;
	if (evbuffer_add_buffer(r->body_out, body) < 0)
		return -ENOMEM;
	snprintf(h, sizeof(h), "Content-Type: %s", content_type);
	return http_request_header(r, h);
}

void http_request_timeout(struct http_request *r, uint64_t timeout_ms, uint64_t idle_ms)
{
	r->timeout_ms = timeout_ms;
	r->idle_ms = idle_ms;
}

static size_t write_cb(char *data, size_t size, size_t n, void *userp)
{
	struct http_request *r = userp;
	size_t len = size * n;

	if (r->on_data) {
		if (!r->on_data(r, data, len, r->arg)) {
			r->aborted = true;
			return 0;
		}
		return len;
	}
	if (evbuffer_get_length(r->body_in) + len > HTTP_MAX_BODY || evbuffer_add(r->body_in, data, len) < 0)
		return 0;
	return len;
}

static size_t header_cb(char *data, size_t size, size_t n, void *userp)
{
	struct http_request *r = userp;
	size_t len = size * n, l = len;
	char *h;

	/* A new status line (after a 100 Continue, a redirect) starts over. */
	if (len > 5 && !memcmp(data, "HTTP/", 5)) {
		for (unsigned i = 0; i < r->n_resp_headers; i++)
			free(r->resp_headers[i]);
		r->n_resp_headers = 0;
		r->resp_header_bytes = 0;
		return len;
	}
	while (l > 0 && (data[l - 1] == '\n' || data[l - 1] == '\r'))
		l--;
	if (l == 0 || r->n_resp_headers == HTTP_MAX_HEADERS ||
	    r->resp_header_bytes + l > HTTP_MAX_HEADER_BYTES)
		return len;
	h = strndup(data, l);
	if (!h)
		return 0;
	r->resp_headers[r->n_resp_headers++] = h;
	r->resp_header_bytes += l;
	return len;
}

int http_request_start(struct http_request *r, http_data_cb on_data, http_done_cb on_done, void *arg)
{
	if (!http.multi || r->running || r->pending)
		return -ENOTCONN;
	r->easy = r->easy ? r->easy : curl_easy_init();
	if (!r->easy)
		return -ENOMEM;
	r->on_data = on_data;
	r->on_done = on_done;
	r->arg = arg;
	curl_easy_setopt(r->easy, CURLOPT_URL, r->url);
	curl_easy_setopt(r->easy, CURLOPT_PRIVATE, r);
	curl_easy_setopt(r->easy, CURLOPT_CUSTOMREQUEST, r->method);
	if (!strcmp(r->method, "GET"))
		curl_easy_setopt(r->easy, CURLOPT_HTTPGET, 1L);
	if (r->body_out) {
		size_t n = evbuffer_get_length(r->body_out);

		curl_easy_setopt(r->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)n);
		curl_easy_setopt(r->easy, CURLOPT_POSTFIELDS, n ? (char *)evbuffer_pullup(r->body_out, -1) : "");
	} else if (strcmp(r->method, "GET") && strcmp(r->method, "DELETE")) {
		curl_easy_setopt(r->easy, CURLOPT_POSTFIELDSIZE, 0L);
		curl_easy_setopt(r->easy, CURLOPT_POSTFIELDS, "");
	}
	/* No "Expect: 100-continue" round trip on bodies. */
	http_request_header(r, "Expect:");
	curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, r->headers);
	curl_easy_setopt(r->easy, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(r->easy, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(r->easy, CURLOPT_HEADERFUNCTION, header_cb);
	curl_easy_setopt(r->easy, CURLOPT_HEADERDATA, r);
	curl_easy_setopt(r->easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(r->easy, CURLOPT_CONNECTTIMEOUT_MS, (long)HTTP_CONNECT_TIMEOUT_MS);
	/* E2B interrupts a cell when its connection closes: HTTP/1.1 gives a
	 * stream a connection of its own (the SDK pins it for this). */
	curl_easy_setopt(r->easy, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
#if CURL_AT_LEAST_VERSION(7, 85, 0)
	curl_easy_setopt(r->easy, CURLOPT_PROTOCOLS_STR, "http,https");
#else
	curl_easy_setopt(r->easy, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
	curl_easy_setopt(r->easy, CURLOPT_ACCEPT_ENCODING, "");
	if (on_data) {
		curl_easy_setopt(r->easy, CURLOPT_TIMEOUT_MS, 0L);
		if (r->idle_ms) {
			/* Less than a byte a second for idle_ms: the stream died. */
			curl_easy_setopt(r->easy, CURLOPT_LOW_SPEED_LIMIT, 1L);
			curl_easy_setopt(r->easy, CURLOPT_LOW_SPEED_TIME,
					 (long)((r->idle_ms + 999) / 1000));
		}
	} else {
		curl_easy_setopt(r->easy, CURLOPT_TIMEOUT_MS, (long)r->timeout_ms);
	}
	r->pending = true;
	TAILQ_INSERT_TAIL(&http.pending, r, pending_link);
	event_active(http.kick, 0, 0);
	return 0;
}

void http_request_free(struct http_request *r)
{
	if (!r)
		return;
	if (r->running)
		curl_multi_remove_handle(http.multi, r->easy);
	if (r->pending)
		TAILQ_REMOVE(&http.pending, r, pending_link);
	if (r->easy)
		curl_easy_cleanup(r->easy);
	curl_slist_free_all(r->headers);
	for (unsigned i = 0; i < r->n_resp_headers; i++)
		free(r->resp_headers[i]);
	if (r->body_out)
		evbuffer_free(r->body_out);
	if (r->body_in)
		evbuffer_free(r->body_in);
	free(r->method);
	free(r->url);
	free(r);
}

struct evbuffer *http_response_body(struct http_request *r)
{
	return r->body_in;
}

const char *http_response_header(const struct http_request *r, const char *name)
{
	size_t n = strlen(name);

	for (unsigned i = 0; i < r->n_resp_headers; i++) {
		const char *h = r->resp_headers[i];

		if (!strncasecmp(h, name, n) && h[n] == ':') {
			h += n + 1;
			while (*h == ' ' || *h == '\t')
				h++;
			return h;
		}
	}
	return NULL;
}

unsigned http_response_retry_after(const struct http_request *r)
{
	const char *v = http_response_header(r, "Retry-After");
	unsigned long s;
	char *end;

	/* The HTTP-date form is not used by E2B; it counts as none. */
	if (!v || !isdigit((unsigned char)*v))
		return 0;
	s = strtoul(v, &end, 10);
	while (*end == ' ' || *end == '\t')
		end++;
	if (*end != '\0')
		return 0;
	return s < 3600 ? (unsigned)s : 3600;
}
