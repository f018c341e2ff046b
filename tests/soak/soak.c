/*
 * The soak (`make soak`; not part of make check): hundreds of clients on one
 * libevent loop, speaking the raw protocol through ipc/codec, lease, exec,
 * stream output, run code, use sessions and vanish mid-request against a
 * real sandpoold, which is killed with SIGKILL and restarted on the same
 * state dir, socket and ledger once per run. Each daemon run is three load
 * phases with a pause between them; in each pause the clients disconnect,
 * the pool settles to its warm sandboxes, and the soak takes a sample of
 * the daemon (fds, RSS) and checks that its sandboxes' agents, cgroups and
 * mounts are those of the warm sandboxes only. The last run ends with
 * SIGTERM under load. Then it checks:
 *   - no process, cgroup or mount of the daemon is left after each kill -9
 *     (cgroups: once the next run has swept them) and after the SIGTERM;
 *   - fds equal and RSS within RSS_SLACK_KIB between the two pauses of a run;
 *   - every acknowledged sandbox.release is a released lease in the
 *     ledger, unless it came less than LEDGER_FLUSH_MS + COMMIT_ALLOWANCE_MS
 *     before a kill -9; PRAGMA integrity_check says ok;
 *   - no reply was wrong, late or an error that valid requests never earn
 *     (see error_is_expected()), and no connection dropped but at a kill
 *     or the stop.
 * It prints a summary and exits 1 when a check failed.
 *
 *   SOAK_SECONDS  load time over all runs (default 600; runs of about 60 s)
 *   SOAK_CLIENTS  client connections (default 200)
 *   SOAK_KEEP     set: the temp dir (config, daemon log, ledger) is kept
 */
#include "autoconfig.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ipc/codec.h"
#include "tests/harness.h"

#define DEFAULT_SECONDS 600
#define DEFAULT_CLIENTS 200
#define MAX_CLIENTS 1000 /* under the daemon's max_connections */
#define RUN_SECONDS 60	 /* load time of one daemon run, about */
#define SESSIONS 16	 /* session names the clients share */
#define WAIT_MS 3000	 /* how long a lease may queue */
#define REPLY_DEADLINE_S 60 /* no reply by then is a failure */
#define PAUSE_DEADLINE_S 60 /* for the clients to stop and the pool to settle */
#define LEDGER_FLUSH_MS 100
/* One commit of a flush's records on a loaded 2-core machine. */
#define COMMIT_ALLOWANCE_MS 150
/* Between the two pauses of a run: fds must be equal; RSS may grow by
 * this much, no more. Measured: 0.9 to 1.5 MiB, whether 6 s or 24 s of
 * load lie between the pauses (the allocator's and SQLite's caches
 * filling, not a leak, which would grow with the load). */
#define FD_SLACK 0
#define RSS_SLACK_KIB (4 * 1024)
#define MAX_RUNS 64
#define SHELL_WARM 4
#define PYTHON_WARM 1

/* ---- what happened ------------------------------------------------------ */

enum scenario {
	SC_RUN,	       /* run: lease + exec + release in one request */
	SC_LEASE_EXEC, /* sandbox.lease, sandbox.exec, sandbox.release */
	SC_STREAM,     /* the same with stream: true */
	SC_SESSION,    /* a session's lease, an exec that appends, release, sometimes session.end */
	SC_CODE,       /* a python lease, code.run, release */
	SC_VANISH,     /* a run of a slow command, and the connection closed before the reply */
	SC_HALF_FRAME, /* a lease, then half an exec request, then gone */
	SC_DETACHED,   /* a detached lease, then gone: its lease_ttl or the next pause ends it */
	SC_COUNT,
};

static const struct {
	const char *name;
	unsigned weight;
} scenarios[SC_COUNT] = {
	[SC_RUN] = { "run", 30 },
	[SC_LEASE_EXEC] = { "lease+exec", 20 },
	[SC_STREAM] = { "stream", 12 },
	[SC_SESSION] = { "session", 16 },
	[SC_CODE] = { "code", 4 },
	[SC_VANISH] = { "vanish", 8 },
	[SC_HALF_FRAME] = { "half-frame", 6 },
	[SC_DETACHED] = { "detached", 4 },
};

/* Failures of the clients' side, next to the daemon's error codes. */
enum fault {
	F_WRONG_OUTPUT,	 /* a reply that is not what the request asked for */
	F_LATE_REPLY,	 /* no reply in REPLY_DEADLINE_S */
	F_DROPPED,	 /* a connection closed by the daemon while no kill was under way */
	F_BAD_FRAME,	 /* the daemon sent something the codec refused */
	F_UNEXPECTED_ERR, /* an error code valid requests never earn */
	F_COUNT,
};

static const char *const fault_names[F_COUNT] = {
	"wrong output", "late reply", "connection dropped", "bad frame from daemon", "unexpected error",
};

struct ack {
	char lease_id[64];
	double at; /* monotonic seconds, when the reply was read */
	unsigned run;
};

struct run_record {
	bool killed;
	double killed_at;
	unsigned fds[2];
	long rss_kib[2];
	unsigned samples;
};

static struct {
	unsigned long cycles[SC_COUNT], cycles_done, execs, code_runs, chunks, disconnects, lost_to_daemon,
		reconnects_refused;
	unsigned long errors[SANDPOOL_E_CONNECTION + 1];
	char first_message[SANDPOOL_E_CONNECTION + 1][192]; /* where and why, the first time */
	unsigned long faults[F_COUNT];
	char first_fault[F_COUNT][256];
	struct ack *acks;
	size_t n_acks, cap_acks;
	struct run_record runs[MAX_RUNS];
	unsigned n_runs, kills;
	unsigned failed_checks;
} st;

