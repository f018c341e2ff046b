/*
 * What the agent's modules share. agent.c owns the control channel, the
 * event loop and the one child set-up every process of user code goes
 * through (uid, rlimits, capabilities, no_new_privs, seccomp); context.c
 * (interpreter contexts) and files.c (file access) start their processes
 * with agent_spawn() and answer the daemon through the packer below.
 */
#ifndef SANDPOOL_AGENT_AGENT_H
#define SANDPOOL_AGENT_AGENT_H

#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/time.h>
#include <sys/types.h>

#include "ipc/sandpool.h"

struct event_base;

/* Largest "output" payload; also bounded by --max-frame. */
#define AGENT_CHUNK_MAX (64 * 1024)
/* Where a context's driver finds its channel to the agent. */
#define AGENT_CHAN_FD 4
/* A child's failure message, "execvp NAME: strerror". */
#define AGENT_REPORT_MAX 256

/* What a forked child becomes; built before fork, freed by the agent after.
 * Descriptors of -1 become /dev/null (chan_fd: none). */
struct child_plan {
	char **argv; /* execvpe'd against envp's PATH, unless run is set */
	char **envp;
	const char *cwd;
	int stdin_fd;
	int out_fd;
	int err_fd;
	int chan_fd;   /* placed at AGENT_CHAN_FD */
	int report_fd; /* write end of the failure pipe, closed by execve */
	/* A child subreaper (execs): orphans of its descendants are adopted
	 * by it instead of by the agent, so a kill finds them below it. */
	bool subreaper;
	/* Instead of execve: called as the user, after the whole set-up; its
	 * return value is the child's exit status. */
	int (*run)(void *arg);
	void *run_arg;
};

/* Forks a child that drops to the sandbox user as user code does, then
 * becomes what c says. 0 with *pid, or -errno (nothing left behind). */
int agent_spawn(const struct child_plan *c, pid_t *pid) __attribute__((warn_unused_result));
/* pipe2 with O_CLOEXEC on both ends and O_NONBLOCK on the agent's. */
int agent_pipe(int fds[2], int agent_end) __attribute__((warn_unused_result));

struct event_base *agent_base(void);
/* Appends to the control channel's output. */
msgpack_packer *agent_packer(void);
void agent_reply_error(uint32_t msgid, enum sandpool_errcode code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Whether user output must stay unread (the daemon is behind); modules
 * call agent_check_pressure() after queueing output. */
bool agent_output_paused(void);
void agent_check_pressure(void);
/* Bytes to read from an output pipe at once, and the daemon's max_frame. */
size_t agent_chunk_size(void);
size_t agent_max_frame(void);

uint64_t agent_now_us(void);
void agent_ms_to_tv(uint64_t ms, struct timeval *tv);
void agent_close_fd(int *fd);
/* A str or bin object's bytes. */
bool agent_obj_bytes(const msgpack_object *o, const char **p, uint32_t *len);

#endif
