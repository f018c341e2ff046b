/*
 * The ledger against temporary databases: migrations, the queue and its
 * writer, the views' arithmetic on hand-made rows, a locked database and
 * the backlog bound, crash recovery, retention, and the report's window.
 */
#include "autoconfig.h"

#include <check.h>
#include <errno.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "daemon/clock.h"
#include "daemon/config.h"
#include "ipc/codec.h"
#include "store/ledger.h"
#include "store/report.h"
#include "store/schema.h"

#define FLUSH_MS 20

static char dir[64], db_path[128];

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/sandpool-ledger-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(db_path, sizeof(db_path), "%s/ledger.db", dir);
}

static void teardown(void)
{
	char cmd[128];

	ledger_stop();
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	ck_assert_int_eq(system(cmd), 0);
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static sqlite3 *open_db(void)
{
	sqlite3 *db;

	ck_assert_int_eq(sqlite3_open(db_path, &db), SQLITE_OK);
	sqlite3_busy_timeout(db, 5000);
	return db;
}

static void exec_sql(sqlite3 *db, const char *sql)
{
	char *msg = NULL;

	ck_assert_msg(sqlite3_exec(db, sql, NULL, NULL, &msg) == SQLITE_OK, "%s: %s", sql, msg);
}

/* The first column of the first row, as an integer. */
static long long query_int(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *st;
	long long v;

	ck_assert_msg(sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK, "%s: %s", sql,
		      sqlite3_errmsg(db));
	ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
	v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

static double query_double(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *st;
	double v;

	ck_assert_msg(sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK, "%s: %s", sql,
		      sqlite3_errmsg(db));
	ck_assert_msg(sqlite3_step(st) == SQLITE_ROW, "%s: no row", sql);
	ck_assert_msg(sqlite3_column_type(st, 0) != SQLITE_NULL, "%s: NULL", sql);
	v = sqlite3_column_double(st, 0);
	sqlite3_finalize(st);
	return v;
}

/* The first column of the first row as text ("" for NULL), into buf. */
static const char *query_text(sqlite3 *db, const char *sql, char *buf, size_t len)
{
	sqlite3_stmt *st;

	ck_assert_msg(sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK, "%s: %s", sql,
		      sqlite3_errmsg(db));
	ck_assert_msg(sqlite3_step(st) == SQLITE_ROW, "%s: no row", sql);
	snprintf(buf, len, "%s", sqlite3_column_text(st, 0) ? (const char *)sqlite3_column_text(st, 0) : "");
	sqlite3_finalize(st);
	return buf;
}

/* A figure of a view or query, to the microsecond (or micro-dollar). */
#define ck_figure(db, sql, want)                                                                   \
	do {                                                                                       \
		double got_ = query_double(db, sql);                                               \
		ck_assert_msg(fabs(got_ - (want)) < 5e-7, "%s: %.9f, want %.9f", sql, got_,        \
			      (double)(want));                                                     \
	} while (0)

static struct ledger_options options(unsigned backlog)
{
	return (struct ledger_options){ .path = db_path, .flush_ms = FLUSH_MS, .retention_ms = 0,
					.backlog = backlog, .version = "test", .config_hash = "0" };
}

static void start(unsigned backlog)
{
	struct ledger_options o = options(backlog);
	char err[512];

	ck_assert_msg(ledger_start(&o, err, sizeof(err)) == 0, "%s", err);
}

/* Waits until nothing is queued; false after timeout_ms. */
static bool drained(int timeout_ms)
{
	struct ledger_stats s;

	for (int waited = 0; waited <= timeout_ms; waited += 5) {
		ledger_get_stats(&s);
		if (s.backlog == 0)
			return true;
		sleep_ms(5);
	}
	return false;
}

/* ---- migrations ------------------------------------------------------------- */

static const char *const tables[] = { "daemon_runs", "sandboxes", "leases", "executions",
				      "sessions" };

static void check_current(sqlite3 *db)
{
	char sql[256], buf[32];

	ck_assert_int_eq(schema_version(db), SCHEMA_VERSION);
	for (size_t i = 0; i < sizeof(tables) / sizeof(tables[0]); i++) {
		snprintf(sql, sizeof(sql), "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '%s'",
			 tables[i]);
		ck_assert_int_eq(query_int(db, sql), 1);
	}
	for (size_t i = 0; i < schema_n_views; i++) {
		snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s", schema_views[i].name);
		ck_assert_int_ge(query_int(db, sql), 0);
	}
	ck_assert_str_eq(query_text(db, "PRAGMA integrity_check", buf, sizeof(buf)), "ok");
}

START_TEST(test_migrate_from_empty)
{
	sqlite3 *db = open_db();
	char err[512];

	ck_assert_int_eq(schema_version(db), 0);
	ck_assert_msg(schema_migrate(db, SCHEMA_VERSION, err, sizeof(err)) == 0, "%s", err);
	ck_assert_msg(schema_install_views(db, err, sizeof(err)) == 0, "%s", err);
	check_current(db);
	/* Again: nothing to do, and the views are left alone. */
	ck_assert_int_eq(schema_migrate(db, SCHEMA_VERSION, err, sizeof(err)), 0);
	{
		int before = sqlite3_total_changes(db);

		ck_assert_int_eq(schema_install_views(db, err, sizeof(err)), 0);
		ck_assert_int_eq(sqlite3_total_changes(db), before);
	}
	sqlite3_close(db);
}
END_TEST

/* Each step from the version before it, with a row of every table that
 * version has, which must survive. */
START_TEST(test_migrate_each_version)
{
	for (int from = 0; from < SCHEMA_VERSION; from++) {
		sqlite3 *db;
		char err[512], path[160];

		snprintf(path, sizeof(path), "%s/v%d.db", dir, from);
		ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
		ck_assert_msg(schema_migrate(db, from, err, sizeof(err)) == 0, "%s", err);
		ck_assert_int_eq(schema_version(db), from);
		if (from >= 1)
			exec_sql(db, "INSERT INTO sandboxes (id, template, backend, created_at, vcpus,"
				     " memory_mb, cost_per_vcpu_second, cost_per_gib_second) VALUES"
				     " ('sb-old', 't', 'local', '2026-01-01T00:00:00.000000Z', 1, 512, 0, 0)");
		ck_assert_msg(schema_migrate(db, SCHEMA_VERSION, err, sizeof(err)) == 0,
			      "from %d: %s", from, err);
		ck_assert_msg(schema_install_views(db, err, sizeof(err)) == 0, "%s", err);
		check_current(db);
		if (from >= 1)
			ck_assert_int_eq(query_int(db, "SELECT count(*) FROM sandboxes WHERE id = 'sb-old'"), 1);
		sqlite3_close(db);
	}
}
END_TEST

START_TEST(test_newer_schema_refused)
{
	sqlite3 *db = open_db();
	struct ledger_options o = options(100);
	struct report_query q = { .db_path = db_path };
	struct report r;
	char err[512], sql[64];

	snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", SCHEMA_VERSION + 1);
	exec_sql(db, sql);
	ck_assert_int_lt(schema_migrate(db, SCHEMA_VERSION, err, sizeof(err)), 0);
	ck_assert_ptr_nonnull(strstr(err, "newer"));
	sqlite3_close(db);
	/* The daemon refuses to start on it rather than write a schema it
	 * does not know, and the report says why. */
	ck_assert_int_lt(ledger_start(&o, err, sizeof(err)), 0);
	ck_assert(!ledger_enabled());
	ck_assert_int_lt(report_run(&q, &r, err, sizeof(err)), 0);
	ck_assert_ptr_nonnull(strstr(err, "newer"));
}
END_TEST

START_TEST(test_not_a_database_refused)
{
	struct ledger_options o = options(100);
	FILE *f = fopen(db_path, "w");
	char err[512];

	fputs("this is not an SQLite database, just text long enough to have a header........"
	      "................................................................................",
	      f);
	fclose(f);
	ck_assert_int_lt(ledger_start(&o, err, sizeof(err)), 0);
	ck_assert_ptr_nonnull(strstr(err, db_path));
}
END_TEST

/* ---- queue -> flush -> rows ---------------------------------------------------- */

START_TEST(test_records_become_rows)
{
	struct template_config t = { .name = "py", .backend = BACKEND_E2B, .cpu_milli = 2500,
				     .memory = 1536ull << 20, .cost_per_vcpu_second = 0.000014,
				     .cost_per_gib_second = 0.0000045 };
	struct ledger_exec e = { .lease = "ls-0000000000000001", .started_mono_us = monotonic_us() - 1000,
				 .duration_us = 1234, .signal = 9, .bytes_out = 4096, .truncated = true,
				 .limit = "output_limit" };
	struct ledger_exec failed = { .lease = "ls-0000000000000001",
				      .started_mono_us = monotonic_us(), .error_name = "aborted" };
	struct ledger_stats s;
	char buf[128];
	sqlite3 *db;

	start(1000);
	ledger_session_started("s1", 1000, "py");
	ledger_sandbox_created("sb-0000000000000001", &t);
	ledger_sandbox_ready("sb-0000000000000001");
	ledger_session_bound("s1", "sb-0000000000000001");
	ledger_lease_acquired("ls-0000000000000001", "sb-0000000000000001", "s1", 1000, 4242, "agent",
			      monotonic_us() - 250000, true);
	ledger_exec_done(&e);
	e.exited = true, e.exit_code = 3, e.signal = 0, e.truncated = false, e.limit = NULL;
	ledger_exec_done(&e);
	ledger_exec_done(&failed);
	ledger_lease_released("ls-0000000000000001", LEDGER_RELEASED);
	ledger_session_ended("s1", LEDGER_SESSION_ENDED);
	ledger_sandbox_ending("sb-0000000000000001", LEDGER_SESSION_ENDED);
	ledger_sandbox_destroyed("sb-0000000000000001");
	ck_assert(drained(2000));
	ledger_get_stats(&s);
	ck_assert(s.open);
	ck_assert_uint_eq(s.queued, 13); /* and the run's start */
	ck_assert_uint_eq(s.written, 13);
	ck_assert_uint_eq(s.dropped + s.rejected + s.failed_flushes, 0);
	ledger_stop();

	db = open_db();
	ck_assert_int_eq(query_int(db, "SELECT count(*) FROM daemon_runs WHERE end_reason = 'shutdown'"
				       " AND stopped_at IS NOT NULL AND version = 'test'"),
			 1);
	ck_assert_int_eq(query_int(db, "SELECT pid FROM daemon_runs"), getpid());
	ck_figure(db, "SELECT vcpus FROM sandboxes", 2.5);
	ck_assert_int_eq(query_int(db, "SELECT memory_mb FROM sandboxes"), 1536);
	ck_figure(db, "SELECT cost_per_gib_second * 1e6 FROM sandboxes", 4.5);
	ck_assert_str_eq(query_text(db, "SELECT backend || ' ' || template || ' ' || end_reason FROM sandboxes",
				    buf, sizeof(buf)),
			 "e2b py session_ended");
	ck_assert_int_eq(query_int(db, "SELECT count(*) FROM sandboxes WHERE created_at <= ready_at AND"
				       " ready_at <= first_leased_at AND first_leased_at <= destroyed_at"
				       " AND daemon_run = 1"),
			 1);
	ck_assert_str_eq(query_text(db, "SELECT client_uid || ' ' || client_pid || ' ' || process_name"
					" || ' ' || warm_hit || ' ' || end_reason FROM leases",
				    buf, sizeof(buf)),
			 "1000 4242 agent 1 released");
	/* requested 250 ms before it was granted, to the clock's word */
	ck_figure(db, "SELECT round(wait_s, 2) FROM lease_usage", 0.25);
	ck_assert_int_eq(query_int(db, "SELECT count(*) FROM leases l JOIN sessions s ON l.session = s.id"
				       " WHERE s.name = 's1' AND s.sandbox = l.sandbox"
				       " AND s.end_reason = 'session_ended'"),
			 1);
	ck_assert_int_eq(query_int(db, "SELECT count(*) FROM executions WHERE kind = 'exec'"), 3);
	ck_assert_str_eq(query_text(db, "SELECT coalesce(exit_code, '-') || ' ' || signal || ' ' ||"
					" bytes_out || ' ' || truncated || ' ' || limit_hit"
					" FROM executions WHERE id = 1",
				    buf, sizeof(buf)),
			 "- 9 4096 1 output_limit");
	ck_assert_str_eq(query_text(db, "SELECT exit_code || ' ' || coalesce(signal, '-') || ' ' ||"
					" coalesce(limit_hit, '-') FROM executions WHERE id = 2",
				    buf, sizeof(buf)),
			 "3 - -");
	ck_assert_str_eq(query_text(db, "SELECT error_name FROM executions WHERE id = 3", buf, sizeof(buf)),
			 "aborted");
	/* Times are UTC ISO-8601 with microseconds. */
	ck_assert_int_eq(query_int(db, "SELECT count(*) FROM sandboxes WHERE created_at GLOB"
				       " '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:"
				       "[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'"),
			 1);
	sqlite3_close(db);
}
END_TEST

/* ---- the views' numbers --------------------------------------------------------- */

/*
 * Template py: 2 vCPUs and 1 GiB at $0.001 per vCPU-second and $0.002 per
 * GiB-second, $0.004 a second. Template sh costs nothing.
 *   sb-a (py): created 10:00:00, ready +1.5 s, idle 10 s, leased 10.000001 s
 *              (ls-1, waited 0.1 s, execs of 0.2 and 0.3 s), held 0.5 s.
 *   sb-b (py): warming 2 s, idle 60 s, rotated.
 *   sb-c (py): failed after 0.25 s.
 *   sb-d (sh): session sess; ls-2 waited 0.3 s (a miss), leased 0.7 s, one
 *              exec of 0.1 s, held 0.1 s (teardown).
 */
static const char fixture_rows[] =
	"INSERT INTO daemon_runs (id, started_at, stopped_at, last_seen_at, end_reason, version,"
	" config_hash, pid) VALUES (1, '2026-11-20T09:59:00.000000Z', '2026-11-20T11:00:00.000000Z',"
	" '2026-11-20T11:00:00.000000Z', 'shutdown', 't', '0', 1);"
	"INSERT INTO sandboxes (id, daemon_run, template, backend, created_at, ready_at,"
	" first_leased_at, destroyed_at, end_reason, vcpus, memory_mb, cost_per_vcpu_second,"
	" cost_per_gib_second) VALUES"
	" ('sb-a', 1, 'py', 'local', '2026-11-20T10:00:00.000000Z', '2026-11-20T10:00:01.500000Z',"
	"  '2026-11-20T10:00:11.500000Z', '2026-11-20T10:00:22.000001Z', 'released', 2, 1024, 0.001, 0.002),"
	" ('sb-b', 1, 'py', 'local', '2026-11-20T10:01:00.000000Z', '2026-11-20T10:01:02.000000Z',"
	"  NULL, '2026-11-20T10:02:02.000000Z', 'rotated', 2, 1024, 0.001, 0.002),"
	" ('sb-c', 1, 'py', 'local', '2026-11-20T10:03:00.000000Z', NULL, NULL,"
	"  '2026-11-20T10:03:00.250000Z', 'create_failed', 2, 1024, 0.001, 0.002),"
	" ('sb-d', 1, 'sh', 'local', '2026-11-20T10:05:00.000001Z', '2026-11-20T10:05:00.300000Z',"
	"  '2026-11-20T10:05:00.300000Z', '2026-11-20T10:05:01.100000Z', 'session_ended', 1, 512, 0, 0);"
	"INSERT INTO sessions (id, name, uid, template, sandbox, daemon_run, created_at, ended_at,"
	" end_reason) VALUES (1, 'sess', 1001, 'sh', 'sb-d', 1, '2026-11-20T10:05:00.000000Z',"
	" '2026-11-20T10:05:01.100000Z', 'session_ended');"
	"INSERT INTO leases (id, sandbox, session, client_uid, client_pid, process_name, requested_at,"
	" acquired_at, released_at, warm_hit, end_reason) VALUES"
	" ('ls-1', 'sb-a', NULL, 1000, 10, 'agent', '2026-11-20T10:00:11.400000Z',"
	"  '2026-11-20T10:00:11.500000Z', '2026-11-20T10:00:21.500001Z', 1, 'released'),"
	" ('ls-2', 'sb-d', 1, 1001, 11, 'wf', '2026-11-20T10:05:00.000000Z',"
	"  '2026-11-20T10:05:00.300000Z', '2026-11-20T10:05:01.000000Z', 0, 'session_ended');"
	"INSERT INTO executions (lease, kind, started_at, duration_us, exit_code, bytes_out, truncated)"
	" VALUES ('ls-1', 'exec', '2026-11-20T10:00:12.000000Z', 200000, 0, 10, 0),"
	" ('ls-1', 'exec', '2026-11-20T10:00:13.000000Z', 300000, 0, 20, 0),"
	" ('ls-2', 'exec', '2026-11-20T10:05:00.400000Z', 100000, 1, 5, 0);";

static sqlite3 *fixture_db(void)
{
	sqlite3 *db = open_db();
	char err[512];

	ck_assert_msg(schema_migrate(db, SCHEMA_VERSION, err, sizeof(err)) == 0, "%s", err);
	ck_assert_msg(schema_install_views(db, err, sizeof(err)) == 0, "%s", err);
	exec_sql(db, fixture_rows);
	return db;
}

START_TEST(test_sandbox_phases)
{
	sqlite3 *db = fixture_db();

	ck_figure(db, "SELECT warming_s FROM sandbox_usage WHERE id = 'sb-a'", 1.5);
	ck_figure(db, "SELECT idle_s FROM sandbox_usage WHERE id = 'sb-a'", 10);
	ck_figure(db, "SELECT leased_s FROM sandbox_usage WHERE id = 'sb-a'", 10.000001);
	ck_figure(db, "SELECT held_s FROM sandbox_usage WHERE id = 'sb-a'", 0.5);
	ck_figure(db, "SELECT total_s FROM sandbox_usage WHERE id = 'sb-a'", 22.000001);
	ck_figure(db, "SELECT cost_per_second FROM sandbox_usage WHERE id = 'sb-a'", 0.004);
	ck_figure(db, "SELECT total_cost FROM sandbox_usage WHERE id = 'sb-a'", 0.088000004);
	ck_figure(db, "SELECT idle_s + warming_s FROM sandbox_usage WHERE id = 'sb-b'", 62);
	ck_figure(db, "SELECT warming_s FROM sandbox_usage WHERE id = 'sb-c'", 0.25);
	ck_figure(db, "SELECT idle_s + leased_s + held_s FROM sandbox_usage WHERE id = 'sb-c'", 0);
	ck_figure(db, "SELECT warming_s FROM sandbox_usage WHERE id = 'sb-d'", 0.299999);
	ck_figure(db, "SELECT held_s FROM sandbox_usage WHERE id = 'sb-d'", 0.1);
	ck_figure(db, "SELECT wait_s FROM lease_usage WHERE id = 'ls-2'", 0.3);
	ck_figure(db, "SELECT leased_cost FROM lease_usage WHERE id = 'ls-1'", 0.040000004);
	sqlite3_close(db);
}
END_TEST

START_TEST(test_usage_views)
{
	sqlite3 *db = fixture_db();

#define PY(col) "SELECT " col " FROM usage_by_template WHERE template = 'py'"
	ck_assert_int_eq(query_int(db, PY("sandboxes")), 3);
	ck_assert_int_eq(query_int(db, PY("leases")), 1);
	ck_assert_int_eq(query_int(db, PY("warm_hits")), 1);
	ck_assert_int_eq(query_int(db, PY("execs")), 2);
	ck_figure(db, PY("exec_s"), 0.5);
	ck_figure(db, PY("warming_s"), 3.75);
	ck_figure(db, PY("idle_s"), 70);
	ck_figure(db, PY("leased_s"), 10.000001);
	ck_figure(db, PY("held_s"), 0.5);
	ck_figure(db, PY("total_cost"), 0.337);
	ck_figure(db, PY("warming_cost"), 0.015);
	ck_figure(db, PY("idle_cost"), 0.28);
	ck_figure(db, PY("leased_cost"), 0.04);
	ck_figure(db, PY("held_cost"), 0.002);
#undef PY
	ck_figure(db, "SELECT total_cost FROM usage_by_template WHERE template = 'sh'", 0);
	ck_figure(db, "SELECT leased_s FROM usage_by_template WHERE template = 'sh'", 0.7);
	ck_assert_int_eq(query_int(db, "SELECT count(*) FROM usage_by_day"), 2);
	ck_figure(db, "SELECT idle_cost FROM usage_by_day WHERE day = '2026-11-20' AND template = 'py'",
		  0.28);

	ck_assert_int_eq(query_int(db, "SELECT count(*) FROM usage_by_client"), 2);
	ck_figure(db, "SELECT mean_wait_ms FROM usage_by_client WHERE process_name = 'agent'", 100);
	ck_figure(db, "SELECT leased_cost FROM usage_by_client WHERE client_uid = 1000", 0.04);
	ck_assert_int_eq(query_int(db, "SELECT bytes_out FROM usage_by_client WHERE client_uid = 1000"), 30);
	ck_figure(db, "SELECT exec_s FROM usage_by_client WHERE client_uid = 1001", 0.1);

#define EFF(col) "SELECT " col " FROM pool_efficiency WHERE template = 'py'"
	ck_figure(db, EFF("hit_rate"), 1);
	ck_figure(db, EFF("mean_wait_ms"), 100);
	ck_assert_int_eq(query_int(db, EFF("create_failed")), 1);
	ck_figure(db, EFF("mean_warming_ms"), 1750);
	ck_figure(db, EFF("idle_share"), round(70 / 84.250001 * 1e6) / 1e6);
	ck_figure(db, EFF("idle_cost_share"), round(0.28 / 0.337000004 * 1e6) / 1e6);
#undef EFF
	ck_figure(db, "SELECT hit_rate FROM pool_efficiency WHERE template = 'sh'", 0);
	ck_figure(db, "SELECT mean_wait_ms FROM pool_efficiency WHERE template = 'sh'", 300);
	ck_assert_int_eq(query_int(db, "SELECT count(*) FROM pool_efficiency WHERE template = 'sh'"
				       " AND idle_cost_share IS NULL"),
			 1);

	ck_figure(db, "SELECT duration_s FROM sessions_summary WHERE name = 'sess'", 1.1);
	ck_assert_int_eq(query_int(db, "SELECT leases * 10 + execs FROM sessions_summary"), 11);
	ck_figure(db, "SELECT leased_s FROM sessions_summary", 0.7);
	sqlite3_close(db);
}
END_TEST

/* A sandbox still alive is counted up to now. */
START_TEST(test_open_intervals_run_to_now)
{
	sqlite3 *db = fixture_db();
	char sql[512], now[SCHEMA_TIME_LEN];

	schema_format_time(realtime_us() - 5000000, now);
	snprintf(sql, sizeof(sql),
		 "INSERT INTO sandboxes (id, template, backend, created_at, ready_at, vcpus, memory_mb,"
		 " cost_per_vcpu_second, cost_per_gib_second) VALUES ('sb-open', 'py', 'local', '%s', '%s',"
		 " 1, 1024, 0, 0)",
		 now, now);
	exec_sql(db, sql);
	ck_assert_int_eq(query_int(db, "SELECT idle_s BETWEEN 4.9 AND 30 FROM sandbox_usage WHERE id = 'sb-open'"),
			 1);
	sqlite3_close(db);
}
END_TEST

/* ---- the report ---------------------------------------------------------------- */

/* Every cell of view equals the report's, in order. */
static void check_report_equals_view(sqlite3 *db, const char *by, const char *view)
{
	struct report_query q = { .db_path = db_path, .by = by };
	const msgpack_object_array *rows, *cols;
	struct report r;
	sqlite3_stmt *st;
	char err[512], sql[128];
	uint32_t n = 0;

	ck_assert_msg(report_run(&q, &r, err, sizeof(err)) == 0, "%s", err);
	ck_assert_int_eq(ipc_get_array(r.result, "rows", &rows), 0);
	ck_assert_int_eq(ipc_get_array(r.result, "columns", &cols), 0);
	snprintf(sql, sizeof(sql), "SELECT * FROM %s", view);
	ck_assert_int_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	ck_assert_int_eq(sqlite3_column_count(st), (int)cols->size);
	for (; sqlite3_step(st) == SQLITE_ROW; n++) {
		ck_assert_uint_lt(n, rows->size);
		for (int c = 0; c < sqlite3_column_count(st); c++) {
			const msgpack_object *v = ipc_map_get(&rows->ptr[n], sqlite3_column_name(st, c));

			ck_assert_ptr_nonnull(v);
			switch (sqlite3_column_type(st, c)) {
			case SQLITE_NULL:
				ck_assert_int_eq(v->type, MSGPACK_OBJECT_NIL);
				break;
			case SQLITE_INTEGER:
				ck_assert_int_eq(v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER ? v->via.i64 :
											      (int64_t)v->via.u64,
						 sqlite3_column_int64(st, c));
				break;
			case SQLITE_FLOAT:
				ck_assert(v->type == MSGPACK_OBJECT_FLOAT64);
				ck_assert_double_eq(v->via.f64, sqlite3_column_double(st, c));
				break;
			default:
				ck_assert_int_eq(v->type, MSGPACK_OBJECT_STR);
				ck_assert_int_eq((int)v->via.str.size, sqlite3_column_bytes(st, c));
				ck_assert(!memcmp(v->via.str.ptr, sqlite3_column_text(st, c), v->via.str.size));
			}
		}
	}
	sqlite3_finalize(st);
	ck_assert_uint_eq(n, rows->size);
	report_free(&r);
}

START_TEST(test_report_equals_views)
{
	sqlite3 *db = fixture_db();

	check_report_equals_view(db, "template", "usage_by_template");
	check_report_equals_view(db, "day", "usage_by_day");
	check_report_equals_view(db, "client", "usage_by_client");
	check_report_equals_view(db, "session", "sessions_summary");
	check_report_equals_view(db, "pool", "pool_efficiency");
	sqlite3_close(db);
}
END_TEST

static const msgpack_object *report_row(struct report *r, uint32_t i)
{
	const msgpack_object_array *rows;

	ck_assert_int_eq(ipc_get_array(r->result, "rows", &rows), 0);
	ck_assert_uint_lt(i, rows->size);
	return &rows->ptr[i];
}

static uint32_t report_rows(struct report *r)
{
	const msgpack_object_array *rows;

	ck_assert_int_eq(ipc_get_array(r->result, "rows", &rows), 0);
	return rows->size;
}

START_TEST(test_report_window)
{
	sqlite3 *db = fixture_db();
	struct report_query q = { .db_path = db_path, .since = "2026-11-20T10:00:30Z",
				  .until = "2026-11-20T10:04" };
	struct report r;
	char err[512];
	uint64_t u;
	const char *s;
	uint32_t len;

	sqlite3_close(db);
	/* py's sb-b and sb-c began in the window; sb-a and its lease before it. */
	ck_assert_msg(report_run(&q, &r, err, sizeof(err)) == 0, "%s", err);
	ck_assert_uint_eq(report_rows(&r), 1);
	ck_assert_int_eq(ipc_get_uint(report_row(&r, 0), "sandboxes", &u), 0);
	ck_assert_uint_eq(u, 2);
	ck_assert_int_eq(ipc_get_uint(report_row(&r, 0), "leases", &u), 0);
	ck_assert_uint_eq(u, 0);
	ck_assert_double_eq_tol(ipc_map_get(report_row(&r, 0), "warming_s")->via.f64, 2.25, 1e-9);
	ck_assert_int_eq(ipc_get_str(r.result, "since", &s, &len), 0);
	ck_assert_int_eq(strncmp(s, "2026-11-20T10:00:30.000000Z", len), 0);
	report_free(&r);

	/* Sessions are windowed by their start and keep all their leases. */
	q = (struct report_query){ .db_path = db_path, .by = "session", .since = "2026-11-20" };
	ck_assert_int_eq(report_run(&q, &r, err, sizeof(err)), 0);
	ck_assert_uint_eq(report_rows(&r), 1);
	ck_assert_int_eq(ipc_get_uint(report_row(&r, 0), "leases", &u), 0);
	ck_assert_uint_eq(u, 1);
	report_free(&r);
	q.since = "2026-11-21";
	ck_assert_int_eq(report_run(&q, &r, err, sizeof(err)), 0);
	ck_assert_uint_eq(report_rows(&r), 0);
	report_free(&r);

	q = (struct report_query){ .db_path = db_path, .by = "week" };
	ck_assert_int_lt(report_run(&q, &r, err, sizeof(err)), 0);
	ck_assert_ptr_nonnull(strstr(err, "template|day"));
}
END_TEST

START_TEST(test_report_parse_time)
{
	/* 2026-11-23T08:40:01.123456Z */
	const uint64_t now = 1795423201123456ull;
	char t[SCHEMA_TIME_LEN];

	ck_assert_int_eq(report_parse_time("24h", now, t), 0);
	ck_assert_str_eq(t, "2026-11-22T08:40:01.123456Z");
	ck_assert_int_eq(report_parse_time("7d", now, t), 0);
	ck_assert_str_eq(t, "2026-11-16T08:40:01.123456Z");
	ck_assert_int_eq(report_parse_time("90s", now, t), 0);
	ck_assert_str_eq(t, "2026-11-23T08:38:31.123456Z");
	ck_assert_int_eq(report_parse_time("2w", now, t), 0);
	ck_assert_str_eq(t, "2026-11-09T08:40:01.123456Z");
	ck_assert_int_eq(report_parse_time("2026-11-23", now, t), 0);
	ck_assert_str_eq(t, "2026-11-23T00:00:00.000000Z");
	ck_assert_int_eq(report_parse_time("2026-11-23T08:40Z", now, t), 0);
	ck_assert_str_eq(t, "2026-11-23T08:40:00.000000Z");
	ck_assert_int_eq(report_parse_time("2026-11-23T08:40:01.5", now, t), 0);
	ck_assert_str_eq(t, "2026-11-23T08:40:01.500000Z");
	ck_assert_int_eq(report_parse_time("2026-11-23T08:40:01.1234567Z", now, t), -EINVAL);
	ck_assert_int_eq(report_parse_time("2026-02-31", now, t), -EINVAL);
	ck_assert_int_eq(report_parse_time("2026-11-23T24:00", now, t), -EINVAL);
	ck_assert_int_eq(report_parse_time("24", now, t), -EINVAL);
	ck_assert_int_eq(report_parse_time("24y", now, t), -EINVAL);
	ck_assert_int_eq(report_parse_time("99999999999d", now, t), -EINVAL);
	ck_assert_int_eq(report_parse_time("yesterday", now, t), -EINVAL);
	ck_assert_int_eq(report_parse_time("", now, t), -EINVAL);
}
END_TEST

/* ---- a busy database, and the bound -------------------------------------------------- */

static void lease(unsigned i)
{
	char id[24];

	snprintf(id, sizeof(id), "ls-%016x", i);
	ledger_lease_acquired(id, "sb-0000000000000000", NULL, 0, 1, "t", monotonic_us(), true);
}

START_TEST(test_locked_database_keeps_records)
{
	struct ledger_stats s;
	sqlite3 *lock;
	uint64_t t0, took_us;

	start(1000);
	ck_assert(drained(2000)); /* the run's start is in */
	lock = open_db();
	exec_sql(lock, "BEGIN EXCLUSIVE");
	t0 = monotonic_us();
	for (unsigned i = 0; i < 500; i++)
		lease(i);
	took_us = monotonic_us() - t0;
	/* Recording never waits for the database: 500 records in well under
	 * one flush interval, though the writer is stuck on the lock. */
	ck_assert_msg(took_us < FLUSH_MS * 1000, "500 records took %llu us", (unsigned long long)took_us);
	sleep_ms(10 * FLUSH_MS);
	ledger_get_stats(&s);
	ck_assert_uint_eq(s.backlog, 500);
	ck_assert_uint_eq(s.written, 1);
	ck_assert_uint_ge(s.failed_flushes, 2);
	ck_assert_uint_eq(s.dropped, 0);
	ck_assert_int_eq(query_int(lock, "SELECT count(*) FROM leases"), 0);
	exec_sql(lock, "COMMIT");
	ck_assert(drained(2000));
	ledger_get_stats(&s);
	ck_assert_uint_eq(s.written, 501);
	ck_assert_uint_eq(s.dropped + s.rejected, 0);
	ck_assert_int_eq(query_int(lock, "SELECT count(*) FROM leases"), 500);
	sqlite3_close(lock);
}
END_TEST

START_TEST(test_backlog_bound)
{
	struct ledger_stats s;
	sqlite3 *lock;

	start(100);
	ck_assert(drained(2000));
	lock = open_db();
	exec_sql(lock, "BEGIN EXCLUSIVE");
	for (unsigned i = 0; i < 250; i++)
		lease(i);
	ledger_get_stats(&s);
	/* The first 100 wait; the 150 newest are dropped and counted. */
	ck_assert_uint_eq(s.backlog, 100);
	ck_assert_uint_eq(s.dropped, 150);
	ck_assert_uint_eq(s.queued, 101);
	exec_sql(lock, "COMMIT");
	ck_assert(drained(2000));
	ck_assert_int_eq(query_int(lock, "SELECT count(*) FROM leases"), 100);
	ck_assert_int_eq(query_int(lock, "SELECT count(*) FROM leases WHERE id > 'ls-0000000000000063'"), 0);
	sqlite3_close(lock);
}
END_TEST

/*
 * A full disk: with RLIMIT_FSIZE at one byte, SQLite's
 * writes fail (EFBIG: SQLITE_FULL or an I/O error). Records wait, and all
 * land once there is room. No check assertion runs while the limit holds:
 * check itself writes files.
 */
START_TEST(test_full_disk_keeps_records)
{
	struct rlimit saved, tight;
	struct ledger_stats during, after;
	char wal[160];
	struct stat st;
	sqlite3 *db;

	start(10000);
	ck_assert(drained(2000));
	snprintf(wal, sizeof(wal), "%s-wal", db_path);
	ck_assert_int_eq(stat(wal, &st), 0);
	ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &saved), 0);
	/* One byte: SQLite reuses WAL space after a checkpoint, so a limit at
	 * the WAL's size could still let a commit through. */
	tight = (struct rlimit){ .rlim_cur = 1, .rlim_max = saved.rlim_max };
	signal(SIGXFSZ, SIG_IGN);
	setrlimit(RLIMIT_FSIZE, &tight);
	for (unsigned i = 0; i < 3000; i++)
		lease(i);
	/* At least two flush attempts must have failed; a slow (sanitized)
	 * writer may take longer than a few intervals to make them. */
	for (int waited = 0; waited < 10000; waited += FLUSH_MS) {
		sleep_ms(FLUSH_MS);
		ledger_get_stats(&during);
		if (during.failed_flushes >= 2)
			break;
	}
	setrlimit(RLIMIT_FSIZE, &saved);
	ck_assert_uint_eq(during.backlog, 3000);
	ck_assert_uint_ge(during.failed_flushes, 2);
	ck_assert(drained(5000));
	ledger_get_stats(&after);
	ck_assert_uint_eq(after.written, 3001);
	ck_assert_uint_eq(after.dropped + after.rejected, 0);
	ledger_stop();
	db = open_db();
	ck_assert_int_eq(query_int(db, "SELECT count(*) FROM leases"), 3000);
	sqlite3_close(db);
}
END_TEST