static void check_failed(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A failed check: said at once, counted, and the soak goes on so that the
 * summary shows everything. */
static void check_failed(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("soak: FAILED: ", stdout);
	vprintf(fmt, ap);
	fputc('\n', stdout);
	fflush(stdout);
	va_end(ap);
	st.failed_checks++;
}

static void fault(enum fault f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void fault(enum fault f, const char *fmt, ...)
{
	va_list ap;

	if (st.faults[f]++ == 0) {
		va_start(ap, fmt);
		vsnprintf(st.first_fault[f], sizeof(st.first_fault[f]), fmt, ap);
		va_end(ap);
	}
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* xorshift: the soak's choices, seeded from the clock and printed. */
static uint64_t rnd_seed, rnd_state;

static uint32_t rnd(uint32_t n)
{
	rnd_state ^= rnd_state << 13;
	rnd_state ^= rnd_state >> 7;
	rnd_state ^= rnd_state << 17;
	return (uint32_t)(rnd_state % n);
}

/* Codes a valid request can earn on a busy pool, a daemon being killed or
 * stopped, or a lease that outlived its lease_ttl (5 s) on a slow machine.
 * backend_error too: a session whose sandbox is lost (rpc_sandbox_lost) or
 * cannot be created ends with it; the 10-minute soak met one in 50,000
 * cycles, on a session's lease, too rare to judge in 30 s, so it is counted
 * and its first message printed instead. Anything else (bad_request, internal,
 * limit_exceeded, ...) is a bug. */
static bool error_is_expected(enum sandpool_errcode code)
{
	switch (code) {
	case SANDPOOL_E_BACKEND_ERROR:
	case SANDPOOL_E_POOL_EXHAUSTED:
	case SANDPOOL_E_SESSION_BUSY:
	case SANDPOOL_E_LEASE_EXPIRED:
	case SANDPOOL_E_NOT_FOUND: /* a release after the lease expired */
	case SANDPOOL_E_ABORTED:
	case SANDPOOL_E_SHUTTING_DOWN:
	case SANDPOOL_E_TIMEOUT:
		return true;
	default:
		return false;
	}
}

static void record_ack(const char *lease_id, size_t len)
{
	struct ack *a;

	if (st.n_acks == st.cap_acks) {
		size_t cap = st.cap_acks ? 2 * st.cap_acks : 4096;
		struct ack *p = realloc(st.acks, cap * sizeof(*p));

		ck_assert_ptr_nonnull(p);
		st.acks = p;
		st.cap_acks = cap;
	}
	a = &st.acks[st.n_acks++];
	snprintf(a->lease_id, sizeof(a->lease_id), "%.*s", (int)len, lease_id);
	a->at = now_s();
	a->run = st.n_runs - 1;
}

/* ---- the daemon --------------------------------------------------------- */

static struct fixture fx;
static char cgroup_root[64];
static struct event_base *base;
/* Bumped before every kill: a connection made before it may drop. */
static unsigned daemon_epoch;

/* The harness's config logs at debug level, too much for minutes of load:
 * this one replaces it, with the paths the harness chose. */
static void write_config(void)
{
	FILE *f = fopen(fx.conf, "w");

	ck_assert_ptr_nonnull(f);
	fprintf(f,
		"[daemon]\nsocket = %s\nstate_dir = %s/state\nagent_path = %s/sandpool-agent\n"
		"log_level = info\nledger_path = %s\nledger_flush = %dms\ncgroup_root = %s\n"
		"drain_timeout = 2s\n"
		"[template shell]\nlanguage = shell\nmin_warm = %d\nmax_warm = %d\nmax_total = 16\n"
		"lease_ttl = 5s\nsession_idle_ttl = 30s\ntimeout = 10s\n"
		"[template python]\nlanguage = python\nmin_warm = %d\nmax_warm = %d\nmax_total = 3\n"
		"lease_ttl = 5s\ntimeout = 10s\n",
		fx.sock, fx.dir, builddir(), fx.ledger, LEDGER_FLUSH_MS, cgroup_root, SHELL_WARM, SHELL_WARM,
		PYTHON_WARM, PYTHON_WARM);
	fclose(f);
}

static void daemon_address(struct sockaddr_un *sun)
{
	size_t len = strlen(fx.sock);

	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	ck_assert_uint_lt(len, sizeof(sun->sun_path));
	memcpy(sun->sun_path, fx.sock, len + 1);
}

/* Starts a daemon on fx's config and waits until it accepts connections:
 * after a kill -9 the old socket file is still there. */
static void daemon_start(void)
{
	struct sockaddr_un sun;

	ck_assert_uint_lt(st.n_runs, MAX_RUNS);
	st.n_runs++;
	fixture_spawn(&fx, NULL, NULL);
	daemon_address(&sun);
	for (int i = 0; i < 3000; i++) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), status;
		bool up = fd >= 0 && connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0;

		if (fd >= 0)
			close(fd);
		if (up) {
			ck_assert_msg(fixture_wait_warm(&fx, "shell", SHELL_WARM, 60000),
				      "run %u: the pool did not warm up", st.n_runs);
			return;
		}
		if (waitpid(fx.pid, &status, WNOHANG) == fx.pid) {
			fixture_dump_log(&fx);
			ck_abort_msg("run %u: sandpoold exited during start-up (status %d)", st.n_runs, status);
		}
		sleep_ms(10);
	}
	fixture_dump_log(&fx);
	ck_abort_msg("run %u: sandpoold does not accept connections", st.n_runs);
}

/* ---- the clients -------------------------------------------------------- */

/* The request a client waits for the reply to. */
enum step { ST_NONE, ST_RUN, ST_LEASE, ST_EXEC, ST_CODE, ST_RELEASE, ST_SESSION_END, ST_COUNT };

static const char *const step_names[ST_COUNT] = {
	"nothing", "run", "sandbox.lease", "sandbox.exec", "code.run", "sandbox.release", "session.end",
};

struct client {
	unsigned idx;
	struct bufferevent *bev; /* NULL when not connected */
	struct ipc_reader reader;
	msgpack_packer pk;
	struct event *timer; /* a reconnect's back-off, a deliberate close, or the reply deadline */
	unsigned epoch;
	bool stopped; /* paused, and disconnected */
	enum scenario sc;
	enum step step;
	uint32_t msgid, next_msgid;
	char lease_id[64];
	char session[32];
	char detached[64];	/* the last detached lease, for the next pause to release */
	char token[32];		/* what the exec prints */
	char streamed[256];	/* what exec.output brought */
	size_t streamed_len;
};

static struct client *clients;
static unsigned n_clients, n_stopped;
static bool pausing;

static void client_next(struct client *c);
static void client_connect(struct client *c);

static void client_arm(struct client *c, double seconds)
{
	struct timeval tv = { (time_t)seconds, (suseconds_t)((seconds - (double)(time_t)seconds) * 1e6) };

	evtimer_add(c->timer, &tv);
}

static void client_disconnect(struct client *c)
{
	if (c->bev) {
		bufferevent_free(c->bev);
		ipc_reader_destroy(&c->reader);
		c->bev = NULL;
	}
	evtimer_del(c->timer);
	c->step = ST_NONE;
}

static void client_stop(struct client *c)
{
	client_disconnect(c);
	c->stopped = true;
	if (++n_stopped == n_clients)
		event_base_loopbreak(base);
}

/* A connection ended by the daemon or the soak's kill; reconnect soon. */
static void client_lost(struct client *c)
{
	if (c->epoch == daemon_epoch)
		fault(F_DROPPED, "client %u, %s in %s", c->idx, step_names[c->step], scenarios[c->sc].name);
	else
		st.lost_to_daemon++;
	client_disconnect(c);
	client_arm(c, 0.01 + rnd(100) / 1000.0);
}

/* A deliberate disconnect: the next scenario on a new connection. */
static void client_vanish(struct client *c)
{
	st.disconnects++;
	st.cycles_done++;
	client_disconnect(c);
	client_next(c);
}

static void send_head(struct client *c, const char *method, uint32_t map_size)
{
	c->msgid = ++c->next_msgid;
	ipc_pack_request_head(&c->pk, c->msgid, method);
	msgpack_pack_map(&c->pk, map_size);
}

static void arm_deadline(struct client *c)
{
	client_arm(c, REPLY_DEADLINE_S);
}

static void send_run(struct client *c, const char *cmd)
{
	c->step = ST_RUN;
	send_head(c, "run", 3);
	ipc_pack_kv_str(&c->pk, "template", "shell");
	ipc_pack_kv_str(&c->pk, "cmd", cmd);
	ipc_pack_kv_uint(&c->pk, "wait_ms", WAIT_MS);
	arm_deadline(c);
}

static void send_lease(struct client *c, const char *tmpl, const char *session, bool detached)
{
	c->step = ST_LEASE;
	send_head(c, "sandbox.lease", 2 + (session != NULL) + detached);
	ipc_pack_kv_str(&c->pk, "template", tmpl);
	ipc_pack_kv_uint(&c->pk, "wait_ms", WAIT_MS);
	if (session)
		ipc_pack_kv_str(&c->pk, "session", session);
	if (detached)
		ipc_pack_kv_bool(&c->pk, "detached", true);
	arm_deadline(c);
}

static void send_exec(struct client *c, const char *cmd, bool stream)
{
	c->step = ST_EXEC;
	c->streamed_len = 0;
	send_head(c, "sandbox.exec", 2 + stream);
	ipc_pack_kv_str(&c->pk, "lease_id", c->lease_id);
	ipc_pack_kv_str(&c->pk, "cmd", cmd);
	if (stream)
		ipc_pack_kv_bool(&c->pk, "stream", true);
	arm_deadline(c);
}

static void send_release(struct client *c)
{
	c->step = ST_RELEASE;
	send_head(c, "sandbox.release", 1);
	ipc_pack_kv_str(&c->pk, "lease_id", c->lease_id);
	arm_deadline(c);
}

/* Writes the first half of an exec request, then the connection goes. */
static void send_half_exec(struct client *c)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	ipc_pack_request_head(&pk, ++c->next_msgid, "sandbox.exec");
	msgpack_pack_map(&pk, 2);
	ipc_pack_kv_str(&pk, "lease_id", c->lease_id);
	ipc_pack_kv_str(&pk, "cmd", "echo never");
	/* Straight to the socket: the bufferevent is freed at once, and its
	 * output with it. The lease's reply came, so nothing is queued before. */
	(void)!send(bufferevent_getfd(c->bev), sb.data, sb.size / 2, MSG_DONTWAIT | MSG_NOSIGNAL);
	msgpack_sbuffer_destroy(&sb);
}

