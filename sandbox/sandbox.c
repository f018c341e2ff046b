#include "autoconfig.h"

#include "sandbox/sandbox.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
	TAILQ_INIT(&sb->calls);
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
	struct sandbox_call *c;

	while ((ex = TAILQ_FIRST(&sb->execs)))
		sandbox_exec_finish(ex, NULL, errcode, msg);
	while ((c = TAILQ_FIRST(&sb->calls)))
		sandbox_call_finish(c, NULL, errcode, msg);
}

int sandbox_call_start(struct sandbox *sb, struct sandbox_call *c, const char *method, const void *params,
		       size_t len)
{
	int rc;

	if (sb->state != SANDBOX_LEASED)
		return -ESRCH;
	if (!sb->backend->call)
		return -ENOTSUP;
	rc = sb->backend->call(sb, c, method, params, len);
	if (rc < 0)
		return rc;
	c->sb = sb;
	TAILQ_INSERT_TAIL(&sb->calls, c, sb_link);
	sb->n_calls++;
	return 0;
}

void sandbox_call_cancel(struct sandbox_call *c)
{
	if (c->sb && c->sb->backend->call_cancel)
		c->sb->backend->call_cancel(c->sb, c);
}

void sandbox_call_finish(struct sandbox_call *c, const struct msgpack_object *result, int errcode,
			 const char *errmsg)
{
	struct sandbox *sb = c->sb;

	if (sb) {
		TAILQ_REMOVE(&sb->calls, c, sb_link);
		sb->n_calls--;
		c->sb = NULL;
	}
	c->on_done(c, result, errcode, errmsg);
}

const char *const sandbox_base_env[] = {
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"HOME=/workspace",
	"LANG=C.UTF-8",
	"USER=sandbox",
	"TMPDIR=/tmp",
	NULL,
};

static size_t env_key_len(const char *kv)
{
	return strcspn(kv, "=");
}

const char **sandbox_template_env(const struct template_config *t)
{
	size_t n_base = 0, n = 0;
	const char **env;

	while (sandbox_base_env[n_base])
		n_base++;
	env = calloc(n_base + t->n_env + 1, sizeof(*env));
	if (!env)
		return NULL;
	for (size_t i = 0; i < n_base; i++) {
		size_t kl = env_key_len(sandbox_base_env[i]);
		bool replaced = false;

		for (unsigned j = 0; j < t->n_env && !replaced; j++)
			replaced = env_key_len(t->env[j]) == kl && !memcmp(t->env[j], sandbox_base_env[i], kl);
		if (!replaced)
			env[n++] = sandbox_base_env[i];
	}
	for (unsigned j = 0; j < t->n_env; j++)
		env[n++] = t->env[j];
	return env;
}

struct sandbox_exec *sandbox_find_exec(struct sandbox *sb, uint64_t id)
{
	struct sandbox_exec *ex;

	TAILQ_FOREACH(ex, &sb->execs, sb_link)
		if (ex->id == id)
			return ex;
	return NULL;
}

struct sandbox_call *sandbox_find_call(struct sandbox *sb, uint64_t id)
{
	struct sandbox_call *c;

	TAILQ_FOREACH(c, &sb->calls, sb_link)
		if (c->id == id)
			return c;
	return NULL;
}
