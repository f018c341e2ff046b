#include "autoconfig.h"

#include "store/ledger.h"

#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/clock.h"
#include "daemon/fsutil.h"
#include "daemon/log.h"
#include "store/ledger_path.h"
#include "store/schema.h"

/* One transaction takes at most this many records, so that a long backlog
 * drains in commits short enough not to starve other writers. */
#define BATCH_MAX 4096
/* Failures (drops, refused commits) are logged at most this often. */
#define LOG_EVERY_US (10 * 1000000ull)
/* An idle run still says it is alive this often (daemon_runs.last_seen_at). */
#define HEARTBEAT_US (60 * 1000000ull)
#define PRUNE_EVERY_US (3600 * 1000000ull)
/* How long one attempt waits for another connection's write lock. */
#define BUSY_MAX_MS 1000
/* Bytes of WAL kept after a checkpoint (64 MiB). */
#define LEDGER_WAL_LIMIT_TEXT "67108864"

enum record_kind {
	REC_RUN_START,
	REC_RUN_STOP,
	REC_SANDBOX_CREATED,
	REC_SANDBOX_READY,
	REC_SANDBOX_REF,
	REC_SANDBOX_ENDING,
	REC_SANDBOX_DESTROYED,
	REC_LEASE_ACQUIRED,
	REC_LEASE_RELEASED,
	REC_EXEC,
	REC_SESSION_STARTED,
	REC_SESSION_BOUND,
	REC_SESSION_ENDED,
	REC_KINDS
};

#define ID_MAX 24 /* "sb-" / "ls-" and 16 hex digits */

/* What the loop hands the writer: copies, never pointers into daemon
 * state, which may be gone (or reloaded) by the time the writer runs. */
struct record {
	struct record *next;
	enum record_kind kind;
	uint64_t at_us; /* CLOCK_REALTIME */
	char id[ID_MAX];
	union {
		struct {
			char tmpl[65];
			char backend[8];
			double vcpus, cost_per_vcpu_second, cost_per_gib_second;
			uint64_t memory_mb;
		} sandbox;
		enum ledger_reason reason;
		char backend_ref[64];
		struct {
			char sandbox[ID_MAX];
			char session[129];
			char process[17];
			uint32_t uid;
			int32_t pid;
			uint64_t requested_us;
			bool warm;
		} lease;
		struct {
			bool code, exited, truncated, has_error;
			char language[16];
			char error_name[32];
			char limit[16];
			int exit_code, signal;
			uint64_t started_us, duration_us, bytes_out;
		} exec;
		struct {
			char name[129];
			char tmpl[65];
			char sandbox[ID_MAX];
			uint32_t uid;
			enum ledger_reason reason;
		} session;
	} u;
};

/* Statements the writer prepares once; indexed by record kind, plus its own. */
enum stmt {
	ST_HEARTBEAT = REC_KINDS,
	ST_FIRST_LEASED,
	ST_COUNT
};

static const char *const stmt_sql[ST_COUNT] = {
	[REC_RUN_START] = "INSERT INTO daemon_runs (started_at, last_seen_at, version, config_hash, pid)"
			  " VALUES (?1, ?1, ?2, ?3, ?4)",
	[REC_RUN_STOP] = "UPDATE daemon_runs SET stopped_at = ?1, last_seen_at = ?1, end_reason = ?2"
			 " WHERE id = ?3",
	[REC_SANDBOX_CREATED] =
		"INSERT INTO sandboxes (id, daemon_run, template, backend, created_at, vcpus, memory_mb,"
		" cost_per_vcpu_second, cost_per_gib_second) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
	[REC_SANDBOX_READY] = "UPDATE sandboxes SET ready_at = ?2 WHERE id = ?1",
	[REC_SANDBOX_REF] = "UPDATE sandboxes SET backend_ref = ?2 WHERE id = ?1",
	[REC_SANDBOX_ENDING] = "UPDATE sandboxes SET end_reason = ?2 WHERE id = ?1",
	[REC_SANDBOX_DESTROYED] = "UPDATE sandboxes SET destroyed_at = ?2 WHERE id = ?1",
	[REC_LEASE_ACQUIRED] =
		"INSERT INTO leases (id, sandbox, session, client_uid, client_pid, process_name,"
		" requested_at, acquired_at, warm_hit) VALUES (?1, ?2,"
		" (SELECT id FROM sessions WHERE name = ?3 AND ended_at IS NULL), ?4, ?5, ?6, ?7, ?8, ?9)",
	[REC_LEASE_RELEASED] = "UPDATE leases SET released_at = ?2, end_reason = ?3 WHERE id = ?1",
	[REC_EXEC] = "INSERT INTO executions (lease, kind, language, started_at, duration_us, exit_code,"
		     " signal, error_name, bytes_out, truncated, limit_hit)"
		     " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
	[REC_SESSION_STARTED] = "INSERT INTO sessions (name, uid, template, daemon_run, created_at)"
				" VALUES (?1, ?2, ?3, ?4, ?5)",
	[REC_SESSION_BOUND] = "UPDATE sessions SET sandbox = ?2 WHERE name = ?1 AND ended_at IS NULL",
	[REC_SESSION_ENDED] = "UPDATE sessions SET ended_at = ?2, end_reason = ?3"
			      " WHERE name = ?1 AND ended_at IS NULL",
	[ST_HEARTBEAT] = "UPDATE daemon_runs SET last_seen_at = ?1 WHERE id = ?2",
	[ST_FIRST_LEASED] = "UPDATE sandboxes SET first_leased_at = ?2"
			    " WHERE id = ?1 AND first_leased_at IS NULL",
};

