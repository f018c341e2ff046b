/*
 * d. Sandbox creation: how long one local sandbox takes to be ready (its
 * agent's "ready" notification), alone and 64 at once; how fast a pool
 * refills to 64 warm; how many fresh sandboxes a second the daemon serves
 * sustained. Baseline, in the same run: 64 sequential cold bwrap sandboxes
 * running /usr/bin/true.
 */
#include "autoconfig.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/bench.h"

#define SINGLE_CREATES 20
#define POOL 64
#define BWRAP_RUNS 64
#define SUSTAIN_CLIENTS 8
#define SUSTAIN_MS 10000
/* The warm pool of 64 is long gone by then: only new sandboxes count. */
#define SUSTAIN_SKIP_MS 4000
#define TARGET_READY_US 5000.0
#define TARGET_RATE_RATIO 3.0

/* max_total = 1: each sandbox is built alone, after the previous is gone. */
static const char single_templates[] = "[template single]\n"
				       "language = shell\n"
				       "min_warm = 1\n"
				       "max_total = 1\n";
static const char pool_templates[] = "[template pool]\n"
				     "language = shell\n"
				     "min_warm = 64\n"
				     "max_total = 64\n";

static char *const bwrap_argv[] = { "/usr/bin/bwrap", "--unshare-all", "--ro-bind", "/usr", "/usr",
				    "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64",
				    "/lib64", "--symlink", "usr/bin", "/bin", "--proc", "/proc",
				    "--dev", "/dev", "--tmpfs", "/tmp", "/usr/bin/true", NULL };

static struct bench_daemon daemon_;

static void *client_setup(void *arg, unsigned i)
{
	return bench_connect(&daemon_);
}

static void client_teardown(void *state)
{
	sandpool_close(state);
}

static void lease_release(struct sandpool *sp, const char *tmpl)
{
	struct sandpool_lease_opts o = { .template_name = tmpl, .wait_ms = 60000 };
	struct sandpool_lease l = { 0 };
	struct sandpool_error err;

	if (sandpool_lease(sp, &o, &l, &err) < 0)
		bench_die("lease %s: %s", tmpl, err.message);
	if (sandpool_release(sp, l.lease_id, &err) < 0)
		bench_die("release: %s", err.message);
	sandpool_lease_free(&l);
}

static void fresh_op(void *state, unsigned i)
{
	lease_release(state, "pool");
}

