/*
 * The spawner: a small helper process forked from sandpoold at start-up,
 * before the event loop exists, that clones sandboxes on request. Keeping
 * clone() and the mount set-up out of the daemon means the event loop
 * never pays for forking a large process nor waits on a child, and a
 * daemon killed with -9 takes the spawner (PR_SET_PDEATHSIG) and every
 * sandbox (each is the spawner's child, with the same death signal) down
 * with it.
 *
 * Daemon side: requests go out over a SOCK_SEQPACKET socket as msgpack
 * maps; each reply carries the sandbox's PID-1 pid, a pidfd and the
 * agent's control socket (SCM_RIGHTS). The spawner answers in order.
 * Ownership: the fds passed to a spawn_done_fn belong to the callee.
 */
#ifndef SANDPOOL_SANDBOX_SPAWNER_H
#define SANDPOOL_SANDBOX_SPAWNER_H

#include <sys/types.h>

#include "sandbox/setup.h"

struct event_base;
struct spawner;

/* err is 0 or -errno; on success ctrl_fd and pidfd are open. */
typedef void (*spawn_done_fn)(void *arg, int err, const char *errmsg, pid_t pid, int ctrl_fd,
			      int pidfd);

/* Host ids of sandboxes: each sandbox gets uid_base + 2 * slot (its
 * root) and the next one (its user); slots < n_slots. */
struct spawner_ids {
	uid_t uid_base;
	unsigned n_slots;
	/* Rootless (no CAP_SETUID/CAP_SETGID over host ids): each sandbox maps
	 * one id, inside 0 to the daemon's own uid and gid; uid_base unused. */
	bool rootless;
	/* No pids cgroup: RLIMIT_NPROC bounds a sandbox's processes instead
	 * (only where the kernel counts it per user namespace). */
	bool nproc_limit;
};

/* Rootless: whether this kernel lets an unprivileged process make a user
 * namespace with its own id mapped in it, and the namespaces a sandbox
 * needs inside it. 0, or -errno with the failing step in err. */
int spawner_check_rootless(char *err, size_t errlen) __attribute__((warn_unused_result));

/* Forks the spawner. Call before threads or the event base exist. cg must
 * be set up already; the spawner keeps a copy. */
int spawner_start(struct spawner **out, const char *agent_path, const struct cgroup_layout *cg,
		  const struct spawner_ids *ids) __attribute__((warn_unused_result));
int spawner_attach(struct spawner *sp, struct event_base *base) __attribute__((warn_unused_result));
int spawner_request(struct spawner *sp, const struct spawn_params *p, spawn_done_fn cb, void *arg)
	__attribute__((warn_unused_result));
/* Forgets every pending request for arg; a late reply's sandbox is killed. */
void spawner_cancel(struct spawner *sp, void *arg);
/* The sandbox id is gone: the spawner kills what is left of its cgroup,
 * removes it and frees its host ids. No reply. */
int spawner_reap(struct spawner *sp, const char *id);
/* Closes the socket (the spawner exits) and frees. */
void spawner_stop(struct spawner *sp);

#endif
