#include "autoconfig.h"

#include "sandbox/sandbox.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>

#include "ipc/sandpool.h"

const char *sandbox_state_name(enum sandbox_state st)
{
	switch (st) {
	case SANDBOX_CREATING:
		return "creating";
	case SANDBOX_WARM:
		return "warm";
	case SANDBOX_LEASED:
		return "leased";
	case SANDBOX_HELD:
		return "held";
	case SANDBOX_DESTROYING:
		return "destroying";
	case SANDBOX_DEAD:
		return "dead";
	}
	return "?";
}

const char *exec_limit_name(enum exec_limit l)
{
	switch (l) {
	case EXEC_LIMIT_TIMEOUT:
		return "timeout";
	case EXEC_LIMIT_OUTPUT:
		return "output_limit";
	case EXEC_LIMIT_OOM:
		return "oom_killed";
	case EXEC_LIMIT_PIDS:
		return "pids_limit";
	case EXEC_LIMIT_NONE:
		break;
	}
	return NULL;
}

struct sandbox *sandbox_new(struct pool *pool, const struct template_config *tmpl,
			    const struct sandbox_backend *backend)
{
	struct sandbox *sb = calloc(1, sizeof(*sb));
	uint64_t rnd;

	if (!sb)
		return NULL;
	/* Random ids keep sandboxes of successive daemon runs apart in logs,
	 * cgroup names and the ledger. */
	if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
		rnd = monotonic_us() ^ ((uint64_t)(uintptr_t)sb << 16);
	snprintf(sb->id, sizeof(sb->id), "sb-%016" PRIx64, rnd);
	sb->state = SANDBOX_CREATING;
	sb->pool = pool;
	sb->tmpl = tmpl;
	sb->backend = backend;
	TAILQ_INIT(&sb->execs);
	sb->created_us = monotonic_us();
	return sb;
}

void sandbox_free(struct sandbox *sb)
{
	if (!sb)
		return;
	if (sb->backend_state)
		sb->backend->release(sb);
	free(sb);
}

int sandbox_exec_start(struct sandbox *sb, struct sandbox_exec *ex, const struct exec_request *req)
{
	int rc;

	if (sb->state != SANDBOX_LEASED)
		return -ESRCH;
	rc = sb->backend->exec(sb, ex, req);
	if (rc < 0)
		return rc;
	ex->sb = sb;
	TAILQ_INSERT_TAIL(&sb->execs, ex, sb_link);
	sb->n_execs++;
	return 0;
}

void sandbox_exec_cancel(struct sandbox_exec *ex)
{
	if (ex->sb)
		ex->sb->backend->exec_cancel(ex->sb, ex);
}

void sandbox_exec_finish(struct sandbox_exec *ex, const struct exec_result *res, int errcode,
			 const char *errmsg)
{
	struct sandbox *sb = ex->sb;

	if (sb) {
		TAILQ_REMOVE(&sb->execs, ex, sb_link);
		sb->n_execs--;
		ex->sb = NULL;
	}
	ex->on_done(ex, res, errcode, errmsg);
}

void sandbox_execs_abort(struct sandbox *sb, int errcode, const char *msg)
{
	struct sandbox_exec *ex;

	while ((ex = TAILQ_FIRST(&sb->execs)))
		sandbox_exec_finish(ex, NULL, errcode, msg);
}
