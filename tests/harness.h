/*
 * Test fixture: a real sandpoold on a temporary socket, state dir and
 * config, started from the build tree and stopped with SIGTERM. The test
 * process is a child subreaper, so any process the daemon leaves behind
 * is re-parented to it and can be counted.
 */
#ifndef SANDPOOL_TESTS_HARNESS_H
#define SANDPOOL_TESTS_HARNESS_H

#include <stdbool.h>
#include <sys/types.h>

#include <check.h>

#include "ipc/sandpool.h"

struct fixture {
	char dir[256];
	char sock[320];
	char conf[320];
	char log[320];
	char ledger[320]; /* ledger_path, in the temp dir, unless the conf sets its own */
	pid_t pid;
};

/* Writes a config (daemon section pointing into the temp dir, then
 * templates_conf verbatim) and starts the daemon; waits for the socket. */
void fixture_start(struct fixture *f, const char *templates_conf);
/* The same in steps, for tests that act in between: the temp dir and
 * config; the daemon, with in_child(arg) run in the child just before
 * exec (environment, fds); the wait for its socket. */
void fixture_prepare(struct fixture *f, const char *templates_conf);
void fixture_spawn(struct fixture *f, void (*in_child)(void *arg), void *arg);
void fixture_wait_socket(struct fixture *f);
/* fixture_prepare for a daemon run as uid:gid without supplementary
 * groups: sandpoold and sandpool-agent are copied into the temp dir (the
 * build tree may be out of that user's reach), which uid:gid then owns. */
void fixture_prepare_as(struct fixture *f, const char *templates_conf, uid_t uid, gid_t gid);
/* fixture_spawn for such a fixture: its copy of the daemon, as uid:gid. */
void fixture_spawn_as(struct fixture *f, uid_t uid, gid_t gid);
/* SIGTERM, waits; returns the daemon's exit status (-1 if it did not exit). */
int fixture_stop(struct fixture *f);
/* rm -rf the temp dir. */
void fixture_cleanup(struct fixture *f);
/* Stops f's daemon if it runs (asserting exit status 0), asserts that no
 * process was left behind, and removes its files. */
void fixture_finish(struct fixture *f);
/* Runs s and returns the exit status for main(). */
int run_suite(Suite *s);
/* Prints the daemon's log to stderr (on failure). */
void fixture_dump_log(const struct fixture *f);

struct sandpool *fixture_connect(const struct fixture *f);
/* Polls pool.stats until template has at least n warm sandboxes. */
bool fixture_wait_warm(const struct fixture *f, const char *tmpl, unsigned n, int timeout_ms);
/* A number field of template tmpl in pool.stats, or -1. */
long long fixture_stat(const struct fixture *f, const char *tmpl, const char *field);

/* Processes re-parented to the test process (orphans the daemon left). */
unsigned count_orphans(void);
/* sandpool-agent processes (sandbox PID 1s) descending from f's daemon. */
unsigned count_agents(const struct fixture *f);
/* Whether pid is a descendant of ancestor (not ancestor itself). */
bool pid_descends_from(pid_t pid, pid_t ancestor);
/* The host pid of one of those agents, or -1. */
pid_t find_agent(const struct fixture *f);
unsigned count_open_fds(void);
const char *builddir(void);

#endif
