/*
 * a. sandbox.lease + sandbox.release latency at 1, 16 and 256 concurrent
 * clients (a thread and a connection each), for fresh sandboxes (release
 * destroys them) and for session re-leases (the session's own sandbox comes
 * back: no create, no destroy); session re-lease throughput at 64 clients.
 * Baseline, in the same run: a 64-byte request/64-byte reply round trip to
 * a single-threaded epoll server on a Unix socket, at the same concurrency.
 */
#include "autoconfig.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/bench.h"

#define PINGPONG_BYTES 64
#define SESSIONS 256
#define THROUGHPUT_CLIENTS 64
#define THROUGHPUT_TARGET 20000.0
/* Timed session and ping-pong levels: this long, the first part untimed. */
#define LEVEL_MS 2500
#define LEVEL_WARM_MS 500
/* Fresh leases each use up a sandbox: a fixed number per level, each level
 * starting from a full warm pool of this many. */
#define FRESH_POOL 64

static const char daemon_keys[] = "max_sandboxes = 400\n"
				  "create_concurrency = 8\n";
static const char templates[] = "[template fresh]\n"
				"language = shell\n"
				"min_warm = 64\n"
				"max_warm = 64\n"
				"max_total = 96\n"
				"max_creating = 8\n"
				"\n"
				"[template session]\n"
				"language = shell\n"
				"min_warm = 0\n"
				"max_total = 272\n"
				"max_creating = 8\n";

static const unsigned levels[] = { 1, 16, 256 };

static struct bench_daemon daemon_;
static struct bench_echo echo;

struct client {
	struct sandpool *sp;
	char session[32];
	const char *tmpl;
};

static void *sp_setup(void *arg, unsigned i)
{
	struct client *c = calloc(1, sizeof(*c));

	if (!c)
		bench_die("out of memory");
	c->sp = bench_connect(&daemon_);
	c->tmpl = arg;
	snprintf(c->session, sizeof(c->session), "bench-%u", i % SESSIONS);
	return c;
}

static void sp_teardown(void *state)
{
	struct client *c = state;

	sandpool_close(c->sp);
	free(c);
}

static void lease_release(struct client *c, bool session)
{
	struct sandpool_lease_opts o = { .template_name = c->tmpl, .wait_ms = 60000,
					 .session = session ? c->session : NULL };
	struct sandpool_lease l = { 0 };
	struct sandpool_error err;

	if (sandpool_lease(c->sp, &o, &l, &err) < 0)
		bench_die("lease %s%s: %s", c->tmpl, session ? " (session)" : "", err.message);
	if (sandpool_release(c->sp, l.lease_id, &err) < 0)
		bench_die("release %s: %s", l.lease_id, err.message);
	sandpool_lease_free(&l);
}

static void op_session(void *state, unsigned i)
{
	lease_release(state, true);
}

static void op_fresh(void *state, unsigned i)
{
	lease_release(state, false);
}

static void *echo_setup(void *arg, unsigned i)
{
	int *fd = malloc(sizeof(*fd));

	if (!fd)
		bench_die("out of memory");
	*fd = bench_echo_connect(&echo);
	return fd;
}

static void echo_op(void *state, unsigned i)
{
	bench_echo_rtt(&echo, *(int *)state);
}

static void echo_teardown(void *state)
{
	close(*(int *)state);
	free(state);
}

static void run_pingpong(unsigned threads, struct bench_samples *s, double *rate)
{
	struct bench_load l = { .threads = threads, .duration_ms = LEVEL_MS, .warm_ms = LEVEL_WARM_MS,
				.setup = echo_setup, .op = echo_op, .teardown = echo_teardown };

	bench_load_run(&l, s, rate);
}

static void run_sessions(unsigned threads, struct bench_samples *s, double *rate)
{
	struct bench_load l = { .threads = threads, .duration_ms = LEVEL_MS, .warm_ms = LEVEL_WARM_MS,
				.setup = sp_setup, .op = op_session, .teardown = sp_teardown,
				.arg = (void *)"session" };

	bench_load_run(&l, s, rate);
}

/* Every session gets its sandbox once, untimed: later leases are re-leases.
 * Thread i owns session bench-i. */
static void create_sessions(void)
{
	struct bench_load l = { .threads = SESSIONS, .ops_per_thread = 1, .setup = sp_setup,
				.op = op_session, .teardown = sp_teardown, .arg = (void *)"session" };
	struct bench_samples s = { 0 };

	bench_load_run(&l, &s, NULL);
	samples_free(&s);
}

/* Fresh leases from a full warm pool: each takes a warm sandbox while one
 * lasts; the rest wait for the ones being built. */
static void run_fresh(struct sandpool *ctl, unsigned threads, struct bench_samples *s, double *rate,
		      long long *hits, long long *misses)
{
	unsigned per = threads >= FRESH_POOL ? 1 : FRESH_POOL / threads;
	struct bench_load l = { .threads = threads, .ops_per_thread = per, .setup = sp_setup,
				.op = op_fresh, .teardown = sp_teardown, .arg = (void *)"fresh" };
	long long h0, m0;

	if (!bench_wait_stat(ctl, "fresh", "warm", FRESH_POOL, 20, 120000))
		bench_die("the fresh pool did not refill to %d within 120 s", FRESH_POOL);
	h0 = bench_stat(ctl, "fresh", "hits");
	m0 = bench_stat(ctl, "fresh", "misses");
	bench_load_run(&l, s, rate);
	*hits = bench_stat(ctl, "fresh", "hits") - h0;
	*misses = bench_stat(ctl, "fresh", "misses") - m0;
}

