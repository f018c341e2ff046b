/*
 * HTTP client on the daemon's event loop: libcurl's multi interface
 * driven by libevent (curl_multi_socket_action on socket events and one
 * timer), so no request ever blocks the loop, not even its DNS lookup
 * (libcurl's threaded resolver). One multi handle serves every request,
 * which keeps connections alive and reuses them per host.
 *
 * Owns the multi handle, its socket events and its timer. A request is
 * owned by its caller, who allocates it with http_request_new(), starts
 * it, and frees it (after on_done, or to abandon it: freeing a running
 * request cancels it without a callback and closes its connection, which
 * is how E2B's streams are interrupted).
 */
#ifndef SANDPOOL_SANDBOX_HTTP_H
#define SANDPOOL_SANDBOX_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct evbuffer;
struct http_request;

/* Answers larger than this (when not streamed) fail the request. */
#define HTTP_MAX_BODY (64u << 20)

/*
 * on_data: a streamed request's body as it arrives; returning false
 * aborts it (on_done follows with -ECANCELED). Must not free the request.
 * on_done: exactly once per started request: err 0 and the HTTP status
 * (any status, 4xx and 5xx included), or err < 0 when no complete answer
 * came (-ETIMEDOUT, -ECONNREFUSED, -ECONNRESET, -EHOSTUNREACH, -EMSGSIZE,
 * -ECANCELED, -EIO); it may free the request.
 */
typedef bool (*http_data_cb)(struct http_request *r, const char *data, size_t len, void *arg);
typedef void (*http_done_cb)(struct http_request *r, int err, long status, void *arg);

int http_init(struct event_base *base) __attribute__((warn_unused_result));
/* Cancels what still runs (no callbacks) and frees the multi handle. */
void http_shutdown(void);

/* method "GET", "POST", "DELETE"; url is copied. NULL when out of memory. */
struct http_request *http_request_new(const char *method, const char *url);
/* "Name: value"; copied. */
int http_request_header(struct http_request *r, const char *header);
/* The body to send; its bytes are moved out of body. */
int http_request_body(struct http_request *r, struct evbuffer *body, const char *content_type);
/*
 * timeout_ms bounds the whole exchange; a streamed request (on_data set)
 * is instead bounded by idle_ms without a byte (0: none) and may last.
 */
void http_request_timeout(struct http_request *r, uint64_t timeout_ms, uint64_t idle_ms);
int http_request_start(struct http_request *r, http_data_cb on_data, http_done_cb on_done, void *arg)
	__attribute__((warn_unused_result));
void http_request_free(struct http_request *r);

/* After on_done: the answer's body (not streamed), and its Retry-After in
 * seconds (0: none or not a number of seconds). */
struct evbuffer *http_response_body(struct http_request *r);
unsigned http_response_retry_after(const struct http_request *r);
/* A header of the answer (first match, case-insensitive), NUL-terminated,
 * valid until the request is freed; NULL when absent. */
const char *http_response_header(const struct http_request *r, const char *name);

#endif
