#include "autoconfig.h"

#include "store/schema.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "daemon/log.h"

/*
 * Migrations: migrations[N] takes user_version N to N+1. Append; never
 * edit a released step (databases in the field ran it as it was).
 *
 * Times are UTC ISO-8601 text with microseconds, "2026-11-23T08:40:01.123456Z":
 * readable in sqlite3, and ordered as text. ids are the daemon's ("sb-...",
 * "ls-...") except where the ledger numbers rows itself.
 */
static const char *const migrations[] = {
	/* 0 -> 1: the first schema. */
	"CREATE TABLE daemon_runs ("
	"  id INTEGER PRIMARY KEY,"
	"  started_at TEXT NOT NULL,"
	"  stopped_at TEXT,"	       /* NULL: running, or died before it could say */
	"  last_seen_at TEXT NOT NULL," /* the run's latest commit: a bound for what it left */
	"  end_reason TEXT,"	       /* 'shutdown', or 'abandoned' (set by the next run) */
	"  version TEXT NOT NULL,"
	"  config_hash TEXT NOT NULL,"
	"  pid INTEGER NOT NULL);"
	"CREATE TABLE sandboxes ("
	"  id TEXT PRIMARY KEY,"
	"  daemon_run INTEGER REFERENCES daemon_runs(id),"
	"  template TEXT NOT NULL,"
	"  backend TEXT NOT NULL,"
	"  backend_ref TEXT," /* the backend's own name for it, when not the id */
	"  created_at TEXT NOT NULL,"
	"  ready_at TEXT,"
	"  first_leased_at TEXT,"
	"  destroyed_at TEXT,"
	"  end_reason TEXT,"
	"  vcpus REAL NOT NULL,"
	"  memory_mb INTEGER NOT NULL,"
	"  cost_per_vcpu_second REAL NOT NULL," /* the template's rates when it was created */
	"  cost_per_gib_second REAL NOT NULL);"
	"CREATE INDEX sandboxes_created_at ON sandboxes(created_at);"
	"CREATE INDEX sandboxes_open ON sandboxes(daemon_run) WHERE destroyed_at IS NULL;"
	"CREATE TABLE sessions ("
	"  id INTEGER PRIMARY KEY,"
	"  name TEXT NOT NULL,"
	"  uid INTEGER NOT NULL,"
	"  template TEXT NOT NULL,"
	"  sandbox TEXT REFERENCES sandboxes(id),"
	"  daemon_run INTEGER REFERENCES daemon_runs(id),"
	"  created_at TEXT NOT NULL,"
	"  ended_at TEXT,"
	"  end_reason TEXT);"
	"CREATE INDEX sessions_created_at ON sessions(created_at);"
	"CREATE INDEX sessions_open ON sessions(name) WHERE ended_at IS NULL;"
	"CREATE TABLE leases ("
	"  id TEXT PRIMARY KEY,"
	"  sandbox TEXT NOT NULL REFERENCES sandboxes(id),"
	"  session INTEGER REFERENCES sessions(id),"
	"  client_uid INTEGER NOT NULL,"
	"  client_pid INTEGER NOT NULL,"
	"  process_name TEXT,"
	"  requested_at TEXT NOT NULL,"
	"  acquired_at TEXT NOT NULL,"
	"  released_at TEXT,"
	"  warm_hit INTEGER NOT NULL CHECK (warm_hit IN (0, 1)),"
	"  end_reason TEXT);"
	"CREATE INDEX leases_sandbox ON leases(sandbox);"
	"CREATE INDEX leases_session ON leases(session) WHERE session IS NOT NULL;"
	"CREATE INDEX leases_requested_at ON leases(requested_at);"
	"CREATE TABLE executions ("
	"  id INTEGER PRIMARY KEY,"
	"  lease TEXT NOT NULL REFERENCES leases(id),"
	"  kind TEXT NOT NULL CHECK (kind IN ('exec', 'code')),"
	"  language TEXT,"
	"  started_at TEXT NOT NULL,"
	"  duration_us INTEGER NOT NULL,"
	"  exit_code INTEGER,"
	"  signal INTEGER,"
	"  error_name TEXT,"
	"  bytes_out INTEGER NOT NULL,"
	"  truncated INTEGER NOT NULL CHECK (truncated IN (0, 1)),"
	"  limit_hit TEXT);" /* PROTOCOL.md's "limit"; LIMIT is an SQL keyword */
	"CREATE INDEX executions_lease ON executions(lease);"
	"CREATE INDEX executions_started_at ON executions(started_at);",
};