int main(int argc, char **argv)
{
	struct bench_samples bw = { 0 }, sustain = { 0 };
	long long single_p50, single_p99, pool_p50, pool_p99;
	double refill_rate, sustain_rate, bwrap_rate;
	uint64_t refill_us, refill_listen_us, bwrap_us, t0;
	bool have_bwrap = access(bwrap_argv[0], X_OK) == 0;
	char single_conf[8192], pool_conf[8192];
	struct sandpool *sp;

	bench_section("d. Sandbox creation and refill", argc, argv);

	/* One at a time: each lease takes the one warm sandbox and its release
	 * destroys it; the daemon then builds the next, alone. */
	bench_daemon_start(&daemon_, NULL, single_templates);
	snprintf(single_conf, sizeof(single_conf), "%s", daemon_.config_text);
	sp = bench_connect(&daemon_);
	for (int i = 0; i < SINGLE_CREATES; i++) {
		if (!bench_wait_stat(sp, "single", "warm", 1, 2, 60000))
			bench_die("no warm sandbox within 60 s");
		lease_release(sp, "single");
	}
	if (!bench_wait_stat(sp, "single", "created", SINGLE_CREATES + 1, 2, 60000))
		bench_die("the last sandbox was not created within 60 s");
	single_p50 = bench_stat(sp, "single", "create_p50_us");
	single_p99 = bench_stat(sp, "single", "create_p99_us");
	sandpool_close(sp);
	bench_daemon_stop(&daemon_);

	/* Refill: from the daemon's start until 64 are warm. */
	bench_daemon_start(&daemon_, NULL, pool_templates);
	snprintf(pool_conf, sizeof(pool_conf), "%s", daemon_.config_text);
	sp = bench_connect(&daemon_);
	if (!bench_wait_stat(sp, "pool", "warm", POOL, 2, 300000))
		bench_die("the pool did not reach %d warm in 300 s", POOL);
	refill_us = bench_now_us() - daemon_.forked_us;
	refill_listen_us = bench_now_us() - daemon_.listening_us;
	refill_rate = POOL * 1e6 / (double)refill_us;
	pool_p50 = bench_stat(sp, "pool", "create_p50_us");
	pool_p99 = bench_stat(sp, "pool", "create_p99_us");

	/* Sustained: clients take fresh sandboxes as fast as they come. */
	{
		struct bench_load l = { .threads = SUSTAIN_CLIENTS, .duration_ms = SUSTAIN_MS,
					.warm_ms = SUSTAIN_SKIP_MS, .setup = client_setup,
					.op = fresh_op, .teardown = client_teardown };

		bench_load_run(&l, &sustain, &sustain_rate);
	}
	sandpool_close(sp);
	bench_daemon_stop(&daemon_);

	t0 = bench_now_us();
	for (int i = 0; have_bwrap && i < BWRAP_RUNS; i++) {
		char out[64];
		uint64_t t = bench_now_us();
		int status = bench_run_cmd(bwrap_argv, out, sizeof(out));

		if (status != 0)
			bench_die("bwrap exited with status %d", status);
		samples_add(&bw, bench_now_us() - t);
	}
	bwrap_us = bench_now_us() - t0;
	bwrap_rate = have_bwrap ? BWRAP_RUNS * 1e6 / (double)bwrap_us : 0;

	bench_print_block("Daemon configuration, one at a time:", single_conf);
	bench_print_block("Daemon configuration, refill and sustained:", pool_conf);
	printf("- one at a time: a pool of one (`min_warm = max_total = 1`); %d times, the "
	       "benchmark waits for the warm sandbox, leases and releases it, so the daemon builds "
	       "%d sandboxes strictly one after another (plus the first); the percentiles are the "
	       "daemon's own `create_p50_us`/`create_p99_us`, from the create request to the "
	       "agent's ready message\n",
	       SINGLE_CREATES, SINGLE_CREATES);
	printf("- refill: from fork() of sandpoold until `pool.stats` shows %d warm (polled every "
	       "2 ms)\n",
	       POOL);
	printf("- sustained: %d clients doing lease + release (each takes a new sandbox, release "
	       "destroys it) for %d s; only leases started after the first %d s count, when the "
	       "initial pool is long used up\n",
	       SUSTAIN_CLIENTS, SUSTAIN_MS / 1000, SUSTAIN_SKIP_MS / 1000);
	printf("- bwrap: `%s`, %d times in a row%s\n\n", bench_argv_str(bwrap_argv), BWRAP_RUNS,
	       have_bwrap ? "" : " (not installed: skipped)");

	printf("| measure | p50 | p99 | n | notes |\n|---|---:|---:|---:|---|\n");
	printf("| create → agent ready, one at a time | %s | %s | %d | nothing else running in "
	       "the daemon |\n",
	       bench_fmt_us((double)single_p50), bench_fmt_us((double)single_p99), SINGLE_CREATES + 1);
	printf("| create → agent ready, during the %d-sandbox refill | %s | %s | %d | "
	       "`create_concurrency` and `max_creating` at their defaults (4) |\n",
	       POOL, bench_fmt_us((double)pool_p50), bench_fmt_us((double)pool_p99), POOL);
	if (have_bwrap)
		printf("| cold bwrap `true`, one at a time | %s | %s | %d | start to exit |\n",
		       bench_fmt_us(samples_pct(&bw, 50)), bench_fmt_us(samples_pct(&bw, 99)),
		       BWRAP_RUNS);
	printf("\n| rate | sandboxes/s | vs bwrap |\n|---|---:|---:|\n");
	printf("| refill to %d warm (%s from fork, %s from listening) | %.1f | %.2fx |\n", POOL,
	       bench_fmt_us((double)refill_us), bench_fmt_us((double)refill_listen_us), refill_rate,
	       bwrap_rate > 0 ? refill_rate / bwrap_rate : 0);
	printf("| fresh lease+release sustained, %d clients (p50 %s per lease+release) | %.1f | "
	       "%.2fx |\n",
	       SUSTAIN_CLIENTS, bench_fmt_us(samples_pct(&sustain, 50)), sustain_rate,
	       bwrap_rate > 0 ? sustain_rate / bwrap_rate : 0);
	if (have_bwrap)
		printf("| %d sequential cold bwrap `true` (%s) | %.1f | 1.00x |\n", BWRAP_RUNS,
		       bench_fmt_us((double)bwrap_us), bwrap_rate);
	printf("\nTargets: one local sandbox ready ≤ %s: **%s** (%s at p50). Fresh sandboxes "
	       "sustained ≥ %.0fx the bwrap rate: **%s** (%.2fx).\n\n",
	       bench_fmt_us(TARGET_READY_US), bench_verdict(single_p50 <= TARGET_READY_US),
	       bench_fmt_us((double)single_p50), TARGET_RATE_RATIO,
	       bench_verdict(bwrap_rate > 0 && sustain_rate / bwrap_rate >= TARGET_RATE_RATIO),
	       bwrap_rate > 0 ? sustain_rate / bwrap_rate : 0);
	return 0;
}
