/*
 * Per-sandbox cgroups on cgroup v2 (memory.max, pids.max, cpu.max,
 * cgroup.kill) or v1 (memory, pids, cpu and freezer hierarchies). Owns
 * the layout found at start-up: which version, and the directory under
 * which every sandbox gets a group named after its id.
 *
 * Creation and removal run in the spawner (they are filesystem writes
 * that may wait); the daemon only reads the small event counters that say
 * whether a limit was hit.
 */
#ifndef SANDPOOL_SANDBOX_CGROUP_H
#define SANDPOOL_SANDBOX_CGROUP_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

enum cgroup_ctrl {
	CG_MEMORY,
	CG_PIDS,
	CG_CPU,
	CG_FREEZER, /* v1 only: stops a group so that a kill cannot be outrun */
	CG_NCTRL,
};

struct cgroup_layout {
	int version; /* 0: no usable cgroups, 1 or 2 */
	/* v2: base[0] is the sandboxes' parent; v1: one parent per controller
	 * ("" when that controller is not mounted or not ours to write). */
	char base[CG_NCTRL][PATH_MAX];
	/* Why a controller is not used ("" when it is), for the start-up
	 * report of limits that are not enforced. */
	char why[CG_NCTRL][256];
};

struct cgroup_limits {
	uint64_t memory;    /* bytes */
	unsigned pids;
	uint64_t cpu_milli; /* thousandths of a CPU */
};

/* What a sandbox's group saw; counters only grow. */
struct cgroup_events {
	uint64_t oom_kills;
	uint64_t pids_max; /* forks refused at pids.max */
};

/*
 * Finds the hierarchy and prepares root (a path relative to the
 * hierarchy's root), or when root is "": on v2 <own cgroup>/sandboxes
 * (moving the calling process into <own cgroup>/daemon, as delegation
 * requires), on v1 and in a v2 root group the path instance (e.g.
 * "sandpool/i-1a2b3c4d", one per daemon). Returns 0, or -errno with a
 * message in err; a host without usable cgroups yields version 0. With
 * best_effort (rootless: the hierarchy is usually not ours), a group we
 * may not create only drops its controllers, with the reason in l->why.
 */
int cgroup_setup(struct cgroup_layout *l, const char *root, const char *instance, bool best_effort,
		 char *err, size_t errlen) __attribute__((warn_unused_result));
/* Whether the sandboxes' groups enforce controller c's limit. */
bool cgroup_enforces(const struct cgroup_layout *l, enum cgroup_ctrl c);
/* The template key of c's limit: "memory", "pids", "cpus" (NULL: freezer). */
const char *cgroup_limit_key(enum cgroup_ctrl c);
/* Creates the sandbox's group(s) and writes limits. */
int cgroup_create(const struct cgroup_layout *l, const char *id, const struct cgroup_limits *lim,
		  char *err, size_t errlen) __attribute__((warn_unused_result));
/* Moves process pid into the sandbox's group(s). */
int cgroup_attach(const struct cgroup_layout *l, const char *id, pid_t pid)
	__attribute__((warn_unused_result));
/* Kills everything in the group and tries once to remove it: -EBUSY while
 * processes are still on their way out. */
int cgroup_try_remove(const struct cgroup_layout *l, const char *id);
/* The same, retrying for up to 5 s. */
int cgroup_destroy(const struct cgroup_layout *l, const char *id);
/* Removes every sandbox group left under the base (a previous daemon's). */
unsigned cgroup_sweep(const struct cgroup_layout *l);
/* At a clean exit: removes every sandbox group and the base itself. */
void cgroup_teardown(const struct cgroup_layout *l);
int cgroup_read_events(const struct cgroup_layout *l, const char *id, struct cgroup_events *ev);

#endif