/* Hourly, in one transaction: children before parents; an open row (NULL
 * end) is never old. A sandbox ends after its leases, a lease after its
 * execs, so nothing is left pointing at a deleted row. */
static const char prune_sql[] = "DELETE FROM executions WHERE started_at < :time;"
				"DELETE FROM leases WHERE released_at < :time;"
				"DELETE FROM sessions WHERE ended_at < :time;"
				"DELETE FROM sandboxes WHERE destroyed_at < :time;"
				"DELETE FROM daemon_runs WHERE stopped_at < :time AND NOT EXISTS"
				" (SELECT 1 FROM sandboxes WHERE daemon_run = daemon_runs.id)";

static struct {
	bool running; /* loop thread only */
	struct ledger_options opt;
	char *path, *version, *config_hash;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t wake;

	/* Under lock. */
	struct record *head, **tail;
	unsigned queued;  /* on head */
	unsigned pending; /* taken by the writer, not yet committed */
	bool stop;
	struct ledger_stats stats;

	/* Loop thread only: drop reports. */
	uint64_t drop_logged_us;
	uint64_t dropped_unlogged;

	/* Writer thread only (the main thread before it starts and after it ends). */
	sqlite3 *db;
	sqlite3_stmt *st[ST_COUNT];
	struct record *batch, **batch_tail;
	int64_t run_id;
	uint64_t heartbeat_us, prune_us, fail_logged_us, fails_unlogged;
	char failure[512]; /* the last failure's message, kept past the rollback */
} lg;

const char *ledger_reason_name(enum ledger_reason r)
{
	static const char *const names[] = {
#define LEDGER_X(id, name) [LEDGER_##id] = name,
		LEDGER_REASONS(LEDGER_X)
#undef LEDGER_X
	};

	return (size_t)r < ARRAY_SIZE(names) ? names[r] : "?";
}

bool ledger_enabled(void)
{
	return lg.running;
}

/* ---- the loop's side ----------------------------------------------------- */

static void copy(char *dst, size_t len, const char *src)
{
	snprintf(dst, len, "%s", src ? src : "");
}

static struct record *record_new(enum record_kind kind, const char *id)
{
	struct record *r;

	if (!lg.running)
		return NULL;
	r = calloc(1, sizeof(*r));
	if (!r) {
		/* Counted as a drop: the ledger must say it is incomplete. */
		pthread_mutex_lock(&lg.lock);
		lg.stats.dropped++;
		pthread_mutex_unlock(&lg.lock);
		return NULL;
	}
	r->kind = kind;
	r->at_us = realtime_us();
	copy(r->id, sizeof(r->id), id);
	return r;
}

/* Appends r, or drops it when the backlog is full: the newest go, so what
 * was recorded stays consistent from the start (a destroyed sandbox never
 * lacks its creation). */
static void enqueue(struct record *r)
{
	bool full;
	uint64_t dropped = 0, now;

	if (!r)
		return;
	pthread_mutex_lock(&lg.lock);
	full = lg.queued + lg.pending >= lg.opt.backlog;
	if (full) {
		lg.stats.dropped++;
	} else {
		r->next = NULL;
		*lg.tail = r;
		lg.tail = &r->next;
		lg.queued++;
		lg.stats.queued++;
	}
	pthread_mutex_unlock(&lg.lock);
	if (!full)
		return;
	free(r);
	lg.dropped_unlogged++;
	now = monotonic_us();
	if (lg.drop_logged_us && now - lg.drop_logged_us < LOG_EVERY_US)
		return;
	dropped = lg.dropped_unlogged;
	lg.dropped_unlogged = 0;
	lg.drop_logged_us = now;
	log_warn("ledger %s: ledger_backlog is full (%u records wait): dropped %" PRIu64
		 " new records since the last report",
		 lg.opt.path, lg.opt.backlog, dropped);
}

