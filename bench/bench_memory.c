/*
 * e. What the daemon pays per warm sandbox and per idle connection: its
 * RSS with 64 warm sandboxes minus with none, divided by 64; its RSS with
 * 1000 idle connections minus without; descriptors per sandbox. The
 * agents' own memory (PSS, so shared library pages are split between
 * them) is shown beside it: that is the larger cost of a warm sandbox.
 */
#include "autoconfig.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench.h"

#define POOL 64
#define CONNS 1000
#define SETTLE_MS 500
#define TARGET_KIB_PER_SANDBOX 16.0

static const char templates_empty[] = "[template pool]\n"
				      "language = shell\n"
				      "min_warm = 0\n"
				      "max_total = 64\n";
static const char templates_warm[] = "[template pool]\n"
				     "language = shell\n"
				     "min_warm = 64\n"
				     "max_total = 64\n";

struct snapshot {
	long rss, pss;
	int fds;
};

static struct snapshot snap(pid_t pid)
{
	struct snapshot s;

	bench_sleep_ms(SETTLE_MS);
	s.rss = bench_rss_kib(pid);
	s.pss = bench_pss_kib(pid);
	s.fds = bench_fd_count(pid);
	if (s.rss < 0 || s.fds < 0)
		bench_die("cannot read /proc/%d", (int)pid);
	return s;
}

static void wait_connections(struct sandpool *ctl, long long n)
{
	for (int i = 0; i < 5000; i++) {
		if (bench_stat_top(ctl, "connections") == n)
			return;
		bench_sleep_ms(2);
	}
	bench_die("the daemon did not reach %lld connections", n);
}

int main(int argc, char **argv)
{
	struct snapshot empty, warm, idle, used, closed;
	struct sandpool **conns = calloc(CONNS, sizeof(*conns));
	pid_t agents[POOL + 8], spawner[1];
	unsigned n_agents, n_spawner;
	long agent_pss = 0, agent_rss = 0, spawner_rss;
	struct bench_daemon d;
	struct sandpool *ctl;
	double per_sb;

	if (!conns)
		bench_die("out of memory");
	bench_raise_nofile();
	bench_section("e. Memory and descriptors", argc, argv);
	bench_daemon_start(&d, NULL, templates_empty);
	ctl = bench_connect(&d);
	empty = snap(d.pid);

	bench_daemon_reload(&d, NULL, templates_warm);
	if (!bench_wait_stat(ctl, "pool", "warm", POOL, 10, 300000))
		bench_die("the pool did not reach %d warm in 300 s", POOL);
	warm = snap(d.pid);
	n_agents = bench_descendants(d.pid, "sandpool-agent", agents, POOL + 8);
	for (unsigned i = 0; i < n_agents && i < POOL + 8; i++) {
		agent_pss += bench_pss_kib(agents[i]);
		agent_rss += bench_rss_kib(agents[i]);
	}
	n_spawner = bench_children(d.pid, "sandpool-spawn", spawner, 1);
	spawner_rss = n_spawner ? bench_rss_kib(spawner[0]) : -1;

	for (int i = 0; i < CONNS; i++)
		conns[i] = bench_connect(&d);
	wait_connections(ctl, CONNS + 1);
	idle = snap(d.pid);
	for (int i = 0; i < CONNS; i++) {
		struct sandpool_hello h = { 0 };
		struct sandpool_error err;

		if (sandpool_hello(conns[i], "bench", &h, &err) < 0)
			bench_die("hello: %s", err.message);
		sandpool_hello_free(&h);
	}
	used = snap(d.pid);
	for (int i = 0; i < CONNS; i++)
		sandpool_close(conns[i]);
	wait_connections(ctl, 1);
	closed = snap(d.pid);

	per_sb = (double)(warm.rss - empty.rss) / POOL;
	bench_print_block("Daemon configuration (the template had `min_warm = 0` first; the "
			  "benchmark then rewrote it to this and sent SIGHUP):",
			  d.config_text);
	printf("sandpoold's VmRSS and PSS from /proc, %d ms after each step settled; descriptors are "
	       "the entries of /proc/PID/fd. Connections are libsandpool connections (`sandpool_connect`), "
	       "first idle, then after one `hello` request each.\n\n",
	       SETTLE_MS);
	printf("| state | sandpoold RSS | PSS | fds |\n|---|---:|---:|---:|\n");
	printf("| no sandbox, 1 connection | %ld KiB | %ld KiB | %d |\n", empty.rss, empty.pss, empty.fds);
	printf("| %d warm sandboxes | %ld KiB | %ld KiB | %d |\n", POOL, warm.rss, warm.pss, warm.fds);
	printf("| + %d idle connections | %ld KiB | %ld KiB | %d |\n", CONNS, idle.rss, idle.pss, idle.fds);
	printf("| + one `hello` on each | %ld KiB | %ld KiB | %d |\n", used.rss, used.pss, used.fds);
	printf("| connections closed again | %ld KiB | %ld KiB | %d |\n\n", closed.rss, closed.pss,
	       closed.fds);
	printf("| per | sandpoold RSS | fds | notes |\n|---|---:|---:|---|\n");
	printf("| warm sandbox | %.1f KiB | %.2f | the agent itself: %.0f KiB PSS, %.0f KiB RSS "
	       "(average of %u) |\n",
	       per_sb, (double)(warm.fds - empty.fds) / POOL,
	       n_agents ? (double)agent_pss / n_agents : 0, n_agents ? (double)agent_rss / n_agents : 0,
	       n_agents);
	printf("| idle connection | %.1f KiB | %.2f | |\n", (double)(idle.rss - warm.rss) / CONNS,
	       (double)(idle.fds - warm.fds) / CONNS);
	printf("| connection after one request | %.1f KiB | %.2f | |\n",
	       (double)(used.rss - warm.rss) / CONNS, (double)(used.fds - warm.fds) / CONNS);
	printf("\nThe spawner process (`sandpool-spawn`) had %ld KiB RSS with %d warm sandboxes.\n\n",
	       spawner_rss, POOL);
	printf("Target ≤ %.0f KiB of daemon RSS per warm sandbox: **%s** (%.1f KiB).\n\n",
	       TARGET_KIB_PER_SANDBOX, bench_verdict(per_sb <= TARGET_KIB_PER_SANDBOX), per_sb);
	free(conns);
	sandpool_close(ctl);
	bench_daemon_stop(&d);
	return 0;
}
