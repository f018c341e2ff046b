/*
 * The local backend: each sandbox is sandpool-agent running as PID 1 of
 * fresh PID, mount, UTS, IPC (and network) namespaces, cloned by the
 * spawner. This module owns the daemon's side of each sandbox: the agent's
 * control socket (a bufferevent), its pidfd, and the msgpack exchange
 * described in docs/AGENT.md.
 */
#ifndef SANDPOOL_SANDBOX_LOCAL_H
#define SANDPOOL_SANDBOX_LOCAL_H

#include "daemon/config.h"
#include "sandbox/sandbox.h"

struct event_base;
struct spawner;

struct cgroup_layout;

/* The backend reads cfg (uid, gid, max_frame) at each create; cfg, sp and
 * cg must outlive every local sandbox. nproc_limit: the spawner bounds a
 * sandbox's processes with RLIMIT_NPROC, there being no pids cgroup. */
void local_backend_init(struct event_base *base, struct spawner *sp, const struct config *cfg,
			const struct cgroup_layout *cg, bool nproc_limit);

/* The limits of t (memory, pids, cpus) nothing enforces, as bits
 * 1 << CG_MEMORY, CG_PIDS, CG_CPU; 0 for templates of other backends. */
unsigned local_unenforced_limits(const struct template_config *t);
/* One warning line for t if a limit of it is not enforced by a cgroup,
 * naming each such limit and why; nothing when all are. */
void local_report_limits(const struct template_config *t);

extern const struct sandbox_backend local_backend;

#endif