void ledger_sandbox_created(const char *id, const struct template_config *t)
{
	struct record *r = record_new(REC_SANDBOX_CREATED, id);

	if (!r)
		return;
	copy(r->u.sandbox.tmpl, sizeof(r->u.sandbox.tmpl), t->name);
	copy(r->u.sandbox.backend, sizeof(r->u.sandbox.backend),
	     t->backend == BACKEND_E2B ? "e2b" : "local");
	r->u.sandbox.vcpus = (double)t->cpu_milli / 1000.0;
	r->u.sandbox.memory_mb = t->memory >> 20;
	r->u.sandbox.cost_per_vcpu_second = t->cost_per_vcpu_second;
	r->u.sandbox.cost_per_gib_second = t->cost_per_gib_second;
	enqueue(r);
}

void ledger_sandbox_ready(const char *id)
{
	enqueue(record_new(REC_SANDBOX_READY, id));
}

void ledger_sandbox_backend_ref(const char *id, const char *ref)
{
	struct record *r = record_new(REC_SANDBOX_REF, id);

	if (r) {
		copy(r->u.backend_ref, sizeof(r->u.backend_ref), ref);
		enqueue(r);
	}
}

void ledger_sandbox_ending(const char *id, enum ledger_reason why)
{
	struct record *r = record_new(REC_SANDBOX_ENDING, id);

	if (r)
		r->u.reason = why;
	enqueue(r);
}

void ledger_sandbox_destroyed(const char *id)
{
	enqueue(record_new(REC_SANDBOX_DESTROYED, id));
}

/* A CLOCK_MONOTONIC instant as CLOCK_REALTIME, as of record time. */
static uint64_t realtime_of(const struct record *r, uint64_t mono_us)
{
	uint64_t ago = monotonic_us() - mono_us;

	return ago < r->at_us ? r->at_us - ago : 0;
}

void ledger_lease_acquired(const char *lease, const char *sandbox, const char *session, uid_t uid,
			   pid_t pid, const char *process_name, uint64_t requested_mono_us,
			   bool warm_hit)
{
	struct record *r = record_new(REC_LEASE_ACQUIRED, lease);

	if (!r)
		return;
	copy(r->u.lease.sandbox, sizeof(r->u.lease.sandbox), sandbox);
	copy(r->u.lease.session, sizeof(r->u.lease.session), session);
	copy(r->u.lease.process, sizeof(r->u.lease.process), process_name);
	r->u.lease.uid = uid;
	r->u.lease.pid = pid;
	r->u.lease.requested_us = realtime_of(r, requested_mono_us);
	r->u.lease.warm = warm_hit;
	enqueue(r);
}

void ledger_lease_released(const char *lease, enum ledger_reason why)
{
	struct record *r = record_new(REC_LEASE_RELEASED, lease);

	if (r)
		r->u.reason = why;
	enqueue(r);
}

void ledger_exec_done(const struct ledger_exec *e)
{
	struct record *r = record_new(REC_EXEC, e->lease);

	if (!r)
		return;
	r->u.exec.code = e->code;
	copy(r->u.exec.language, sizeof(r->u.exec.language), e->language);
	r->u.exec.started_us = realtime_of(r, e->started_mono_us);
	r->u.exec.duration_us = e->duration_us;
	r->u.exec.exited = e->exited;
	r->u.exec.exit_code = e->exit_code;
	r->u.exec.signal = e->signal;
	r->u.exec.has_error = e->error_name != NULL;
	copy(r->u.exec.error_name, sizeof(r->u.exec.error_name), e->error_name);
	r->u.exec.bytes_out = e->bytes_out;
	r->u.exec.truncated = e->truncated;
	copy(r->u.exec.limit, sizeof(r->u.exec.limit), e->limit);
	enqueue(r);
}

void ledger_session_started(const char *name, uid_t uid, const char *tmpl)
{
	struct record *r = record_new(REC_SESSION_STARTED, NULL);

	if (!r)
		return;
	copy(r->u.session.name, sizeof(r->u.session.name), name);
	copy(r->u.session.tmpl, sizeof(r->u.session.tmpl), tmpl);
	r->u.session.uid = uid;
	enqueue(r);
}

void ledger_session_bound(const char *name, const char *sandbox)
{
	struct record *r = record_new(REC_SESSION_BOUND, NULL);

	if (!r)
		return;
	copy(r->u.session.name, sizeof(r->u.session.name), name);
	copy(r->u.session.sandbox, sizeof(r->u.session.sandbox), sandbox);
	enqueue(r);
}

void ledger_session_ended(const char *name, enum ledger_reason why)
{
	struct record *r = record_new(REC_SESSION_ENDED, NULL);

	if (!r)
		return;
	copy(r->u.session.name, sizeof(r->u.session.name), name);
	r->u.session.reason = why;
	enqueue(r);
}

void ledger_get_stats(struct ledger_stats *out)
{
	if (!lg.running) {
		memset(out, 0, sizeof(*out));
		return;
	}
	pthread_mutex_lock(&lg.lock);
	*out = lg.stats;
	out->backlog = lg.queued + lg.pending;
	pthread_mutex_unlock(&lg.lock);
}