static void print_row(const char *mode, unsigned clients, struct bench_samples *s,
		      struct bench_samples *base, const char *note)
{
	double p50 = samples_pct(s, 50), p99 = samples_pct(s, 99), p999 = samples_pct(s, 99.9);
	double b50 = samples_pct(base, 50), b99 = samples_pct(base, 99), b999 = samples_pct(base, 99.9);
	const char *mark = s->n < 1000 ? "†" : "";

	printf("| %s | %u | %zu | %s | %s | %s%s | %s | %s | %s | %.1fx | %.1fx | %s |\n", mode, clients,
	       s->n, bench_fmt_us(p50), bench_fmt_us(p99), bench_fmt_us(p999), mark, bench_fmt_us(b50),
	       bench_fmt_us(b99), bench_fmt_us(b999), b50 > 0 ? p50 / b50 : 0, b99 > 0 ? p99 / b99 : 0,
	       note);
}

int main(int argc, char **argv)
{
	struct bench_samples pp[3] = { { 0 } }, ss[3] = { { 0 } }, fr[3] = { { 0 } };
	struct bench_samples tp_pp = { 0 }, tp_ss = { 0 };
	double pp_rate[3], ss_rate[3], fr_rate[3], tp_pp_rate, tp_ss_rate;
	long long hits[3], misses[3], reuses0, reuses;
	uint64_t t0, create_us;
	struct sandpool *ctl;
	char note[128];

	bench_raise_nofile();
	bench_section("a. Lease + release latency", argc, argv);
	bench_daemon_start(&daemon_, daemon_keys, templates);
	ctl = bench_connect(&daemon_);
	bench_echo_start(&echo, PINGPONG_BYTES, PINGPONG_BYTES);

	/* Sessions first, while the fresh pool fills in the background. */
	t0 = bench_now_us();
	create_sessions();
	create_us = bench_now_us() - t0;
	reuses0 = bench_stat(ctl, "session", "session_reuses");
	for (int i = 0; i < 3; i++) {
		run_pingpong(levels[i], &pp[i], &pp_rate[i]);
		run_sessions(levels[i], &ss[i], &ss_rate[i]);
	}
	run_pingpong(THROUGHPUT_CLIENTS, &tp_pp, &tp_pp_rate);
	run_sessions(THROUGHPUT_CLIENTS, &tp_ss, &tp_ss_rate);
	reuses = bench_stat(ctl, "session", "session_reuses") - reuses0;
	for (int i = 0; i < 3; i++)
		run_fresh(ctl, levels[i], &fr[i], &fr_rate[i], &hits[i], &misses[i]);

	bench_print_block("Daemon configuration:", daemon_.config_text);
	printf("One lease+release is two requests (`sandbox.lease`, then `sandbox.release`) on a "
	       "blocking libsandpool connection; the ping-pong is one %d-byte request and a %d-byte "
	       "reply to a single-threaded epoll server on a Unix socket, so a ratio of 2x is the "
	       "floor for an ideal daemon. † marks a p999 over fewer than 1000 samples (it is the "
	       "maximum).\n\n",
	       PINGPONG_BYTES, PINGPONG_BYTES);
	printf("| mode | clients | n | p50 | p99 | p999 | ping-pong p50 | ping-pong p99 | "
	       "ping-pong p999 | ratio p50 | ratio p99 | notes |\n");
	printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
	for (int i = 0; i < 3; i++) {
		snprintf(note, sizeof(note), "%.0f lease+release/s; ping-pong %.0f/s", ss_rate[i],
			 pp_rate[i]);
		print_row("session re-lease", levels[i], &ss[i], &pp[i], note);
	}
	for (int i = 0; i < 3; i++) {
		snprintf(note, sizeof(note), "%lld warm hits, %lld waited for a new sandbox", hits[i],
			 misses[i]);
		print_row("fresh (release destroys)", levels[i], &fr[i], &pp[i], note);
	}
	printf("\nSession re-lease throughput with %d clients: **%.0f lease+release/s** "
	       "(p50 %s, p99 %s; ping-pong at %d clients: %.0f round trips/s, %.2f times as many; "
	       "2 is the floor, a lease+release being two round trips). Target ≥ %.0f/s: "
	       "**%s**.\n\n",
	       THROUGHPUT_CLIENTS, tp_ss_rate, bench_fmt_us(samples_pct(&tp_ss, 50)),
	       bench_fmt_us(samples_pct(&tp_ss, 99)), THROUGHPUT_CLIENTS, tp_pp_rate,
	       tp_ss_rate > 0 ? tp_pp_rate / tp_ss_rate : 0, THROUGHPUT_TARGET,
	       bench_verdict(tp_ss_rate >= THROUGHPUT_TARGET));
	printf("Untimed set-up: binding %d sessions to new sandboxes took %s. The daemon counted "
	       "%lld session re-leases during the timed runs (including their untimed warm-up).\n\n",
	       SESSIONS, bench_fmt_us((double)create_us), reuses);

	bench_echo_stop(&echo);
	sandpool_close(ctl);
	bench_daemon_stop(&daemon_);
	return 0;
}
