/*
 * Interpreter contexts: persistent python, node or bash processes that the
 * agent starts as user code (agent_spawn) around a small driver, and that
 * run the cells queued on them one at a time. Owns every context, its
 * process, pipes, channel and timer, and the code runs queued on it; the
 * wire is docs/AGENT.md ("Contexts and code runs").
 */
#ifndef SANDPOOL_AGENT_CONTEXT_H
#define SANDPOOL_AGENT_CONTEXT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "ipc/codec.h"

/* Before any other call. */
void contexts_init(void);
void context_req_create(const struct rpc_msg *m);
void context_req_list(const struct rpc_msg *m);
void context_req_restart(const struct rpc_msg *m);
void context_req_remove(const struct rpc_msg *m);
void context_req_run(const struct rpc_msg *m);
/* The daemon's kill for code run id: interrupts it, or drops it from its
 * queue. Unknown ids are ignored. */
void context_interrupt_run(uint64_t id);
/* SIGCHLD: whether pid was a context's process; it has been reaped. */
bool context_on_reap(pid_t pid, int status);
/* Stops or resumes reading the contexts' output pipes (back-pressure). */
void contexts_arm_pipes(bool on);
/* The agent is exiting: kills, reaps and frees every context. */
void contexts_teardown(void);

#endif