/* ---- the writer's side ----------------------------------------------------- */

/* Errors that say "this record is wrong", not "the database is unwell":
 * the record is refused and counted, the rest of the batch goes on. */
static bool record_error(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_CONSTRAINT:
	case SQLITE_MISMATCH:
	case SQLITE_TOOBIG:
	case SQLITE_RANGE:
		return true;
	default:
		return false;
	}
}

static void note_failure(const char *what)
{
	uint64_t now = monotonic_us(), backlog;

	pthread_mutex_lock(&lg.lock);
	lg.stats.failed_flushes++;
	backlog = lg.queued + lg.pending;
	pthread_mutex_unlock(&lg.lock);
	lg.fails_unlogged++;
	if (lg.fail_logged_us && now - lg.fail_logged_us < LOG_EVERY_US)
		return;
	log_warn("ledger %s: %s: %s; %" PRIu64 " records kept, retrying every %" PRIu64
		 " ms (%" PRIu64 " failures since the last report)",
		 lg.opt.path, what, lg.failure, backlog, lg.opt.flush_ms, lg.fails_unlogged);
	lg.fails_unlogged = 0;
	lg.fail_logged_us = now;
}

static void set_open(bool open)
{
	pthread_mutex_lock(&lg.lock);
	lg.stats.open = open;
	pthread_mutex_unlock(&lg.lock);
}

static void close_db(void)
{
	for (int i = 0; i < ST_COUNT; i++) {
		sqlite3_finalize(lg.st[i]);
		lg.st[i] = NULL;
	}
	if (lg.db)
		sqlite3_close_v2(lg.db);
	lg.db = NULL;
	set_open(false);
}

/* Runs each statement of sql, binding :time and :run where they appear. */
static int exec_script(sqlite3 *db, const char *sql, const char *time, int64_t run)
{
	int rc = SQLITE_OK;

	for (const char *tail = sql; rc == SQLITE_OK && *tail;) {
		sqlite3_stmt *st;
		int i;

		rc = sqlite3_prepare_v2(db, tail, -1, &st, &tail);
		if (rc != SQLITE_OK || !st)
			break;
		if ((i = sqlite3_bind_parameter_index(st, ":time")))
			sqlite3_bind_text(st, i, time, -1, SQLITE_TRANSIENT);
		if ((i = sqlite3_bind_parameter_index(st, ":run")))
			sqlite3_bind_int64(st, i, run);
		rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(db);
		sqlite3_finalize(st);
	}
	return rc;
}

/* Whether a daemon_runs row's process still runs a sandpoold (not us: a
 * run of ours other than the current one is a dead predecessor's pid). */
static bool run_alive(pid_t pid)
{
	char path[64], comm[32] = "";
	FILE *f;

	if (pid <= 0 || pid == getpid())
		return false;
	snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return false;
	if (!fgets(comm, sizeof(comm), f))
		comm[0] = '\0';
	fclose(f);
	comm[strcspn(comm, "\n")] = '\0';
	return !strcmp(comm, "sandpoold");
}

/*
 * Runs that never recorded their end died (kill -9, power): what they left
 * open ends 'abandoned' at their last commit, the latest moment the ledger
 * knows them alive. Runs whose process still lives are another daemon on
 * this ledger and are left alone.
 */
static int recover(sqlite3 *db)
{
	static const char close_sql[] =
		"UPDATE sandboxes SET destroyed_at = :time, end_reason = coalesce(end_reason, 'abandoned')"
		" WHERE daemon_run = :run AND destroyed_at IS NULL;"
		"UPDATE leases SET released_at = :time, end_reason = 'abandoned' WHERE released_at IS NULL"
		" AND sandbox IN (SELECT id FROM sandboxes WHERE daemon_run = :run);"
		"UPDATE sessions SET ended_at = :time, end_reason = 'abandoned'"
		" WHERE daemon_run = :run AND ended_at IS NULL;"
		"UPDATE daemon_runs SET stopped_at = :time, end_reason = 'abandoned' WHERE id = :run";
	sqlite3_stmt *runs;
	int rc;

	rc = sqlite3_prepare_v2(db, "SELECT id, pid, last_seen_at FROM daemon_runs WHERE stopped_at IS NULL",
				-1, &runs, NULL);
	if (rc != SQLITE_OK)
		return rc;
	rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
	while (rc == SQLITE_OK && (rc = sqlite3_step(runs)) == SQLITE_ROW) {
		int64_t id = sqlite3_column_int64(runs, 0);
		const char *seen = (const char *)sqlite3_column_text(runs, 2);

		rc = SQLITE_OK;
		if (id == lg.run_id || run_alive((pid_t)sqlite3_column_int(runs, 1)))
			continue;
		log_warn("ledger: daemon run %" PRId64 " ended without a record; closing what it left "
			 "open as 'abandoned' at %s",
			 id, seen);
		rc = exec_script(db, close_sql, seen, id);
	}
	sqlite3_finalize(runs);
	if (rc == SQLITE_DONE)
		rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	return rc;
}

