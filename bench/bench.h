/*
 * Shared by the bench/ programs: a real sandpoold from the build tree on a
 * temporary socket, state dir and cgroup root; latency samples and their
 * percentiles; the baselines every benchmark measures in the same run (a
 * forked Unix-socket echo server, external commands); and the Markdown
 * each program prints, which bench/run.sh assembles into RESULTS.md.
 *
 * Unlike tests/harness.c this needs no check and logs at warn: debug
 * logging would be part of what is measured.
 */
#ifndef SANDPOOL_BENCH_H
#define SANDPOOL_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ipc/sandpool.h"

/* --- time and failure ------------------------------------------------------ */

uint64_t bench_now_us(void);
void bench_sleep_ms(unsigned ms);
void bench_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* --- samples --------------------------------------------------------------- */

struct bench_samples {
	uint64_t *v; /* microseconds, or whatever the caller adds */
	size_t n, cap;
	bool sorted;
};

void samples_add(struct bench_samples *s, uint64_t v);
/* Appends every sample of src. */
void samples_merge(struct bench_samples *dst, const struct bench_samples *src);
/* Nearest-rank percentile, p in [0, 100]; 0 without samples. */
double samples_pct(struct bench_samples *s, double p);
double samples_mean(const struct bench_samples *s);
void samples_free(struct bench_samples *s);

/* "812 µs", "3.41 ms", "1.20 s": three significant digits. */
const char *bench_fmt_us(double us);

/* --- output ---------------------------------------------------------------- */

/* "## title", the machine in one line (CPU, cores, kernel, cgroup version,
 * load) and the command that produced the section. */
void bench_section(const char *title, int argc, char **argv);
/* A fenced block holding text (a config, a command line). */
void bench_print_block(const char *label, const char *text);
/* "met" or "MISSED" with the comparison, for the targets lines. */
const char *bench_verdict(bool met);

/* --- the daemon ------------------------------------------------------------ */

struct bench_daemon {
	char dir[256];
	char sock[320];
	char conf[320];
	char log[320];
	char config_text[8192]; /* what was written to conf */
	pid_t pid;
	uint64_t forked_us;    /* monotonic time of the fork */
	uint64_t listening_us; /* when the socket accepted a connection */
};

/* Starts sandpoold --foreground on a config made of a [daemon] section
 * (socket, state dir, ledger, agent path, log level, drain timeout, all but
 * the last two in the temp dir, then daemon_keys) and templates, verbatim.
 * daemon_keys may set ledger_path itself (off, or another database).
 * Waits until the socket accepts. Dies on failure. */
void bench_daemon_start(struct bench_daemon *d, const char *daemon_keys, const char *templates);
/* Rewrites the config with new templates and sends SIGHUP. */
void bench_daemon_reload(struct bench_daemon *d, const char *daemon_keys, const char *templates);
/* SIGTERM, waits, removes the temp dir. */
void bench_daemon_stop(struct bench_daemon *d);

struct sandpool *bench_connect(const struct bench_daemon *d);
/* A number field of template tmpl in pool.stats, or -1. */
long long bench_stat(struct sandpool *sp, const char *tmpl, const char *field);
/* A top-level number of pool.stats ("connections", "leases"), or -1. */
long long bench_stat_top(struct sandpool *sp, const char *field);
/* Polls pool.stats every poll_ms until field >= value; false on timeout. */
bool bench_wait_stat(struct sandpool *sp, const char *tmpl, const char *field, long long value,
		     unsigned poll_ms, unsigned timeout_ms);

/* --- processes ------------------------------------------------------------- */

/* VmRSS in KiB, or -1. */
long bench_rss_kib(pid_t pid);
/* Pss in KiB (smaps_rollup), or -1. */
long bench_pss_kib(pid_t pid);
/* Open descriptors of pid, or -1. */
int bench_fd_count(pid_t pid);
/* Children of pid named comm. Fills up to max pids; returns how many exist. */
unsigned bench_children(pid_t pid, const char *comm, pid_t *out, unsigned max);
/* Every process named comm whose ancestry reaches pid. */
unsigned bench_descendants(pid_t pid, const char *comm, pid_t *out, unsigned max);

/* Runs argv (argv[0] an absolute path) with stdin /dev/null, stdout into
 * out (NUL-terminated, truncated to outlen), stderr to /dev/null. Returns
 * the wait status, or -1 when it could not start. */
int bench_run_cmd(char *const argv[], char *out, size_t outlen);
/* argv as a shell-quoted command line. */
const char *bench_argv_str(char *const argv[]);

/* Raises RLIMIT_NOFILE to its hard limit (children inherit it). */
void bench_raise_nofile(void);

/* --- the ping-pong baseline ------------------------------------------------- */

/* A forked single-threaded epoll server on a Unix socket, the same shape as
 * the daemon: each connection sends req bytes and gets resp bytes back. */
struct bench_echo {
	char path[128];
	pid_t pid;
	size_t req, resp;
};

void bench_echo_start(struct bench_echo *e, size_t req, size_t resp);
int bench_echo_connect(const struct bench_echo *e);
/* One round trip on fd; dies on error. */
void bench_echo_rtt(const struct bench_echo *e, int fd);
void bench_echo_stop(struct bench_echo *e);

/* --- closed-loop load -------------------------------------------------------- */

/*
 * Runs n threads. Each calls setup(arg, i) once (connect, untimed), then,
 * once all are ready, op(state, i) in a loop, recording each op's latency:
 * ops_per_thread times, or when that is 0 until duration_ms has passed
 * (the first warm_ms of it not recorded). Then teardown(state). Returns
 * all latencies; *ops_per_s (may be NULL) is the recorded ops over the
 * recorded time.
 */
struct bench_load {
	unsigned threads;
	unsigned ops_per_thread;
	unsigned duration_ms;
	unsigned warm_ms;
	void *(*setup)(void *arg, unsigned i);
	void (*op)(void *state, unsigned i);
	void (*teardown)(void *state);
	void *arg;
};

void bench_load_run(const struct bench_load *l, struct bench_samples *out, double *ops_per_s);

#endif
