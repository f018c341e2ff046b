/*
 * Sandbox set-up as typed operations, bubblewrap-style: the spawner turns
 * a sandbox's parameters into a setup_plan (allocating freely), and the
 * freshly cloned child runs the plan in a fixed order: mounts into a new
 * root, pivot_root, drop the old root, hostname, loopback, then exec the
 * agent. The child never allocates and reports the first failure over its
 * control socket before exiting.
 */
#ifndef SANDPOOL_SANDBOX_SETUP_H
#define SANDPOOL_SANDBOX_SETUP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "daemon/config.h"
#include "sandbox/cgroup.h"

/* What the spawner needs to build one sandbox (decoded from the daemon). */
struct spawn_params {
	char id[32];
	uid_t uid; /* inside the sandbox; mapped to a host uid of the sandbox's own */
	gid_t gid;
	struct cgroup_limits limits;
	enum sandbox_network network;
	uint64_t workspace_size;
	uint64_t max_frame;
	char rootfs[4096]; /* "" for the host's /usr and friends */
	struct bind_mount binds[CONFIG_MAX_BINDS];
	unsigned n_binds;
};

enum setup_op_kind {
	SETUP_RO_BIND,	/* bind src read-only, nosuid */
	SETUP_RW_BIND,	/* bind src read-write, nosuid, nodev */
	SETUP_DEV_BIND, /* bind a device node */
	SETUP_TMPFS,	/* size-limited tmpfs owned by uid/gid */
	SETUP_PROC,	/* a new procfs, with /proc/sys and friends read-only */
	SETUP_DIR,
	SETUP_SYMLINK, /* dest -> src */
	SETUP_FILE,    /* a file holding data */
};

struct setup_op {
	enum setup_op_kind kind;
	char *src;  /* host path (seen through the old root) or link target */
	char *dest; /* path inside the sandbox */
	char *data;
	mode_t mode;
	uint64_t size;
	uid_t uid;
	gid_t gid;
	bool optional; /* skip quietly when src does not exist */
};

struct setup_plan {
	struct setup_op *ops;
	unsigned n_ops;
	unsigned cap;
	char *rootfs; /* NULL: a tmpfs root assembled from host dirs */
	char hostname[64];
	bool loopback; /* bring lo up in a fresh network namespace */
};

int setup_plan_build(struct setup_plan *plan, const struct spawn_params *p)
	__attribute__((warn_unused_result));
void setup_plan_free(struct setup_plan *plan);

/*
 * Runs in the cloned child (PID 1 of its namespaces). On failure writes a
 * "failed" notification to report_fd and _exit()s; on success returns and
 * the caller execs the agent.
 */
void setup_run(const struct setup_plan *plan, int report_fd);

/* Child-side failure: reports "what: strerror(errno)" over report_fd, exits. */
void setup_fail(int report_fd, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));

#endif
