/*
 * The seccomp deny-list for user code, built once when the agent starts
 * and installed in each exec child right before execve (seccomp last, as
 * in bubblewrap). Denied calls fail with EPERM rather than killing the
 * process, so language runtimes that probe for them degrade gracefully.
 * docs/SECURITY.md lists the calls and why.
 */
#ifndef SANDPOOL_AGENT_SECCOMP_H
#define SANDPOOL_AGENT_SECCOMP_H

#include <linux/filter.h>

/* Compiles the filter into prog (owned by the caller, freed with free()). */
int agent_seccomp_build(struct sock_fprog *prog) __attribute__((warn_unused_result));
/* Installs prog in the calling process; needs no_new_privs set first. */
int agent_seccomp_apply(const struct sock_fprog *prog) __attribute__((warn_unused_result));

#endif
