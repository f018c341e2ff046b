/*
 * File access for the daemon's files.* requests (docs/AGENT.md, "Files").
 * Every request forks a helper that goes through the very set-up user code
 * does (agent_spawn: the sandbox's uid and gid, no capabilities,
 * no_new_privs, seccomp) and touches the file as the user would. Owns the
 * helpers in flight and the answers they send back.
 */
#ifndef SANDPOOL_AGENT_FILES_H
#define SANDPOOL_AGENT_FILES_H

#include <stdbool.h>
#include <sys/types.h>

#include "ipc/codec.h"

void files_req_write(const struct rpc_msg *m);
void files_req_read(const struct rpc_msg *m);
void files_req_list(const struct rpc_msg *m);
void files_req_remove(const struct rpc_msg *m);
/* SIGCHLD: whether pid was a file helper; it has been reaped. */
bool files_on_reap(pid_t pid, int status);
/* The agent is exiting: kills and reaps every helper. */
void files_teardown(void);

#endif
