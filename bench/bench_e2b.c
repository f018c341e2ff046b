/*
 * g. Lease latency of an E2B template: sandbox.lease + sandbox.release
 * from a warm pool of E2B sandboxes, against a cold lease that waits for
 * its sandbox to be created (POST /sandboxes through the daemon, no warm
 * sandbox), with E2B's creation latency stood in for by 150 ms injected
 * into every POST /sandboxes of the E2B contract server
 * (tests/e2b/e2b_server.py, which E2B_SERVER overrides). Baseline, in the
 * same run: the same POST /sandboxes straight from libcurl, as a caller of
 * E2B's API without sandpool waits for it.
 */
#include "autoconfig.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/bench.h"
#include "ipc/codec.h"
#include "sandbox/json.h"

#define ITERATIONS 50
#define BUDGET_US (120 * 1000000ull)
#define CREATE_LATENCY_MS 150
#define WARM 2

static const char fault_rule[] = "{\"rules\":[{\"method\":\"POST\",\"path\":\"/sandboxes\",\"latency_ms\":150,"
				 "\"count\":-1}]}";
static const char direct_body[] = "{\"templateID\":\"code-interpreter-v1\",\"timeout\":60}";

struct server {
	pid_t pid;
	char dir[64];
	char base[64]; /* http://127.0.0.1:PORT */
	char script[1024];
	CURL *curl; /* one handle: its connection is reused, as the daemon's are */
};

static struct server srv;
static const char api_key[] = "bench-e2b-key";

static const char *server_script(void)
{
	const char *env = getenv("E2B_SERVER"), *src = getenv("SANDPOOL_SRCDIR");

	if (env && *env)
		snprintf(srv.script, sizeof(srv.script), "%s", env);
	else
		snprintf(srv.script, sizeof(srv.script), "%s/tests/e2b/e2b_server.py", src && *src ? src : ".");
	return srv.script;
}