/*
 * Opens, migrates, recovers and prepares. Returns SQLITE_OK, or an SQLite
 * code with err; *permanent says whether retrying could help.
 */
static int open_db(char *err, size_t errlen, bool *permanent)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st;
	int rc;

	*permanent = true;
	if ((rc = fs_mkdir_parents(lg.opt.path)) < 0) {
		snprintf(err, errlen, "creating the directory of %s: %s", lg.opt.path, strerror(-rc));
		return SQLITE_CANTOPEN;
	}
	rc = sqlite3_open_v2(lg.opt.path, &db,
			     SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK)
		goto fail;
	sqlite3_busy_timeout(db, lg.opt.flush_ms < BUSY_MAX_MS ? (int)lg.opt.flush_ms : BUSY_MAX_MS);
	/*
	 * WAL: readers (sqlite3, sandpool report) never block the writer nor
	 * it them. synchronous=NORMAL syncs the WAL at checkpoints, not at each
	 * commit: a process crash loses nothing committed, a power loss may
	 * roll back the last commits but never corrupts. Foreign keys stay
	 * off: a dropped record must not make later ones fail.
	 */
	rc = sqlite3_prepare_v2(db, "PRAGMA journal_mode = WAL", -1, &st, NULL);
	if (rc == SQLITE_OK) {
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW && strcmp((const char *)sqlite3_column_text(st, 0), "wal") != 0)
			log_warn("ledger %s: journal_mode is %s, not wal", lg.opt.path,
				 sqlite3_column_text(st, 0));
		rc = rc == SQLITE_ROW ? SQLITE_OK : sqlite3_errcode(db);
		sqlite3_finalize(st);
	}
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(db, "PRAGMA synchronous = NORMAL", NULL, NULL, NULL);
	/* A WAL that a long reader made grow is cut back to this after the
	 * next full checkpoint, instead of keeping its size for good. */
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(db, "PRAGMA journal_size_limit = " LEDGER_WAL_LIMIT_TEXT, NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		goto fail;
	if (schema_migrate(db, SCHEMA_VERSION, err, errlen) < 0 ||
	    schema_install_views(db, err, errlen) < 0) {
		rc = sqlite3_errcode(db);
		*permanent = !(rc == SQLITE_BUSY || rc == SQLITE_LOCKED || rc == SQLITE_FULL ||
			       (rc & 0xff) == SQLITE_IOERR);
		sqlite3_close_v2(db);
		return rc == SQLITE_OK ? SQLITE_ERROR : rc;
	}
	if ((rc = recover(db)) != SQLITE_OK)
		goto fail;
	for (int i = 0; i < ST_COUNT && rc == SQLITE_OK; i++)
		rc = sqlite3_prepare_v3(db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &lg.st[i], NULL);
	if (rc != SQLITE_OK)
		goto fail;
	lg.db = db;
	set_open(true);
	return SQLITE_OK;
fail:
	snprintf(err, errlen, "%s: %s", lg.opt.path, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
	*permanent = !(rc == SQLITE_BUSY || rc == SQLITE_LOCKED || rc == SQLITE_FULL ||
		       (rc & 0xff) == SQLITE_IOERR);
	for (int i = 0; i < ST_COUNT; i++) {
		sqlite3_finalize(lg.st[i]);
		lg.st[i] = NULL;
	}
	sqlite3_close_v2(db);
	return rc;
}

static void bind_time(sqlite3_stmt *st, int i, uint64_t us)
{
	char t[SCHEMA_TIME_LEN];

	schema_format_time(us, t);
	sqlite3_bind_text(st, i, t, -1, SQLITE_TRANSIENT);
}

/* NULL for an empty string. */
static void bind_opt(sqlite3_stmt *st, int i, const char *s)
{
	if (*s)
		sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, i);
}

static int step(sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);

	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
}

