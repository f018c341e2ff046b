/*
 * End-to-end tests of the pool engine: sessions, lease lifetimes, fair
 * waiting at max_total, degraded templates. A real daemon each.
 */
#include "autoconfig.h"

#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/harness.h"

static struct fixture fx;

static char *run_in(struct sandpool *sp, const char *lease_id, const char *cmd)
{
	struct sandpool_exec_opts o = { .cmd = cmd };
	struct sandpool_exec_result res = { 0 };
	struct sandpool_error err;
	char *out;

	ck_assert_msg(sandpool_exec(sp, lease_id, &o, &res, &err) == 0, "exec %s: %s", cmd, err.message);
	out = strdup(res.stdout_buf);
	sandpool_exec_result_free(&res);
	return out;
}

static int lease_session(struct sandpool *sp, const char *session, uint32_t wait_ms,
			 struct sandpool_lease *l, struct sandpool_error *err)
{
	struct sandpool_lease_opts o = { .template_name = "shell", .session = session, .wait_ms = wait_ms };

	memset(l, 0, sizeof(*l));
	return sandpool_lease(sp, &o, l, err);
}

START_TEST(test_session_keeps_state)
{
	struct sandpool *a, *b;
	struct sandpool_lease l1, l2;
	struct sandpool_error err;
	char *out, first_box[64];

	fixture_start(&fx, "[template shell]\nmin_warm = 1\nmax_total = 4\n");
	a = fixture_connect(&fx);
	ck_assert_int_eq(lease_session(a, "agent-7", 0, &l1, &err), 0);
	ck_assert(!l1.reused);
	snprintf(first_box, sizeof(first_box), "%s", l1.sandbox_id);
	free(run_in(a, l1.lease_id, "echo kept > /workspace/note; (sleep 300 &) ; true"));
	ck_assert_int_eq(sandpool_release(a, l1.lease_id, &err), 0);
	sandpool_lease_free(&l1);
	/* The first client goes away entirely; the session stays. */
	sandpool_close(a);

	b = fixture_connect(&fx);
	ck_assert_int_eq(lease_session(b, "agent-7", 0, &l2, &err), 0);
	ck_assert(l2.reused);
	ck_assert_str_eq(l2.sandbox_id, first_box);
	out = run_in(b, l2.lease_id, "cat /workspace/note; pgrep -c sleep");
	ck_assert_str_eq(out, "kept\n1\n");
	free(out);
	ck_assert_int_eq(fixture_stat(&fx, "shell", "session_reuses"), 1);

	/* One lease per session at a time. */
	ck_assert_int_ne(lease_session(b, "agent-7", 0, &l1, &err), 0);
	ck_assert_int_eq(err.code, SANDPOOL_E_SESSION_BUSY);

	/* Ending it destroys the sandbox: the next lease is a fresh one. */
	ck_assert_int_eq(sandpool_session_end(b, "agent-7", &err), 0);
	ck_assert_int_ne(sandpool_exec(b, l2.lease_id, &(struct sandpool_exec_opts){ .cmd = "true" },
				       &(struct sandpool_exec_result){ 0 }, &err),
			 0);
	ck_assert_int_eq(lease_session(b, "agent-7", 0, &l1, &err), 0);
	ck_assert(!l1.reused);
	ck_assert_str_ne(l1.sandbox_id, first_box);
	sandpool_lease_free(&l1);
	sandpool_lease_free(&l2);
	sandpool_close(b);
	fixture_finish(&fx);
}
END_TEST

struct waiter_arg {
	const char *sock;
	int rc;
	bool reused;
};

static void *wait_for_session(void *p)
{
	struct waiter_arg *w = p;
	struct sandpool_error err;
	struct sandpool *sp = sandpool_connect(w->sock, &err);
	struct sandpool_lease l;

	if (!sp)
		return NULL;
	w->rc = lease_session(sp, "shared", 5000, &l, &err);
	if (w->rc == 0) {
		w->reused = l.reused;
		w->rc = sandpool_release(sp, l.lease_id, &err);
		sandpool_lease_free(&l);
	}
	sandpool_close(sp);
	return NULL;
}