static void client_start_scenario(struct client *c)
{
	unsigned total = 0, pick;
	char cmd[128];

	for (int i = 0; i < SC_COUNT; i++)
		total += scenarios[i].weight;
	pick = rnd(total);
	for (c->sc = 0; pick >= scenarios[c->sc].weight; c->sc++)
		pick -= scenarios[c->sc].weight;
	st.cycles[c->sc]++;
	snprintf(c->token, sizeof(c->token), "t%u-%u", c->idx, c->next_msgid);
	switch (c->sc) {
	case SC_RUN:
		snprintf(cmd, sizeof(cmd), "echo %s", c->token);
		send_run(c, cmd);
		break;
	case SC_VANISH:
		send_run(c, "sleep 2; echo late");
		/* Gone before the reply: as soon as the request is out, or while
		 * the command runs. */
		client_arm(c, 0.005 + rnd(300) / 1000.0);
		break;
	case SC_SESSION:
		snprintf(c->session, sizeof(c->session), "soak-%u", rnd(SESSIONS));
		send_lease(c, "shell", c->session, false);
		break;
	case SC_CODE:
		send_lease(c, "python", NULL, false);
		break;
	case SC_DETACHED:
		send_lease(c, "shell", NULL, true);
		break;
	default:
		send_lease(c, "shell", NULL, false);
		break;
	}
}

/* After a scenario: the next one, or a stop while the soak pauses. */
static void client_next(struct client *c)
{
	c->step = ST_NONE;
	evtimer_del(c->timer);
	if (pausing) {
		client_stop(c);
		return;
	}
	if (!c->bev) {
		client_connect(c);
		return;
	}
	client_start_scenario(c);
}

static void scenario_done(struct client *c)
{
	st.cycles_done++;
	client_next(c);
}

