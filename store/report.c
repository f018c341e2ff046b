#include "autoconfig.h"

#include "store/report.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon/clock.h"
#include "daemon/log.h"
#include "ipc/codec.h"

/*
 * What each --by shows, and what the window narrows: leases by when they
 * were requested and sandboxes by when they were created (a sandbox's
 * whole life counts in the window it began in), or sessions by when they
 * began (with all their leases, whenever those were).
 */
static const struct grouping {
	const char *by;
	const char *view;
	bool window_sessions;
} groupings[] = {
	{ "template", "usage_by_template", false },
	{ "day", "usage_by_day", false },
	{ "client", "usage_by_client", false },
	{ "session", "sessions_summary", true },
	{ "pool", "pool_efficiency", false },
};

const char report_by_names[] = "template|day|client|session|pool";

#define IN_WINDOW(col) " WHERE " col " >= ?1 AND " col " < ?2"
/* Later than any ledger time. */
#define END_OF_TIME "9999-12-31T23:59:59.999999Z"

/* "24h": a duration back from now. 0, -EINVAL, or 1 when s is not one. */
static int parse_ago(const char *s, uint64_t now_us, char out[SCHEMA_TIME_LEN])
{
	static const struct {
		char unit;
		uint64_t sec;
	} units[] = { { 's', 1 }, { 'm', 60 }, { 'h', 3600 }, { 'd', 86400 }, { 'w', 7 * 86400 } };
	unsigned long long n;
	char *end;

	if (!isdigit((unsigned char)s[0]))
		return 1;
	errno = 0;
	n = strtoull(s, &end, 10);
	if (!end[0] || end[1])
		return 1;
	for (size_t i = 0; i < ARRAY_SIZE(units); i++) {
		if (end[0] == units[i].unit) {
			if (errno || n > now_us / 1000000 / units[i].sec)
				return -EINVAL;
			schema_format_time(now_us - n * units[i].sec * 1000000, out);
			return 0;
		}
	}
	return -EINVAL;
}

int report_parse_time(const char *s, uint64_t now_us, char out[SCHEMA_TIME_LEN])
{
	int year, mon, mday, hour = 0, min = 0, sec = 0, used = 0, digits = 0;
	unsigned usec = 0;
	struct tm tm;
	time_t t;
	int rc = parse_ago(s, now_us, out);

	if (rc <= 0)
		return rc;
	if (sscanf(s, "%4d-%2d-%2d%n", &year, &mon, &mday, &used) != 3 || used != 10)
		return -EINVAL;
	s += used;
	if (*s == 'T') {
		if (sscanf(s, "T%2d:%2d%n", &hour, &min, &used) != 2 || used != 6)
			return -EINVAL;
		s += used;
		if (*s == ':' && (sscanf(s, ":%2d%n", &sec, &used) != 1 || used != 3))
			return -EINVAL;
		if (*s == ':')
			s += used;
		if (*s == '.') {
			while (isdigit((unsigned char)*++s) && digits < 6) {
				usec = usec * 10 + (unsigned)(*s - '0');
				digits++;
			}
			if (!digits)
				return -EINVAL;
			for (; digits < 6; digits++)
				usec *= 10;
		}
		if (*s == 'Z')
			s++;
	}
	if (*s || hour > 23 || min > 59 || sec > 59 || hour < 0 || min < 0 || sec < 0)
		return -EINVAL;
	tm = (struct tm){ .tm_year = year - 1900, .tm_mon = mon - 1, .tm_mday = mday,
			  .tm_hour = hour, .tm_min = min, .tm_sec = sec };
	t = timegm(&tm);
	/* timegm() normalises: 2026-02-31 would come back as March 3. */
	if (t < 0 || tm.tm_mon != mon - 1 || tm.tm_mday != mday)
		return -EINVAL;
	schema_format_time((uint64_t)t * 1000000 + usec, out);
	return 0;
}

static const struct grouping *grouping_find(const char *by)
{
	for (size_t i = 0; i < ARRAY_SIZE(groupings); i++)
		if (!strcmp(groupings[i].by, by ? by : "template"))
			return &groupings[i];
	return NULL;
}

/*
 * The view's text under CTEs named like the views and table it reads,
 * which take precedence over them: the base views from this build (the
 * database's may be older), narrowed to [?1, ?2).
 */
static char *window_sql(const struct grouping *g)
{
	bool s = g->window_sessions;
	char *sql = sqlite3_mprintf(
		"WITH sandbox_usage AS (SELECT * FROM (%s)%s),"
		" lease_usage AS (SELECT * FROM (%s)%s),"
		" sessions AS (SELECT * FROM main.sessions%s) %s",
		schema_view_find("sandbox_usage")->select, s ? "" : IN_WINDOW("created_at"),
		schema_view_find("lease_usage")->select, s ? "" : IN_WINDOW("requested_at"),
		s ? IN_WINDOW("created_at") : "", schema_view_find(g->view)->select);

	return sql;
}

static int check_schema(sqlite3 *db, const char *path, char *err, size_t errlen)
{
	int v = schema_version(db);

	if (v == SCHEMA_VERSION)
		return 0;
	if (v < 0)
		snprintf(err, errlen, "%s: %s", path, sqlite3_errmsg(db));
	else if (v == 0)
		snprintf(err, errlen, "%s is not a sandpool ledger (or sandpoold never wrote to it)",
			 path);
	else if (v > SCHEMA_VERSION)
		snprintf(err, errlen, "%s has ledger schema %d; this sandpool reads %d: use a newer one",
			 path, v, SCHEMA_VERSION);
	else
		snprintf(err, errlen,
			 "%s has ledger schema %d; this sandpool reads %d: start the new sandpoold "
			 "once to migrate it",
			 path, v, SCHEMA_VERSION);
	return -1;
}