_Static_assert(sizeof(migrations) / sizeof(migrations[0]) == SCHEMA_VERSION,
	       "SCHEMA_VERSION is the number of migration steps");

/*
 * View building blocks. US(t): microseconds since the epoch of ledger time
 * t, by integer arithmetic on the text (julianday() would round to tens of
 * microseconds); NULL stays NULL, and a shorter fraction such as NOW's
 * milliseconds is padded. NOW: the end of intervals still open.
 */
#define US(t)                                                                                      \
	"(CAST(strftime('%s', " t ") AS INTEGER) * 1000000 + "                                     \
	"CAST(substr(rtrim(substr(" t ", 21), 'Z') || '000000', 1, 6) AS INTEGER))"
#define NOW "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
/* Dollars per second for sandbox row s. */
#define RATE(s)                                                                                    \
	"(" s ".vcpus * " s ".cost_per_vcpu_second + " s ".memory_mb / 1024.0 * " s                \
	".cost_per_gib_second)"

/*
 * One row per sandbox, its life split into phases that add up to it:
 * warming (created -> ready, or -> destroyed if it never was), idle
 * (ready -> first lease, or -> destroyed if never leased: the price of
 * warmth), leased (inside its leases) and held (after its first lease
 * but outside any lease: a session's sandbox between leases, and the
 * teardown after the last one).
 */
static const char sandbox_usage[] =
	"SELECT id, template, backend, daemon_run, created_at, substr(created_at, 1, 10) AS day,"
	" ready_at, first_leased_at, destroyed_at, end_reason, vcpus, memory_mb,"
	" rate AS cost_per_second,"
	" warming_us / 1e6 AS warming_s, idle_us / 1e6 AS idle_s, leased_us / 1e6 AS leased_s,"
	" held_us / 1e6 AS held_s, (warming_us + idle_us + leased_us + held_us) / 1e6 AS total_s,"
	" warming_us / 1e6 * rate AS warming_cost, idle_us / 1e6 * rate AS idle_cost,"
	" leased_us / 1e6 * rate AS leased_cost, held_us / 1e6 * rate AS held_cost,"
	" (warming_us + idle_us + leased_us + held_us) / 1e6 * rate AS total_cost "
	"FROM (SELECT *,"
	"  max(coalesce(r_us, d_us) - c_us, 0) AS warming_us,"
	"  CASE WHEN r_us IS NULL THEN 0 ELSE max(coalesce(f_us, d_us) - r_us, 0) END AS idle_us,"
	"  coalesce(l_us, 0) AS leased_us,"
	"  CASE WHEN f_us IS NULL THEN 0 ELSE max(d_us - f_us - coalesce(l_us, 0), 0) END AS held_us"
	" FROM (SELECT s.*, " RATE("s") " AS rate,"
	"   " US("s.created_at") " AS c_us, " US("s.ready_at") " AS r_us,"
	"   " US("s.first_leased_at") " AS f_us, " US("coalesce(s.destroyed_at, " NOW ")") " AS d_us,"
	"   (SELECT sum(" US("coalesce(l.released_at, " NOW ")") " - " US("l.acquired_at") ")"
	"    FROM leases l WHERE l.sandbox = s.id) AS l_us"
	"  FROM sandboxes s))";