/* The exec's output: tokens on lines, as the command printed them. */
static bool output_is(const msgpack_object *res, const char *field, const char *want)
{
	const char *p;
	uint32_t len;

	return ipc_get_bytes(res, field, &p, &len) == 0 && len == strlen(want) && memcmp(p, want, len) == 0;
}

static void on_result(struct client *c, const msgpack_object *res)
{
	char want[128];
	const char *id;
	uint32_t len;

	switch (c->step) {
	case ST_RUN:
		snprintf(want, sizeof(want), "%s\n", c->token);
		if (c->sc == SC_RUN && !output_is(res, "stdout", want))
			fault(F_WRONG_OUTPUT, "run of client %u did not print %s", c->idx, c->token);
		st.execs++;
		scenario_done(c);
		return;
	case ST_LEASE:
		if (ipc_get_str(res, "lease_id", &id, &len) < 0 || len >= sizeof(c->lease_id)) {
			fault(F_WRONG_OUTPUT, "lease without a lease_id");
			scenario_done(c);
			return;
		}
		memcpy(c->lease_id, id, len);
		c->lease_id[len] = '\0';
		if (c->sc == SC_DETACHED) {
			memcpy(c->detached, c->lease_id, len + 1);
			client_vanish(c);
		} else if (c->sc == SC_HALF_FRAME) {
			send_half_exec(c);
			client_vanish(c);
		} else if (c->sc == SC_CODE) {
			c->step = ST_CODE;
			send_head(c, "code.run", 2);
			ipc_pack_kv_str(&c->pk, "lease_id", c->lease_id);
			ipc_pack_kv_str(&c->pk, "code", "print(6*7)");
			arm_deadline(c);
		} else if (c->sc == SC_STREAM) {
			snprintf(want, sizeof(want), "for i in 1 2 3; do echo %s; sleep 0.01; done", c->token);
			send_exec(c, want, true);
		} else if (c->sc == SC_SESSION) {
			snprintf(want, sizeof(want), "echo %s >> /workspace/log; wc -l < /workspace/log", c->token);
			send_exec(c, want, false);
		} else {
			snprintf(want, sizeof(want), "echo %s", c->token);
			send_exec(c, want, false);
		}
		return;
	case ST_EXEC:
		st.execs++;
		if (c->sc == SC_STREAM) {
			snprintf(want, sizeof(want), "%s\n%s\n%s\n", c->token, c->token, c->token);
			if (c->streamed_len != strlen(want) || memcmp(c->streamed, want, c->streamed_len) != 0 ||
			    !output_is(res, "stdout", ""))
				fault(F_WRONG_OUTPUT, "stream of client %u: %.*s", c->idx, (int)c->streamed_len,
				      c->streamed);
		} else if (c->sc == SC_SESSION) {
			const char *p;

			/* The count of lines the session's sandbox holds: at least this one. */
			if (ipc_get_bytes(res, "stdout", &p, &len) < 0 || len < 2 || p[0] < '1' || p[0] > '9')
				fault(F_WRONG_OUTPUT, "session exec of client %u", c->idx);
		} else {
			snprintf(want, sizeof(want), "%s\n", c->token);
			if (!output_is(res, "stdout", want))
				fault(F_WRONG_OUTPUT, "exec of client %u did not print %s", c->idx, c->token);
		}
		send_release(c);
		return;
	case ST_CODE:
		st.code_runs++;
		if (!output_is(res, "stdout", "42\n"))
			fault(F_WRONG_OUTPUT, "code.run of client %u", c->idx);
		send_release(c);
		return;
	case ST_RELEASE:
		record_ack(c->lease_id, strlen(c->lease_id));
		if (c->sc == SC_SESSION && rnd(8) == 0) {
			c->step = ST_SESSION_END;
			send_head(c, "session.end", 1);
			ipc_pack_kv_str(&c->pk, "session", c->session);
			arm_deadline(c);
			return;
		}
		scenario_done(c);
		return;
	default:
		scenario_done(c);
		return;
	}
}

static void on_error(struct client *c, const msgpack_object *error)
{
	const char *code = "", *msg = "";
	uint32_t len = 0, msg_len = 0;
	enum sandpool_errcode e;

	(void)ipc_get_str(error, "code", &code, &len);
	(void)ipc_get_str(error, "message", &msg, &msg_len);
	e = sandpool_errcode_from_name(code, len);
	if (st.errors[e]++ == 0)
		snprintf(st.first_message[e], sizeof(st.first_message[e]), "%s in %s: %.*s", step_names[c->step],
			 scenarios[c->sc].name, (int)msg_len, msg);
	if (!error_is_expected(e))
		fault(F_UNEXPECTED_ERR, "client %u, %s in %s: %.*s: %.*s", c->idx, step_names[c->step],
		      scenarios[c->sc].name, (int)len, code, (int)msg_len, msg);
	/* A lease held still ends, by its release. */
	if ((c->step == ST_EXEC || c->step == ST_CODE) && e != SANDPOOL_E_LEASE_EXPIRED)
		send_release(c);
	else
		scenario_done(c);
}

static void on_message(struct client *c, const struct rpc_msg *m)
{
	if (m->type == RPC_NOTIFY) {
		const char *p;
		uint32_t len;

		if (ipc_method_is(m, "exec.output") && ipc_get_bytes(m->params, "data", &p, &len) == 0) {
			st.chunks++;
			if (c->streamed_len + len <= sizeof(c->streamed)) {
				memcpy(c->streamed + c->streamed_len, p, len);
				c->streamed_len += len;
			}
		}
		return;
	}
	if (m->type != RPC_RESPONSE)
		return;
	if (m->msgid == 0 && m->error) {
		/* Said before a hang-up (shutting_down): the EOF follows. */
		const char *code = "";
		uint32_t len = 0;

		(void)ipc_get_str(m->error, "code", &code, &len);
		st.errors[sandpool_errcode_from_name(code, len)]++;
		return;
	}
	if (m->msgid != c->msgid || c->step == ST_NONE)
		return; /* not the reply awaited */
	evtimer_del(c->timer);
	if (m->error)
		on_error(c, m->error);
	else
		on_result(c, m->result);
}

