/*
 * The ledger end to end: a real sandpoold with its ledger in the temp dir,
 * a scripted workload, then `sandpool report --format json` read back and
 * checked against what the client saw and what pool.stats counted; and a
 * kill -9 under load, after which the database must be whole and hold
 * every lease released more than one flush interval (plus one commit)
 * before the kill.
 */
#include "autoconfig.h"

#include <check.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "daemon/clock.h"
#include "tests/harness.h"

static struct fixture fx;

static void teardown(void)
{
	fixture_finish(&fx);
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* ---- reading `sandpool report` ----------------------------------------------------- */

/* The CLI's stdout for `sandpool report --db LEDGER args`. */
static char *report_cli(const char *db, const char *args)
{
	char cmd[1024], *out = NULL;
	size_t len = 0, n;
	char buf[4096];
	FILE *p, *m = open_memstream(&out, &len);
	int status;

	snprintf(cmd, sizeof(cmd), "'%s/sandpool' report --db '%s' %s", builddir(), db, args);
	p = popen(cmd, "r");
	ck_assert_ptr_nonnull(p);
	while ((n = fread(buf, 1, sizeof(buf), p)) > 0)
		fwrite(buf, 1, n, m);
	status = pclose(p);
	fclose(m);
	ck_assert_msg(status == 0, "%s: exit status %d: %s", cmd, status, out);
	return out;
}

/*
 * A field of the row of `--format json` output whose field key equals
 * value (the CLI prints one "key": value per line), as a number; NAN for
 * null. Fails the test when there is no such row or field.
 */
static double json_field(const char *json, const char *key, const char *value, const char *field)
{
	char pat[256];
	const char *row, *open, *close, *f;

	snprintf(pat, sizeof(pat), "\"%s\": %s", key, value);
	row = strstr(strstr(json, "\"rows\""), pat);
	ck_assert_msg(row != NULL, "no row with %s in\n%s", pat, json);
	for (open = row; open > json && *open != '{'; open--)
		;
	close = strchr(row, '}');
	snprintf(pat, sizeof(pat), "\"%s\": ", field);
	f = strstr(open, pat);
	ck_assert_msg(f && f < close, "no %s in the row with %s=%s", field, key, value);
	f += strlen(pat);
	return strncmp(f, "null", 4) ? strtod(f, NULL) : NAN;
}

static unsigned json_rows(const char *json)
{
	unsigned n = 0;

	for (const char *p = strstr(json, "\"rows\""); p && (p = strstr(p, "\n    {")); p++)
		n++;
	return n;
}

/* ---- the scripted workload --------------------------------------------------------- */

/* max_warm = min_warm: demand cannot start creations behind the test's back. */
static const char workload_conf[] =
	"ledger_flush = 50ms\n"
	"drain_timeout = 1s\n"
	"[template shell]\nlanguage = shell\nmin_warm = 2\nmax_warm = 2\nmax_total = 6\n"
	"cpus = 2\nmemory = 1G\ncost_per_vcpu_second = 0.001\ncost_per_gib_second = 0.002\n"
	"[template py]\nlanguage = python\nmin_warm = 0\nmax_warm = 0\nmax_total = 2\n"
	"cpus = 0.5\nmemory = 256M\ncost_per_vcpu_second = 0.0001\ncost_per_gib_second = 0.0004\n";

#define SHELL_RATE (2 * 0.001 + 1 * 0.002)	 /* dollars a second */
#define PY_RATE (0.5 * 0.0001 + 0.25 * 0.0004)
/* The daemon stamps a lease between the client's request and its reply:
 * the ledger's leased time of each lease may fall short of the client's
 * round trip by this much. */
#define LEASE_BUDGET_S 0.050

/* What the client saw of one template. */
struct seen {
	unsigned leases, execs;
	uint64_t exec_us;   /* sum of the duration_us results */
	uint64_t bytes_out; /* sum of stdout and stderr lengths */
	double window_s;    /* sum of request-to-reply windows around each lease */
};

static double now_s(void)
{
	return (double)monotonic_us() / 1e6;
}

static void run_one(struct sandpool *sp, const char *tmpl, const char *const *argv, uint32_t timeout_ms,
		    const char *session, struct seen *seen)
{
	struct sandpool_exec_opts o = { .argv = argv, .timeout_ms = timeout_ms, .session = session };
	struct sandpool_exec_result res = { 0 };
	struct sandpool_error err;
	double t0 = now_s();

	ck_assert_msg(sandpool_run(sp, tmpl, 10000, &o, &res, &err) == 0, "run %s: %s", argv[0], err.message);
	seen->window_s += now_s() - t0;
	seen->leases++;
	seen->execs++;
	seen->exec_us += res.duration_us;
	seen->bytes_out += res.stdout_len + res.stderr_len;
	sandpool_exec_result_free(&res);
}

/* Until nothing is being created or leased and the warm counts are the
 * templates' min_warm, twice in a row. */
static void wait_steady(void)
{
	int stable = 0;

	for (int i = 0; i < 200 && stable < 2; i++) {
		bool steady = fixture_stat(&fx, "shell", "creating") == 0 &&
			      fixture_stat(&fx, "py", "creating") == 0 &&
			      fixture_stat(&fx, "shell", "leased") + fixture_stat(&fx, "py", "leased") == 0 &&
			      fixture_stat(&fx, "shell", "warm") == 2 && fixture_stat(&fx, "py", "warm") == 0;

		stable = steady ? stable + 1 : 0;
		sleep_ms(100);
	}
	ck_assert_int_eq(stable, 2);
}

static bool file_contains(const char *path, const char *needle)
{
	char *buf = NULL;
	size_t len = 0, n;
	char chunk[65536];
	FILE *f = fopen(path, "rb"), *m;
	bool found;

	if (!f)
		return false;
	m = open_memstream(&buf, &len);
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		fwrite(chunk, 1, n, m);
	fclose(f);
	fclose(m);
	found = memmem(buf, len, needle, strlen(needle)) != NULL;
	free(buf);
	return found;
}

/* Two cells in a python lease: one prints, one raises. */
static void code_cells(struct sandpool *sp, struct seen *seen)
{
	static const char *const cells[] = { "print('secret-code-XYZ'[:1])", "1/0" };
	struct sandpool_lease_opts lo = { .template_name = "py", .wait_ms = 10000 };
	struct sandpool_lease l = { 0 };
	struct sandpool_error err;
	double t0 = now_s();

	ck_assert_msg(sandpool_lease(sp, &lo, &l, &err) == 0, "lease py: %s", err.message);
	for (size_t i = 0; i < 2; i++) {
		struct sandpool_code_opts o = { .code = cells[i] };
		struct sandpool_execution x = { 0 };

		ck_assert_msg(sandpool_code_run(sp, l.lease_id, &o, &x, &err) == 0, "code.run: %s", err.message);
		ck_assert(i == 0 ? x.error_name == NULL : !strcmp(x.error_name, "ZeroDivisionError"));
		seen->execs++;
		seen->exec_us += x.duration_us;
		seen->bytes_out += x.stdout_len + x.stderr_len;
		sandpool_execution_free(&x);
	}
	ck_assert_int_eq(sandpool_release(sp, l.lease_id, &err), 0);
	seen->window_s += now_s() - t0;
	seen->leases++;
	sandpool_lease_free(&l);
}

START_TEST(test_report_matches_workload)
{
	const char *sleep02[] = { "sh", "-c", "sleep 0.2", NULL };
	const char *secrets[] = { "sh", "-c", "echo secret-argv-XYZ; echo \"$MARK\"; cat", NULL };
	const char *env[] = { "MARK=secret-env-XYZ", NULL };
	const char *truecmd[] = { "true", NULL };
	const char *slow[] = { "sleep", "5", NULL };
	const char *py[] = { "python3", "-c", "print(42)", NULL };
	struct seen shell = { 0 }, python = { 0 };
	struct sandpool_lease_opts lo = { .template_name = "shell" };
	struct sandpool_exec_opts eo = { .argv = sleep02 };
	struct sandpool_exec_result res = { 0 };
	struct sandpool_lease l = { 0 };
	struct sandpool_error err;
	struct sandpool *sp;
	long long hits, reuses, created, failures, py_hits, py_created;
	char comm[32] = "", pat[64], path[400];
	char *json;
	FILE *f;
	double t0;

	fixture_start(&fx, workload_conf);
	ck_assert(fixture_wait_warm(&fx, "shell", 2, 20000));
	sp = fixture_connect(&fx);

	for (int i = 0; i < 3; i++)
		run_one(sp, "shell", sleep02, 0, NULL, &shell);

	/* A lease of its own, with two execs; the second's argv, env, stdin
	 * and output carry markers that must never reach the ledger. */
	t0 = now_s();
	ck_assert_int_eq(sandpool_lease(sp, &lo, &l, &err), 0);
	ck_assert_int_eq(sandpool_exec(sp, l.lease_id, &eo, &res, &err), 0);
	shell.exec_us += res.duration_us;
	sandpool_exec_result_free(&res);
	eo = (struct sandpool_exec_opts){ .argv = secrets, .env = env, .stdin_data = "secret-stdin-XYZ\n",
					  .stdin_len = 17 };
	ck_assert_int_eq(sandpool_exec(sp, l.lease_id, &eo, &res, &err), 0);
	ck_assert_uint_eq(res.stdout_len, 16 + 15 + 17);
	shell.exec_us += res.duration_us;
	shell.bytes_out += res.stdout_len + res.stderr_len;
	sandpool_exec_result_free(&res);
	ck_assert_int_eq(sandpool_release(sp, l.lease_id, &err), 0);
	shell.window_s += now_s() - t0;
	shell.leases++;
	shell.execs += 2;
	sandpool_lease_free(&l);

	run_one(sp, "py", py, 0, NULL, &python);
	code_cells(sp, &python);
	run_one(sp, "shell", truecmd, 0, "s1", &shell);
	run_one(sp, "shell", truecmd, 0, "s1", &shell);
	ck_assert_int_eq(sandpool_session_end(sp, "s1", &err), 0);
	run_one(sp, "shell", slow, 300, NULL, &shell);
	sandpool_close(sp);

	wait_steady();
	hits = fixture_stat(&fx, "shell", "hits");
	reuses = fixture_stat(&fx, "shell", "session_reuses");
	created = fixture_stat(&fx, "shell", "created");
	failures = fixture_stat(&fx, "shell", "create_failures");
	py_hits = fixture_stat(&fx, "py", "hits") + fixture_stat(&fx, "py", "session_reuses");
	py_created = fixture_stat(&fx, "py", "created") + fixture_stat(&fx, "py", "create_failures");
	ck_assert_int_eq(fixture_stop(&fx), 0);
	/* docs/LEDGER.md's examples run on this database. */
	if (getenv("SANDPOOL_KEEP_LEDGER")) {
		char cmd[1024];

		snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", fx.ledger, getenv("SANDPOOL_KEEP_LEDGER"));
		ck_assert_int_eq(system(cmd), 0);
	}

	/* By template: counts exactly, execs to the microsecond (the same
	 * duration_us the client got), leased time within the budget. */
	json = report_cli(fx.ledger, "--format json");
	ck_assert_uint_eq(json_rows(json), 2);
	ck_assert_double_eq(json_field(json, "template", "\"shell\"", "leases"), shell.leases);
	ck_assert_double_eq(json_field(json, "template", "\"shell\"", "execs"), shell.execs);
	ck_assert_double_eq(json_field(json, "template", "\"shell\"", "warm_hits"), hits + reuses);
	/* Stopping destroyed the warm ones; none was being built. */
	ck_assert_double_eq(json_field(json, "template", "\"shell\"", "sandboxes"), created + failures);
	ck_assert_double_eq_tol(json_field(json, "template", "\"shell\"", "exec_s"), shell.exec_us / 1e6, 1e-6);
	{
		double leased = json_field(json, "template", "\"shell\"", "leased_s");
		double total = json_field(json, "template", "\"shell\"", "warming_s") +
			       json_field(json, "template", "\"shell\"", "idle_s") + leased +
			       json_field(json, "template", "\"shell\"", "held_s");

		ck_assert_msg(leased >= shell.exec_us / 1e6 && leased <= shell.window_s,
			      "leased %.6f s: not within execs %.6f s .. client windows %.6f s", leased,
			      shell.exec_us / 1e6, shell.window_s);
		ck_assert_msg(shell.window_s - leased <= LEASE_BUDGET_S * shell.leases,
			      "leased %.6f s, client windows %.6f s: over %.0f ms a lease", leased,
			      shell.window_s, LEASE_BUDGET_S * 1000);
		/* Costs are the seconds at the template's rate, to the micro-dollar
		 * (each figure is rounded to 6 places). */
		ck_assert_double_eq_tol(json_field(json, "template", "\"shell\"", "leased_cost"),
					leased * SHELL_RATE, 2e-6);
		ck_assert_double_eq_tol(json_field(json, "template", "\"shell\"", "total_cost"),
					total * SHELL_RATE, 5e-6);
		ck_assert(json_field(json, "template", "\"shell\"", "idle_cost") > 0);
	}
	ck_assert_double_eq(json_field(json, "template", "\"py\"", "leases"), python.leases);
	ck_assert_double_eq(json_field(json, "template", "\"py\"", "execs"), python.execs);
	ck_assert_double_eq(json_field(json, "template", "\"py\"", "warm_hits"), py_hits);
	ck_assert_double_eq(json_field(json, "template", "\"py\"", "sandboxes"), py_created);
	ck_assert_double_eq_tol(json_field(json, "template", "\"py\"", "exec_s"), python.exec_us / 1e6, 1e-6);
	ck_assert_double_eq_tol(json_field(json, "template", "\"py\"", "total_cost"),
				(json_field(json, "template", "\"py\"", "warming_s") +
				 json_field(json, "template", "\"py\"", "idle_s") +
				 json_field(json, "template", "\"py\"", "leased_s") +
				 json_field(json, "template", "\"py\"", "held_s")) * PY_RATE,
				5e-6);
	free(json);

	/* By client: this process, by the name the daemon read in /proc. */
	f = fopen("/proc/self/comm", "r");
	ck_assert_ptr_nonnull(f);
	ck_assert_ptr_nonnull(fgets(comm, sizeof(comm), f));
	fclose(f);
	comm[strcspn(comm, "\n")] = '\0';
	json = report_cli(fx.ledger, "--by client --format json");
	ck_assert_uint_eq(json_rows(json), 1);
	snprintf(pat, sizeof(pat), "\"%s\"", comm);
	ck_assert_double_eq(json_field(json, "process_name", pat, "leases"), shell.leases + python.leases);
	ck_assert_double_eq(json_field(json, "process_name", pat, "client_uid"), getuid());
	ck_assert_double_eq(json_field(json, "process_name", pat, "bytes_out"), shell.bytes_out + python.bytes_out);
	free(json);

	json = report_cli(fx.ledger, "--by session --format json");
	ck_assert_uint_eq(json_rows(json), 1);
	ck_assert_double_eq(json_field(json, "name", "\"s1\"", "leases"), 2);
	ck_assert_double_eq(json_field(json, "name", "\"s1\"", "execs"), 2);
	ck_assert_ptr_nonnull(strstr(json, "\"end_reason\": \"session_ended\""));
	free(json);

	json = report_cli(fx.ledger, "--by pool --format json");
	ck_assert_double_eq_tol(json_field(json, "template", "\"shell\"", "hit_rate"),
				(double)(hits + reuses) / shell.leases, 1e-6);
	free(json);

	/* Everything happened today (UTC) and within the last hour. */
	json = report_cli(fx.ledger, "--by day --since 1h --format csv");
	ck_assert_ptr_nonnull(strstr(json, "day,template,sandboxes,leases"));
	ck_assert_int_eq((int)(strchr(strchr(strchr(json, '\n') + 1, '\n') + 1, '\n') - json + 1),
			 (int)strlen(json));
	free(json);

	/* Argv, environment, stdin and output are never stored. */
	snprintf(path, sizeof(path), "%s-wal", fx.ledger);
	for (int i = 0; i < 2; i++) {
		const char *file = i ? path : fx.ledger;

		ck_assert(!file_contains(file, "secret-argv-XYZ"));
		ck_assert(!file_contains(file, "secret-env-XYZ"));
		ck_assert(!file_contains(file, "secret-stdin-XYZ"));
		ck_assert(!file_contains(file, "secret-code-XYZ"));
	}
	ck_assert(file_contains(fx.ledger, "session_ended"));
	/* Code runs are there by kind, language and error name. */
	ck_assert(file_contains(fx.ledger, "ZeroDivisionError"));
}
END_TEST

/* ---- kill -9 under load --------------------------------------------------------------- */

#define KILL_FLUSH_MS 100
/* One commit of a flush's records, on a loaded test machine. */
#define COMMIT_ALLOWANCE_MS 50
#define WORKERS 4
#define MAX_ACKS 20000

static struct {
	pthread_mutex_t lock;
	volatile bool stop;
	unsigned n;
	char id[MAX_ACKS][24];
	uint64_t acked_us[MAX_ACKS]; /* monotonic, when the release ack arrived */
} acks = { .lock = PTHREAD_MUTEX_INITIALIZER };

static void *lease_loop(void *arg)
{
	struct sandpool_lease_opts o = { .template_name = "shell", .wait_ms = 5000 };
	struct sandpool_error err;
	struct sandpool *sp = sandpool_connect(fx.sock, &err);

	if (!sp)
		return NULL;
	sandpool_set_timeout_ms(sp, 10000);
	while (!acks.stop) {
		struct sandpool_lease l = { 0 };
		uint64_t t;

		if (sandpool_lease(sp, &o, &l, &err) < 0)
			break;
		if (sandpool_release(sp, l.lease_id, &err) < 0) {
			sandpool_lease_free(&l);
			break;
		}
		t = monotonic_us();
		pthread_mutex_lock(&acks.lock);
		if (acks.n < MAX_ACKS) {
			snprintf(acks.id[acks.n], sizeof(acks.id[0]), "%s", l.lease_id);
			acks.acked_us[acks.n++] = t;
		}
		pthread_mutex_unlock(&acks.lock);
		sandpool_lease_free(&l);
	}
	sandpool_close(sp);
	return NULL;
}

START_TEST(test_kill9_keeps_released_leases)
{
	static const char conf[] = "ledger_flush = 100ms\n"
				   "[template shell]\nlanguage = shell\nmin_warm = 4\nmax_total = 8\n";
	pthread_t workers[WORKERS];
	uint64_t killed_us, margin_us = (KILL_FLUSH_MS + COMMIT_ALLOWANCE_MS) * 1000;
	unsigned checked = 0, late_present = 0, late = 0;
	sqlite3 *db;
	sqlite3_stmt *st;
	char again_conf[512];
	struct fixture again;
	int status;

	fixture_start(&fx, conf);
	ck_assert(fixture_wait_warm(&fx, "shell", 4, 20000));
	for (int i = 0; i < WORKERS; i++)
		ck_assert_int_eq(pthread_create(&workers[i], NULL, lease_loop, NULL), 0);
	sleep_ms(2500);
	/* Enough acknowledged leases to judge, however slow the build. */
	for (int i = 0; i < 300; i++) {
		unsigned n;

		pthread_mutex_lock(&acks.lock);
		n = acks.n;
		pthread_mutex_unlock(&acks.lock);
		if (n >= 40)
			break;
		sleep_ms(100);
	}
	killed_us = monotonic_us();
	kill(fx.pid, SIGKILL);
	ck_assert_int_eq(waitpid(fx.pid, &status, 0), fx.pid);
	fx.pid = 0;
	acks.stop = true;
	for (int i = 0; i < WORKERS; i++)
		pthread_join(workers[i], NULL);
	ck_assert_uint_ge(acks.n, 20);

	ck_assert_int_eq(sqlite3_open(fx.ledger, &db), SQLITE_OK);
	ck_assert_int_eq(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
	ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
	ck_assert_str_eq((const char *)sqlite3_column_text(st, 0), "ok");
	sqlite3_finalize(st);
	ck_assert_int_eq(sqlite3_prepare_v2(db, "SELECT count(*) FROM leases WHERE id = ?1 AND"
						" released_at IS NOT NULL AND end_reason = 'released'",
					    -1, &st, NULL),
			 SQLITE_OK);
	for (unsigned i = 0; i < acks.n; i++) {
		bool old = acks.acked_us[i] + margin_us < killed_us, present;

		sqlite3_bind_text(st, 1, acks.id[i], -1, SQLITE_STATIC);
		ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
		present = sqlite3_column_int(st, 0) == 1;
		sqlite3_reset(st);
		ck_assert_msg(present || !old, "lease %s, released %llu ms before the kill, is missing",
			      acks.id[i], (unsigned long long)(killed_us - acks.acked_us[i]) / 1000);
		checked += old;
		late += !old;
		late_present += !old && present;
	}
	sqlite3_finalize(st);
	sqlite3_close(db);
	ck_assert_uint_ge(checked, 10);
	fprintf(stderr, "kill -9: %u of %u released leases were older than %llu ms and all present;"
			" %u of the %u younger ones made it\n",
		checked, acks.n, (unsigned long long)margin_us / 1000, late_present, late);
	ck_assert_uint_eq(count_orphans(), 0);

	/* The next daemon on this ledger closes what the killed one left open. */
	snprintf(again_conf, sizeof(again_conf), "ledger_path = %s\n[template shell]\nmin_warm = 1\n",
		 fx.ledger);
	fixture_start(&again, again_conf);
	ck_assert(fixture_wait_warm(&again, "shell", 1, 20000));
	ck_assert_int_eq(fixture_stop(&again), 0);
	fixture_cleanup(&again);
	ck_assert_int_eq(sqlite3_open(fx.ledger, &db), SQLITE_OK);
	ck_assert_int_eq(sqlite3_prepare_v2(db, "SELECT (SELECT group_concat(end_reason) FROM daemon_runs),"
						" (SELECT count(*) FROM sandboxes WHERE destroyed_at IS NULL),"
						" (SELECT count(*) FROM leases WHERE released_at IS NULL)",
					    -1, &st, NULL),
			 SQLITE_OK);
	ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
	ck_assert_str_eq((const char *)sqlite3_column_text(st, 0), "abandoned,shutdown");
	ck_assert_int_eq(sqlite3_column_int(st, 1), 0);
	ck_assert_int_eq(sqlite3_column_int(st, 2), 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
}
END_TEST

static Suite *ledger_e2e_suite(void)
{
	Suite *s = suite_create("ledger_e2e");
	TCase *tc = tcase_create("e2e");

	tcase_add_checked_fixture(tc, NULL, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_report_matches_workload);
	tcase_add_test(tc, test_kill9_keeps_released_leases);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return run_suite(ledger_e2e_suite());
}
