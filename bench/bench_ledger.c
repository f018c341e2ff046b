/*
 * h. The ledger (docs/LEDGER.md): what its writer thread sustains, and
 * whether someone reading the database slows leases.
 *
 * 1. Writer throughput against store/ledger.c itself, linked in as
 *    tests/check_ledger does: bursts of records shaped like the daemon's
 *    (sandboxes, their leases and execs, with random ids) queued at once
 *    and timed until the writer has committed them all; one burst runs
 *    while a real sqlite3 shell holds a read transaction open.
 * 2. Session re-lease latency through a real sandpoold at 1 and 16
 *    clients, side by side: (a) its ledger and nobody reading it; (b) the
 *    same daemon while a sqlite3 shell holds `BEGIN; SELECT count(*) FROM
 *    leases;` open for the whole measurement; (c) the baseline, a second
 *    daemon with `ledger_path = off`.
 * 3. The writer saturated inside the daemon: under a steady load of leases
 *    a sqlite3 shell takes the write lock for a while, so records pile up,
 *    then lets go; the writer commits the pile back to back while leases go
 *    on.
 *
 * Not a pass/fail test: it prints rates, percentiles and ratios.
 */
#include "autoconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/bench.h"
#include "daemon/clock.h"
#include "daemon/config.h"
#include "daemon/log.h"
#include "ipc/codec.h"
#include "store/ledger.h"

#define SQLITE3 "/usr/bin/sqlite3"

/* Part 1: a burst is this many sandboxes, each created, ready, leased this
 * many times (lease, one exec, release) and destroyed. */
#define BURST_SANDBOXES 5000
#define LEASES_PER_SANDBOX 4
#define RECORDS_PER_SANDBOX (4 + 3 * LEASES_PER_SANDBOX)
#define BURST_RECORDS (BURST_SANDBOXES * RECORDS_PER_SANDBOX)
#define BURSTS 5
#define READER_BURST 2 /* the third runs under the read transaction */
/* The writer wakes this often: the minimum ledger_flush, so that a burst
 * waits at most 10 ms for its first commit. */
#define WRITER_FLUSH_MS 10

/* Parts 2 and 3: the daemon's ledger counters are polled this often. */
#define POLL_MS 20
#define SESSIONS 16
#define ROUNDS 5
#define LEVEL_MS 700
#define WARM_MS 150
/* Part 3: clients paced to SATURATE_RATE lease+release/s in all, a rate
 * the writer keeps up with; the write lock is held from LOCK_AT_MS to
 * UNLOCK_AT_MS. */
#define SATURATE_CLIENTS 16
#define SATURATE_RATE 5000
#define SATURATE_MS 6000
#define LOCK_AT_MS 1000
#define UNLOCK_AT_MS 3200
/* The daemon's ledger_flush (its default), which is also how long one
 * commit waits for a lock (at most a second). */
#define DAEMON_FLUSH_MS 200

static const unsigned levels[] = { 1, SESSIONS };

/* The daemon's own defaults but for ledger_backlog, raised so that the
 * piles of parts 2 and 3 measure the writer, not drops at the default
 * bound on a slower machine. */
static const char keys_ledger[] = "ledger_backlog = 1000000\n";
static const char keys_off[] = "ledger_path = off\n";
static const char templates[] = "[template session]\n"
				"language = shell\n"
				"min_warm = 0\n"
				"max_total = 20\n";

static struct bench_daemon with_ledger, without_ledger;

/* --- small helpers ---------------------------------------------------------- */

static long long file_size(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? (long long)st.st_size : 0;
}

static const char *fmt_mib(long long bytes)
{
	static char ring[8][32];
	static unsigned next;
	char *b = ring[next++ % 8];

	snprintf(b, 32, "%.1f MiB", (double)bytes / (1 << 20));
	return b;
}

static void wal_path(const char *db, char *out, size_t len)
{
	snprintf(out, len, "%s-wal", db);
}

/* One query in a new sqlite3 process, as an operator would run it. */
static long long sql_count(const char *db, const char *sql)
{
	char *argv[] = { SQLITE3, "-readonly", (char *)db, (char *)sql, NULL };
	char out[64];
	int status = bench_run_cmd(argv, out, sizeof(out));

	if (status != 0)
		bench_die("%s: status %d", bench_argv_str(argv), status);
	return atoll(out);
}

/* --- a sqlite3 shell that stays open ---------------------------------------- */

/* The sqlite3 command-line shell on pipes: statements in, lines out. */
struct shell {
	pid_t pid;
	int in, out;
};

static void shell_start(struct shell *sh, const char *db, bool readonly)
{
	int in[2], out[2];

	if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0)
		bench_die("pipe: %s", strerror(errno));
	sh->pid = fork();
	if (sh->pid < 0)
		bench_die("fork: %s", strerror(errno));
	if (sh->pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(in[0], STDIN_FILENO);
		dup2(out[1], STDOUT_FILENO);
		if (readonly)
			execl(SQLITE3, "sqlite3", "-batch", "-readonly", db, (char *)NULL);
		else
			execl(SQLITE3, "sqlite3", "-batch", db, (char *)NULL);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	sh->in = in[1];
	sh->out = out[0];
}

/* Sends sql and a newline; returns the first line printed (the shell
 * flushes each statement's output), waiting up to 60 s. */