/* Records still queued at stop are committed before the writer ends. */
START_TEST(test_stop_flushes)
{
	sqlite3 *db;

	start(10000);
	for (unsigned i = 0; i < 2000; i++)
		lease(i);
	ledger_stop();
	db = open_db();
	ck_assert_int_eq(query_int(db, "SELECT count(*) FROM leases"), 2000);
	ck_assert_int_eq(query_int(db, "SELECT count(*) FROM daemon_runs WHERE end_reason = 'shutdown'"), 1);
	sqlite3_close(db);
}
END_TEST

/* ---- crash recovery and retention ---------------------------------------------------- */

/* A pid that no process has. */
static pid_t dead_pid(void)
{
	pid_t pid = fork();

	if (pid == 0)
		_exit(0);
	waitpid(pid, NULL, 0);
	return pid;
}

START_TEST(test_abandoned_run_closed)
{
	sqlite3 *db = open_db();
	char err[512], sql[1024], buf[64];

	ck_assert_int_eq(schema_migrate(db, SCHEMA_VERSION, err, sizeof(err)), 0);
	snprintf(sql, sizeof(sql),
		 "INSERT INTO daemon_runs (id, started_at, last_seen_at, version, config_hash, pid)"
		 " VALUES (7, '2026-11-20T10:00:00.000000Z', '2026-11-20T10:30:00.000000Z', 't', '0', %d);"
		 "INSERT INTO sandboxes (id, daemon_run, template, backend, created_at, ready_at,"
		 " first_leased_at, vcpus, memory_mb, cost_per_vcpu_second, cost_per_gib_second) VALUES"
		 " ('sb-x', 7, 'py', 'local', '2026-11-20T10:00:01.000000Z', '2026-11-20T10:00:02.000000Z',"
		 "  '2026-11-20T10:00:03.000000Z', 1, 512, 0, 0),"
		 " ('sb-y', 7, 'py', 'local', '2026-11-20T10:00:01.000000Z', NULL, NULL, 1, 512, 0, 0);"
		 "UPDATE sandboxes SET end_reason = 'shutdown' WHERE id = 'sb-y';"
		 "INSERT INTO leases (id, sandbox, client_uid, client_pid, requested_at, acquired_at, warm_hit)"
		 " VALUES ('ls-x', 'sb-x', 0, 1, '2026-11-20T10:00:03.000000Z', '2026-11-20T10:00:03.000000Z', 1);"
		 "INSERT INTO sessions (name, uid, template, sandbox, daemon_run, created_at)"
		 " VALUES ('s', 0, 'py', 'sb-x', 7, '2026-11-20T10:00:03.000000Z');",
		 (int)dead_pid());
	exec_sql(db, sql);
	sqlite3_close(db);
	start(100);
	ledger_stop();
	db = open_db();
	ck_assert_str_eq(query_text(db, "SELECT end_reason || ' ' || stopped_at FROM daemon_runs WHERE id = 7",
				    buf, sizeof(buf)),
			 "abandoned 2026-11-20T10:30:00.000000Z");
	ck_assert_str_eq(query_text(db, "SELECT end_reason || ' ' || destroyed_at FROM sandboxes WHERE id = 'sb-x'",
				    buf, sizeof(buf)),
			 "abandoned 2026-11-20T10:30:00.000000Z");
	/* A reason given before the crash stays. */
	ck_assert_str_eq(query_text(db, "SELECT end_reason FROM sandboxes WHERE id = 'sb-y'", buf, sizeof(buf)),
			 "shutdown");
	ck_assert_str_eq(query_text(db, "SELECT end_reason || ' ' || released_at FROM leases", buf, sizeof(buf)),
			 "abandoned 2026-11-20T10:30:00.000000Z");
	ck_assert_str_eq(query_text(db, "SELECT end_reason FROM sessions", buf, sizeof(buf)), "abandoned");
	ck_figure(db, "SELECT leased_s FROM sandbox_usage WHERE id = 'sb-x'", 1797);
	/* This run is the other one, and it ended cleanly. */
	ck_assert_int_eq(query_int(db, "SELECT count(*) FROM daemon_runs WHERE end_reason = 'shutdown'"), 1);
	sqlite3_close(db);
}
END_TEST