static void pack_value(msgpack_packer *pk, sqlite3_stmt *st, int i)
{
	switch (sqlite3_column_type(st, i)) {
	case SQLITE_INTEGER:
		msgpack_pack_int64(pk, sqlite3_column_int64(st, i));
		break;
	case SQLITE_FLOAT:
		msgpack_pack_double(pk, sqlite3_column_double(st, i));
		break;
	case SQLITE_TEXT:
		ipc_pack_strn(pk, (const char *)sqlite3_column_text(st, i),
			      (size_t)sqlite3_column_bytes(st, i));
		break;
	case SQLITE_BLOB:
		ipc_pack_bin(pk, sqlite3_column_blob(st, i), (size_t)sqlite3_column_bytes(st, i));
		break;
	default:
		msgpack_pack_nil(pk);
	}
}

static void pack_opt(msgpack_packer *pk, const char *key, const char *val)
{
	if (val)
		ipc_pack_kv_str(pk, key, val);
	else
		ipc_pack_kv_nil(pk, key);
}

/* Packs the result map; rows are counted first so the array has its size. */
static int pack_result(msgpack_packer *pk, sqlite3 *db, sqlite3_stmt *st, const struct grouping *g,
		       const char *since, const char *until)
{
	int cols = sqlite3_column_count(st), rc;
	uint32_t rows = 0;

	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		rows++;
	if (rc != SQLITE_DONE)
		return rc;
	sqlite3_reset(st);
	msgpack_pack_map(pk, 6);
	ipc_pack_kv_str(pk, "by", g->by);
	ipc_pack_kv_str(pk, "view", g->view);
	pack_opt(pk, "since", since);
	pack_opt(pk, "until", until);
	ipc_pack_cstr(pk, "columns");
	msgpack_pack_array(pk, (size_t)cols);
	for (int i = 0; i < cols; i++)
		ipc_pack_cstr(pk, sqlite3_column_name(st, i));
	ipc_pack_cstr(pk, "rows");
	msgpack_pack_array(pk, rows);
	/* The window is fixed by ?1 and ?2 and NOW is read per step: the second
	 * pass sees the rows of the first unless the daemon committed between
	 * them, which a read transaction rules out. */
	for (uint32_t r = 0; r < rows && (rc = sqlite3_step(st)) == SQLITE_ROW; r++) {
		msgpack_pack_map(pk, (size_t)cols);
		for (int i = 0; i < cols; i++) {
			ipc_pack_cstr(pk, sqlite3_column_name(st, i));
			pack_value(pk, st, i);
		}
	}
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(db);
}

int report_run(const struct report_query *q, struct report *out, char *err, size_t errlen)
{
	const struct grouping *g = grouping_find(q->by);
	char since[SCHEMA_TIME_LEN], until[SCHEMA_TIME_LEN];
	uint64_t now = realtime_us();
	msgpack_sbuffer buf;
	msgpack_packer pk;
	sqlite3_stmt *st = NULL;
	sqlite3 *db = NULL;
	char *sql = NULL;
	size_t off = 0;
	int rc = -1;

	memset(out, 0, sizeof(*out));
	msgpack_sbuffer_init(&buf);
	if (!g) {
		snprintf(err, errlen, "--by takes %s, not %s", report_by_names, q->by);
		goto out;
	}
	if (q->since && report_parse_time(q->since, now, since) < 0) {
		snprintf(err, errlen, "--since takes 24h, 7d, 2026-11-23 or 2026-11-23T08:00Z, not %s",
			 q->since);
		goto out;
	}
	if (q->until && report_parse_time(q->until, now, until) < 0) {
		snprintf(err, errlen, "--until takes 24h, 7d, 2026-11-23 or 2026-11-23T08:00Z, not %s",
			 q->until);
		goto out;
	}
	if (sqlite3_open_v2(q->db_path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
		snprintf(err, errlen, "%s: %s", q->db_path, db ? sqlite3_errmsg(db) : "cannot open");
		goto out;
	}
	sqlite3_busy_timeout(db, 2000);
	if (check_schema(db, q->db_path, err, errlen) < 0)
		goto out;
	sql = window_sql(g);
	if (!sql || sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
		snprintf(err, errlen, "%s: %s", q->db_path, sql ? sqlite3_errmsg(db) : "out of memory");
		goto out;
	}
	sqlite3_bind_text(st, 1, q->since ? since : "", -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, q->until ? until : END_OF_TIME, -1, SQLITE_STATIC);
	msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
	if (sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK ||
	    pack_result(&pk, db, st, g, q->since ? since : NULL, q->until ? until : NULL) !=
		    SQLITE_OK) {
		snprintf(err, errlen, "%s: %s", q->db_path, sqlite3_errmsg(db));
		goto out;
	}
	msgpack_unpacked_init(&out->unpacked);
	if (msgpack_unpack_next(&out->unpacked, buf.data, buf.size, &off) != MSGPACK_UNPACK_SUCCESS) {
		msgpack_unpacked_destroy(&out->unpacked);
		snprintf(err, errlen, "report: out of memory");
		goto out;
	}
	out->result = &out->unpacked.data;
	out->packed = msgpack_sbuffer_release(&buf);
	rc = 0;
out:
	sqlite3_finalize(st);
	sqlite3_free(sql);
	sqlite3_close(db);
	msgpack_sbuffer_destroy(&buf);
	return rc;
}

void report_free(struct report *r)
{
	if (r->result)
		msgpack_unpacked_destroy(&r->unpacked);
	free(r->packed);
	memset(r, 0, sizeof(*r));
}