static void on_read(struct bufferevent *bev, void *arg)
{
	struct client *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);

	while (c->bev == bev && evbuffer_get_length(in) > 0) {
		size_t avail = evbuffer_get_length(in), cap;
		char *dst = ipc_reader_buffer(&c->reader, avail, &cap);
		int n;

		ck_assert_ptr_nonnull(dst);
		n = evbuffer_remove(in, dst, avail < cap ? avail : cap);
		if (n <= 0)
			return;
		ipc_reader_consumed(&c->reader, (size_t)n);
		while (c->bev == bev) {
			struct rpc_msg m;
			const char *why = "too large";
			enum ipc_read_status rs = ipc_reader_next(&c->reader, &m, &why);

			if (rs == IPC_READ_MORE)
				break;
			if (rs != IPC_READ_MSG) {
				fault(F_BAD_FRAME, "client %u: %s", c->idx, why);
				client_lost(c);
				return;
			}
			on_message(c, &m);
		}
	}
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
		client_lost(arg);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct client *c = arg;

	if (!c->bev) {
		client_next(c); /* the back-off after a lost connection is over */
	} else if (c->sc == SC_VANISH && c->step == ST_RUN) {
		client_vanish(c);
	} else {
		fault(F_LATE_REPLY, "client %u, %s in %s", c->idx, step_names[c->step], scenarios[c->sc].name);
		client_disconnect(c);
		client_next(c);
	}
}

static void client_connect(struct client *c)
{
	struct sockaddr_un sun;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	ck_assert_int_ge(fd, 0);
	daemon_address(&sun);
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		/* No daemon yet (refused), or its backlog is full (EAGAIN). */
		close(fd);
		st.reconnects_refused++;
		client_arm(c, 0.02 + rnd(100) / 1000.0);
		return;
	}
	c->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
	ck_assert_ptr_nonnull(c->bev);
	ck_assert_int_eq(ipc_reader_init(&c->reader, 64u << 20), 0);
	msgpack_packer_init(&c->pk, bufferevent_get_output(c->bev), ipc_evbuffer_write);
	bufferevent_setcb(c->bev, on_read, NULL, on_event, c);
	bufferevent_enable(c->bev, EV_READ);
	c->epoch = daemon_epoch;
	client_start_scenario(c);
}

/* ---- phases ------------------------------------------------------------- */

/* Ends a phase of the loop. event_base_loopexit() would not do: its timer
 * outlives a loop that ended earlier and cuts a later one short. */
static struct event *phase_end;

static void on_phase_end(evutil_socket_t fd, short what, void *arg)
{
	event_base_loopbreak(base);
}

static void run_loop(double seconds)
{
	struct timeval tv = { (time_t)seconds, (suseconds_t)((seconds - (double)(time_t)seconds) * 1e6) };

	evtimer_add(phase_end, &tv);
	event_base_dispatch(base);
	evtimer_del(phase_end);
}

static void load(double seconds)
{
	pausing = false;
	n_stopped = 0;
	for (unsigned i = 0; i < n_clients; i++)
		if (clients[i].stopped) {
			clients[i].stopped = false;
			client_next(&clients[i]);
		}
	run_loop(seconds);
}

/* Lets every client finish its scenario and disconnect. */
static void stop_clients(void)
{
	double started = now_s();

	pausing = true;
	n_stopped = 0;
	for (unsigned i = 0; i < n_clients; i++)
		if (!clients[i].bev || clients[i].step == ST_NONE)
			client_stop(&clients[i]);
	while (n_stopped < n_clients && now_s() < started + PAUSE_DEADLINE_S)
		run_loop(started + PAUSE_DEADLINE_S - now_s());
	if (n_stopped < n_clients) {
		unsigned busy[SC_COUNT][ST_COUNT] = { { 0 } };

		check_failed("run %u: %u clients still busy %d s into a pause", st.n_runs, n_clients - n_stopped,
			     PAUSE_DEADLINE_S);
		for (unsigned i = 0; i < n_clients; i++)
			if (!clients[i].stopped)
				busy[clients[i].sc][clients[i].step]++;
		for (int sc = 0; sc < SC_COUNT; sc++)
			for (int step = 0; step < ST_COUNT; step++)
				if (busy[sc][step])
					printf("soak:   %u waiting for %s in %s\n", busy[sc][step], step_names[step],
					       scenarios[sc].name);
	}
	for (unsigned i = 0; i < n_clients; i++)
		if (!clients[i].stopped)
			client_stop(&clients[i]);
	/* libevent closes a freed bufferevent's socket in the loop. */
	event_base_loop(base, EVLOOP_NONBLOCK);
}

struct pool_state {
	unsigned long long warm, other, connections, leases, sessions;
};

static int read_pool(struct sandpool *sp, struct pool_state *ps)
{
	static const char *const busy[] = { "creating", "leased", "held", "destroying", "waiting" };
	struct sandpool_reply *r = NULL;
	struct sandpool_error err;
	const msgpack_object_array *ts;
	uint64_t u;

	memset(ps, 0, sizeof(*ps));
	if (sandpool_call(sp, "pool.stats", NULL, 0, NULL, NULL, &r, &err) < 0)
		return -1;
	if (ipc_get_array(r->result, "templates", &ts) < 0) {
		sandpool_reply_free(r);
		return -1;
	}
	for (uint32_t i = 0; i < ts->size; i++) {
		if (ipc_get_uint(&ts->ptr[i], "warm", &u) == 0)
			ps->warm += u;
		for (size_t k = 0; k < sizeof(busy) / sizeof(busy[0]); k++)
			if (ipc_get_uint(&ts->ptr[i], busy[k], &u) == 0)
				ps->other += u;
	}
	if (ipc_get_uint(r->result, "connections", &u) == 0)
		ps->connections = u;
	if (ipc_get_uint(r->result, "leases", &u) == 0)
		ps->leases = u;
	if (ipc_get_uint(r->result, "sessions", &u) == 0)
		ps->sessions = u;
	sandpool_reply_free(r);
	return 0;
}

