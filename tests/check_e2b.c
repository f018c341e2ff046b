/*
 * The e2b backend end to end (issue 8): a real sandpoold from the build
 * tree keeps pools of sandboxes in the E2B contract server
 * (tests/e2b/e2b_server.py), which runs them for real and checks every
 * request the daemon makes against E2B's API. Each test starts its own
 * server (port 0) and daemon, and ends by stopping the daemon and checking
 * that the server saw no contract violation and has no live sandbox left:
 * nothing leaked, whatever the test injected.
 *
 * E2B_SERVER names the server script; the default is the source tree's
 * ($SANDPOOL_SRCDIR/tests/e2b/e2b_server.py). It runs under
 * /usr/bin/python3, or $E2B_PYTHON.
 */
#include "autoconfig.h"

#include <arpa/inet.h>
#include <check.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <msgpack.h>
#include <netinet/in.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "daemon/clock.h"
#include "ipc/codec.h"
#include "sandbox/json.h"
#include "tests/harness.h"

/* E2B's prices, which an e2b template's cost_per_* default to (docs/LEDGER.md). */
#define E2B_VCPU_RATE 0.000014

/* ---- small helpers ----------------------------------------------------------------- */

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static double now_s(void)
{
	return (double)monotonic_us() / 1e6;
}

/* A string field of a msgpack map as a C string in out ("" when absent). */
static const char *str_of(const msgpack_object *map, const char *key, char *out, size_t len)
{
	const char *s;
	uint32_t n;

	out[0] = '\0';
	if (map && ipc_get_str(map, key, &s, &n) == 0)
		snprintf(out, len, "%.*s", (int)n, s);
	return out;
}

/* ---- the contract server ----------------------------------------------------------- */

struct e2b_server {
	pid_t pid;
	unsigned port;
	char dir[64];
	char log[128];
	char url[64]; /* http://127.0.0.1:PORT */
};

static const char *server_script(void)
{
	static char path[1024];
	const char *env = getenv("E2B_SERVER"), *src = getenv("SANDPOOL_SRCDIR");

	if (env && *env)
		return env;
	snprintf(path, sizeof(path), "%s/tests/e2b/e2b_server.py", src && *src ? src : ".");
	return path;
}

static void server_dump_log(const struct e2b_server *s)
{
	char buf[4096];
	FILE *f = fopen(s->log, "r");
	size_t n;

	if (!f)
		return;
	fprintf(stderr, "---- %s ----\n", s->log);
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		fwrite(buf, 1, n, stderr);
	fclose(f);
}

static void server_start(struct e2b_server *s, const char *api_key)
{
	char portfile[128];
	const char *py = getenv("E2B_PYTHON") ? getenv("E2B_PYTHON") : "/usr/bin/python3";
	pid_t parent = getpid();

	memset(s, 0, sizeof(*s));
	ck_assert_msg(access(server_script(), R_OK) == 0, "no contract server at %s (set E2B_SERVER)",
		      server_script());
	snprintf(s->dir, sizeof(s->dir), "/tmp/sandpool-e2btest-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(s->dir));
	snprintf(portfile, sizeof(portfile), "%s/port", s->dir);
	snprintf(s->log, sizeof(s->log), "%s/server.log", s->dir);
	s->pid = fork();
	ck_assert_int_ge(s->pid, 0);
	if (s->pid == 0) {
		int fd = open(s->log, O_WRONLY | O_CREAT | O_APPEND, 0644);

		/* A failed check exits the test process without its teardown:
		 * the server goes with it, cleaning up its sandboxes. */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() != parent)
			_exit(1);
		dup2(fd, STDOUT_FILENO);
		dup2(fd, STDERR_FILENO);
		execl(py, py, server_script(), "--port-file", portfile, "--api-key", api_key, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 3000; i++) {
		FILE *f = fopen(portfile, "r");
		int status;

		if (f) {
			ck_assert_int_eq(fscanf(f, "%u", &s->port), 1);
			fclose(f);
			snprintf(s->url, sizeof(s->url), "http://127.0.0.1:%u", s->port);
			return;
		}
		if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
			server_dump_log(s);
			ck_abort_msg("the contract server exited during start-up (status %d)", status);
		}
		sleep_ms(10);
	}
	server_dump_log(s);
	ck_abort_msg("the contract server did not write its port");
}

/* SIGTERM to the server (and only it); its exit status (1: it saw a
 * contract violation), or -1. */
static int server_stop(struct e2b_server *s)
{
	int status = 0, rc = -1;
	char cmd[160];

	if (s->pid > 0) {
		kill(s->pid, SIGTERM);
		for (int i = 0; i < 1500 && rc < 0; i++) {
			if (waitpid(s->pid, &status, WNOHANG) == s->pid)
				rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
			else
				sleep_ms(10);
		}
		if (rc < 0) {
			kill(s->pid, SIGKILL);
			waitpid(s->pid, &status, 0);
		}
		s->pid = 0;
	}
	if (rc != 0)
		server_dump_log(s);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", s->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", s->dir);
	return rc;
}

static size_t collect(char *p, size_t size, size_t n, void *arg)
{
	return fwrite(p, size, n, arg);
}

/* One request to the server; its status. body: JSON (POST), or NULL.
 * out, if not NULL, receives the answer parsed (the caller destroys it). */
static long server_call(const struct e2b_server *s, const char *method, const char *path, const char *body,
			msgpack_unpacked *out)
{
	CURL *c = curl_easy_init();
	struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
	char url[512], *buf = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&buf, &len);
	CURLcode rc;
	long status = 0;

	ck_assert(c && h && m);
	snprintf(url, sizeof(url), "%s%s", s->url, path);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	if (body) {
		curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	}
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, m);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
	rc = curl_easy_perform(c);
	fclose(m);
	ck_assert_msg(rc == CURLE_OK, "%s %s: %s", method, url, curl_easy_strerror(rc));
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	if (out)
		ck_assert_msg(json_parse(buf, len, out) == 0, "%s %s: not JSON: %s", method, path, buf);
	free(buf);
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
	return status;
}