START_TEST(test_retention_prunes_old_rows)
{
	struct ledger_options o = options(100);
	sqlite3 *db = fixture_db();
	char err[512];

	/* The fixture's rows are days old: all go but sb-b, which is still
	 * open however old. */
	exec_sql(db, "UPDATE sandboxes SET destroyed_at = NULL, end_reason = NULL WHERE id = 'sb-b'");
	sqlite3_close(db);
	/* A century, longer than the epoch is old: nothing goes. */
	o.retention_ms = 36500ull * 86400 * 1000;
	ck_assert_msg(ledger_start(&o, err, sizeof(err)) == 0, "%s", err);
	ck_assert(drained(2000));
	sleep_ms(5 * FLUSH_MS);
	ledger_stop();
	db = open_db();
	ck_assert_int_eq(query_int(db, "SELECT count(*) FROM executions"), 3);
	sqlite3_close(db);

	o.retention_ms = 86400 * 1000ull;
	ck_assert_msg(ledger_start(&o, err, sizeof(err)) == 0, "%s", err);
	/* The first prune follows the first commit. */
	ck_assert(drained(2000));
	sleep_ms(5 * FLUSH_MS);
	ledger_stop();
	db = open_db();
	ck_assert_int_eq(query_int(db, "SELECT count(*) FROM executions"), 0);
	ck_assert_int_eq(query_int(db, "SELECT count(*) FROM leases"), 0);
	ck_assert_int_eq(query_int(db, "SELECT count(*) FROM sessions"), 0);
	ck_assert_int_eq(query_int(db, "SELECT count(*) FROM sandboxes"), 1);
	ck_assert_int_eq(query_int(db, "SELECT count(*) FROM sandboxes WHERE id = 'sb-b'"), 1);
	/* The two runs of this test are recent; the fixture's old run stays
	 * because sb-b still points at it. */
	ck_assert_int_eq(query_int(db, "SELECT count(*) FROM daemon_runs"), 3);
	sqlite3_close(db);
}
END_TEST

static Suite *ledger_suite(void)
{
	Suite *s = suite_create("ledger");
	TCase *tc = tcase_create("ledger");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_migrate_from_empty);
	tcase_add_test(tc, test_migrate_each_version);
	tcase_add_test(tc, test_newer_schema_refused);
	tcase_add_test(tc, test_not_a_database_refused);
	tcase_add_test(tc, test_records_become_rows);
	tcase_add_test(tc, test_sandbox_phases);
	tcase_add_test(tc, test_usage_views);
	tcase_add_test(tc, test_open_intervals_run_to_now);
	tcase_add_test(tc, test_report_equals_views);
	tcase_add_test(tc, test_report_window);
	tcase_add_test(tc, test_report_parse_time);
	tcase_add_test(tc, test_locked_database_keeps_records);
	tcase_add_test(tc, test_backlog_bound);
	tcase_add_test(tc, test_full_disk_keeps_records);
	tcase_add_test(tc, test_stop_flushes);
	tcase_add_test(tc, test_abandoned_run_closed);
	tcase_add_test(tc, test_retention_prunes_old_rows);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(ledger_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