/* One row per lease: how long it waited and lasted, what it cost, what ran. */
static const char lease_usage[] =
	"SELECT l.id, l.sandbox, s.template, l.session, l.client_uid, l.client_pid, l.process_name,"
	" l.requested_at, substr(l.requested_at, 1, 10) AS day, l.acquired_at, l.released_at,"
	" l.warm_hit, l.end_reason,"
	" (" US("l.acquired_at") " - " US("l.requested_at") ") / 1e6 AS wait_s,"
	" (" US("coalesce(l.released_at, " NOW ")") " - " US("l.acquired_at") ") / 1e6 AS leased_s,"
	" (" US("coalesce(l.released_at, " NOW ")") " - " US("l.acquired_at") ") / 1e6 * " RATE("s")
	" AS leased_cost,"
	" (SELECT count(*) FROM executions e WHERE e.lease = l.id) AS execs,"
	" (SELECT coalesce(sum(e.duration_us), 0) FROM executions e WHERE e.lease = l.id) / 1e6"
	" AS exec_s,"
	" (SELECT coalesce(sum(e.bytes_out), 0) FROM executions e WHERE e.lease = l.id) AS bytes_out "
	"FROM leases l LEFT JOIN sandboxes s ON s.id = l.sandbox";

/*
 * Sandbox phases and lease figures summed per KEYS (columns both base
 * views have). A key may have sandboxes and no leases or, in a time
 * window, leases of sandboxes created before it: hence the union.
 */
#define USAGE_BY(KEYS, JOIN_S, JOIN_L)                                                             \
	"SELECT k.*,"                                                                              \
	" coalesce(s.sandboxes, 0) AS sandboxes, coalesce(l.leases, 0) AS leases,"                 \
	" coalesce(l.warm_hits, 0) AS warm_hits, coalesce(l.execs, 0) AS execs,"                   \
	" round(coalesce(l.exec_s, 0), 6) AS exec_s,"                                              \
	" round(coalesce(s.warming_s, 0), 6) AS warming_s, round(coalesce(s.idle_s, 0), 6) AS idle_s," \
	" round(coalesce(s.leased_s, 0), 6) AS leased_s, round(coalesce(s.held_s, 0), 6) AS held_s," \
	" round(coalesce(s.total_cost, 0), 6) AS total_cost,"                                      \
	" round(coalesce(s.warming_cost, 0), 6) AS warming_cost,"                                  \
	" round(coalesce(s.idle_cost, 0), 6) AS idle_cost,"                                        \
	" round(coalesce(s.leased_cost, 0), 6) AS leased_cost,"                                    \
	" round(coalesce(s.held_cost, 0), 6) AS held_cost "                                        \
	"FROM (SELECT " KEYS " FROM sandbox_usage UNION SELECT " KEYS                              \
	" FROM lease_usage WHERE template IS NOT NULL) k "                                         \
	"LEFT JOIN (SELECT " KEYS ", count(*) AS sandboxes, sum(warming_s) AS warming_s,"           \
	"  sum(idle_s) AS idle_s, sum(leased_s) AS leased_s, sum(held_s) AS held_s,"               \
	"  sum(total_cost) AS total_cost, sum(warming_cost) AS warming_cost,"                      \
	"  sum(idle_cost) AS idle_cost, sum(leased_cost) AS leased_cost, sum(held_cost) AS held_cost" \
	"  FROM sandbox_usage GROUP BY " KEYS ") s ON " JOIN_S " "                                  \
	"LEFT JOIN (SELECT " KEYS ", count(*) AS leases, sum(warm_hit) AS warm_hits,"               \
	"  sum(execs) AS execs, sum(exec_s) AS exec_s"                                             \
	"  FROM lease_usage GROUP BY " KEYS ") l ON " JOIN_L " "                                    \
	"ORDER BY " KEYS

static const char usage_by_template[] =
	USAGE_BY("template", "s.template = k.template", "l.template = k.template");

static const char usage_by_day[] = USAGE_BY("day, template",
					    "s.day = k.day AND s.template = k.template",
					    "l.day = k.day AND l.template = k.template");

/* A client is a uid and the name of its process (/proc/PID/comm). */
static const char usage_by_client[] =
	"SELECT client_uid, process_name, count(*) AS leases, sum(warm_hit) AS warm_hits,"
	" round(avg(wait_s) * 1000, 3) AS mean_wait_ms, round(sum(leased_s), 6) AS leased_s,"
	" round(coalesce(sum(leased_cost), 0), 6) AS leased_cost, sum(execs) AS execs,"
	" round(sum(exec_s), 6) AS exec_s, sum(bytes_out) AS bytes_out "
	"FROM lease_usage GROUP BY client_uid, process_name ORDER BY client_uid, process_name";