static void server_state(const struct e2b_server *s, msgpack_unpacked *state)
{
	ck_assert_int_eq(server_call(s, "GET", "/_test/state", NULL, state), 200);
}

/* A counter of /_test/state: a top-level one ("created", "live", ...), or
 * with request set, the count of requests to that route. */
static uint64_t server_count(const struct e2b_server *s, const char *name, bool request)
{
	msgpack_unpacked st;
	const msgpack_object *reqs;
	uint64_t v = 0;

	server_state(s, &st);
	reqs = request ? ipc_map_get(&st.data, "requests") : &st.data;
	(void)ipc_get_uint(reqs, name, &v);
	msgpack_unpacked_destroy(&st);
	return v;
}

static uint64_t server_requests(const struct e2b_server *s, const char *route)
{
	return server_count(s, route, true);
}

/* The live sandboxes, as /_test/state lists them (in st, which the caller destroys). */
static const msgpack_object_array *server_sandboxes(const struct e2b_server *s, msgpack_unpacked *st)
{
	const msgpack_object_array *a = NULL;

	server_state(s, st);
	ck_assert_int_eq(ipc_get_array(&st->data, "sandboxes", &a), 0);
	return a;
}

/* E2B's sandboxID of the sandbox the daemon calls sb_id (its
 * sandpool_sandbox metadata); false when the server has no such sandbox. */
static bool server_sandbox_of(const struct e2b_server *s, const char *sb_id, char *out, size_t len)
{
	msgpack_unpacked st;
	const msgpack_object_array *a = server_sandboxes(s, &st);
	char label[128];
	bool found = false;

	for (uint32_t i = 0; i < a->size && !found; i++)
		if (!strcmp(str_of(ipc_map_get(&a->ptr[i], "metadata"), "sandpool_sandbox", label, sizeof(label)),
			    sb_id)) {
			str_of(&a->ptr[i], "sandboxID", out, len);
			found = true;
		}
	msgpack_unpacked_destroy(&st);
	return found;
}

static bool server_alive(const struct e2b_server *s, const char *sandbox_id)
{
	msgpack_unpacked st;
	const msgpack_object_array *a = server_sandboxes(s, &st);
	char id[64];
	bool found = false;

	for (uint32_t i = 0; i < a->size && !found; i++)
		found = !strcmp(str_of(&a->ptr[i], "sandboxID", id, sizeof(id)), sandbox_id);
	msgpack_unpacked_destroy(&st);
	return found;
}

static bool wait_gone(const struct e2b_server *s, const char *sandbox_id, int timeout_ms)
{
	for (int waited = 0; waited < timeout_ms; waited += 50) {
		if (!server_alive(s, sandbox_id))
			return true;
		sleep_ms(50);
	}
	return false;
}

/* Fails the test when the server recorded any contract violation or
 * internal error, listing them. */
static void server_assert_clean(const struct e2b_server *s)
{
	msgpack_unpacked st;
	const msgpack_object_array *v = NULL, *ie = NULL;
	char *first = NULL;

	server_state(s, &st);
	ck_assert_int_eq(ipc_get_array(&st.data, "violations", &v), 0);
	ck_assert_int_eq(ipc_get_array(&st.data, "internal_errors", &ie), 0);
	if (v->size)
		first = ipc_obj_strdup(&v->ptr[0]);
	else if (ie->size)
		first = ipc_obj_strdup(&ie->ptr[0]);
	ck_assert_msg(v->size == 0 && ie->size == 0,
		      "the contract server saw %u violation(s) and %u internal error(s); first: %s", v->size, ie->size,
		      first ? first : "");
	msgpack_unpacked_destroy(&st);
}

static void server_faults(const struct e2b_server *s, const char *rules)
{
	char body[1024];

	snprintf(body, sizeof(body), "{\"rules\":[%s]}", rules);
	ck_assert_int_eq(server_call(s, "POST", "/_test/faults", body, NULL), 200);
}

static void server_vanish(const struct e2b_server *s, const char *sandbox_id)
{
	char body[128];

	snprintf(body, sizeof(body), "{\"sandboxID\":\"%s\"}", sandbox_id);
	ck_assert_int_eq(server_call(s, "POST", "/_test/vanish", body, NULL), 204);
}

/* ---- a daemon with e2b templates against its own server ---------------------------- */

struct env {
	struct e2b_server srv;
	struct fixture fx;
	char key[64];
};

static void in_daemon(void *arg)
{
	const struct env *e = arg;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	setenv("E2B_API_KEY", e->key, 1);
}

/* Appends an e2b template named name on e's server to conf, with extra
 * keys (each line ending in \n). */
static void add_cloud(char *conf, size_t len, const struct env *e, const char *name, const char *extra)
{
	size_t n = strlen(conf);

	snprintf(conf + n, len - n,
		 "[template %s]\nbackend = e2b\nlanguage = python\ne2b_api_url = %s\ne2b_sandbox_url = %s\n%s", name,
		 e->srv.url, e->srv.url, extra);
}

static void env_server(struct env *e)
{
	memset(e, 0, sizeof(*e));
	snprintf(e->key, sizeof(e->key), "e2btest-key-%d-%ld", (int)getpid(), (long)time(NULL));
	server_start(&e->srv, e->key);
}

static void env_daemon(struct env *e, const char *conf)
{
	fixture_prepare(&e->fx, conf);
	fixture_spawn(&e->fx, in_daemon, e);
	fixture_wait_socket(&e->fx);
}

/* A server and a daemon with one e2b template "cloud" (extra: its keys). */
static void env_start(struct env *e, const char *extra)
{
	char conf[4096] = "drain_timeout = 2s\n";

	env_server(e);
	add_cloud(conf, sizeof(conf), e, "cloud", extra);
	env_daemon(e, conf);
}

static void env_stop_daemon(struct env *e)
{
	int rc;

	if (e->fx.pid <= 0)
		return;
	rc = fixture_stop(&e->fx);
	if (rc != 0)
		fixture_dump_log(&e->fx);
	ck_assert_int_eq(rc, 0);
}

