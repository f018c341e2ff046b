/*
 * The e2b backend: sandboxes in E2B's cloud (docs/E2B.md), created,
 * kept alive and killed through E2B's control-plane API, and driven
 * through the code interpreter and envd inside each one, all over the
 * HTTP client on the daemon's loop (sandbox/http.h).
 *
 * e2b.c owns the lifecycle (create, keepalive, destroy, the sweep of
 * sandboxes we lost track of) and struct e2b_sandbox; e2b_run.c runs
 * execs, code and file requests in them; e2b_api.c makes the retried
 * control-plane requests both use.
 */
#ifndef SANDPOOL_SANDBOX_E2B_H
#define SANDPOOL_SANDBOX_E2B_H

#include "daemon/config.h"
#include "sandbox/sandbox.h"

struct event_base;

/* instance labels our sandboxes (metadata sandpool_instance) so that a
 * later run of the same daemon finds the ones it lost; copied. */
int e2b_backend_init(struct event_base *base, const struct config *cfg, const char *instance)
	__attribute__((warn_unused_result));
/* After a reload: the configuration the sweep reads. */
void e2b_backend_reconfigure(const struct config *cfg);
/* Stops the sweep; in-flight requests are cancelled by http_shutdown(). */
void e2b_backend_shutdown(void);

extern const struct sandbox_backend e2b_backend;

#endif