/* How well warmth paid off: hits, waits, and the share of time and money idle. */
static const char pool_efficiency[] =
	"SELECT k.template,"
	" coalesce(l.leases, 0) AS leases, coalesce(l.warm_hits, 0) AS warm_hits,"
	" round(l.warm_hits * 1.0 / l.leases, 6) AS hit_rate,"
	" round(l.mean_wait_s * 1000, 3) AS mean_wait_ms, round(l.max_wait_s * 1000, 3) AS max_wait_ms,"
	" coalesce(s.sandboxes, 0) AS sandboxes, coalesce(s.create_failed, 0) AS create_failed,"
	" round(s.mean_warming_s * 1000, 3) AS mean_warming_ms,"
	" round(s.idle_s / nullif(s.total_s, 0), 6) AS idle_share,"
	" round(coalesce(s.idle_cost, 0), 6) AS idle_cost, round(coalesce(s.total_cost, 0), 6) AS total_cost,"
	" round(s.idle_cost / nullif(s.total_cost, 0), 6) AS idle_cost_share "
	"FROM (SELECT template FROM sandbox_usage UNION SELECT template FROM lease_usage"
	"  WHERE template IS NOT NULL) k "
	"LEFT JOIN (SELECT template, count(*) AS sandboxes,"
	"  sum(end_reason = 'create_failed') AS create_failed,"
	"  avg(CASE WHEN ready_at IS NOT NULL THEN warming_s END) AS mean_warming_s,"
	"  sum(idle_s) AS idle_s, sum(total_s) AS total_s, sum(idle_cost) AS idle_cost,"
	"  sum(total_cost) AS total_cost FROM sandbox_usage GROUP BY template) s"
	" ON s.template = k.template "
	"LEFT JOIN (SELECT template, count(*) AS leases, sum(warm_hit) AS warm_hits,"
	"  avg(wait_s) AS mean_wait_s, max(wait_s) AS max_wait_s FROM lease_usage GROUP BY template) l"
	" ON l.template = k.template "
	"ORDER BY k.template";

/* One row per session: its leases, what ran, and what its sandbox cost. */
static const char sessions_summary[] =
	"SELECT ss.id, ss.name, ss.uid, ss.template, ss.sandbox, ss.created_at, ss.ended_at,"
	" ss.end_reason,"
	" round((" US("coalesce(ss.ended_at, " NOW ")") " - " US("ss.created_at") ") / 1e6, 6)"
	" AS duration_s,"
	" coalesce(l.leases, 0) AS leases, coalesce(l.execs, 0) AS execs,"
	" round(coalesce(l.exec_s, 0), 6) AS exec_s, round(coalesce(l.leased_s, 0), 6) AS leased_s,"
	" round(coalesce(su.total_cost, 0), 6) AS total_cost "
	"FROM sessions ss "
	"LEFT JOIN (SELECT session, count(*) AS leases, sum(execs) AS execs, sum(exec_s) AS exec_s,"
	"  sum(leased_s) AS leased_s FROM lease_usage WHERE session IS NOT NULL GROUP BY session) l"
	" ON l.session = ss.id "
	"LEFT JOIN sandbox_usage su ON su.id = ss.sandbox "
	"ORDER BY ss.created_at, ss.id";

/* Base views first: the others are built on them. */
const struct schema_view schema_views[] = {
	{ "sandbox_usage", sandbox_usage },
	{ "lease_usage", lease_usage },
	{ "usage_by_template", usage_by_template },
	{ "usage_by_day", usage_by_day },
	{ "usage_by_client", usage_by_client },
	{ "pool_efficiency", pool_efficiency },
	{ "sessions_summary", sessions_summary },
};
const size_t schema_n_views = ARRAY_SIZE(schema_views);

const struct schema_view *schema_view_find(const char *name)
{
	for (size_t i = 0; i < schema_n_views; i++)
		if (!strcmp(schema_views[i].name, name))
			return &schema_views[i];
	return NULL;
}