/*
 * The end of every test: the daemon stopped, the server has no live
 * sandbox and saw no violation, the API key appears nowhere in the
 * daemon's log, the server exits cleanly, and nothing is left behind.
 */
static void env_finish(struct env *e)
{
	char cmd[512];
	uint64_t live;

	env_stop_daemon(e);
	live = server_count(&e->srv, "live", false);
	if (live)
		fixture_dump_log(&e->fx);
	ck_assert_msg(live == 0, "%llu sandbox(es) leaked in the contract server", (unsigned long long)live);
	server_assert_clean(&e->srv);
	snprintf(cmd, sizeof(cmd), "grep -q -F '%s' '%s'", e->key, e->fx.log);
	ck_assert_msg(system(cmd) != 0, "the API key is in the daemon's log");
	ck_assert_int_eq(server_stop(&e->srv), 0);
	fixture_finish(&e->fx);
}

/* pool.stats of template tmpl: degraded and its last_error. */
static bool degraded(const struct fixture *f, const char *tmpl, char *last_error, size_t len)
{
	struct sandpool *sp = fixture_connect(f);
	struct sandpool_reply *r = NULL;
	struct sandpool_error err;
	const msgpack_object_array *ts = NULL;
	char name[64];
	bool d = false;

	ck_assert_int_eq(sandpool_call(sp, "pool.stats", NULL, 0, NULL, NULL, &r, &err), 0);
	ck_assert_int_eq(ipc_get_array(r->result, "templates", &ts), 0);
	for (uint32_t i = 0; i < ts->size; i++)
		if (!strcmp(str_of(&ts->ptr[i], "name", name, sizeof(name)), tmpl)) {
			(void)ipc_get_bool(&ts->ptr[i], "degraded", &d);
			str_of(&ts->ptr[i], "last_error", last_error, len);
		}
	sandpool_reply_free(r);
	sandpool_close(sp);
	return d;
}

static void wait_warm(const struct env *e, const char *tmpl, unsigned n)
{
	if (!fixture_wait_warm(&e->fx, tmpl, n, 30000)) {
		fixture_dump_log(&e->fx);
		server_dump_log(&e->srv);
		ck_abort_msg("template %s never had %u warm sandboxes", tmpl, n);
	}
}

/* ---- the client side --------------------------------------------------------------- */

static int try_lease(struct sandpool *sp, const char *tmpl, const char *session, struct sandpool_lease *l,
		     struct sandpool_error *err)
{
	struct sandpool_lease_opts o = { .template_name = tmpl, .session = session };

	memset(l, 0, sizeof(*l));
	return sandpool_lease(sp, &o, l, err);
}

static void lease(struct sandpool *sp, const char *tmpl, const char *session, struct sandpool_lease *l)
{
	struct sandpool_error err;

	ck_assert_msg(try_lease(sp, tmpl, session, l, &err) == 0, "lease %s: %s", tmpl, err.message);
}

/* Runs a Python cell and checks its main result's text (NULL: none) and no error. */
static void code_expect(struct sandpool *sp, const char *lease_id, const char *code, const char *text)
{
	struct sandpool_code_opts o = { .code = code };
	struct sandpool_execution ex = { 0 };
	struct sandpool_error err;

	ck_assert_msg(sandpool_code_run(sp, lease_id, &o, &ex, &err) == 0, "code.run %s: %s", code, err.message);
	ck_assert_msg(!ex.error_name, "%s: %s: %s", code, ex.error_name, ex.error_value ? ex.error_value : "");
	if (text)
		ck_assert_msg(ex.text && !strcmp(ex.text, text), "%s: main result %s, not %s", code,
			      ex.text ? ex.text : "(none)", text);
	else
		ck_assert_ptr_null(ex.text);
	sandpool_execution_free(&ex);
}

/* ---- reading the ledger ------------------------------------------------------------ */

/* The first column of the first row of sql (one ? bound to arg) as text,
 * into out; false when there is no row. */