static unsigned count_dir(const char *path, const char *prefix)
{
	DIR *d = opendir(path);
	struct dirent *e;
	unsigned n = 0;

	if (!d)
		return 0;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.' && strncmp(e->d_name, prefix, strlen(prefix)) == 0)
			n++;
	closedir(d);
	return n;
}

/* The sb-* groups under the daemon's cgroup_root in every hierarchy that
 * has it; *bases counts those hierarchies. */
static unsigned count_cgroups(unsigned *bases)
{
	FILE *f = fopen("/proc/self/mounts", "r");
	char dev[256], mnt[512], type[64];
	unsigned n = 0;

	*bases = 0;
	ck_assert_ptr_nonnull(f);
	while (fscanf(f, "%255s %511s %63s %*[^\n]", dev, mnt, type) == 3) {
		char dir[600];
		struct stat sb;

		if (strcmp(type, "cgroup") != 0 && strcmp(type, "cgroup2") != 0)
			continue;
		snprintf(dir, sizeof(dir), "%s/%s", mnt, cgroup_root);
		if (stat(dir, &sb) == 0) {
			(*bases)++;
			n += count_dir(dir, "sb-");
		}
	}
	fclose(f);
	return n;
}

/* Mount points in the soak's temp dir, in this mount namespace. */
static unsigned count_mounts(void)
{
	FILE *f = fopen("/proc/self/mountinfo", "r");
	char line[4096];
	unsigned n = 0;

	ck_assert_ptr_nonnull(f);
	while (fgets(line, sizeof(line), f))
		if (strstr(line, fx.dir))
			n++;
	fclose(f);
	return n;
}

static long daemon_rss_kib(void)
{
	char path[64], line[256];
	long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)fx.pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, "VmRSS:", 6) == 0)
			v = strtol(line + 6, NULL, 10);
	fclose(f);
	return v;
}

static unsigned daemon_fds(void)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)fx.pid);
	return count_dir(path, "");
}

/* Detached leases still open are released by id from another connection,
 * which any connection of the same uid may do. */
static void release_detached(struct sandpool *sp)
{
	for (unsigned i = 0; i < n_clients; i++) {
		struct sandpool_error err;

		char *id = clients[i].detached;

		if (!id[0])
			continue;
		if (sandpool_release(sp, id, &err) == 0)
			record_ack(id, strlen(id));
		else if (err.code != SANDPOOL_E_NOT_FOUND && err.code != SANDPOOL_E_LEASE_EXPIRED)
			check_failed("release of detached lease %s: %s", id, err.message);
		id[0] = '\0';
	}
}

/* A pause: the clients stop, sessions end, the pool settles to its warm
 * sandboxes; then the daemon is sampled and its sandboxes counted. */
static void pause_and_sample(void)
{
	struct run_record *run = &st.runs[st.n_runs - 1];
	struct sandpool *sp;
	struct pool_state ps = { 0 };
	unsigned agents, groups, bases, mounts;
	bool settled = false;
	double deadline;

	stop_clients();
	sp = fixture_connect(&fx);
	release_detached(sp);
	for (unsigned i = 0; i < SESSIONS; i++) {
		char name[32];
		struct sandpool_error err;

		snprintf(name, sizeof(name), "soak-%u", i);
		if (sandpool_session_end(sp, name, &err) < 0 && err.code != SANDPOOL_E_NOT_FOUND)
			check_failed("session.end %s: %s", name, err.message);
	}
	deadline = now_s() + PAUSE_DEADLINE_S;
	while (!settled && now_s() < deadline) {
		ck_assert_int_eq(read_pool(sp, &ps), 0);
		settled = ps.warm == SHELL_WARM + PYTHON_WARM && ps.other == 0 && ps.connections == 1 &&
			  ps.leases == 0 && ps.sessions == 0;
		if (!settled)
			sleep_ms(50);
	}
	if (!settled) {
		check_failed("run %u: the pool did not settle: %llu warm, %llu busy, %llu connections, %llu leases,"
			     " %llu sessions",
			     st.n_runs, ps.warm, ps.other, ps.connections, ps.leases, ps.sessions);
		sandpool_close(sp);
		return;
	}
	if (run->samples < 2) {
		run->fds[run->samples] = daemon_fds();
		run->rss_kib[run->samples] = daemon_rss_kib();
		run->samples++;
	}
	sandpool_close(sp);
	agents = count_agents(&fx);
	groups = count_cgroups(&bases);
	mounts = count_mounts();
	if (agents != SHELL_WARM + PYTHON_WARM)
		check_failed("run %u: %u agents for %d warm sandboxes", st.n_runs, agents, SHELL_WARM + PYTHON_WARM);
	if (bases == 0 || groups != bases * (SHELL_WARM + PYTHON_WARM))
		check_failed("run %u: %u sandbox cgroups in %u hierarchies for %d warm sandboxes", st.n_runs, groups,
			     bases, SHELL_WARM + PYTHON_WARM);
	if (mounts != 0)
		check_failed("run %u: %u mounts in %s", st.n_runs, mounts, fx.dir);
}