static void server_start(void)
{
	char portfile[128], log[128];
	unsigned port = 0;

	if (access(server_script(), R_OK) != 0)
		bench_die("no E2B contract server at %s (set E2B_SERVER)", srv.script);
	snprintf(srv.dir, sizeof(srv.dir), "/tmp/sandpool-bench-e2b-XXXXXX");
	if (!mkdtemp(srv.dir))
		bench_die("mkdtemp failed");
	snprintf(portfile, sizeof(portfile), "%s/port", srv.dir);
	snprintf(log, sizeof(log), "%s/server.log", srv.dir);
	srv.pid = fork();
	if (srv.pid < 0)
		bench_die("fork failed");
	if (srv.pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);

		prctl(PR_SET_PDEATHSIG, SIGTERM);
		dup2(fd, STDOUT_FILENO);
		dup2(fd, STDERR_FILENO);
		execl("/usr/bin/python3", "python3", srv.script, "--port-file", portfile, "--api-key", api_key,
		      (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 3000 && !port; i++) {
		FILE *f = fopen(portfile, "re");

		if (f) {
			if (fscanf(f, "%u", &port) != 1)
				port = 0;
			fclose(f);
		} else if (waitpid(srv.pid, NULL, WNOHANG) == srv.pid) {
			bench_die("the contract server exited during start-up (see %s)", log);
		}
		if (!port)
			bench_sleep_ms(10);
	}
	if (!port)
		bench_die("the contract server did not write its port in 30 s");
	snprintf(srv.base, sizeof(srv.base), "http://127.0.0.1:%u", port);
	srv.curl = curl_easy_init();
	if (!srv.curl)
		bench_die("curl_easy_init failed");
}

static size_t collect(char *p, size_t size, size_t n, void *arg)
{
	return fwrite(p, size, n, arg);
}

/* One request; its status. out (may be NULL) gets the answer parsed. */
static long server_call(const char *method, const char *path, const char *body, msgpack_unpacked *out)
{
	struct curl_slist *h = NULL;
	char url[256], hdr[128], *buf = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&buf, &len);
	long status = 0;
	CURLcode rc;

	snprintf(hdr, sizeof(hdr), "X-API-Key: %s", api_key);
	h = curl_slist_append(h, hdr);
	h = curl_slist_append(h, "Content-Type: application/json");
	if (!m || !h)
		bench_die("out of memory");
	snprintf(url, sizeof(url), "%s%s", srv.base, path);
	curl_easy_reset(srv.curl);
	curl_easy_setopt(srv.curl, CURLOPT_URL, url);
	curl_easy_setopt(srv.curl, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(srv.curl, CURLOPT_HTTPHEADER, h);
	if (body)
		curl_easy_setopt(srv.curl, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(srv.curl, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(srv.curl, CURLOPT_WRITEDATA, m);
	curl_easy_setopt(srv.curl, CURLOPT_TIMEOUT, 30L);
	rc = curl_easy_perform(srv.curl);
	fclose(m);
	if (rc != CURLE_OK)
		bench_die("%s %s: %s", method, url, curl_easy_strerror(rc));
	curl_easy_getinfo(srv.curl, CURLINFO_RESPONSE_CODE, &status);
	if (out && json_parse(buf, len, out) < 0)
		bench_die("%s %s: the answer is not JSON: %s", method, path, buf);
	free(buf);
	curl_slist_free_all(h);
	return status;
}

/* The server's live sandboxes and contract violations; both should be 0. */
static void server_check(uint64_t *live, uint32_t *violations)
{
	msgpack_unpacked st;
	const msgpack_object_array *v = NULL;

	if (server_call("GET", "/_test/state", NULL, &st) != 200)
		bench_die("GET /_test/state failed");
	*live = 0;
	(void)ipc_get_uint(&st.data, "live", live);
	*violations = ipc_get_array(&st.data, "violations", &v) == 0 ? v->size : 0;
	msgpack_unpacked_destroy(&st);
}

static void server_stop(void)
{
	char cmd[128];

	curl_easy_cleanup(srv.curl);
	kill(srv.pid, SIGTERM);
	waitpid(srv.pid, NULL, 0);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", srv.dir);
	if (system(cmd) != 0)
		fprintf(stderr, "bench: could not remove %s\n", srv.dir);
}

/* ---- what is timed --------------------------------------------------------------------- */

static uint64_t lease_release(struct sandpool *sp, const char *tmpl, bool *warm)
{
	struct sandpool_lease_opts o = { .template_name = tmpl, .wait_ms = 60000 };
	struct sandpool_lease l = { 0 };
	struct sandpool_error err;
	uint64_t t0 = bench_now_us(), t;

	if (sandpool_lease(sp, &o, &l, &err) < 0)
		bench_die("lease %s: %s", tmpl, err.message);
	if (sandpool_release(sp, l.lease_id, &err) < 0)
		bench_die("release %s: %s", l.lease_id, err.message);
	t = bench_now_us() - t0;
	*warm = l.warm;
	sandpool_lease_free(&l);
	return t;
}

/* POST /sandboxes, timed; the DELETE after it is not. */
static uint64_t direct_create(void)
{
	msgpack_unpacked u;
	const char *id;
	uint32_t n;
	char path[128];
	uint64_t t0 = bench_now_us(), t;
	long status = server_call("POST", "/sandboxes", direct_body, &u);

	t = bench_now_us() - t0;
	if (status != 201 || ipc_get_str(&u.data, "sandboxID", &id, &n) < 0)
		bench_die("POST /sandboxes: HTTP %ld", status);
	snprintf(path, sizeof(path), "/sandboxes/%.*s", (int)n, id);
	msgpack_unpacked_destroy(&u);
	if (server_call("DELETE", path, NULL, NULL) != 204)
		bench_die("DELETE %s failed", path);
	return t;
}

static void row(const char *name, struct bench_samples *s, double warm_p50, double warm_p99)
{
	double p50 = samples_pct(s, 50), p99 = samples_pct(s, 99);

	printf("| %s | %zu | %s | %s | %s | %.1fx | %.1fx |\n", name, s->n, bench_fmt_us(p50), bench_fmt_us(p99),
	       bench_fmt_us(samples_pct(s, 100)), warm_p50 > 0 ? p50 / warm_p50 : 0,
	       warm_p99 > 0 ? p99 / warm_p99 : 0);
}

int main(int argc, char **argv)
{
	struct bench_samples warm = { 0 }, cold = { 0 }, direct = { 0 };
	struct bench_daemon d;
	struct sandpool *sp;
	char templates[2048];
	uint64_t live;
	uint32_t violations;
	unsigned not_warm = 0, not_cold = 0;
	double w50, w99;
	bool was_warm;

	bench_section("g. E2B lease latency: warm pool vs cold create", argc, argv);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		bench_die("curl_global_init failed");
	server_start();
	if (server_call("POST", "/_test/faults", fault_rule, NULL) != 200)
		bench_die("POST /_test/faults failed");
	/* The daemon inherits the key, as it would from its unit's environment. */
	setenv("E2B_API_KEY", api_key, 1);
	snprintf(templates, sizeof(templates),
		 "[template warm]\nbackend = e2b\nlanguage = python\nmin_warm = %d\nmax_warm = %d\nmax_total = 4\n"
		 "e2b_api_url = %s\ne2b_sandbox_url = %s\n"
		 "[template cold]\nbackend = e2b\nlanguage = python\nmin_warm = 0\nmax_warm = 0\nmax_total = 4\n"
		 "e2b_api_url = %s\ne2b_sandbox_url = %s\n",
		 WARM, WARM, srv.base, srv.base, srv.base, srv.base);
	bench_daemon_start(&d, NULL, templates);
	sp = bench_connect(&d);

	/* Untimed: connections, the server's first sandboxes. */
	if (!bench_wait_stat(sp, "warm", "warm", WARM, 5, 60000))
		bench_die("the warm template did not fill (see %s)", d.log);
	lease_release(sp, "warm", &was_warm);
	lease_release(sp, "cold", &was_warm);
	direct_create();
	/* Taking turns: load from elsewhere falls on all three alike. Each
	 * warm lease starts from a full pool (its refill is not timed). */
	for (uint64_t end = bench_now_us() + BUDGET_US; warm.n < ITERATIONS && bench_now_us() < end;) {
		if (!bench_wait_stat(sp, "warm", "warm", WARM, 2, 60000))
			bench_die("the warm pool did not refill in 60 s");
		samples_add(&warm, lease_release(sp, "warm", &was_warm));
		not_warm += !was_warm;
		samples_add(&cold, lease_release(sp, "cold", &was_warm));
		not_cold += was_warm;
		samples_add(&direct, direct_create());
	}
	sandpool_close(sp);
	bench_daemon_stop(&d);
	server_check(&live, &violations);
	server_stop();
	if (not_warm || not_cold)
		bench_die("%u warm leases waited for a sandbox, %u cold ones found one warm", not_warm, not_cold);

	bench_print_block("Daemon configuration:", d.config_text);
	printf("The E2B API is the contract server `tests/e2b/e2b_server.py` on 127.0.0.1 (a Python "
	       "stand-in that runs each sandbox as a local directory and processes), with this fault "
	       "rule: every POST whose path starts with /sandboxes (creations, and keepalives, which "
	       "no lease waits for) is answered after %d ms, a stand-in for E2B's own creation "
	       "time:\n\n```\n%s\n```\n\n",
	       CREATE_LATENCY_MS, fault_rule);
	printf("Each iteration (up to %d in %llu s, after one untimed) times, in turn: `sandpool_lease()` + "
	       "`sandpool_release()` on *warm* once its pool is full again (%d warm sandboxes: a hit); "
	       "the same on *cold*, which keeps no warm sandbox, so the lease waits for POST /sandboxes "
	       "and the sandbox's health check; and, as a caller of E2B's API without sandpool would, "
	       "POST /sandboxes straight from libcurl on a kept-alive connection (its DELETE "
	       "untimed). Release destroys the sandbox (DELETE, not waited for). Over %d samples the "
	       "p99 is the maximum.\n\n",
	       ITERATIONS, BUDGET_US / 1000000, WARM, ITERATIONS);
	w50 = samples_pct(&warm, 50);
	w99 = samples_pct(&warm, 99);
	printf("| variant | n | p50 | p99 | max | p50 / warm p50 | p99 / warm p99 |\n");
	printf("|---|---:|---:|---:|---:|---:|---:|\n");
	row("lease + release, warm E2B pool", &warm, w50, w99);
	row("lease + release, cold (create on lease)", &cold, w50, w99);
	row("POST /sandboxes direct (libcurl)", &direct, w50, w99);
	printf("\nA lease from the warm E2B pool is **%.0fx** faster at the median than one that "
	       "creates its sandbox (p50 %s vs %s; p99 %s vs %s). After the daemon stopped the server "
	       "had %llu live sandboxes and had seen %u contract violations.\n\n",
	       w50 > 0 ? samples_pct(&cold, 50) / w50 : 0, bench_fmt_us(w50), bench_fmt_us(samples_pct(&cold, 50)),
	       bench_fmt_us(w99), bench_fmt_us(samples_pct(&cold, 99)), (unsigned long long)live, violations);
	samples_free(&warm);
	samples_free(&cold);
	samples_free(&direct);
	curl_global_cleanup();
	return live || violations ? 1 : 0;
}