static bool ledger_text(const struct fixture *f, const char *sql, const char *arg, char *out, size_t len)
{
	sqlite3 *db;
	sqlite3_stmt *st;
	bool row;

	ck_assert_int_eq(sqlite3_open_v2(f->ledger, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	ck_assert_msg(sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK, "%s: %s", sql, sqlite3_errmsg(db));
	sqlite3_bind_text(st, 1, arg, -1, SQLITE_STATIC);
	row = sqlite3_step(st) == SQLITE_ROW;
	if (row) {
		const unsigned char *t = sqlite3_column_text(st, 0);

		snprintf(out, len, "%s", t ? (const char *)t : "NULL");
	}
	sqlite3_finalize(st);
	sqlite3_close(db);
	return row;
}

static double ledger_number(const struct fixture *f, const char *sql, const char *arg)
{
	char v[64];

	ck_assert_msg(ledger_text(f, sql, arg, v, sizeof(v)), "no row for %s (%s)", sql, arg);
	return strtod(v, NULL);
}

/* ---- 1. the warm pool fills -------------------------------------------------------- */

START_TEST(test_warm_pool_fills)
{
	struct env e;
	msgpack_unpacked st;
	const msgpack_object_array *a;
	char instance[2][128], v[128], sb[2][64];

	env_start(&e, "e2b_template = my-template\nmin_warm = 2\nmax_warm = 2\nmax_total = 3\n");
	wait_warm(&e, "cloud", 2);
	ck_assert_int_eq(fixture_stat(&e.fx, "cloud", "warm"), 2);
	/* max_warm = min_warm: nothing more is made, nothing is lost. */
	sleep_ms(500);
	ck_assert_int_eq(fixture_stat(&e.fx, "cloud", "warm"), 2);
	ck_assert_uint_eq(server_count(&e.srv, "created", false), 2);
	ck_assert_uint_eq(server_requests(&e.srv, "POST /sandboxes"), 2);

	a = server_sandboxes(&e.srv, &st);
	ck_assert_uint_eq(a->size, 2);
	for (unsigned i = 0; i < 2; i++) {
		const msgpack_object *meta = ipc_map_get(&a->ptr[i], "metadata");

		ck_assert_str_eq(str_of(&a->ptr[i], "templateID", v, sizeof(v)), "my-template");
		ck_assert_str_eq(str_of(meta, "sandpool_template", v, sizeof(v)), "cloud");
		ck_assert(str_of(meta, "sandpool_instance", instance[i], sizeof(instance[i]))[0]);
		ck_assert_msg(!strncmp(str_of(meta, "sandpool_sandbox", sb[i], sizeof(sb[i])), "sb-", 3), "label %s",
			      sb[i]);
	}
	ck_assert_str_eq(instance[0], instance[1]);
	ck_assert_str_ne(sb[0], sb[1]);
	msgpack_unpacked_destroy(&st);
	ck_assert_uint_eq(server_count(&e.srv, "live", false), 2);
	env_finish(&e);
}
END_TEST

/* ---- 2. lease, code.run, release; the ledger ------------------------------------------ */

START_TEST(test_code_and_ledger)
{
	struct env e;
	struct sandpool *sp;
	struct sandpool_lease l;
	struct sandpool_error err;
	char box[64], sb[64], lease_id[64], v[128];

	env_start(&e, "min_warm = 1\nmax_warm = 1\nmax_total = 3\n");
	wait_warm(&e, "cloud", 1);
	sp = fixture_connect(&e.fx);
	lease(sp, "cloud", NULL, &l);
	ck_assert(l.warm);
	snprintf(sb, sizeof(sb), "%s", l.sandbox_id);
	snprintf(lease_id, sizeof(lease_id), "%s", l.lease_id);
	ck_assert(server_sandbox_of(&e.srv, sb, box, sizeof(box)));
	code_expect(sp, lease_id, "x = 41", NULL);
	code_expect(sp, lease_id, "x + 1", "42");
	ck_assert_int_eq(sandpool_release(sp, lease_id, &err), 0);
	sandpool_lease_free(&l);
	ck_assert_msg(wait_gone(&e.srv, box, 10000), "released sandbox %s is still live", box);
	sandpool_close(sp);

	env_stop_daemon(&e);
	ck_assert(ledger_text(&e.fx, "SELECT backend FROM sandboxes WHERE id = ?", sb, v, sizeof(v)));
	ck_assert_str_eq(v, "e2b");
	ck_assert(ledger_text(&e.fx, "SELECT backend_ref FROM sandboxes WHERE id = ?", sb, v, sizeof(v)));
	ck_assert_str_eq(v, box);
	ck_assert(ledger_text(&e.fx, "SELECT end_reason FROM sandboxes WHERE id = ?", sb, v, sizeof(v)));
	ck_assert_str_eq(v, "released");
	ck_assert_double_eq_tol(ledger_number(&e.fx, "SELECT cost_per_vcpu_second FROM sandboxes WHERE id = ?", sb),
				E2B_VCPU_RATE, 1e-12);
	ck_assert(ledger_number(&e.fx, "SELECT total_cost FROM sandbox_usage WHERE id = ?", sb) > 0);
	ck_assert(ledger_number(&e.fx, "SELECT leased_cost FROM lease_usage WHERE id = ?", lease_id) > 0);
	ck_assert_double_eq(ledger_number(&e.fx, "SELECT count(*) FROM executions WHERE lease = ? AND kind = 'code'",
					  lease_id),
			    2);
	ck_assert(ledger_number(&e.fx, "SELECT total_cost FROM usage_by_template WHERE template = ?", "cloud") > 0);
	env_finish(&e);
}
END_TEST

/* ---- 3. a session keeps its E2B sandbox ----------------------------------------------- */

START_TEST(test_session_reuse)
{
	struct env e;
	struct sandpool *sp;
	struct sandpool_lease l;
	struct sandpool_error err;
	char box[64], box2[64], sb[64];
	uint64_t created;

	env_start(&e, "min_warm = 1\nmax_warm = 1\nmax_total = 3\n");
	wait_warm(&e, "cloud", 1);
	sp = fixture_connect(&e.fx);
	lease(sp, "cloud", "agent-1", &l);
	ck_assert(!l.reused);
	snprintf(sb, sizeof(sb), "%s", l.sandbox_id);
	ck_assert(server_sandbox_of(&e.srv, sb, box, sizeof(box)));
	code_expect(sp, l.lease_id, "x = 41", NULL);
	ck_assert_int_eq(sandpool_release(sp, l.lease_id, &err), 0);
	sandpool_lease_free(&l);
	/* Held for the session: still there, and not replaced by a new one. */
	wait_warm(&e, "cloud", 1);
	created = server_count(&e.srv, "created", false);
	ck_assert(server_alive(&e.srv, box));

	lease(sp, "cloud", "agent-1", &l);
	ck_assert(l.reused);
	ck_assert_str_eq(l.sandbox_id, sb);
	ck_assert(server_sandbox_of(&e.srv, sb, box2, sizeof(box2)));
	ck_assert_str_eq(box2, box);
	code_expect(sp, l.lease_id, "x + 1", "42");
	ck_assert_int_eq(sandpool_release(sp, l.lease_id, &err), 0);
	sandpool_lease_free(&l);
	ck_assert_uint_eq(server_count(&e.srv, "created", false), created);
	ck_assert_int_eq(fixture_stat(&e.fx, "cloud", "session_reuses"), 1);

	/* Ending the session kills its sandbox in E2B. */
	ck_assert_int_eq(sandpool_session_end(sp, "agent-1", &err), 0);
	ck_assert_msg(wait_gone(&e.srv, box, 10000), "the ended session's sandbox %s is still live", box);
	sandpool_close(sp);
	env_finish(&e);
}
END_TEST

/* ---- 4. keepalive ------------------------------------------------------------------- */

START_TEST(test_keepalive)
{
	struct env e;
	struct sandpool *sp;
	struct sandpool_lease l, l2;
	msgpack_unpacked st;
	const msgpack_object_array *a;
	char leased_box[64], warm_box[64], box[64];
	uint64_t keepalives;

	/* E2B's TTL is 2 s; the test waits 5 s. */
	env_start(&e, "min_warm = 1\nmax_warm = 1\nmax_total = 3\ne2b_timeout = 2s\n");
	wait_warm(&e, "cloud", 1);
	sp = fixture_connect(&e.fx);
	lease(sp, "cloud", NULL, &l);
	ck_assert(server_sandbox_of(&e.srv, l.sandbox_id, leased_box, sizeof(leased_box)));
	code_expect(sp, l.lease_id, "x = 7", NULL);
	/* Its replacement comes up warm. */
	wait_warm(&e, "cloud", 1);
	a = server_sandboxes(&e.srv, &st);
	ck_assert_uint_eq(a->size, 2);
	for (uint32_t i = 0; i < a->size; i++) {
		double left = 99;
		const msgpack_object *o = ipc_map_get(&a->ptr[i], "secondsLeft");

		if (o && o->type == MSGPACK_OBJECT_FLOAT64)
			left = o->via.f64;
		else if (o && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
			left = (double)o->via.u64;
		/* E2B would reap it within 2 s if nobody extended it. */
		ck_assert_msg(left <= 2.1, "secondsLeft %.3f", left);
		str_of(&a->ptr[i], "sandboxID", box, sizeof(box));
		if (strcmp(box, leased_box))
			snprintf(warm_box, sizeof(warm_box), "%s", box);
	}
	msgpack_unpacked_destroy(&st);

	sleep_ms(5000);
	ck_assert_msg(server_alive(&e.srv, leased_box), "the leased sandbox expired");
	ck_assert_msg(server_alive(&e.srv, warm_box), "the warm sandbox expired");
	ck_assert_uint_eq(server_count(&e.srv, "expired", false), 0);
	keepalives = server_requests(&e.srv, "POST /sandboxes/{id}/timeout");
	/* Every 2/3 s for each: some 15 in 5 s; far fewer on a loaded machine. */
	ck_assert_msg(keepalives >= 4, "%llu keepalives", (unsigned long long)keepalives);

	code_expect(sp, l.lease_id, "x", "7");
	lease(sp, "cloud", NULL, &l2);
	ck_assert(l2.warm);
	ck_assert(server_sandbox_of(&e.srv, l2.sandbox_id, box, sizeof(box)));
	ck_assert_str_eq(box, warm_box);
	code_expect(sp, l2.lease_id, "6 * 7", "42");
	sandpool_lease_free(&l);
	sandpool_lease_free(&l2);
	/* Closing the connection ends both leases. */
	sandpool_close(sp);
	env_finish(&e);
}
END_TEST

/* ---- 5. the orphan sweep --------------------------------------------------------------- */

static void plant(const struct env *e, const char *metadata, char *id, size_t len)
{
	msgpack_unpacked u;
	char body[512];

	snprintf(body, sizeof(body), "{\"templateID\":\"code-interpreter-v1\",\"timeout\":300,\"metadata\":{%s}}",
		 metadata);
	ck_assert_int_eq(server_call(&e->srv, "POST", "/_test/plant", body, &u), 201);
	ck_assert(str_of(&u.data, "sandboxID", id, len)[0]);
	msgpack_unpacked_destroy(&u);
}

START_TEST(test_orphan_sweep)
{
	struct env e;
	msgpack_unpacked st;
	const msgpack_object_array *a;
	char label[128], meta[512], ours[64], other[64], unlabelled[64];

	env_start(&e, "min_warm = 1\nmax_warm = 1\nmax_total = 3\n");
	wait_warm(&e, "cloud", 1);
	a = server_sandboxes(&e.srv, &st);
	ck_assert_uint_eq(a->size, 1);
	ck_assert(str_of(ipc_map_get(&a->ptr[0], "metadata"), "sandpool_instance", label, sizeof(label))[0]);
	msgpack_unpacked_destroy(&st);
	env_stop_daemon(&e);
	ck_assert_uint_eq(server_count(&e.srv, "live", false), 0);

	/* What a killed earlier run of this daemon (same host, same state
	 * dir) would have left, next to another daemon's and a stranger's. */
	snprintf(meta, sizeof(meta),
		 "\"sandpool_instance\":\"%s\",\"sandpool_template\":\"cloud\","
		 "\"sandpool_sandbox\":\"sb-0123456789abcdef\"",
		 label);
	plant(&e, meta, ours, sizeof(ours));
	plant(&e, "\"sandpool_instance\":\"otherhost-i-00000000\",\"sandpool_template\":\"cloud\"", other,
	      sizeof(other));
	plant(&e, "", unlabelled, sizeof(unlabelled));

	fixture_spawn(&e.fx, in_daemon, &e);
	fixture_wait_socket(&e.fx);
	if (!wait_gone(&e.srv, ours, 15000)) {
		fixture_dump_log(&e.fx);
		ck_abort_msg("the orphan %s labelled %s was not killed", ours, label);
	}
	wait_warm(&e, "cloud", 1);
	ck_assert_msg(server_alive(&e.srv, other), "another daemon's sandbox was killed");
	ck_assert_msg(server_alive(&e.srv, unlabelled), "an unlabelled sandbox was killed");
	ck_assert_uint_ge(server_requests(&e.srv, "GET /v2/sandboxes"), 2);
	env_stop_daemon(&e);
	/* The daemon never touches them: they are the test's to remove. */
	ck_assert(server_alive(&e.srv, other) && server_alive(&e.srv, unlabelled));
	server_vanish(&e.srv, other);
	server_vanish(&e.srv, unlabelled);
	env_finish(&e);
}
END_TEST

/* ---- 6. faults ------------------------------------------------------------------------- */

/* 429 with Retry-After, then 500 twice: the lease waits and gets its sandbox. */
START_TEST(test_fault_retries)
{
	struct env e;
	struct sandpool *sp;
	struct sandpool_lease l;
	struct sandpool_error err;
	double t0, took;

	/* No warm sandbox: each lease makes its own. */
	env_start(&e, "min_warm = 0\nmax_warm = 0\nmax_total = 3\n");
	sp = fixture_connect(&e.fx);

	server_faults(&e.srv,
		      "{\"method\":\"POST\",\"path\":\"/sandboxes\",\"status\":429,\"retry_after\":1,\"count\":1}");
	t0 = now_s();
	lease(sp, "cloud", NULL, &l);
	took = now_s() - t0;
	ck_assert(!l.warm);
	ck_assert_msg(took >= 1.0, "the create was retried after %.3f s, before Retry-After", took);
	ck_assert_uint_eq(server_requests(&e.srv, "POST /sandboxes"), 2);
	code_expect(sp, l.lease_id, "1 + 1", "2");
	ck_assert_int_eq(sandpool_release(sp, l.lease_id, &err), 0);
	sandpool_lease_free(&l);

	server_faults(&e.srv, "{\"method\":\"POST\",\"path\":\"/sandboxes\",\"status\":500,\"count\":2}");
	lease(sp, "cloud", NULL, &l);
	ck_assert_uint_eq(server_requests(&e.srv, "POST /sandboxes"), 5);
	code_expect(sp, l.lease_id, "2 + 2", "4");
	ck_assert_int_eq(sandpool_release(sp, l.lease_id, &err), 0);
	sandpool_lease_free(&l);

	ck_assert_int_eq(fixture_stat(&e.fx, "cloud", "create_failures"), 0);
	ck_assert_int_eq(fixture_stat(&e.fx, "cloud", "created"), 2);
	sandpool_close(sp);
	env_finish(&e);
}
END_TEST

/* 401: the template is degraded with the reason, and nothing is retried. */
START_TEST(test_fault_denied)
{
	struct env e;
	struct sandpool *sp;
	struct sandpool_lease l;
	struct sandpool_error err;
	char conf[2048] = "drain_timeout = 2s\n", why[512] = "";
	double t0;
	bool d = false;

	/* In place before the daemon's first create. */
	env_server(&e);
	server_faults(&e.srv, "{\"method\":\"POST\",\"path\":\"/sandboxes\",\"status\":401,\"count\":-1,"
			      "\"body\":{\"code\":401,\"message\":\"Invalid API key\"}}");
	add_cloud(conf, sizeof(conf), &e, "cloud", "min_warm = 1\nmax_total = 3\n");
	env_daemon(&e, conf);
	for (int i = 0; i < 300 && !(d = degraded(&e.fx, "cloud", why, sizeof(why))); i++)
		sleep_ms(50);
	ck_assert_msg(d, "the template is not degraded after a 401");
	ck_assert_msg(strstr(why, "401") && strstr(why, "Invalid API key"), "last_error: %s", why);

	sp = fixture_connect(&e.fx);
	t0 = now_s();
	ck_assert_int_eq(try_lease(sp, "cloud", NULL, &l, &err), -EREMOTEIO);
	ck_assert_msg(now_s() - t0 < 2.0, "the lease took %.3f s to fail", now_s() - t0);
	ck_assert_int_eq(err.code, SANDPOOL_E_BACKEND_ERROR);
	ck_assert_msg(strstr(err.message, "401"), "%s", err.message);
	/* No more attempts: not by the pool, not for leases. */
	sleep_ms(1500);
	ck_assert_int_eq(try_lease(sp, "cloud", NULL, &l, &err), -EREMOTEIO);
	ck_assert_int_eq(err.code, SANDPOOL_E_BACKEND_ERROR);
	ck_assert_uint_eq(server_requests(&e.srv, "POST /sandboxes"), 1);
	sandpool_close(sp);
	env_finish(&e);
}
END_TEST

/* A port nothing listens on (bound, then closed). */
static unsigned closed_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	close(fd);
	return ntohs(a.sin_port);
}

/* An unreachable API: its leases fail fast with backend_unavailable; the
 * other templates, local and e2b, keep serving. */
START_TEST(test_fault_unreachable)
{
	struct env e;
	struct sandpool *sp;
	struct sandpool_lease l;
	struct sandpool_error err;
	struct sandpool_exec_opts xo = { .cmd = "echo local" };
	struct sandpool_exec_result res = { 0 };
	char conf[4096], why[512];
	unsigned port = closed_port();
	double t0, took;

	env_server(&e);
	snprintf(conf, sizeof(conf),
		 "drain_timeout = 2s\n"
		 "[template local]\nlanguage = shell\nmin_warm = 1\nmax_total = 2\n"
		 "[template dead]\nbackend = e2b\nlanguage = python\nmin_warm = 1\nmax_total = 2\n"
		 "e2b_api_url = http://127.0.0.1:%u\ne2b_sandbox_url = http://127.0.0.1:%u\n",
		 port, port);
	add_cloud(conf, sizeof(conf), &e, "cloud", "min_warm = 1\nmax_warm = 1\nmax_total = 2\n");
	env_daemon(&e, conf);
	sp = fixture_connect(&e.fx);

	/* The first lease waits out the creation's connection retries. */
	t0 = now_s();
	ck_assert_int_eq(try_lease(sp, "dead", NULL, &l, &err), -EREMOTEIO);
	took = now_s() - t0;
	ck_assert_msg(err.code == SANDPOOL_E_BACKEND_UNAVAILABLE, "%s: %s", sandpool_errcode_name(err.code),
		      err.message);
	ck_assert_msg(took < 15.0, "the first lease took %.3f s to fail", took);
	ck_assert(degraded(&e.fx, "dead", why, sizeof(why)));
	/* Later ones at once. */
	t0 = now_s();
	ck_assert_int_eq(try_lease(sp, "dead", NULL, &l, &err), -EREMOTEIO);
	took = now_s() - t0;
	ck_assert_int_eq(err.code, SANDPOOL_E_BACKEND_UNAVAILABLE);
	ck_assert_msg(took < 2.0, "a lease of the degraded template took %.3f s to fail", took);

	lease(sp, "local", NULL, &l);
	ck_assert_msg(sandpool_exec(sp, l.lease_id, &xo, &res, &err) == 0, "%s", err.message);
	ck_assert_str_eq(res.stdout_buf, "local\n");
	sandpool_exec_result_free(&res);
	ck_assert_int_eq(sandpool_release(sp, l.lease_id, &err), 0);
	sandpool_lease_free(&l);
	wait_warm(&e, "cloud", 1);
	lease(sp, "cloud", NULL, &l);
	code_expect(sp, l.lease_id, "40 + 2", "42");
	ck_assert_int_eq(sandpool_release(sp, l.lease_id, &err), 0);
	sandpool_lease_free(&l);
	sandpool_close(sp);
	env_finish(&e);
}
END_TEST

/* A sandbox E2B reaped under a lease: the lease ends, backend_lost. */
START_TEST(test_fault_vanished)
{
	struct env e;
	struct sandpool *sp;
	struct sandpool_lease l;
	struct sandpool_code_opts co = { .code = "x" };
	struct sandpool_execution ex = { 0 };
	struct sandpool_exec_opts xo = { .cmd = "true" };
	struct sandpool_exec_result res = { 0 };
	struct sandpool_error err;
	char box[64], sb[64], lease_id[64], v[64];
	int rc = 0;

	env_start(&e, "min_warm = 1\nmax_warm = 1\nmax_total = 3\n");
	wait_warm(&e, "cloud", 1);
	sp = fixture_connect(&e.fx);
	lease(sp, "cloud", NULL, &l);
	snprintf(sb, sizeof(sb), "%s", l.sandbox_id);
	snprintf(lease_id, sizeof(lease_id), "%s", l.lease_id);
	sandpool_lease_free(&l);
	ck_assert(server_sandbox_of(&e.srv, sb, box, sizeof(box)));
	code_expect(sp, lease_id, "x = 1", NULL);

	server_vanish(&e.srv, box);
	ck_assert_int_eq(sandpool_code_run(sp, lease_id, &co, &ex, &err), -EREMOTEIO);
	/* The daemon asks E2B, hears 404, and ends the lease (an exec in
	 * flight meanwhile fails, or is aborted with it). */
	for (int i = 0; i < 200; i++) {
		rc = sandpool_exec(sp, lease_id, &xo, &res, &err);
		if (rc == 0)
			sandpool_exec_result_free(&res);
		if (rc == -EREMOTEIO && err.code == SANDPOOL_E_NOT_FOUND)
			break;
		sleep_ms(50);
	}
	ck_assert_msg(rc == -EREMOTEIO && err.code == SANDPOOL_E_NOT_FOUND,
		      "the lease on a vanished sandbox still answers: %d %s", rc, err.message);
	ck_assert_int_eq(fixture_stat(&e.fx, "cloud", "leased"), 0);
	/* The pool is whole again. */
	wait_warm(&e, "cloud", 1);
	lease(sp, "cloud", NULL, &l);
	ck_assert_str_ne(l.sandbox_id, sb);
	code_expect(sp, l.lease_id, "3 * 3", "9");
	sandpool_lease_free(&l);
	sandpool_close(sp);

	env_stop_daemon(&e);
	ck_assert(ledger_text(&e.fx, "SELECT end_reason FROM sandboxes WHERE id = ?", sb, v, sizeof(v)));
	ck_assert_str_eq(v, "backend_lost");
	ck_assert(ledger_text(&e.fx, "SELECT end_reason FROM leases WHERE id = ?", lease_id, v, sizeof(v)));
	ck_assert_str_eq(v, "backend_lost");
	env_finish(&e);
}
END_TEST

/* The connection drops in the middle of a cell's stream. */
START_TEST(test_fault_midstream)
{
	struct env e;
	struct sandpool *sp;
	struct sandpool_lease l;
	struct sandpool_code_opts co = {
		.code = "print('a', flush=True)\nimport time\ntime.sleep(0.5)\nprint('b')\n1",
	};
	struct sandpool_execution ex = { 0 };
	struct sandpool_error err;

	env_start(&e, "min_warm = 1\nmax_warm = 1\nmax_total = 3\n");
	wait_warm(&e, "cloud", 1);
	sp = fixture_connect(&e.fx);
	lease(sp, "cloud", NULL, &l);
	code_expect(sp, l.lease_id, "y = 5", NULL);
	server_faults(&e.srv, "{\"method\":\"POST\",\"path\":\"/execute\",\"drop\":\"mid_stream\","
			      "\"after_lines\":1,\"count\":1}");
	ck_assert_int_eq(sandpool_code_run(sp, l.lease_id, &co, &ex, &err), -EREMOTEIO);
	ck_assert_msg(err.code == SANDPOOL_E_BACKEND_ERROR, "%s: %s", sandpool_errcode_name(err.code), err.message);
	/* The lease, its sandbox and its state are still there. */
	code_expect(sp, l.lease_id, "y + 1", "6");
	ck_assert_int_eq(sandpool_release(sp, l.lease_id, &err), 0);
	sandpool_lease_free(&l);
	/* And the daemon serves others. */
	wait_warm(&e, "cloud", 1);
	lease(sp, "cloud", NULL, &l);
	code_expect(sp, l.lease_id, "2 ** 5", "32");
	sandpool_lease_free(&l);
	sandpool_close(sp);
	env_finish(&e);
}
END_TEST

/* ---- 7. exec and files through envd ---------------------------------------------------- */

START_TEST(test_exec_and_files)
{
	struct env e;
	struct sandpool *sp;
	struct sandpool_lease l;
	struct sandpool_error err;
	struct sandpool_exec_result res = { 0 };
	struct sandpool_file_data d = { 0 };
	struct sandpool_reply *r = NULL;
	const msgpack_object_array *entries = NULL;
	msgpack_sbuffer buf;
	msgpack_packer pk;
	char name[64];
	uint64_t size = 0;
	double t0;

	env_start(&e, "min_warm = 1\nmax_warm = 1\nmax_total = 3\nmax_output = 64K\n");
	wait_warm(&e, "cloud", 1);
	sp = fixture_connect(&e.fx);
	lease(sp, "cloud", NULL, &l);

	{
		/* A result over max_output, then output: dropped and counted,
		 * never read past (this crashed the daemon once). */
		struct sandpool_code_opts co = { .code = "display('x' * 70000)\nprint('after')\n1 + 1" };
		struct sandpool_execution cx = { 0 };

		ck_assert_msg(sandpool_code_run(sp, l.lease_id, &co, &cx, &err) == 0, "%s", err.message);
		ck_assert(cx.truncated);
		ck_assert_str_eq(cx.stdout_buf, "after\n");
		sandpool_execution_free(&cx);
	}

	{
		const char *const argv[] = { "sh", "-c", "echo hi; echo err >&2; exit 3", NULL };
		struct sandpool_exec_opts o = { .argv = argv };

		ck_assert_msg(sandpool_exec(sp, l.lease_id, &o, &res, &err) == 0, "%s", err.message);
		ck_assert_str_eq(res.stdout_buf, "hi\n");
		ck_assert_str_eq(res.stderr_buf, "err\n");
		ck_assert(res.has_exit_code);
		ck_assert_int_eq(res.exit_code, 3);
		ck_assert_ptr_null(res.limit);
		sandpool_exec_result_free(&res);
	}
	{
		const char *const argv[] = { "cat", NULL };
		struct sandpool_exec_opts o = { .argv = argv, .stdin_data = "from stdin\n", .stdin_len = 11 };

		ck_assert_msg(sandpool_exec(sp, l.lease_id, &o, &res, &err) == 0, "%s", err.message);
		ck_assert_str_eq(res.stdout_buf, "from stdin\n");
		ck_assert_int_eq(res.exit_code, 0);
		sandpool_exec_result_free(&res);
	}
	{
		struct sandpool_exec_opts o = { .cmd = "sleep 30", .timeout_ms = 500 };

		t0 = now_s();
		ck_assert_msg(sandpool_exec(sp, l.lease_id, &o, &res, &err) == 0, "%s", err.message);
		ck_assert_msg(res.limit && !strcmp(res.limit, "timeout"), "limit %s", res.limit ? res.limit : "(none)");
		ck_assert(!res.has_exit_code);
		ck_assert_msg(now_s() - t0 < 10.0, "the timed-out exec took %.3f s", now_s() - t0);
		sandpool_exec_result_free(&res);
	}
	{
		/* Past max_output the process is killed through envd, not
		 * just cut off when its stream is dropped. */
		struct sandpool_exec_opts o = { .cmd = "yes" };
		uint64_t signals = server_requests(&e.srv, "POST /process.Process/SendSignal");

		ck_assert_msg(sandpool_exec(sp, l.lease_id, &o, &res, &err) == 0, "%s", err.message);
		ck_assert_msg(res.limit && !strcmp(res.limit, "output_limit"), "limit %s",
			      res.limit ? res.limit : "(none)");
		ck_assert(res.truncated);
		ck_assert_uint_eq(res.stdout_len, 64 * 1024);
		ck_assert_uint_eq(server_requests(&e.srv, "POST /process.Process/SendSignal"), signals + 1);
		sandpool_exec_result_free(&res);
	}

	/* Files: written, seen by a command, listed, read back, removed. */
	ck_assert_msg(sandpool_file_write(sp, l.lease_id, "dir/a.txt", "content\n", 8, 0, false, &err) == 0, "%s",
		      err.message);
	{
		struct sandpool_exec_opts o = { .cmd = "cat dir/a.txt" };

		ck_assert_msg(sandpool_exec(sp, l.lease_id, &o, &res, &err) == 0, "%s", err.message);
		ck_assert_str_eq(res.stdout_buf, "content\n");
		sandpool_exec_result_free(&res);
	}
	ck_assert_msg(sandpool_file_read(sp, l.lease_id, "/workspace/dir/a.txt", 0, 0, &d, &err) == 0, "%s",
		      err.message);
	ck_assert_uint_eq(d.len, 8);
	ck_assert_str_eq(d.data, "content\n");
	ck_assert(d.eof);
	sandpool_file_data_free(&d);

	msgpack_sbuffer_init(&buf);
	msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 2);
	ipc_pack_kv_str(&pk, "lease_id", l.lease_id);
	ipc_pack_kv_str(&pk, "path", "dir");
	ck_assert_msg(sandpool_call(sp, "files.list", buf.data, buf.size, NULL, NULL, &r, &err) == 0, "%s",
		      err.message);
	msgpack_sbuffer_destroy(&buf);
	ck_assert_int_eq(ipc_get_array(r->result, "entries", &entries), 0);
	ck_assert_uint_eq(entries->size, 1);
	ck_assert_str_eq(str_of(&entries->ptr[0], "name", name, sizeof(name)), "a.txt");
	ck_assert_str_eq(str_of(&entries->ptr[0], "type", name, sizeof(name)), "file");
	ck_assert_int_eq(ipc_get_uint(&entries->ptr[0], "size", &size), 0);
	ck_assert_uint_eq(size, 8);
	sandpool_reply_free(r);

	ck_assert_msg(sandpool_file_remove(sp, l.lease_id, "dir", &err) == 0, "%s", err.message);
	ck_assert_int_eq(sandpool_file_read(sp, l.lease_id, "dir/a.txt", 0, 0, &d, &err), -EREMOTEIO);
	ck_assert_int_eq(err.code, SANDPOOL_E_NOT_FOUND);
	ck_assert_int_eq(sandpool_release(sp, l.lease_id, &err), 0);
	sandpool_lease_free(&l);
	sandpool_close(sp);
	env_finish(&e);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("e2b");
	TCase *tc = tcase_create("e2b");

	curl_global_init(CURL_GLOBAL_DEFAULT);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_warm_pool_fills);
	tcase_add_test(tc, test_code_and_ledger);
	tcase_add_test(tc, test_session_reuse);
	tcase_add_test(tc, test_keepalive);
	tcase_add_test(tc, test_orphan_sweep);
	tcase_add_test(tc, test_fault_retries);
	tcase_add_test(tc, test_fault_denied);
	tcase_add_test(tc, test_fault_unreachable);
	tcase_add_test(tc, test_fault_vanished);
	tcase_add_test(tc, test_fault_midstream);
	tcase_add_test(tc, test_exec_and_files);
	suite_add_tcase(s, tc);
	return run_suite(s);
}