/* Prints the processes re-parented to the soak: what a dead daemon left. */
static void print_orphans(void)
{
	DIR *d = opendir("/proc");
	struct dirent *e;

	ck_assert_ptr_nonnull(d);
	while ((e = readdir(d))) {
		char path[300], buf[512] = "";
		FILE *f;
		int ppid = -1;
		char *rp;

		if (e->d_name[0] < '1' || e->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		if (fgets(buf, sizeof(buf), f) && (rp = strrchr(buf, ')')))
			sscanf(rp + 2, "%*c %d", &ppid);
		fclose(f);
		if (ppid == (int)getpid())
			printf("soak:   left: %s", buf);
	}
	closedir(d);
}

/* After the daemon is gone, by kill -9 or SIGTERM. Its sandboxes die with
 * it, asynchronously: count_orphans() gives them 2 s; on a loaded machine
 * the soak gives those still there 10 s more, and says how many needed it. */
static void check_nothing_left(const char *how)
{
	unsigned orphans = count_orphans(), mounts;

	if (orphans) {
		printf("soak: run %u: %u processes still there 2 s after %s:\n", st.n_runs, orphans, how);
		print_orphans();
		for (int i = 0; i < 5 && orphans; i++)
			orphans = count_orphans(); /* 2 s each at most */
	}
	mounts = count_mounts();
	if (orphans) {
		print_orphans();
		check_failed("run %u: %u processes left 12 s after %s", st.n_runs, orphans, how);
	}
	if (mounts)
		check_failed("run %u: %u mounts left in %s after %s", st.n_runs, mounts, fx.dir, how);
}

static void kill_daemon(void)
{
	struct run_record *run = &st.runs[st.n_runs - 1];
	int status;

	daemon_epoch++;
	run->killed = true;
	run->killed_at = now_s();
	kill(fx.pid, SIGKILL);
	ck_assert_int_eq(waitpid(fx.pid, &status, 0), fx.pid);
	fx.pid = 0;
	st.kills++;
	check_nothing_left("kill -9");
	/* The clients find the daemon gone and retry against a socket file
	 * nobody listens on, as they would while a service restarts. */
	run_loop(0.5);
}

static void stop_daemon(void)
{
	int rc;

	daemon_epoch++;
	rc = fixture_stop(&fx);
	if (rc != 0) {
		fixture_dump_log(&fx);
		check_failed("SIGTERM: sandpoold exited with %d", rc);
	}
	stop_clients();
	check_nothing_left("SIGTERM");
}

/* ---- the ledger --------------------------------------------------------- */

static void check_ledger(void)
{
	const double margin = (LEDGER_FLUSH_MS + COMMIT_ALLOWANCE_MS) / 1000.0;
	unsigned long required = 0, missing = 0, young = 0, young_present = 0;
	double oldest_lost = 0; /* of the young ones missing: how long before its kill */
	sqlite3 *db;
	sqlite3_stmt *q;
	int abandoned = 0, shutdown = 0;
	bool integrity_ok;

	ck_assert_int_eq(sqlite3_open_v2(fx.ledger, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	ck_assert_int_eq(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &q, NULL), SQLITE_OK);
	ck_assert_int_eq(sqlite3_step(q), SQLITE_ROW);
	integrity_ok = strcmp((const char *)sqlite3_column_text(q, 0), "ok") == 0;
	if (!integrity_ok)
		check_failed("ledger integrity_check: %s", sqlite3_column_text(q, 0));
	sqlite3_finalize(q);

	ck_assert_int_eq(sqlite3_prepare_v2(db,
					    "SELECT count(*) FROM leases WHERE id = ?1 AND released_at IS NOT NULL"
					    " AND end_reason = 'released'",
					    -1, &q, NULL),
			 SQLITE_OK);
	for (size_t i = 0; i < st.n_acks; i++) {
		const struct ack *a = &st.acks[i];
		const struct run_record *run = &st.runs[a->run];
		bool must = !run->killed || a->at + margin < run->killed_at, present;

		sqlite3_bind_text(q, 1, a->lease_id, -1, SQLITE_STATIC);
		ck_assert_int_eq(sqlite3_step(q), SQLITE_ROW);
		present = sqlite3_column_int(q, 0) == 1;
		sqlite3_reset(q);
		required += must;
		young += !must;
		young_present += !must && present;
		if (!must && !present && run->killed_at - a->at > oldest_lost)
			oldest_lost = run->killed_at - a->at;
		if (must && !present && missing++ < 5)
			check_failed("ledger: lease %s, released in run %u%s, is not there", a->lease_id, a->run + 1,
				     run->killed ? " before its kill -9" : "");
	}
	sqlite3_finalize(q);
	if (missing)
		check_failed("ledger: %lu of %lu acknowledged releases missing", missing, required);

	ck_assert_int_eq(sqlite3_prepare_v2(db,
					    "SELECT end_reason, count(*) FROM daemon_runs GROUP BY end_reason", -1,
					    &q, NULL),
			 SQLITE_OK);
	while (sqlite3_step(q) == SQLITE_ROW) {
		const char *why = (const char *)sqlite3_column_text(q, 0);

		if (why && strcmp(why, "abandoned") == 0)
			abandoned = sqlite3_column_int(q, 1);
		else if (why && strcmp(why, "shutdown") == 0)
			shutdown = sqlite3_column_int(q, 1);
	}
	sqlite3_finalize(q);
	if (abandoned != (int)st.kills || shutdown != 1)
		check_failed("ledger: daemon_runs has %d abandoned and %d shutdown for %u kills and one stop",
			     abandoned, shutdown, st.kills);
	ck_assert_int_eq(sqlite3_prepare_v2(db,
					    "SELECT (SELECT count(*) FROM sandboxes WHERE destroyed_at IS NULL),"
					    " (SELECT count(*) FROM leases WHERE released_at IS NULL)",
					    -1, &q, NULL),
			 SQLITE_OK);
	ck_assert_int_eq(sqlite3_step(q), SQLITE_ROW);
	if (sqlite3_column_int(q, 0) || sqlite3_column_int(q, 1))
		check_failed("ledger: %d sandboxes and %d leases left open", sqlite3_column_int(q, 0),
			     sqlite3_column_int(q, 1));
	sqlite3_finalize(q);
	sqlite3_close(db);
	printf("soak: ledger: %zu acknowledged releases; %lu required and present%s; %lu within %.0f ms of a"
	       " kill -9, %lu of them present, the oldest lost %.0f ms before its kill; integrity_check %s\n",
	       st.n_acks, required - missing, missing ? " (but the missing above)" : "", young, margin * 1000,
	       young_present, oldest_lost * 1000, integrity_ok ? "ok" : "FAILED");
}

/* ---- the summary -------------------------------------------------------- */

static void summary(unsigned seconds, double took)
{
	printf("soak: %u s of load (%.0f s in all), %u clients, %u daemon runs, %u kill -9, seed %llu\n", seconds,
	       took, n_clients, st.n_runs, st.kills, (unsigned long long)rnd_seed);
	printf("soak: cycles %lu done;", st.cycles_done);
	for (int i = 0; i < SC_COUNT; i++)
		printf(" %s %lu", scenarios[i].name, st.cycles[i]);
	printf("\nsoak: execs %lu, code runs %lu, streamed chunks %lu, deliberate disconnects %lu,"
	       " connections lost to kills and the stop %lu, refused reconnects %lu\n",
	       st.execs, st.code_runs, st.chunks, st.disconnects, st.lost_to_daemon, st.reconnects_refused);
	printf("soak: errors by code:");
	for (int e = 1; e <= SANDPOOL_E_CONNECTION; e++)
		if (st.errors[e])
			printf(" %s %lu", sandpool_errcode_name(e), st.errors[e]);
	printf("\n");
	if (st.errors[SANDPOOL_E_BACKEND_ERROR])
		printf("soak: the first backend_error: %s\n", st.first_message[SANDPOOL_E_BACKEND_ERROR]);
	for (unsigned r = 0; r < st.n_runs; r++) {
		const struct run_record *run = &st.runs[r];

		if (run->samples == 2)
			printf("soak: run %u: fds %u -> %u, RSS %ld -> %ld KiB%s\n", r + 1, run->fds[0], run->fds[1],
			       run->rss_kib[0], run->rss_kib[1], run->killed ? ", then kill -9" : ", then SIGTERM");
	}
	for (int f = 0; f < F_COUNT; f++)
		if (st.faults[f])
			check_failed("%lu x %s; the first: %s", st.faults[f], fault_names[f], st.first_fault[f]);
}

static unsigned env_uint(const char *name, unsigned def, unsigned min, unsigned max)
{
	const char *v = getenv(name);
	char *end;
	unsigned long n;

	if (!v || !*v)
		return def;
	n = strtoul(v, &end, 10);
	ck_assert_msg(!*end && n >= min && n <= max, "%s must be a number from %u to %u", name, min, max);
	return (unsigned)n;
}

START_TEST(test_soak)
{
	unsigned seconds = env_uint("SOAK_SECONDS", DEFAULT_SECONDS, 10, 24 * 3600);
	unsigned runs = seconds / RUN_SECONDS < 2 ? 2 : seconds / RUN_SECONDS;
	double per_run = (double)seconds / runs, started = now_s();

	ck_assert_uint_le(runs, MAX_RUNS);
	n_clients = env_uint("SOAK_CLIENTS", DEFAULT_CLIENTS, 1, MAX_CLIENTS);
	rnd_seed = rnd_state = (uint64_t)time(NULL) * 2654435761u | 1;
	printf("soak: %u s, %u clients, %u daemon runs, seed %llu\n", seconds, n_clients, runs,
	       (unsigned long long)rnd_seed);
	fflush(stdout);
	snprintf(cgroup_root, sizeof(cgroup_root), "sandpool-soak-%d", (int)getpid());
	fixture_prepare(&fx, "");
	write_config();
	base = event_base_new();
	ck_assert_ptr_nonnull(base);
	phase_end = evtimer_new(base, on_phase_end, NULL);
	ck_assert_ptr_nonnull(phase_end);
	clients = calloc(n_clients, sizeof(*clients));
	ck_assert_ptr_nonnull(clients);
	for (unsigned i = 0; i < n_clients; i++) {
		clients[i].idx = i;
		clients[i].stopped = true;
		clients[i].timer = evtimer_new(base, on_timer, &clients[i]);
		ck_assert_ptr_nonnull(clients[i].timer);
	}

	for (unsigned r = 0; r < runs; r++) {
		unsigned bases;

		daemon_start();
		if (r > 0 && count_cgroups(&bases) != bases * (SHELL_WARM + PYTHON_WARM))
			check_failed("run %u: the cgroups of the killed run were not swept", st.n_runs);
		load(per_run * 0.3);
		pause_and_sample();
		load(per_run * 0.4);
		pause_and_sample();
		load(per_run * 0.3);
		/* Under load, with requests in flight. */
		if (r + 1 < runs)
			kill_daemon();
		else
			stop_daemon();
		printf("soak: run %u of %u done, %lu cycles so far\n", r + 1, runs, st.cycles_done);
		fflush(stdout);
	}
	{
		unsigned bases, groups = count_cgroups(&bases);

		if (groups || bases)
			check_failed("%u sandbox cgroups and %u base groups left after SIGTERM", groups, bases);
	}
	for (unsigned r = 0; r < st.n_runs; r++) {
		const struct run_record *run = &st.runs[r];

		if (run->samples < 2)
			continue;
		if (run->fds[1] > run->fds[0] + FD_SLACK)
			check_failed("run %u: daemon fds grew from %u to %u", r + 1, run->fds[0], run->fds[1]);
		if (run->rss_kib[1] > run->rss_kib[0] + RSS_SLACK_KIB)
			check_failed("run %u: daemon RSS grew from %ld to %ld KiB (more than %d KiB)", r + 1,
				     run->rss_kib[0], run->rss_kib[1], RSS_SLACK_KIB);
	}
	summary(seconds, now_s() - started);
	check_ledger();
	printf("soak: %s\n", st.failed_checks ? "FAILED" : "passed");
	ck_assert_msg(st.failed_checks == 0, "%u soak checks failed (above)", st.failed_checks);
}
END_TEST

/* After a failed check too: the daemon stopped (its cgroups with it) and
 * the temp dir gone, unless SOAK_KEEP asks for it. */
static void teardown(void)
{
	if (fx.pid > 0)
		fixture_stop(&fx);
	if (!fx.dir[0])
		return;
	if (getenv("SOAK_KEEP"))
		printf("soak: kept %s\n", fx.dir);
	else
		fixture_cleanup(&fx);
}

int main(void)
{
	Suite *s = suite_create("soak");
	TCase *tc = tcase_create("soak");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(tc, NULL, teardown);
	tcase_add_test(tc, test_soak);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	/* One process: the clients' event loop, the daemon it restarts and
	 * the summary live in it; there is no per-test timeout either. */
	srunner_set_fork_status(sr, CK_NOFORK);
	/* A write to a connection the daemon closed is an EPIPE, not the end. */
	signal(SIGPIPE, SIG_IGN);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