static const char *shell_ask(struct shell *sh, const char *sql, char *line, size_t len)
{
	size_t got = 0, n = strlen(sql);
	uint64_t end = bench_now_us() + 60000000ull;

	if (write(sh->in, sql, n) != (ssize_t)n || write(sh->in, "\n", 1) != 1)
		bench_die("sqlite3 shell: write: %s", strerror(errno));
	while (got + 1 < len) {
		struct pollfd p = { .fd = sh->out, .events = POLLIN };
		ssize_t r;

		if (bench_now_us() >= end || poll(&p, 1, 1000) < 0)
			bench_die("sqlite3 shell: no answer to %s", sql);
		if (!p.revents)
			continue;
		r = read(sh->out, line + got, 1);
		if (r <= 0)
			bench_die("sqlite3 shell: %s after %s", r ? strerror(errno) : "exited", sql);
		if (line[got] == '\n')
			break;
		got++;
	}
	line[got] = '\0';
	return line;
}

static void shell_end(struct shell *sh, const char *last_sql)
{
	int status;

	if (write(sh->in, last_sql, strlen(last_sql)) < 0)
		bench_die("sqlite3 shell: write: %s", strerror(errno));
	close(sh->in);
	close(sh->out);
	while (waitpid(sh->pid, &status, 0) < 0)
		if (errno != EINTR)
			bench_die("waitpid: %s", strerror(errno));
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		bench_die("sqlite3 shell exited with status %d", status);
}

/* A reader as an operator leaves one: the first SELECT takes the snapshot,
 * held until COMMIT. */
struct reader {
	struct shell sh;
	long long saw, still_saw; /* leases at BEGIN, and through the snapshot at the end */
	long long ckpt_log, ckpt_done;
	long long visible_after; /* leases a new process counts once it ended */
};

static void reader_begin(struct reader *r, const char *db)
{
	char line[64];

	shell_start(&r->sh, db, true);
	r->saw = atoll(shell_ask(&r->sh, "BEGIN; SELECT count(*) FROM leases;", line, sizeof(line)));
}

/*
 * Before the COMMIT: `PRAGMA wal_checkpoint;` (PASSIVE: it waits for
 * nobody) from another process says how many frames the WAL holds and how
 * many of them a checkpoint could copy; the held snapshot counts again.
 * After it, a new process counts what the writer committed meanwhile.
 */
static void reader_end(struct reader *r, const char *db)
{
	char *argv[] = { SQLITE3, (char *)db, "PRAGMA wal_checkpoint;", NULL };
	char out[128], line[64];
	int busy;

	if (bench_run_cmd(argv, out, sizeof(out)) != 0 ||
	    sscanf(out, "%d|%lld|%lld", &busy, &r->ckpt_log, &r->ckpt_done) != 3)
		bench_die("%s: %s", bench_argv_str(argv), out);
	r->still_saw = atoll(shell_ask(&r->sh, "SELECT count(*) FROM leases;", line, sizeof(line)));
	shell_end(&r->sh, "COMMIT;\n");
	r->visible_after = sql_count(db, "SELECT count(*) FROM leases;");
}

static void print_reader(const struct reader *r)
{
	printf("the reader counted %lld leases at `BEGIN` and still %lld before its `COMMIT`; a new "
	       "`sqlite3` then counted %lld. `PRAGMA wal_checkpoint;` from a third process just "
	       "before that `COMMIT`: %lld frames in the WAL, %lld of them checkpointed",
	       r->saw, r->still_saw, r->visible_after, r->ckpt_log, r->ckpt_done);
}

/* --- 1. the writer on its own ---------------------------------------------- */

static uint64_t rng = 0x9e3779b97f4a7c15ull;