static int apply(const struct record *r)
{
	sqlite3_stmt *st = lg.st[r->kind];
	int rc;

	switch (r->kind) {
	case REC_RUN_START:
		bind_time(st, 1, r->at_us);
		sqlite3_bind_text(st, 2, lg.version, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 3, lg.config_hash, -1, SQLITE_STATIC);
		sqlite3_bind_int(st, 4, (int)getpid());
		rc = step(st);
		if (rc == SQLITE_OK)
			lg.run_id = sqlite3_last_insert_rowid(lg.db);
		return rc;
	case REC_RUN_STOP:
		bind_time(st, 1, r->at_us);
		sqlite3_bind_text(st, 2, ledger_reason_name(r->u.reason), -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 3, lg.run_id);
		return step(st);
	case REC_SANDBOX_CREATED:
		sqlite3_bind_text(st, 1, r->id, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 2, lg.run_id);
		sqlite3_bind_text(st, 3, r->u.sandbox.tmpl, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 4, r->u.sandbox.backend, -1, SQLITE_STATIC);
		bind_time(st, 5, r->at_us);
		sqlite3_bind_double(st, 6, r->u.sandbox.vcpus);
		sqlite3_bind_int64(st, 7, (int64_t)r->u.sandbox.memory_mb);
		sqlite3_bind_double(st, 8, r->u.sandbox.cost_per_vcpu_second);
		sqlite3_bind_double(st, 9, r->u.sandbox.cost_per_gib_second);
		return step(st);
	case REC_SANDBOX_READY:
	case REC_SANDBOX_DESTROYED:
		sqlite3_bind_text(st, 1, r->id, -1, SQLITE_STATIC);
		bind_time(st, 2, r->at_us);
		return step(st);
	case REC_SANDBOX_REF:
		sqlite3_bind_text(st, 1, r->id, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, r->u.backend_ref, -1, SQLITE_STATIC);
		return step(st);
	case REC_SANDBOX_ENDING:
		sqlite3_bind_text(st, 1, r->id, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, ledger_reason_name(r->u.reason), -1, SQLITE_STATIC);
		return step(st);
	case REC_LEASE_ACQUIRED:
		sqlite3_bind_text(st, 1, r->id, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, r->u.lease.sandbox, -1, SQLITE_STATIC);
		bind_opt(st, 3, r->u.lease.session);
		sqlite3_bind_int64(st, 4, r->u.lease.uid);
		sqlite3_bind_int(st, 5, r->u.lease.pid);
		bind_opt(st, 6, r->u.lease.process);
		bind_time(st, 7, r->u.lease.requested_us);
		bind_time(st, 8, r->at_us);
		sqlite3_bind_int(st, 9, r->u.lease.warm);
		if ((rc = step(st)) != SQLITE_OK)
			return rc;
		st = lg.st[ST_FIRST_LEASED];
		sqlite3_bind_text(st, 1, r->u.lease.sandbox, -1, SQLITE_STATIC);
		bind_time(st, 2, r->at_us);
		return step(st);
	case REC_LEASE_RELEASED:
		sqlite3_bind_text(st, 1, r->id, -1, SQLITE_STATIC);
		bind_time(st, 2, r->at_us);
		sqlite3_bind_text(st, 3, ledger_reason_name(r->u.reason), -1, SQLITE_STATIC);
		return step(st);
	case REC_EXEC:
		sqlite3_bind_text(st, 1, r->id, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, r->u.exec.code ? "code" : "exec", -1, SQLITE_STATIC);
		bind_opt(st, 3, r->u.exec.language);
		bind_time(st, 4, r->u.exec.started_us);
		sqlite3_bind_int64(st, 5, (int64_t)r->u.exec.duration_us);
		if (r->u.exec.exited)
			sqlite3_bind_int(st, 6, r->u.exec.exit_code);
		if (r->u.exec.signal)
			sqlite3_bind_int(st, 7, r->u.exec.signal);
		bind_opt(st, 8, r->u.exec.error_name);
		sqlite3_bind_int64(st, 9, (int64_t)r->u.exec.bytes_out);
		sqlite3_bind_int(st, 10, r->u.exec.truncated);
		bind_opt(st, 11, r->u.exec.limit);
		return step(st);
	case REC_SESSION_STARTED:
		sqlite3_bind_text(st, 1, r->u.session.name, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 2, r->u.session.uid);
		sqlite3_bind_text(st, 3, r->u.session.tmpl, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 4, lg.run_id);
		bind_time(st, 5, r->at_us);
		return step(st);
	case REC_SESSION_BOUND:
		sqlite3_bind_text(st, 1, r->u.session.name, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, r->u.session.sandbox, -1, SQLITE_STATIC);
		return step(st);
	case REC_SESSION_ENDED:
		sqlite3_bind_text(st, 1, r->u.session.name, -1, SQLITE_STATIC);
		bind_time(st, 2, r->at_us);
		sqlite3_bind_text(st, 3, ledger_reason_name(r->u.session.reason), -1, SQLITE_STATIC);
		return step(st);
	case REC_KINDS:
		break;
	}
	return SQLITE_MISUSE;
}

/*
 * Commits up to BATCH_MAX records from the head of lg.batch in one
 * transaction. Returns SQLITE_OK with them freed, or the error with all
 * of them kept for the next attempt.
 */