void schema_format_time(uint64_t realtime_us, char out[SCHEMA_TIME_LEN])
{
	time_t sec = (time_t)(realtime_us / 1000000);
	char wide[64]; /* room for any int, so that the compiler sees no truncation */
	struct tm tm;

	gmtime_r(&sec, &tm);
	snprintf(wide, sizeof(wide), "%04d-%02d-%02dT%02d:%02d:%02d.%06uZ", tm.tm_year + 1900,
		 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
		 (unsigned)(realtime_us % 1000000));
	snprintf(out, SCHEMA_TIME_LEN, "%.27s", wide);
}

static int fail(sqlite3 *db, char *err, size_t errlen, const char *what)
{
	snprintf(err, errlen, "%s: %s", what, sqlite3_errmsg(db));
	return -1;
}

int schema_version(sqlite3 *db)
{
	sqlite3_stmt *st;
	int v = -1;

	if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK)
		return -1;
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return v;
}

/* Runs sql inside one write transaction; rolls back on failure. */
static int exec_in_transaction(sqlite3 *db, const char *sql, char *err, size_t errlen,
			       const char *what)
{
	if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
		return fail(db, err, errlen, what);
	if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK) {
		fail(db, err, errlen, what);
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
		return -1;
	}
	if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
		fail(db, err, errlen, what);
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
		return -1;
	}
	return 0;
}

int schema_migrate(sqlite3 *db, int target, char *err, size_t errlen)
{
	int v = schema_version(db);

	if (v < 0)
		return fail(db, err, errlen, "reading user_version");
	if (v > SCHEMA_VERSION) {
		snprintf(err, errlen,
			 "the ledger has schema version %d; this sandpool knows up to %d (a newer "
			 "sandpool wrote it)",
			 v, SCHEMA_VERSION);
		return -1;
	}
	for (; v < target; v++) {
		char what[64], *sql;

		snprintf(what, sizeof(what), "migrating the ledger from version %d to %d", v, v + 1);
		/* The version moves in the step's own transaction. */
		sql = sqlite3_mprintf("%s; PRAGMA user_version = %d;", migrations[v], v + 1);
		if (!sql) {
			snprintf(err, errlen, "%s: out of memory", what);
			return -1;
		}
		if (exec_in_transaction(db, sql, err, errlen, what) < 0) {
			sqlite3_free(sql);
			return -1;
		}
		sqlite3_free(sql);
		log_info("ledger migrated to schema version %d", v + 1);
	}
	return 0;
}

/* Whether view name exists with exactly sql as its definition. */
static bool view_current(sqlite3 *db, const char *name, const char *sql)
{
	sqlite3_stmt *st;
	bool same = false;

	if (sqlite3_prepare_v2(db, "SELECT sql FROM sqlite_master WHERE type = 'view' AND name = ?1",
			       -1, &st, NULL) != SQLITE_OK)
		return false;
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW)
		same = !strcmp((const char *)sqlite3_column_text(st, 0), sql);
	sqlite3_finalize(st);
	return same;
}

int schema_install_views(sqlite3 *db, char *err, size_t errlen)
{
	char *all = NULL;
	bool stale = false;
	int rc;

	/* Either every view is current or all are replaced, in one transaction:
	 * readers never see a mix. */
	for (size_t i = 0; i < schema_n_views && !stale; i++) {
		char *sql = sqlite3_mprintf("CREATE VIEW %s AS %s", schema_views[i].name,
					    schema_views[i].select);

		stale = !sql || !view_current(db, schema_views[i].name, sql);
		sqlite3_free(sql);
	}
	if (!stale)
		return 0;
	for (size_t i = schema_n_views; i-- > 0;) {
		char *more = sqlite3_mprintf("%zDROP VIEW IF EXISTS %s;", all, schema_views[i].name);

		if (!more)
			goto oom;
		all = more;
	}
	for (size_t i = 0; i < schema_n_views; i++) {
		char *more = sqlite3_mprintf("%zCREATE VIEW %s AS %s;", all, schema_views[i].name,
					     schema_views[i].select);

		if (!more)
			goto oom;
		all = more;
	}
	rc = exec_in_transaction(db, all, err, errlen, "creating the ledger's views");
	sqlite3_free(all);
	return rc;
oom:
	sqlite3_free(all);
	snprintf(err, errlen, "creating the ledger's views: out of memory");
	return -1;
}
