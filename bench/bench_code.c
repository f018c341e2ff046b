/*
 * f. The first code.run on a freshly leased sandbox whose template preloads
 * `import email, json, decimal, sqlite3, http.client`, against the same
 * imports in a cold `/usr/bin/python3 -c` on the host (named explicitly:
 * python3 on PATH may be a slow pyenv shim), and against the first
 * code.run on a template without preload (the interpreter starts lazily,
 * inside the sandbox). Not a pass/fail test: it prints medians and ratios.
 */
#include "autoconfig.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/bench.h"

#define IMPORTS "import email, json, decimal, sqlite3, http.client"
#define ITERATIONS 30
#define BUDGET_US (90 * 1000000ull)

static const char templates[] = "[template preloaded]\n"
				"language = python\n"
				"min_warm = 2\n"
				"max_total = 4\n"
				"preload = " IMPORTS "\n"
				"[template lazy]\n"
				"language = python\n"
				"min_warm = 2\n"
				"max_total = 4\n";

/* The cell: the imports (done already where preloaded) and a use of them. */
static const char cell[] = IMPORTS "\njson.dumps([decimal.Decimal(\"1.5\").as_integer_ratio()])";

/* Leases a warm sandbox of tmpl and times its first code.run. */
static uint64_t first_run(struct bench_daemon *d, struct sandpool *sp, const char *tmpl)
{
	struct sandpool_lease_opts lo = { .template_name = tmpl, .wait_ms = 60000 };
	struct sandpool_code_opts co = { .code = cell };
	struct sandpool_execution ex = { 0 };
	struct sandpool_lease l = { 0 };
	struct sandpool_error err;
	uint64_t t0, t;

	/* Warm, so that the lease is not what is measured. */
	if (!bench_wait_stat(sp, tmpl, "warm", 1, 5, 60000))
		bench_die("template %s did not warm up (see %s)", tmpl, d->log);
	if (sandpool_lease(sp, &lo, &l, &err) < 0)
		bench_die("lease %s: %s", tmpl, err.message);
	t0 = bench_now_us();
	if (sandpool_code_run(sp, l.lease_id, &co, &ex, &err) < 0)
		bench_die("code.run: %s", err.message);
	t = bench_now_us() - t0;
	if (ex.error_name || !ex.text || strcmp(ex.text, "'[[3, 2]]'"))
		bench_die("code.run in %s: %s %s", tmpl, ex.error_name ? ex.error_name : "", ex.text ? ex.text : "");
	sandpool_execution_free(&ex);
	if (sandpool_release(sp, l.lease_id, &err) < 0)
		bench_die("release: %s", err.message);
	sandpool_lease_free(&l);
	return t;
}

static uint64_t cold_python(char *const argv[])
{
	uint64_t t0 = bench_now_us();
	int status = bench_run_cmd(argv, NULL, 0);

	if (status != 0)
		bench_die("%s: status %d", bench_argv_str(argv), status);
	return bench_now_us() - t0;
}

static void row(const char *name, struct bench_samples *s, double ref)
{
	double p50 = samples_pct(s, 50);

	printf("| %s | %zu | %s | %s | %s | %.2fx |\n", name, s->n, bench_fmt_us(p50), bench_fmt_us(samples_pct(s, 90)),
	       bench_fmt_us(samples_pct(s, 100)), ref > 0 ? ref / p50 : 0);
}

int main(int argc, char **argv)
{
	char *const cold_argv[] = { "/usr/bin/python3", "-c", (char *)cell, NULL };
	struct bench_samples pre = { 0 }, lazy = { 0 }, cold = { 0 };
	struct bench_daemon d;
	struct sandpool *sp;
	double cold_p50;

	bench_section("f. First code.run: preloaded interpreter vs cold python", argc, argv);
	bench_daemon_start(&d, NULL, templates);
	sp = bench_connect(&d);
	/* Untimed: page cache and the daemon's first sandboxes. */
	first_run(&d, sp, "preloaded");
	first_run(&d, sp, "lazy");
	cold_python(cold_argv);
	/* Taking turns: load from elsewhere falls on all three alike. */
	for (uint64_t end = bench_now_us() + BUDGET_US; pre.n < ITERATIONS && bench_now_us() < end;) {
		samples_add(&pre, first_run(&d, sp, "preloaded"));
		samples_add(&lazy, first_run(&d, sp, "lazy"));
		samples_add(&cold, cold_python(cold_argv));
	}
	sandpool_close(sp);

	bench_print_block("Daemon configuration:", d.config_text);
	printf("Each iteration (up to %d in %llu s, after one untimed) times, in turn: the first "
	       "`code.run` (`sandpool_code_run()`, no language: the template's python default "
	       "context) on a sandbox just leased from the warm pool of *preloaded*, whose preload "
	       "ran those imports before the sandbox counted as warm; the same on *lazy*, which has "
	       "no preload, so the cell starts the interpreter; and `%s` on the host (fork, exec, "
	       "wait). The cell is:\n\n```python\n%s\n```\n\n",
	       ITERATIONS, BUDGET_US / 1000000, bench_argv_str(cold_argv), cell);
	cold_p50 = samples_pct(&cold, 50);
	printf("| variant | n | p50 | p90 | max | cold python / p50 |\n");
	printf("|---|---:|---:|---:|---:|---:|\n");
	row("first code.run, preloaded template", &pre, cold_p50);
	row("first code.run, no preload (interpreter starts)", &lazy, cold_p50);
	row("cold /usr/bin/python3 -c on the host", &cold, cold_p50);
	printf("\nMedians: preloaded %s, no preload %s, cold python %s: the preloaded first run is "
	       "%.1fx faster than cold python.\n\n",
	       bench_fmt_us(samples_pct(&pre, 50)), bench_fmt_us(samples_pct(&lazy, 50)), bench_fmt_us(cold_p50),
	       cold_p50 / samples_pct(&pre, 50));
	bench_daemon_stop(&d);
	samples_free(&pre);
	samples_free(&lazy);
	samples_free(&cold);
	return 0;
}