static int commit_some(void)
{
	int64_t run_before = lg.run_id;
	unsigned taken = 0, written = 0, rejected = 0;
	struct record *r;
	uint64_t now;
	int rc = sqlite3_exec(lg.db, "BEGIN IMMEDIATE", NULL, NULL, NULL);

	for (r = lg.batch; rc == SQLITE_OK && r && taken < BATCH_MAX; r = r->next, taken++) {
		rc = apply(r);
		if (rc == SQLITE_OK) {
			written++;
		} else if (record_error(rc)) {
			log_error("ledger: record %d for %s refused: %s", (int)r->kind, r->id,
				  sqlite3_errmsg(lg.db));
			rejected++;
			rc = SQLITE_OK;
		}
	}
	now = realtime_us();
	if (rc == SQLITE_OK && lg.run_id) {
		bind_time(lg.st[ST_HEARTBEAT], 1, now);
		sqlite3_bind_int64(lg.st[ST_HEARTBEAT], 2, lg.run_id);
		rc = step(lg.st[ST_HEARTBEAT]);
	}
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(lg.db, "COMMIT", NULL, NULL, NULL);
	if (rc != SQLITE_OK) {
		snprintf(lg.failure, sizeof(lg.failure), "%s", sqlite3_errmsg(lg.db));
		sqlite3_exec(lg.db, "ROLLBACK", NULL, NULL, NULL);
		lg.run_id = run_before;
		return rc;
	}
	lg.heartbeat_us = now;
	for (unsigned i = 0; i < taken; i++) {
		r = lg.batch;
		lg.batch = r->next;
		free(r);
	}
	if (!lg.batch)
		lg.batch_tail = &lg.batch;
	pthread_mutex_lock(&lg.lock);
	lg.pending -= taken;
	lg.stats.written += written;
	lg.stats.rejected += rejected;
	pthread_mutex_unlock(&lg.lock);
	return SQLITE_OK;
}

/* Moves what the loop queued to the end of the writer's batch. Under lock. */
static void take_queue(void)
{
	if (!lg.head)
		return;
	*lg.batch_tail = lg.head;
	lg.batch_tail = lg.tail;
	lg.pending += lg.queued;
	lg.queued = 0;
	lg.head = NULL;
	lg.tail = &lg.head;
}

static void flush(void)
{
	bool permanent;
	int rc;

	while (lg.batch) {
		if (!lg.db && (rc = open_db(lg.failure, sizeof(lg.failure), &permanent)) != SQLITE_OK) {
			note_failure("open");
			return;
		}
		if ((rc = commit_some()) != SQLITE_OK) {
			note_failure("commit");
			/* Busy or locked is someone else's transaction; anything
			 * else (full, I/O) gets a fresh connection next time. */
			if (rc != SQLITE_BUSY && rc != SQLITE_LOCKED)
				close_db();
			return;
		}
		if (lg.fails_unlogged || lg.fail_logged_us) {
			log_info("ledger %s: writing again", lg.opt.path);
			lg.fails_unlogged = 0;
			lg.fail_logged_us = 0;
		}
	}
}