/* splitmix64: ids as random as the daemon's getrandom() ones, repeatably. */
static uint64_t rng_next(void)
{
	uint64_t z = (rng += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void queue_burst(void)
{
	struct template_config t = { .name = "python", .backend = BACKEND_LOCAL, .cpu_milli = 1000,
				     .memory = 512ull << 20, .cost_per_vcpu_second = 0.000014,
				     .cost_per_gib_second = 0.0000045 };

	for (unsigned i = 0; i < BURST_SANDBOXES; i++) {
		char sb[24], ls[24];

		snprintf(sb, sizeof(sb), "sb-%016" PRIx64, rng_next());
		ledger_sandbox_created(sb, &t);
		ledger_sandbox_ready(sb);
		for (unsigned k = 0; k < LEASES_PER_SANDBOX; k++) {
			uint64_t now = monotonic_us();
			struct ledger_exec e = { .lease = ls, .started_mono_us = now,
						 .duration_us = 11000, .exited = true,
						 .bytes_out = 120 };

			snprintf(ls, sizeof(ls), "ls-%016" PRIx64, rng_next());
			ledger_lease_acquired(ls, sb, NULL, 1000, 4242, "bench_ledger", now, true);
			ledger_exec_done(&e);
			ledger_lease_released(ls, LEDGER_RELEASED);
		}
		ledger_sandbox_ending(sb, LEDGER_RELEASED);
		ledger_sandbox_destroyed(sb);
	}
}

struct burst {
	long long rows_before; /* leases in the database */
	uint64_t total_us;
	unsigned commits;
	long long wal_after;
};

/* Queues a burst and polls the counters every millisecond until all of
 * it is committed; each step of `written` is a commit (one takes tens of
 * milliseconds, so none is missed). */
static void run_burst(struct burst *b)
{
	struct ledger_stats s0, s;
	uint64_t t0, last;

	ledger_get_stats(&s0);
	last = s0.written;
	t0 = bench_now_us();
	queue_burst();
	for (;;) {
		ledger_get_stats(&s);
		if (s.dropped + s.rejected + s.failed_flushes !=
		    s0.dropped + s0.rejected + s0.failed_flushes)
			bench_die("ledger: %" PRIu64 " dropped, %" PRIu64 " rejected, %" PRIu64
				  " failed flushes",
				  s.dropped, s.rejected, s.failed_flushes);
		if (s.written != last) {
			b->commits++;
			last = s.written;
		}
		if (s.written >= s0.written + BURST_RECORDS)
			break;
		if (bench_now_us() - t0 > 120000000ull)
			bench_die("the writer committed %" PRIu64 " of %d records in 120 s",
				  s.written - s0.written, BURST_RECORDS);
		bench_sleep_ms(1);
	}
	b->total_us = bench_now_us() - t0;
}

struct writer_results {
	struct burst bursts[BURSTS];
	struct reader reader;
};

static void bench_writer(struct writer_results *w)
{
	char dir[] = "/tmp/sandpool-bench-ledger-XXXXXX", db[128], wal[140], err[256], cmd[128];
	struct ledger_options o = { .path = db, .flush_ms = WRITER_FLUSH_MS, .backlog = 10000000,
				    .version = PACKAGE_VERSION, .config_hash = "bench_ledger" };
	struct ledger_stats s;

	if (!mkdtemp(dir))
		bench_die("mkdtemp: %s", strerror(errno));
	snprintf(db, sizeof(db), "%s/ledger.db", dir);
	wal_path(db, wal, sizeof(wal));
	if (ledger_start(&o, err, sizeof(err)) < 0)
		bench_die("ledger_start: %s", err);
	/* The run's own first record, so that the bursts start on an open database. */
	do {
		bench_sleep_ms(5);
		ledger_get_stats(&s);
	} while (s.written < s.queued);

	for (int i = 0; i < BURSTS; i++) {
		struct burst *b = &w->bursts[i];

		b->rows_before = sql_count(db, "SELECT count(*) FROM leases;");
		if (i == READER_BURST)
			reader_begin(&w->reader, db);
		run_burst(b);
		b->wal_after = file_size(wal);
		if (i == READER_BURST)
			reader_end(&w->reader, db);
	}
	ledger_stop();
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "bench: could not remove %s\n", dir);
}

static double burst_rate(const struct burst *b)
{
	return BURST_RECORDS / ((double)b->total_us / 1e6);
}

static void print_writer(const struct writer_results *w)
{
	const struct burst *before = &w->bursts[READER_BURST - 1], *during = &w->bursts[READER_BURST],
			   *after = &w->bursts[READER_BURST + 1], *last = &w->bursts[BURSTS - 1];

	printf("### 1. The writer on its own\n\n");
	printf("`store/ledger.c` linked into the benchmark (as `tests/check_ledger` does), on a new "
	       "database in /tmp, `ledger_flush = %dms` (the minimum: a burst waits at most that long "
	       "for its first commit), everything else as in the daemon (WAL, "
	       "`synchronous = NORMAL`, at most 4096 records a transaction, SQLite's default page "
	       "cache and checkpoints). A burst is %d sandboxes, each created, ready, leased %d "
	       "times (lease, one exec, release; random ids like the daemon's) and destroyed: %d "
	       "records, queued at once through the `ledger_*()` calls the event loop makes, then "
	       "timed until `written` (the writer's counter) has counted them all. Commits are the "
	       "steps of `written`, polled every millisecond. Burst %d ran while a second process, "
	       "`" SQLITE3 " -batch -readonly LEDGER`, held a read transaction opened by `BEGIN; "
	       "SELECT count(*) FROM leases;`.\n\n",
	       WRITER_FLUSH_MS, BURST_SANDBOXES, LEASES_PER_SANDBOX, BURST_RECORDS, READER_BURST + 1);
	printf("| burst | leases already in the database | reader | records | commits | time | "
	       "records/s | commits/s | WAL file after |\n");
	printf("|---:|---:|---|---:|---:|---:|---:|---:|---:|\n");
	for (int i = 0; i < BURSTS; i++) {
		const struct burst *b = &w->bursts[i];
		double secs = (double)b->total_us / 1e6;

		printf("| %d | %lld | %s | %d | %u | %s | %.0f | %.1f | %s |\n", i + 1,
		       b->rows_before,
		       i == READER_BURST ? "**a read transaction open throughout**" : "none",
		       BURST_RECORDS, b->commits, bench_fmt_us((double)b->total_us), burst_rate(b),
		       b->commits / secs, fmt_mib(b->wal_after));
	}
	printf("\nRecords/s under the read transaction ÷ the burst before it: **%.2fx**; the burst "
	       "after it ÷ the one before: %.2fx; the last ÷ the first: %.2fx. The WAL grew by "
	       "%.1f KiB per record while the reader held its snapshot; ",
	       burst_rate(during) / burst_rate(before), burst_rate(after) / burst_rate(before),
	       burst_rate(last) / burst_rate(&w->bursts[0]),
	       (double)(during->wal_after - before->wal_after) / 1024 / BURST_RECORDS);
	print_reader(&w->reader);
	printf(".\n\n");
}

/* --- the daemon's counters, polled ----------------------------------------- */

struct poll_point {
	uint64_t at;
	long long backlog, queued, written, failed_flushes, dropped;
};

/* A thread polling the daemon's ledger counters every POLL_MS until end;
 * with lock, it also holds the ledger's write lock through a sqlite3
 * shell from LOCK_AT_MS to UNLOCK_AT_MS after start. */
struct monitor {
	struct bench_daemon *d;
	const char *db;
	bool lock;
	uint64_t start, end;
	uint64_t locked_at, unlocked_at;
	long long queued_at_unlock;
	struct poll_point *p;
	size_t n, cap;
	pthread_t tid;
};

static uint64_t map_uint(const msgpack_object *m, const char *field)
{
	uint64_t u = 0;

	(void)ipc_get_uint(m, field, &u);
	return u;
}

/* pool.stats' "ledger" counters; all 0 when the daemon keeps no ledger. */
static struct poll_point daemon_ledger(struct sandpool *sp)
{
	struct poll_point p = { .at = bench_now_us() };
	struct sandpool_reply *r = NULL;
	struct sandpool_error err;
	const msgpack_object *m;

	if (sandpool_call(sp, "pool.stats", NULL, 0, NULL, NULL, &r, &err) < 0)
		bench_die("pool.stats: %s", err.message);
	if (ipc_get_map(r->result, "ledger", &m) == 0) {
		p.backlog = (long long)map_uint(m, "backlog");
		p.queued = (long long)map_uint(m, "queued");
		p.written = (long long)map_uint(m, "written");
		p.failed_flushes = (long long)map_uint(m, "failed_flushes");
		p.dropped = (long long)map_uint(m, "dropped");
	}
	sandpool_reply_free(r);
	return p;
}

/* Waits until the daemon's writer has committed what was queued. */
static void wait_drained(struct sandpool *sp)
{
	for (int i = 0; i < 6000; i++) {
		if (daemon_ledger(sp).backlog == 0)
			return;
		bench_sleep_ms(10);
	}
	bench_die("the daemon's ledger backlog did not drain in 60 s");
}

static void monitor_add(struct monitor *m, struct sandpool *sp)
{
	if (m->n == m->cap) {
		m->cap = m->cap ? m->cap * 2 : 512;
		m->p = realloc(m->p, m->cap * sizeof(*m->p));
		if (!m->p)
			bench_die("out of memory");
	}
	m->p[m->n++] = daemon_ledger(sp);
}

static void *monitor_main(void *arg)
{
	struct monitor *m = arg;
	struct sandpool *sp = bench_connect(m->d);
	struct shell locker;
	char line[32];
	bool locked = false, unlocked = false;

	while (bench_now_us() < m->end) {
		uint64_t now = bench_now_us();

		if (m->lock && !locked && now >= m->start + LOCK_AT_MS * 1000ull) {
			shell_start(&locker, m->db, false);
			/* .bail: a BEGIN that fails ends the shell, and shell_ask says so. */
			shell_ask(&locker, ".bail on\n.timeout 10000\nBEGIN IMMEDIATE; SELECT 'locked';",
				  line, sizeof(line));
			m->locked_at = bench_now_us();
			locked = true;
		}
		if (locked && !unlocked && now >= m->start + UNLOCK_AT_MS * 1000ull) {
			shell_end(&locker, "ROLLBACK;\n");
			m->unlocked_at = bench_now_us();
			m->queued_at_unlock = daemon_ledger(sp).queued;
			unlocked = true;
		}
		monitor_add(m, sp);
		bench_sleep_ms(POLL_MS);
	}
	monitor_add(m, sp);
	sandpool_close(sp);
	return NULL;
}

static void monitor_start(struct monitor *m, struct bench_daemon *d, const char *db, bool lock,
			  unsigned ms)
{
	memset(m, 0, sizeof(*m));
	m->d = d;
	m->db = db;
	m->lock = lock;
	m->start = bench_now_us();
	m->end = m->start + ms * 1000ull;
	if (pthread_create(&m->tid, NULL, monitor_main, m) != 0)
		bench_die("pthread_create failed");
}

/* The last poll at or before t. */
static const struct poll_point *monitor_at(const struct monitor *m, uint64_t t)
{
	const struct poll_point *best = &m->p[0];

	for (size_t i = 0; i < m->n && m->p[i].at <= t; i++)
		best = &m->p[i];
	return best;
}

/* What the counters did over [from, to). */
struct window {
	double queued_per_s, written_per_s;
	long long backlog_from, backlog_to, backlog_max;
};

static struct window monitor_window(const struct monitor *m, uint64_t from, uint64_t to)
{
	const struct poll_point *a = monitor_at(m, from), *b = monitor_at(m, to);
	double secs = b->at > a->at ? (double)(b->at - a->at) / 1e6 : 0;
	struct window w = { .backlog_from = a->backlog, .backlog_to = b->backlog };

	if (secs > 0) {
		w.queued_per_s = (double)(b->queued - a->queued) / secs;
		w.written_per_s = (double)(b->written - a->written) / secs;
	}
	for (const struct poll_point *p = a; p <= b; p++)
		if (p->backlog > w.backlog_max)
			w.backlog_max = p->backlog;
	return w;
}

/* --- load: session re-leases ------------------------------------------------- */

/* Part 3 paces its clients and keeps each op's start time and latency;
 * parts 1 and 2 run closed loops. */
struct target {
	struct bench_daemon *d;
	uint64_t interval_us; /* 0: as fast as they go */
};

struct client {
	struct sandpool *sp;
	char session[32];
	uint64_t interval_us, next_us;
	struct bench_samples at, lat;
};

/* Part 3's ops with their start times, merged pairwise under the lock at
 * teardown, so that at.v[i] and lat.v[i] stay one op. */
static struct {
	pthread_mutex_t lock;
	struct bench_samples at, lat;
} timed_ops = { .lock = PTHREAD_MUTEX_INITIALIZER };

static void *client_setup(void *arg, unsigned i)
{
	struct target *t = arg;
	struct client *c = calloc(1, sizeof(*c));

	if (!c)
		bench_die("out of memory");
	c->sp = bench_connect(t->d);
	c->interval_us = t->interval_us;
	snprintf(c->session, sizeof(c->session), "bench-%u", i % SESSIONS);
	return c;
}

static void client_teardown(void *state)
{
	struct client *c = state;

	if (c->interval_us) {
		pthread_mutex_lock(&timed_ops.lock);
		samples_merge(&timed_ops.at, &c->at);
		samples_merge(&timed_ops.lat, &c->lat);
		pthread_mutex_unlock(&timed_ops.lock);
	}
	samples_free(&c->at);
	samples_free(&c->lat);
	sandpool_close(c->sp);
	free(c);
}

/* A session re-lease: the session's own sandbox, no create, no destroy;
 * the ledger gets the lease and its release. A paced client starts one
 * every interval_us and, when late, starts at once without catching up. */
static void op_session(void *state, unsigned i)
{
	struct client *c = state;
	struct sandpool_lease_opts o = { .template_name = "session", .wait_ms = 60000,
					 .session = c->session };
	struct sandpool_lease l = { 0 };
	struct sandpool_error err;
	uint64_t t0 = bench_now_us();

	if (c->interval_us) {
		if (!c->next_us || c->next_us + c->interval_us < t0)
			c->next_us = t0;
		while ((t0 = bench_now_us()) < c->next_us)
			bench_sleep_ms((unsigned)((c->next_us - t0 + 999) / 1000));
		c->next_us += c->interval_us;
	}

	if (sandpool_lease(c->sp, &o, &l, &err) < 0)
		bench_die("lease (session %s): %s", c->session, err.message);
	if (sandpool_release(c->sp, l.lease_id, &err) < 0)
		bench_die("release %s: %s", l.lease_id, err.message);
	sandpool_lease_free(&l);
	if (c->interval_us) {
		samples_add(&c->at, t0);
		samples_add(&c->lat, bench_now_us() - t0);
	}
}

/* threads clients for ms (ops each, when not 0), the first warm_ms not
 * recorded. */
static void run_load(struct bench_daemon *d, unsigned threads, unsigned ops, unsigned ms,
		     uint64_t interval_us, struct bench_samples *s, double *rate)
{
	struct target t = { .d = d, .interval_us = interval_us };
	struct bench_load l = { .threads = threads, .ops_per_thread = ops, .duration_ms = ms,
				.warm_ms = ops ? 0 : WARM_MS, .setup = client_setup, .op = op_session,
				.teardown = client_teardown, .arg = &t };
	struct bench_samples ignored = { 0 };

	bench_load_run(&l, s ? s : &ignored, rate);
	samples_free(&ignored);
}

/* --- 2. through the daemon, with and without a reader -------------------------- */

enum cond { COND_OFF, COND_LEDGER, COND_READER, CONDS };

static const char *const cond_name[CONDS] = {
	[COND_OFF] = "(c) `ledger_path = off` (baseline)",
	[COND_LEDGER] = "(a) ledger, no reader",
	[COND_READER] = "(b) ledger, `sqlite3` holding a read transaction",
};

/* Each condition's runs summed over the rounds. */
struct level_results {
	struct bench_samples s[CONDS];
	double round_p99[CONDS][ROUNDS];
	double rate[CONDS]; /* lease+release/s, the mean of the rounds' */
	double queued[CONDS], written[CONDS], polled_s[CONDS];
	long long backlog_max[CONDS];
	/* (b): records committed from its start to the last one's commit,
	 * the WAL's frames at its end, and whether every reader's snapshot
	 * held while the writer went on. */
	long long committed, frames, checkpointed;
	bool held;
	struct reader last; /* the last round's reader */
	uint64_t catch_up_us; /* the longest catch-up after a reader */
};

/*
 * Once a reader has gone, the writer's next commit checkpoints all that
 * the reader held back. One lease+release, untimed, makes that commit
 * happen between runs rather than in the next one; returns the time from
 * that lease to the commit of its records (flush interval included).
 */
static uint64_t catch_up(struct sandpool *ctl)
{
	struct sandpool_lease_opts o = { .template_name = "session", .wait_ms = 60000,
					 .session = "bench-0" };
	struct sandpool_lease l = { 0 };
	struct sandpool_error err;
	uint64_t t0 = bench_now_us();

	if (sandpool_lease(ctl, &o, &l, &err) < 0 || sandpool_release(ctl, l.lease_id, &err) < 0)
		bench_die("lease+release (session bench-0): %s", err.message);
	sandpool_lease_free(&l);
	wait_drained(ctl);
	return bench_now_us() - t0;
}

/* One run of clients on d, its counters polled, added to r's condition c. */
static void run_polled(struct bench_daemon *d, const char *db, unsigned clients,
		       struct level_results *r, enum cond c, int round)
{
	struct bench_samples s = { 0 };
	struct monitor m;
	struct window w;
	double rate;

	monitor_start(&m, d, db, false, LEVEL_MS);
	run_load(d, clients, 0, LEVEL_MS, 0, &s, &rate);
	pthread_join(m.tid, NULL);
	r->round_p99[c][round] = samples_pct(&s, 99);
	samples_merge(&r->s[c], &s);
	samples_free(&s);
	w = monitor_window(&m, m.start + WARM_MS * 1000ull, m.end);
	r->rate[c] += rate / ROUNDS;
	r->queued[c] += w.queued_per_s * (LEVEL_MS - WARM_MS) / 1000.0;
	r->written[c] += w.written_per_s * (LEVEL_MS - WARM_MS) / 1000.0;
	r->polled_s[c] += (LEVEL_MS - WARM_MS) / 1000.0;
	if (w.backlog_max > r->backlog_max[c])
		r->backlog_max[c] = w.backlog_max;
	free(m.p);
}

/*
 * ROUNDS rounds of (c), (a), (b), every other round in reverse, so that
 * the load of the machine, which drifts, weighs on all three alike.
 */
static void bench_level(unsigned clients, struct sandpool *ctl, const char *db,
			struct level_results *r)
{
	r->held = true;
	for (int round = 0; round < ROUNDS; round++) {
		for (int k = 0; k < CONDS; k++) {
			enum cond c = round % 2 ? CONDS - 1 - k : k;
			struct reader *rd = &r->last;
			uint64_t catch_up_us;
			long long w0;

			/* Every run starts with the other daemon's writer idle too. */
			wait_drained(ctl);
			if (c == COND_OFF) {
				run_polled(&without_ledger, NULL, clients, r, c, round);
				continue;
			}
			if (c == COND_LEDGER) {
				run_polled(&with_ledger, db, clients, r, c, round);
				continue;
			}
			reader_begin(rd, db);
			w0 = daemon_ledger(ctl).written;
			run_polled(&with_ledger, db, clients, r, c, round);
			/* All of the run committed while the reader still reads. */
			wait_drained(ctl);
			r->committed += daemon_ledger(ctl).written - w0;
			reader_end(rd, db);
			r->frames += rd->ckpt_log;
			r->checkpointed += rd->ckpt_done;
			r->held = r->held && rd->still_saw == rd->saw && rd->visible_after > rd->saw;
			catch_up_us = catch_up(ctl);
			if (catch_up_us > r->catch_up_us)
				r->catch_up_us = catch_up_us;
		}
	}
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* The median over the rounds of p99(x) / p99(y) within each round: one
 * round hit by a burst of the machine's other load weighs as one. */
static double round_ratio(const struct level_results *r, enum cond x, enum cond y)
{
	double v[ROUNDS];

	for (int i = 0; i < ROUNDS; i++)
		v[i] = r->round_p99[y][i] > 0 ? r->round_p99[x][i] / r->round_p99[y][i] : 0;
	qsort(v, ROUNDS, sizeof(v[0]), cmp_double);
	return ROUNDS % 2 ? v[ROUNDS / 2] : (v[ROUNDS / 2 - 1] + v[ROUNDS / 2]) / 2;
}

static void print_levels(struct level_results *r, long long wal_later)
{
	printf("### 2. Lease + release through the daemon, with and without a reader\n\n");
	printf("Two daemons run side by side, each with one template of %d session sandboxes "
	       "(`language = shell`, `max_total = 20`), bound to their sessions before timing: "
	       "every lease is a session re-lease (no sandbox created or destroyed) and gives the "
	       "ledger two records, the lease and its release. One daemon keeps a ledger with the "
	       "defaults (`ledger_flush = %dms`; `ledger_backlog` raised for part 3); the other has "
	       "`ledger_path = off`, the only baseline the daemon offers. At each client count, %d "
	       "rounds, each running in turn (c) the daemon without a ledger, (a) the one with, "
	       "and (b) the same while `" SQLITE3 " -batch -readonly LEDGER`, fed `BEGIN; SELECT "
	       "count(*) FROM leases;` on its standard input, holds that read transaction open from "
	       "before the first request until the daemon has committed the last record; every "
	       "other round in the reverse order. After each (b), one untimed lease+release makes "
	       "the writer commit, and with that commit checkpoint the WAL the reader held back, "
	       "so that this catch-up does not fall into the next run. Each run is %d ms, the "
	       "first %d ms not "
	       "recorded. A thread polls `pool.stats` every %d ms (in all three): records queued/s "
	       "and committed/s are its `ledger.queued` and `ledger.written` over the recorded "
	       "part, the backlog is `ledger.backlog` (queued, not yet committed). † marks a p999 "
	       "over fewer than 1000 samples (the maximum). The percentiles pool the rounds; the "
	       "ratios below also say the median of the rounds' own.\n\n",
	       SESSIONS, DAEMON_FLUSH_MS, ROUNDS, LEVEL_MS, WARM_MS, POLL_MS);
	printf("| clients | condition | n | p50 | p99 | p999 | lease+release/s | records queued/s | "
	       "committed/s | largest backlog | p99 ÷ p99 (a) |\n");
	printf("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
	for (unsigned l = 0; l < ARRAY_SIZE(levels); l++) {
		double a99 = samples_pct(&r[l].s[COND_LEDGER], 99);

		for (int c = 0; c < CONDS; c++) {
			struct bench_samples *s = &r[l].s[c];
			double p99 = samples_pct(s, 99);

			printf("| %u | %s | %zu | %s | %s | %s%s | %.0f | ", levels[l], cond_name[c],
			       s->n, bench_fmt_us(samples_pct(s, 50)), bench_fmt_us(p99),
			       bench_fmt_us(samples_pct(s, 99.9)), s->n < 1000 ? "†" : "",
			       r[l].rate[c]);
			if (c == COND_OFF)
				printf("- | - | - |");
			else
				printf("%.0f | %.0f | %lld |", r[l].queued[c] / r[l].polled_s[c],
				       r[l].written[c] / r[l].polled_s[c], r[l].backlog_max[c]);
			printf(" %.2fx |\n", a99 > 0 ? p99 / a99 : 0);
		}
	}
	printf("\n");
	for (unsigned l = 0; l < ARRAY_SIZE(levels); l++) {
		const struct level_results *x = &r[l];
		double a99 = samples_pct(&r[l].s[COND_LEDGER], 99),
		       b99 = samples_pct(&r[l].s[COND_READER], 99),
		       c99 = samples_pct(&r[l].s[COND_OFF], 99);
		/* A WAL frame is a page (4096 bytes, SQLite's default) and a 24-byte header. */
		double kib = x->committed ? (double)x->frames * 4120 / 1024 / x->committed : 0;

		printf("- %u client%s: p99 with the reader ÷ without, (b)/(a): **%.2fx** (the median "
		       "of the rounds' own ratios: %.2fx); with the ledger ÷ without one, (a)/(c): "
		       "%.2fx (%.2fx); lease+release/s with the ledger ÷ without: %.2fx. At the end of the (b) runs the WAL held %lld frames, %lld of "
		       "them checkpointed: %.1f KiB of WAL for each of the %lld records committed "
		       "under the readers, %.0f MiB a minute at (b)'s rate; the catch-up after a "
		       "reader took up to %s from the lease to its commit (the %d ms flush "
		       "interval included). %s; in the last, ",
		       levels[l], levels[l] == 1 ? "" : "s", a99 > 0 ? b99 / a99 : 0,
		       round_ratio(x, COND_READER, COND_LEDGER), c99 > 0 ? a99 / c99 : 0,
		       round_ratio(x, COND_LEDGER, COND_OFF),
		       x->rate[COND_OFF] > 0 ? x->rate[COND_LEDGER] / x->rate[COND_OFF] : 0,
		       x->frames, x->checkpointed, kib, x->committed,
		       kib * x->queued[COND_READER] / x->polled_s[COND_READER] * 60 / 1024,
		       bench_fmt_us((double)x->catch_up_us), DAEMON_FLUSH_MS, x->held ? "Every reader's snapshot held while the writer committed on" :
				 "**A reader's count changed, or the writer's commits did not show**");
		print_reader(&x->last);
		printf(".\n");
	}
	printf("- The WAL file at the end, after part 3, the readers long gone and checkpoints "
	       "running again: %s. SQLite reuses a checkpointed WAL from its start but does not "
	       "shrink the file.\n\n",
	       fmt_mib(wal_later));
}

/* --- 3. the writer saturated inside the daemon --------------------------------- */

enum phase { PH_BEFORE, PH_LOCKED, PH_DRAIN, PH_AFTER, PHASES };

static const char *const phase_name[PHASES] = {
	[PH_BEFORE] = "before the lock",
	[PH_LOCKED] = "write lock held by `sqlite3`: commits fail, records pile up",
	[PH_DRAIN] = "**after the unlock, until the pile is committed: the writer saturated**",
	[PH_AFTER] = "after that, to the end",
};

struct saturate_results {
	uint64_t from[PHASES], to[PHASES];
	struct bench_samples s[PHASES];
	struct window w[PHASES];
	long long failed_flushes, dropped;
	bool drained;
	char timeline[1024];
};

static void bench_saturate(struct sandpool *ctl, const char *db, struct saturate_results *r)
{
	struct poll_point p0, p1;
	struct monitor m;
	uint64_t drained_at = 0;
	size_t off = 0;

	wait_drained(ctl);
	p0 = daemon_ledger(ctl);
	monitor_start(&m, &with_ledger, db, true, SATURATE_MS);
	run_load(&with_ledger, SATURATE_CLIENTS, 0, SATURATE_MS,
		 SATURATE_CLIENTS * 1000000ull / SATURATE_RATE, NULL, NULL);
	pthread_join(m.tid, NULL);
	wait_drained(ctl);
	p1 = daemon_ledger(ctl);
	r->failed_flushes = p1.failed_flushes - p0.failed_flushes;
	r->dropped = p1.dropped - p0.dropped;

	/* Drained: the first poll at which all that was queued by the unlock is written. */
	for (size_t i = 0; i < m.n; i++)
		if (m.p[i].at > m.unlocked_at && m.p[i].written >= m.queued_at_unlock) {
			drained_at = m.p[i].at;
			break;
		}
	r->drained = drained_at != 0;
	if (!drained_at)
		drained_at = m.end;
	r->from[PH_BEFORE] = m.start + WARM_MS * 1000ull;
	r->to[PH_BEFORE] = r->from[PH_LOCKED] = m.locked_at;
	r->to[PH_LOCKED] = r->from[PH_DRAIN] = m.unlocked_at;
	r->to[PH_DRAIN] = r->from[PH_AFTER] = drained_at;
	r->to[PH_AFTER] = m.end;
	/* An op counts in the phase it started in. */
	for (size_t i = 0; i < timed_ops.at.n; i++)
		for (int p = 0; p < PHASES; p++)
			if (timed_ops.at.v[i] >= r->from[p] && timed_ops.at.v[i] < r->to[p])
				samples_add(&r->s[p], timed_ops.lat.v[i]);
	for (int p = 0; p < PHASES; p++)
		r->w[p] = monitor_window(&m, r->from[p], r->to[p]);
	for (uint64_t t = m.start; t <= m.end && off < sizeof(r->timeline) - 32; t += 500000)
		off += (size_t)snprintf(r->timeline + off, sizeof(r->timeline) - off, "%s%lld",
					off ? ", " : "", monitor_at(&m, t)->backlog);
	free(m.p);
}

static void print_saturate(struct saturate_results *r)
{
	double base99 = samples_pct(&r->s[PH_BEFORE], 99);

	printf("### 3. The writer saturated, inside the daemon\n\n");
	printf("The daemon with a ledger, %d clients doing session re-leases for %.1f s (the first "
	       "%d ms not recorded), paced to %d lease+release/s in all (each client starts one "
	       "every %.1f ms, at once when late): a load the writer keeps up with, unlike parts 1 "
	       "and 2's closed loops. From %.1f s to %.1f s a second process, `" SQLITE3 " -batch "
	       "LEDGER` fed `.timeout 10000` and `BEGIN IMMEDIATE;`, holds the database's write "
	       "lock: each commit of the writer waits %d ms for it, fails as busy and is retried "
	       "at the next flush, while records pile up in the queue. Then the shell rolls back "
	       "and exits, and the writer commits the pile back to back, up to 4096 records a "
	       "transaction, while new records keep coming, until `ledger.written` reaches what "
	       "`ledger.queued` was at the unlock. A thread polls `pool.stats` every %d ms; each "
	       "lease+release counts in the phase it started in; its latency is the two requests', "
	       "not the wait for its turn.\n\n",
	       SATURATE_CLIENTS, SATURATE_MS / 1000.0, WARM_MS, SATURATE_RATE,
	       SATURATE_CLIENTS * 1000.0 / SATURATE_RATE, LOCK_AT_MS / 1000.0,
	       UNLOCK_AT_MS / 1000.0, DAEMON_FLUSH_MS, POLL_MS);
	printf("| phase | duration | n | p50 | p99 | p999 | lease+release/s | records queued/s | "
	       "committed/s | backlog from → to (largest) | p99 ÷ p99 before |\n");
	printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
	for (int p = 0; p < PHASES; p++) {
		struct bench_samples *s = &r->s[p];
		const struct window *w = &r->w[p];
		double secs = (double)(r->to[p] - r->from[p]) / 1e6;
		double p99 = samples_pct(s, 99);

		if (!s->n) {
			printf("| %s | %s | 0 | - | - | - | - | - | - | - | - |\n", phase_name[p],
			       bench_fmt_us((double)(r->to[p] - r->from[p])));
			continue;
		}
		printf("| %s | %s | %zu | %s | %s | %s%s | %.0f | %.0f | %.0f | %lld → %lld (%lld) | "
		       "%.2fx |\n",
		       phase_name[p], bench_fmt_us((double)(r->to[p] - r->from[p])), s->n,
		       bench_fmt_us(samples_pct(s, 50)), bench_fmt_us(p99),
		       bench_fmt_us(samples_pct(s, 99.9)), s->n < 1000 ? "†" : "",
		       secs > 0 ? (double)s->n / secs : 0, w->queued_per_s, w->written_per_s,
		       w->backlog_from, w->backlog_to, w->backlog_max, base99 > 0 ? p99 / base99 : 0);
	}
	printf("\nBacklog every 0.5 s from the start: %s.\n\n", r->timeline);
	printf("%s Saturated, the writer committed **%.0f records/s** inside the daemon; p99 while "
	       "it did ÷ p99 before the lock: **%.2fx**; ÷ p99 while the lock kept it idle: "
	       "%.2fx. %lld commits failed as busy and were retried; %lld records were "
	       "dropped.\n\n",
	       r->drained ? "The pile was committed before the load ended." :
			    "**The pile was not yet committed when the load ended.**",
	       r->w[PH_DRAIN].written_per_s, base99 > 0 ? samples_pct(&r->s[PH_DRAIN], 99) / base99 : 0,
	       samples_pct(&r->s[PH_LOCKED], 99) > 0 ?
		       samples_pct(&r->s[PH_DRAIN], 99) / samples_pct(&r->s[PH_LOCKED], 99) :
		       0,
	       r->failed_flushes, r->dropped);
}

int main(int argc, char **argv)
{
	static struct writer_results w;
	static struct level_results lv[ARRAY_SIZE(levels)];
	static struct saturate_results sr;
	char db[340], wal[360];
	struct sandpool *ctl;

	bench_raise_nofile();
	log_set_level(LOG_WARNING);
	bench_section("h. Ledger: writer throughput and a concurrent reader", argc, argv);

	bench_writer(&w);

	bench_daemon_start(&with_ledger, keys_ledger, templates);
	bench_daemon_start(&without_ledger, keys_off, templates);
	snprintf(db, sizeof(db), "%s/ledger.db", with_ledger.dir);
	wal_path(db, wal, sizeof(wal));
	ctl = bench_connect(&with_ledger);
	/* Every session gets its sandbox once, untimed: later leases are re-leases. */
	run_load(&with_ledger, SESSIONS, 1, 0, 0, NULL, NULL);
	run_load(&without_ledger, SESSIONS, 1, 0, 0, NULL, NULL);
	for (unsigned l = 0; l < ARRAY_SIZE(levels); l++)
		bench_level(levels[l], ctl, db, &lv[l]);
	bench_saturate(ctl, db, &sr);

	print_writer(&w);
	bench_print_block("Daemon configuration, with a ledger:", with_ledger.config_text);
	bench_print_block("Daemon configuration, the baseline:", without_ledger.config_text);
	print_levels(lv, file_size(wal));
	print_saturate(&sr);

	sandpool_close(ctl);
	bench_daemon_stop(&without_ledger);
	bench_daemon_stop(&with_ledger);
	return 0;
}
