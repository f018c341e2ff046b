/*
 * c. A warm sandbox.exec round trip of a trivial command (`true`) in a held
 * lease, against a Unix-socket ping-pong carrying the same request and
 * reply sizes, and against fork + exec of /bin/true on the host.
 */
#include "autoconfig.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/bench.h"
#include "ipc/codec.h"

#define WARMUP 50
#define ITERATIONS 1000
/* On a loaded machine fewer iterations fit; the table shows n. */
#define BUDGET_US (20 * 1000000ull)

static const char templates[] = "[template shell]\n"
				"language = shell\n"
				"min_warm = 1\n"
				"max_total = 2\n";

/* {lease_id, argv: ["true"]}, as sandpool_exec() would send it. */
static void pack_params(msgpack_sbuffer *sb, const char *lease_id)
{
	msgpack_packer pk;

	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 2);
	ipc_pack_kv_str(&pk, "lease_id", lease_id);
	ipc_pack_cstr(&pk, "argv");
	msgpack_pack_array(&pk, 1);
	ipc_pack_cstr(&pk, "true");
}

/* Bytes on the wire: the envelope head plus the params or result. */
static size_t request_size(const msgpack_sbuffer *params)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	size_t n;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	ipc_pack_request_head(&pk, UINT32_MAX, "sandbox.exec");
	n = sb.size + params->size;
	msgpack_sbuffer_destroy(&sb);
	return n;
}

static size_t response_size(const msgpack_object *result)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	size_t n;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	ipc_pack_response_ok_head(&pk, UINT32_MAX);
	msgpack_pack_object(&pk, *result);
	n = sb.size;
	msgpack_sbuffer_destroy(&sb);
	return n;
}

/* One exec; returns its latency, and the agent's duration_us. */
static uint64_t exec_true(struct sandpool *sp, const msgpack_sbuffer *params, uint64_t *agent_us,
			  size_t *resp)
{
	struct sandpool_reply *r = NULL;
	struct sandpool_error err;
	uint64_t t0 = bench_now_us(), t;
	int64_t code = -1;

	if (sandpool_call(sp, "sandbox.exec", params->data, params->size, NULL, NULL, &r, &err) < 0)
		bench_die("sandbox.exec: %s", err.message);
	t = bench_now_us() - t0;
	if (ipc_get_int(r->result, "exit_code", &code) < 0 || code != 0)
		bench_die("true exited %lld", (long long)code);
	if (ipc_get_uint(r->result, "duration_us", agent_us) < 0)
		*agent_us = 0;
	*resp = response_size(r->result);
	sandpool_reply_free(r);
	return t;
}

static uint64_t fork_exec_true(void)
{
	uint64_t t0 = bench_now_us();
	int status;
	pid_t pid = fork();

	if (pid < 0)
		bench_die("fork failed");
	if (pid == 0) {
		execl("/bin/true", "true", (char *)NULL);
		_exit(127);
	}
	if (waitpid(pid, &status, 0) != pid || status != 0)
		bench_die("/bin/true: status %d", status);
	return bench_now_us() - t0;
}

static void row(const char *name, struct bench_samples *s, double ref)
{
	double p50 = samples_pct(s, 50);

	printf("| %s | %zu | %s | %s | %s | %s | %.2fx |\n", name, s->n, bench_fmt_us(p50),
	       bench_fmt_us(samples_pct(s, 99)), bench_fmt_us(samples_pct(s, 99.9)),
	       bench_fmt_us(samples_mean(s)), ref > 0 ? p50 / ref : 0);
}

int main(int argc, char **argv)
{
	struct bench_samples ex = { 0 }, agent = { 0 }, pp = { 0 }, fe = { 0 };
	struct sandpool_lease_opts lo = { .template_name = "shell", .wait_ms = 60000 };
	struct sandpool_lease l = { 0 };
	struct sandpool_error err;
	struct bench_daemon d;
	struct bench_echo echo;
	msgpack_sbuffer params;
	struct sandpool *sp;
	size_t req, resp = 0;
	uint64_t a;
	int fd;

	bench_section("c. Warm exec round trip", argc, argv);
	bench_daemon_start(&d, NULL, templates);
	sp = bench_connect(&d);
	if (sandpool_lease(sp, &lo, &l, &err) < 0)
		bench_die("lease: %s", err.message);
	msgpack_sbuffer_init(&params);
	pack_params(&params, l.lease_id);
	req = request_size(&params);
	for (int i = 0; i < WARMUP; i++)
		exec_true(sp, &params, &a, &resp);
	bench_echo_start(&echo, req, resp);
	fd = bench_echo_connect(&echo);
	for (int i = 0; i < WARMUP; i++) {
		bench_echo_rtt(&echo, fd);
		fork_exec_true();
	}
	/* Taking turns: load from elsewhere falls on all three alike. */
	for (uint64_t end = bench_now_us() + BUDGET_US; ex.n < ITERATIONS && bench_now_us() < end;) {
		uint64_t t0;

		samples_add(&ex, exec_true(sp, &params, &a, &resp));
		samples_add(&agent, a);
		t0 = bench_now_us();
		bench_echo_rtt(&echo, fd);
		samples_add(&pp, bench_now_us() - t0);
		samples_add(&fe, fork_exec_true());
	}
	close(fd);
	bench_echo_stop(&echo);
	if (sandpool_release(sp, l.lease_id, &err) < 0)
		bench_die("release: %s", err.message);
	sandpool_lease_free(&l);

	bench_print_block("Daemon configuration:", d.config_text);
	printf("Each iteration (up to %d in %llu s, after %d untimed) runs, in turn: `sandbox.exec {lease_id, argv: "
	       "[true]}` in a lease held throughout (`sandpool_call()`, %zu-byte request, %zu-byte "
	       "reply); a ping-pong of the same sizes (%zu bytes out, %zu back) to a single-threaded "
	       "epoll server on a Unix socket; and fork() + execl(\"/bin/true\") + waitpid() on the "
	       "host. *agent* is the exec's `duration_us`, the agent's own fork-to-reap time, which "
	       "is part of the sandbox.exec row.\n\n",
	       ITERATIONS, BUDGET_US / 1000000, WARMUP, req, resp, req, resp);
	printf("| variant | n | p50 | p99 | p999 | mean | p50 vs ping-pong |\n");
	printf("|---|---:|---:|---:|---:|---:|---:|\n");
	row("sandbox.exec `true`, held lease", &ex, samples_pct(&pp, 50));
	row("&nbsp;&nbsp;of which agent fork→reap", &agent, samples_pct(&pp, 50));
	row("Unix-socket ping-pong, same sizes", &pp, samples_pct(&pp, 50));
	row("fork+exec /bin/true on the host", &fe, samples_pct(&pp, 50));
	printf("\nsandbox.exec vs host fork+exec at p50: %.2fx; daemon and agent overhead beyond "
	       "the agent's fork→reap: %s at p50.\n\n",
	       samples_pct(&ex, 50) / samples_pct(&fe, 50),
	       bench_fmt_us(samples_pct(&ex, 50) - samples_pct(&agent, 50)));
	msgpack_sbuffer_destroy(&params);
	sandpool_close(sp);
	bench_daemon_stop(&d);
	return 0;
}