/* Heartbeat for an idle run, and hourly pruning past ledger_retention. */
static void maintain(void)
{
	char cutoff[SCHEMA_TIME_LEN];
	uint64_t now = realtime_us();
	int rc;

	if (!lg.db || lg.batch)
		return;
	if (lg.run_id && now - lg.heartbeat_us >= HEARTBEAT_US) {
		bind_time(lg.st[ST_HEARTBEAT], 1, now);
		sqlite3_bind_int64(lg.st[ST_HEARTBEAT], 2, lg.run_id);
		if (step(lg.st[ST_HEARTBEAT]) == SQLITE_OK)
			lg.heartbeat_us = now;
	}
	/* A retention longer than the epoch is old keeps everything. */
	if (!lg.opt.retention_ms || lg.opt.retention_ms * 1000 >= now ||
	    now - lg.prune_us < PRUNE_EVERY_US)
		return;
	lg.prune_us = now;
	schema_format_time(now - lg.opt.retention_ms * 1000, cutoff);
	rc = sqlite3_exec(lg.db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
	if (rc == SQLITE_OK)
		rc = exec_script(lg.db, prune_sql, cutoff, 0);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(lg.db, "COMMIT", NULL, NULL, NULL);
	if (rc == SQLITE_OK)
		return;
	snprintf(lg.failure, sizeof(lg.failure), "%s", sqlite3_errmsg(lg.db));
	sqlite3_exec(lg.db, "ROLLBACK", NULL, NULL, NULL);
	log_warn("ledger %s: pruning rows older than ledger_retention failed: %s; next try in an hour",
		 lg.opt.path, lg.failure);
}

static struct timespec deadline_after(struct timespec t, uint64_t ms)
{
	t.tv_sec += (time_t)(ms / 1000);
	t.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (t.tv_nsec >= 1000000000L) {
		t.tv_sec++;
		t.tv_nsec -= 1000000000L;
	}
	return t;
}

static bool before(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

/*
 * Flushes on a fixed cadence: a record waits at most one interval for the
 * commit that takes it, however long the previous commit was.
 */
static void *writer_main(void *arg)
{
	struct timespec next, now;
	sigset_t all;

	/* Signals are the loop's (libevent's signal pipe). */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	clock_gettime(CLOCK_MONOTONIC, &next);
	pthread_mutex_lock(&lg.lock);
	while (!lg.stop) {
		next = deadline_after(next, lg.opt.flush_ms);
		while (!lg.stop && pthread_cond_timedwait(&lg.wake, &lg.lock, &next) != ETIMEDOUT)
			;
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (before(&next, &now))
			next = now;
		take_queue();
		pthread_mutex_unlock(&lg.lock);
		flush();
		maintain();
		pthread_mutex_lock(&lg.lock);
	}
	take_queue();
	pthread_mutex_unlock(&lg.lock);
	flush();
	return NULL;
}

/* ---- start and stop -------------------------------------------------------- */

static void free_list(struct record *r)
{
	while (r) {
		struct record *next = r->next;

		free(r);
		r = next;
	}
}

static void forget(void)
{
	free_list(lg.head);
	free_list(lg.batch);
	close_db();
	pthread_cond_destroy(&lg.wake);
	pthread_mutex_destroy(&lg.lock);
	free(lg.path);
	free(lg.version);
	free(lg.config_hash);
	memset(&lg, 0, sizeof(lg));
}

int ledger_start(const struct ledger_options *o, char *err, size_t errlen)
{
	pthread_condattr_t ca;
	bool permanent;
	int rc;

	memset(&lg, 0, sizeof(lg));
	lg.opt = *o;
	lg.path = strdup(o->path);
	lg.version = strdup(o->version);
	lg.config_hash = strdup(o->config_hash);
	lg.opt.path = lg.path;
	lg.tail = &lg.head;
	lg.batch_tail = &lg.batch;
	pthread_mutex_init(&lg.lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&lg.wake, &ca);
	pthread_condattr_destroy(&ca);
	if (!lg.path || !lg.version || !lg.config_hash) {
		snprintf(err, errlen, "ledger: out of memory");
		forget();
		return -1;
	}
	rc = open_db(err, errlen, &permanent);
	if (rc != SQLITE_OK && permanent) {
		forget();
		return -1;
	}
	if (rc != SQLITE_OK)
		log_warn("ledger %s: %s; recording in memory and retrying", lg.path, err);
	lg.running = true;
	enqueue(record_new(REC_RUN_START, NULL));
	if ((rc = pthread_create(&lg.thread, NULL, writer_main, NULL)) != 0) {
		snprintf(err, errlen, "ledger: cannot start its writer thread: %s", strerror(rc));
		forget();
		return -1;
	}
	return 0;
}

/* FNV-1a 64 of the effective configuration: tells runs with different
 * settings apart (not a security measure). */
static void config_hash(const struct config *cfg, char out[17])
{
	uint64_t h = 14695981039346656037ull;
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	if (f) {
		config_dump(cfg, f);
		fclose(f);
	}
	for (size_t i = 0; text && i < len; i++)
		h = (h ^ (unsigned char)text[i]) * 1099511628211ull;
	free(text);
	snprintf(out, 17, "%016" PRIx64, h);
}

int ledger_start_config(const struct config *cfg, char *err, size_t errlen)
{
	char hash[17];
	struct ledger_options o = {
		.path = cfg->ledger_path,
		.flush_ms = cfg->ledger_flush_ms,
		.retention_ms = cfg->ledger_retention_ms,
		.backlog = cfg->ledger_backlog,
		.version = PACKAGE_VERSION,
		.config_hash = hash,
	};

	if (!strcmp(cfg->ledger_path, LEDGER_PATH_OFF)) {
		log_info("ledger: off");
		return 0;
	}
	config_hash(cfg, hash);
	if (ledger_start(&o, err, errlen) < 0)
		return -1;
	log_info("ledger: %s, committed every %" PRIu64 " ms", cfg->ledger_path, cfg->ledger_flush_ms);
	return 0;
}

void ledger_stop(void)
{
	struct record *r = record_new(REC_RUN_STOP, NULL);
	struct ledger_stats s;

	if (!lg.running)
		return;
	if (r)
		r->u.reason = LEDGER_SHUTDOWN;
	enqueue(r);
	lg.running = false;
	pthread_mutex_lock(&lg.lock);
	lg.stop = true;
	pthread_cond_signal(&lg.wake);
	pthread_mutex_unlock(&lg.lock);
	pthread_join(lg.thread, NULL);
	s = lg.stats;
	s.backlog = lg.pending;
	if (s.backlog || s.dropped)
		log_warn("ledger %s: stopped with %" PRIu64 " records not written and %" PRIu64
			 " dropped",
			 lg.path, s.backlog, s.dropped);
	forget();
}