START_TEST(test_session_wait)
{
	struct sandpool *sp;
	struct sandpool_lease l;
	struct sandpool_error err;
	struct waiter_arg w = { .rc = -1 };
	pthread_t th;

	fixture_start(&fx, "[template shell]\nmin_warm = 1\n");
	w.sock = fx.sock;
	sp = fixture_connect(&fx);
	ck_assert_int_eq(lease_session(sp, "shared", 0, &l, &err), 0);
	pthread_create(&th, NULL, wait_for_session, &w);
	usleep(300000);
	ck_assert_int_eq(sandpool_release(sp, l.lease_id, &err), 0);
	pthread_join(th, NULL);
	ck_assert_int_eq(w.rc, 0);
	ck_assert(w.reused);
	sandpool_lease_free(&l);
	sandpool_close(sp);
	fixture_finish(&fx);
}
END_TEST

START_TEST(test_session_other_uid_forbidden)
{
	struct sandpool *sp;
	struct sandpool_lease l;
	struct sandpool_error err;
	pid_t pid;
	int status;

	fixture_start(&fx, "socket_mode = 0666\n[template shell]\nmin_warm = 1\n");
	sp = fixture_connect(&fx);
	ck_assert_int_eq(lease_session(sp, "mine", 0, &l, &err), 0);
	pid = fork();
	if (pid == 0) {
		struct sandpool *other;
		struct sandpool_lease ol;
		struct sandpool_error oerr;
		int code;

		if (setgid(65534) < 0 || setuid(65534) < 0)
			_exit(10);
		other = sandpool_connect(fx.sock, &oerr);
		if (!other)
			_exit(11);
		/* Neither the session nor the lease id is theirs. */
		code = lease_session(other, "mine", 0, &ol, &oerr) == 0 ? 12 :
		       oerr.code != SANDPOOL_E_FORBIDDEN			 ? 13 :
		       sandpool_release(other, l.lease_id, &oerr) == 0	 ? 14 :
		       oerr.code != SANDPOOL_E_FORBIDDEN			 ? 15 :
										   0;
		_exit(code);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_int_eq(WEXITSTATUS(status), 0);
	sandpool_lease_free(&l);
	sandpool_close(sp);
	fixture_finish(&fx);
}
END_TEST

START_TEST(test_lease_expiry_and_idle_session)
{
	struct sandpool *sp;
	struct sandpool_lease l, s1, s2;
	struct sandpool_lease_opts o = { .template_name = "shell" };
	struct sandpool_exec_result res = { 0 };
	struct sandpool_error err;

	fixture_start(&fx, "[template shell]\nmin_warm = 1\nlease_ttl = 1s\nsession_idle_ttl = 500ms\n");
	sp = fixture_connect(&fx);
	memset(&l, 0, sizeof(l));
	ck_assert_int_eq(sandpool_lease(sp, &o, &l, &err), 0);
	/* Renewing pushes expiry out; not renewing lets it lapse. */
	usleep(700000);
	ck_assert_int_eq(sandpool_renew(sp, l.lease_id, &err), 0);
	usleep(700000);
	ck_assert_int_eq(sandpool_exec(sp, l.lease_id, &(struct sandpool_exec_opts){ .cmd = "true" }, &res, &err), 0);
	sandpool_exec_result_free(&res);
	usleep(1300000);
	ck_assert_int_ne(sandpool_exec(sp, l.lease_id, &(struct sandpool_exec_opts){ .cmd = "true" }, &res, &err), 0);
	ck_assert_int_eq(err.code, SANDPOOL_E_LEASE_EXPIRED);
	sandpool_lease_free(&l);

	/* A session left idle past session_idle_ttl loses its sandbox. */
	ck_assert_int_eq(lease_session(sp, "idle", 0, &s1, &err), 0);
	ck_assert_int_eq(sandpool_release(sp, s1.lease_id, &err), 0);
	usleep(900000);
	ck_assert_int_eq(lease_session(sp, "idle", 0, &s2, &err), 0);
	ck_assert(!s2.reused);
	ck_assert_str_ne(s1.sandbox_id, s2.sandbox_id);
	sandpool_lease_free(&s1);
	sandpool_lease_free(&s2);
	sandpool_close(sp);
	fixture_finish(&fx);
}
END_TEST

#define WAITERS 100

static void *one_lease(void *p)
{
	const char *sock = p;
	struct sandpool_error err;
	struct sandpool *sp = sandpool_connect(sock, &err);
	struct sandpool_lease_opts o = { .template_name = "shell", .wait_ms = 120000 };
	struct sandpool_lease l = { 0 };
	struct sandpool_exec_result res = { 0 };
	long ok = 0;

	if (!sp)
		return NULL;
	sandpool_set_timeout_ms(sp, 150000);
	if (sandpool_lease(sp, &o, &l, &err) == 0) {
		ok = sandpool_exec(sp, l.lease_id, &(struct sandpool_exec_opts){ .cmd = "echo x" }, &res, &err) == 0 &&
		     res.stdout_len == 2;
		sandpool_exec_result_free(&res);
		ok &= sandpool_release(sp, l.lease_id, &err) == 0;
		sandpool_lease_free(&l);
	} else {
		fprintf(stderr, "lease: %s\n", err.message);
	}
	sandpool_close(sp);
	return (void *)ok;
}

START_TEST(test_hundred_waiters_at_max_total)
{
	pthread_t th[WAITERS];
	long served = 0;

	fixture_start(&fx, "max_connections = 256\n[template shell]\nmin_warm = 2\nmax_total = 4\n");
	for (int i = 0; i < WAITERS; i++)
		ck_assert_int_eq(pthread_create(&th[i], NULL, one_lease, fx.sock), 0);
	for (int i = 0; i < WAITERS; i++) {
		void *r;

		pthread_join(th[i], &r);
		served += (long)r;
	}
	ck_assert_int_eq(served, WAITERS);
	ck_assert_int_eq(fixture_stat(&fx, "shell", "waiting"), 0);
	ck_assert_int_eq(fixture_stat(&fx, "shell", "leased"), 0);
	fixture_finish(&fx);
}
END_TEST

START_TEST(test_degraded_fails_fast)
{
	struct sandpool *sp;
	struct sandpool_lease l = { 0 };
	struct sandpool_lease_opts o = { .template_name = "broken" };
	struct sandpool_error err;

	fixture_start(&fx, "[template broken]\nmin_warm = 1\nrootfs = /nonexistent-rootfs\n"
			   "[template shell]\nmin_warm = 1\n");
	for (int i = 0; i < 500 && fixture_stat(&fx, "broken", "create_failures") < 3; i++)
		usleep(10000);
	ck_assert_int_ge(fixture_stat(&fx, "broken", "create_failures"), 3);
	sp = fixture_connect(&fx);
	ck_assert_int_ne(sandpool_lease(sp, &o, &l, &err), 0);
	ck_assert_int_eq(err.code, SANDPOOL_E_BACKEND_ERROR);
	ck_assert_ptr_nonnull(strstr(err.message, "degraded"));
	/* Other templates keep serving. */
	o.template_name = "shell";
	ck_assert_int_eq(sandpool_lease(sp, &o, &l, &err), 0);
	sandpool_lease_free(&l);
	sandpool_close(sp);
	fixture_finish(&fx);
}
END_TEST

struct burst {
	const char *sock;
	volatile bool stop;
};

static void *burst_client(void *p)
{
	struct burst *b = p;
	struct sandpool_error err;
	struct sandpool *sp = sandpool_connect(b->sock, &err);

	while (sp && !b->stop) {
		struct sandpool_lease_opts o = { .template_name = "shell", .wait_ms = 10000 };
		struct sandpool_lease l = { 0 };

		if (sandpool_lease(sp, &o, &l, &err) == 0) {
			if (sandpool_release(sp, l.lease_id, &err) < 0)
				break;
			sandpool_lease_free(&l);
		}
	}
	if (sp)
		sandpool_close(sp);
	return NULL;
}

START_TEST(test_target_follows_demand)
{
	struct burst b = { .stop = false };
	pthread_t th[6];
	long long peak = 0, t;

	fixture_start(&fx, "[template shell]\nmin_warm = 1\nmax_warm = 6\nmax_total = 16\n");
	b.sock = fx.sock;
	ck_assert(fixture_wait_warm(&fx, "shell", 1, 20000));
	ck_assert_int_eq(fixture_stat(&fx, "shell", "target"), 1);
	for (int i = 0; i < 6; i++)
		pthread_create(&th[i], NULL, burst_client, &b);
	for (int i = 0; i < 40; i++) {
		usleep(100000);
		t = fixture_stat(&fx, "shell", "target");
		peak = t > peak ? t : peak;
	}
	b.stop = true;
	for (int i = 0; i < 6; i++)
		pthread_join(th[i], NULL);
	ck_assert_int_gt(peak, 1);
	/* Demand gone: the target decays back to min_warm. */
	for (int i = 0; i < 150 && fixture_stat(&fx, "shell", "target") > 1; i++)
		usleep(100000);
	ck_assert_int_eq(fixture_stat(&fx, "shell", "target"), 1);
	fixture_finish(&fx);
}
END_TEST

struct drain_exec {
	const char *sock;
	const char *lease_id;
	int rc;
	char out[64];
};

static void *exec_during_drain(void *p)
{
	struct drain_exec *d = p;
	struct sandpool_error err;
	struct sandpool *sp = sandpool_connect(d->sock, &err);
	struct sandpool_exec_result res = { 0 };

	if (!sp)
		return NULL;
	d->rc = sandpool_exec(sp, d->lease_id, &(struct sandpool_exec_opts){ .cmd = "sleep 1; echo done" }, &res,
			      &err);
	if (d->rc == 0)
		snprintf(d->out, sizeof(d->out), "%s", res.stdout_buf);
	sandpool_exec_result_free(&res);
	sandpool_close(sp);
	return NULL;
}

START_TEST(test_sigterm_drains_leases)
{
	struct sandpool *sp;
	struct sandpool_lease l = { 0 };
	struct sandpool_lease_opts o = { .template_name = "shell", .detached = true };
	struct sandpool_error err;
	struct drain_exec d = { .rc = -1 };
	pthread_t th;

	fixture_start(&fx, "drain_timeout = 5s\n[template shell]\nmin_warm = 1\n");
	sp = fixture_connect(&fx);
	ck_assert_int_eq(sandpool_lease(sp, &o, &l, &err), 0);
	d.sock = fx.sock;
	d.lease_id = l.lease_id;
	pthread_create(&th, NULL, exec_during_drain, &d);
	usleep(200000);
	kill(fx.pid, SIGTERM);
	pthread_join(th, NULL);
	/* The exec in flight finished; new leases are refused meanwhile. */
	ck_assert_int_eq(d.rc, 0);
	ck_assert_str_eq(d.out, "done\n");
	ck_assert_int_eq(sandpool_release(sp, l.lease_id, &err), 0);
	sandpool_lease_free(&l);
	sandpool_close(sp);
	fixture_finish(&fx);
}
END_TEST

static unsigned count_cgroups(const char *root)
{
	static const char *const ctrls[] = { "memory", "pids", "cpu", "freezer", "unified" };
	unsigned n = 0;

	for (size_t i = 0; i < sizeof(ctrls) / sizeof(ctrls[0]); i++) {
		char cmd[512];
		FILE *p;
		unsigned c = 0;

		snprintf(cmd, sizeof(cmd), "ls -d /sys/fs/cgroup/%s/%s/sb-* 2>/dev/null | wc -l", ctrls[i], root);
		p = popen(cmd, "r");
		if (p && fscanf(p, "%u", &c) == 1)
			n += c;
		if (p)
			pclose(p);
	}
	return n;
}

START_TEST(test_kill9_leaves_nothing)
{
	char conf[512], root[64];
	struct sandpool *sp;
	struct sandpool_lease l = { 0 };
	struct sandpool_lease_opts o = { .template_name = "shell", .detached = true };
	struct sandpool_error err;
	unsigned per;
	int status;

	snprintf(root, sizeof(root), "sandpool-test-%d", (int)getpid());
	snprintf(conf, sizeof(conf), "cgroup_root = %s\n[template shell]\nmin_warm = 3\n", root);
	fixture_start(&fx, conf);
	ck_assert(fixture_wait_warm(&fx, "shell", 3, 20000));
	/* One group per controller hierarchy (v1) or one in all (v2). */
	per = count_cgroups(root) / 3;
	ck_assert_uint_ge(per, 1);
	sp = fixture_connect(&fx);
	ck_assert_int_eq(sandpool_lease(sp, &o, &l, &err), 0);
	kill(fx.pid, SIGKILL);
	ck_assert_int_eq(waitpid(fx.pid, &status, 0), fx.pid);
	fx.pid = 0;
	sandpool_lease_free(&l);
	sandpool_close(sp);
	/* Every sandbox dies with the daemon... */
	ck_assert_uint_eq(count_orphans(), 0);
	/* ...and the next daemon removes the cgroups the dead one left. */
	{
		struct fixture again;

		fixture_start(&again, conf);
		ck_assert(fixture_wait_warm(&again, "shell", 3, 20000));
		ck_assert_uint_eq(count_cgroups(root), 3 * per);
		ck_assert_int_eq(fixture_stop(&again), 0);
		ck_assert_uint_eq(count_cgroups(root), 0);
		fixture_cleanup(&again);
	}
	fixture_finish(&fx);
}
END_TEST

START_TEST(test_rotation_and_health)
{
	pid_t agent;

	fixture_start(&fx, "health_interval = 300ms\n[template shell]\nmin_warm = 2\nmax_warm_age = 1s\n");
	ck_assert(fixture_wait_warm(&fx, "shell", 2, 20000));
	/* Warm sandboxes are replaced as they pass max_warm_age. */
	for (int i = 0; i < 100 && fixture_stat(&fx, "shell", "rotated") < 2; i++)
		usleep(50000);
	ck_assert_int_ge(fixture_stat(&fx, "shell", "rotated"), 2);
	ck_assert(fixture_wait_warm(&fx, "shell", 2, 20000));

	/* A wedged agent misses its health check and is replaced. */
	agent = find_agent(&fx);
	ck_assert_int_gt(agent, 0);
	kill(agent, SIGSTOP);
	for (int i = 0; i < 100 && kill(agent, 0) == 0; i++)
		usleep(50000);
	ck_assert_int_ne(kill(agent, 0), 0);
	ck_assert(fixture_wait_warm(&fx, "shell", 2, 20000));
	fixture_finish(&fx);
}
END_TEST

/* Replaces the fixture's templates (keeping its [daemon] part) and HUPs. */
static void reconfigure(const char *templates)
{
	char *text = NULL, *cut;
	size_t len = 0;
	FILE *f = fopen(fx.conf, "r");

	ck_assert_ptr_nonnull(f);
	ck_assert_int_gt(getdelim(&text, &len, '\0', f), 0);
	fclose(f);
	cut = strstr(text, "[template");
	ck_assert_ptr_nonnull(cut);
	*cut = '\0';
	f = fopen(fx.conf, "w");
	fprintf(f, "%s%s", text, templates);
	fclose(f);
	free(text);
	kill(fx.pid, SIGHUP);
}

START_TEST(test_reload)
{
	struct sandpool *sp;
	struct sandpool_lease l = { 0 };
	struct sandpool_lease_opts o = { .template_name = "broken" };
	struct sandpool_error err;

	fixture_start(&fx, "[template shell]\nmin_warm = 1\n"
			   "[template broken]\nmin_warm = 1\nrootfs = /nonexistent-rootfs\n");
	for (int i = 0; i < 500 && fixture_stat(&fx, "broken", "create_failures") < 3; i++)
		usleep(10000);
	sp = fixture_connect(&fx);
	ck_assert_int_ne(sandpool_lease(sp, &o, &l, &err), 0);
	ck_assert_int_eq(err.code, SANDPOOL_E_BACKEND_ERROR);

	/* Fixed, shell removed, extra added. */
	reconfigure("[template broken]\nmin_warm = 1\n[template extra]\nmin_warm = 1\n");
	ck_assert(fixture_wait_warm(&fx, "broken", 1, 20000));
	ck_assert(fixture_wait_warm(&fx, "extra", 1, 20000));
	ck_assert_int_eq(sandpool_lease(sp, &o, &l, &err), 0);
	sandpool_lease_free(&l);
	o.template_name = "shell";
	ck_assert_int_ne(sandpool_lease(sp, &o, &l, &err), 0);
	ck_assert_int_eq(err.code, SANDPOOL_E_UNKNOWN_TEMPLATE);

	/* A broken file is rejected; the running configuration stays. */
	reconfigure("[template extra]\nmin_warm = lots\n");
	usleep(300000);
	o.template_name = "extra";
	ck_assert_int_eq(sandpool_lease(sp, &o, &l, &err), 0);
	sandpool_lease_free(&l);
	sandpool_close(sp);
	fixture_finish(&fx);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("pool");
	TCase *tc = tcase_create("pool");

	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_session_keeps_state);
	tcase_add_test(tc, test_session_wait);
	tcase_add_test(tc, test_session_other_uid_forbidden);
	tcase_add_test(tc, test_lease_expiry_and_idle_session);
	tcase_add_test(tc, test_hundred_waiters_at_max_total);
	tcase_add_test(tc, test_degraded_fails_fast);
	tcase_add_test(tc, test_target_follows_demand);
	tcase_add_test(tc, test_sigterm_drains_leases);
	tcase_add_test(tc, test_kill9_leaves_nothing);
	tcase_add_test(tc, test_rotation_and_health);
	tcase_add_test(tc, test_reload);
	suite_add_tcase(s, tc);
	return run_suite(s);
}
