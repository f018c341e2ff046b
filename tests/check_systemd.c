/*
 * sandpoold under a service manager, played by this test: the sd_notify
 * messages a real daemon sends to $NOTIFY_SOCKET (abstract and path
 * addresses), its watchdog pings, and socket activation (a listening
 * socket on fd 3 with $LISTEN_FDS / $LISTEN_PID / $LISTEN_FDNAMES).
 */
#include "autoconfig.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/harness.h"

/* One creation at a time: the start-up fill of two sandboxes takes two
 * creation times, long enough to catch a READY=1 sent before it ends. */
static const char *const templates = "drain_timeout = 1s\ncreate_concurrency = 1\n"
				     "[template shell]\nlanguage = shell\nmin_warm = 2\nmax_total = 4\n"
				     "max_creating = 1\n";

static struct fixture fx;

/* What the daemon's child gets before exec, as systemd would set it. */
struct child_env {
	const char *notify_socket;
	const char *watchdog_usec;
	int listen_fd;	 /* put on fd 3, or -1 */
	pid_t listen_pid; /* 0: the daemon's own pid */
};

static void in_child(void *arg)
{
	const struct child_env *e = arg;
	char pid[32];

	if (e->notify_socket)
		setenv("NOTIFY_SOCKET", e->notify_socket, 1);
	if (e->watchdog_usec) {
		setenv("WATCHDOG_USEC", e->watchdog_usec, 1);
		snprintf(pid, sizeof(pid), "%d", (int)getpid());
		setenv("WATCHDOG_PID", pid, 1);
	}
	if (e->listen_fd >= 0) {
		if (e->listen_fd == 3) {
			fcntl(3, F_SETFD, 0);
		} else {
			dup2(e->listen_fd, 3);
			close(e->listen_fd);
		}
		snprintf(pid, sizeof(pid), "%d", (int)(e->listen_pid ? e->listen_pid : getpid()));
		setenv("LISTEN_PID", pid, 1);
		setenv("LISTEN_FDS", "1", 1);
		setenv("LISTEN_FDNAMES", "sandpool.socket", 1);
	}
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the manager's end of $NOTIFY_SOCKET ------------------------------ */

#define MAX_LINES 4096

/* Every line received, in order; each datagram may hold several. */
struct notes {
	int fd;
	char addr[128]; /* as $NOTIFY_SOCKET spells it */
	char *lines[MAX_LINES];
	unsigned n;
};

static void notes_open(struct notes *nt, const char *path)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	socklen_t len;

	memset(nt, 0, sizeof(*nt));
	nt->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(nt->fd, 0);
	if (path) {
		snprintf(nt->addr, sizeof(nt->addr), "%s", path);
		snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
		len = sizeof(sun);
	} else {
		snprintf(nt->addr, sizeof(nt->addr), "@sandpool-test-notify-%d-%lld", (int)getpid(), now_ms());
		memcpy(sun.sun_path + 1, nt->addr + 1, strlen(nt->addr) - 1);
		len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(nt->addr));
	}
	ck_assert_msg(bind(nt->fd, (struct sockaddr *)&sun, len) == 0, "bind %s: %s", nt->addr, strerror(errno));
}

static void notes_close(struct notes *nt)
{
	for (unsigned i = 0; i < nt->n; i++)
		free(nt->lines[i]);
	close(nt->fd);
}

/* Receives one datagram within timeout_ms; returns the index of its first
 * line, or -1 on timeout. */
static int notes_recv(struct notes *nt, int timeout_ms)
{
	struct pollfd pfd = { .fd = nt->fd, .events = POLLIN };
	char buf[4096];
	unsigned first = nt->n;
	ssize_t len;

	if (poll(&pfd, 1, timeout_ms) <= 0)
		return -1;
	len = recv(nt->fd, buf, sizeof(buf) - 1, 0);
	ck_assert_int_gt(len, 0);
	buf[len] = '\0';
	for (char *save = NULL, *l = strtok_r(buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		ck_assert_uint_lt(nt->n, MAX_LINES);
		nt->lines[nt->n++] = strdup(l);
	}
	return (int)first;
}

/* The index of the first line at or after from equal to line (or, with
 * prefix, starting with it), or -1. */
static int notes_find(const struct notes *nt, const char *line, bool prefix, unsigned from)
{
	for (unsigned i = from; i < nt->n; i++)
		if (prefix ? !strncmp(nt->lines[i], line, strlen(line)) : !strcmp(nt->lines[i], line))
			return (int)i;
	return -1;
}

static unsigned notes_count(const struct notes *nt, const char *line, unsigned from)
{
	unsigned c = 0;

	for (unsigned i = from; i < nt->n; i++)
		c += !strcmp(nt->lines[i], line);
	return c;
}

/* Receives until line arrives (at or after from); its index, or -1. */
static int notes_wait(struct notes *nt, const char *line, unsigned from, int timeout_ms)
{
	long long end = now_ms() + timeout_ms;
	int i;

	while ((i = notes_find(nt, line, false, from)) < 0 && now_ms() < end)
		notes_recv(nt, (int)(end - now_ms()));
	return i;
}

static void notes_dump(const struct notes *nt)
{
	for (unsigned i = 0; i < nt->n; i++)
		fprintf(stderr, "notify[%u]: %s\n", i, nt->lines[i]);
}

/* Finished creations, ready or failed. */
static long long outcomes(void)
{
	return fixture_stat(&fx, "shell", "created") + fixture_stat(&fx, "shell", "create_failures");
}

static void teardown(void)
{
	fixture_finish(&fx);
}

/* ---- tests ------------------------------------------------------------ */

START_TEST(test_notify_sequence)
{
	struct child_env env = { .watchdog_usec = "200000", .listen_fd = -1 };
	long long end, seen_outcomes = -1;
	bool sock_at_ready = false;
	struct notes nt;
	struct stat st;
	int ready = -1, reload, reloaded, stopping, i;

	notes_open(&nt, NULL); /* an abstract address */
	env.notify_socket = nt.addr;
	fixture_prepare(&fx, templates);
	fixture_spawn(&fx, in_child, &env);

	/* Read as the messages come, so that READY=1 is judged when sent. */
	end = now_ms() + 60000;
	while (ready < 0 && now_ms() < end) {
		int first = notes_recv(&nt, 1000);

		if (first < 0 || (ready = notes_find(&nt, "READY=1", false, (unsigned)first)) < 0)
			continue;
		sock_at_ready = stat(fx.sock, &st) == 0 && S_ISSOCK(st.st_mode);
		if (sock_at_ready)
			seen_outcomes = outcomes();
	}
	if (ready < 0) {
		notes_dump(&nt);
		fixture_dump_log(&fx);
	}
	ck_assert_msg(ready >= 0, "no READY=1 within 60 s");
	ck_assert_msg(sock_at_ready, "READY=1 before the socket %s existed", fx.sock);
	ck_assert_msg(seen_outcomes >= 2, "READY=1 after %lld of the 2 start-up creations", seen_outcomes);
	ck_assert_int_eq(notes_find(&nt, "READY=1", false, 0), ready); /* the first one */
	ck_assert_msg(notes_find(&nt, "STATUS=", true, 0) >= 0, "no STATUS=");
	/* READY=1 carries the pool figures. */
	ck_assert_uint_gt(nt.n, (unsigned)ready + 1);
	ck_assert_msg(!strncmp(nt.lines[ready + 1], "STATUS=shell: ", 14), "got %s", nt.lines[ready + 1]);

	/* WATCHDOG_USEC=200000: a ping every 100 ms, from the event loop. */
	end = now_ms() + 1000;
	i = (int)nt.n;
	while (now_ms() < end)
		notes_recv(&nt, (int)(end - now_ms()));
	ck_assert_uint_ge(notes_count(&nt, "WATCHDOG=1", (unsigned)i), 4);

	/* SIGHUP: RELOADING=1, then READY=1 again. */
	i = (int)nt.n;
	ck_assert_int_eq(kill(fx.pid, SIGHUP), 0);
	reloaded = notes_wait(&nt, "READY=1", (unsigned)i, 10000);
	reload = notes_find(&nt, "RELOADING=1", false, (unsigned)i);
	if (reloaded < 0 || reload < 0)
		notes_dump(&nt);
	ck_assert_int_ge(reload, 0);
	ck_assert_int_gt(reloaded, reload);
	ck_assert_int_ge(notes_find(&nt, "MONOTONIC_USEC=", true, (unsigned)reload), 0);

	/* SIGTERM: STOPPING=1, and nothing claims readiness after it. */
	i = (int)nt.n;
	ck_assert_int_eq(fixture_stop(&fx), 0);
	while (notes_recv(&nt, 100) >= 0)
		;
	stopping = notes_find(&nt, "STOPPING=1", false, (unsigned)i);
	if (stopping < 0)
		notes_dump(&nt);
	ck_assert_int_ge(stopping, 0);
	ck_assert_int_lt(notes_find(&nt, "READY=1", false, (unsigned)stopping), 0);
	ck_assert_int_lt(notes_find(&nt, "RELOADING=1", false, (unsigned)reloaded), 0);
	notes_close(&nt);
}
END_TEST

/* Socket activation: the daemon serves the socket it is given, as it is. */
START_TEST(test_socket_activation)
{
	struct child_env env = { .listen_fd = -1 };
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct sandpool_lease_opts lo = { .template_name = "shell", .wait_ms = 10000 };
	const char *const argv[] = { "echo", "activated", NULL };
	struct sandpool_exec_opts eo = { .argv = argv };
	struct sandpool_exec_result res = { 0 };
	struct sandpool_lease lease = { 0 };
	struct sandpool_error err;
	struct sandpool *sp;
	struct stat before, after;
	char path[400], log[8192] = "";
	struct notes nt;
	int lfd;
	FILE *lf;

	fixture_prepare(&fx, templates);
	lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(lfd, 0);
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", fx.sock);
	ck_assert_int_eq(bind(lfd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	ck_assert_int_eq(listen(lfd, 64), 0);
	ck_assert_int_eq(stat(fx.sock, &before), 0);
	snprintf(path, sizeof(path), "%s/notify", fx.dir);
	notes_open(&nt, path); /* a path address this time */
	env.notify_socket = nt.addr;
	env.listen_fd = lfd;
	fixture_spawn(&fx, in_child, &env);
	if (notes_wait(&nt, "READY=1", 0, 60000) < 0) {
		notes_dump(&nt);
		fixture_dump_log(&fx);
		ck_abort_msg("no READY=1 within 60 s");
	}

	sp = fixture_connect(&fx);
	ck_assert_msg(sandpool_lease(sp, &lo, &lease, &err) == 0, "lease: %s", err.message);
	ck_assert_msg(sandpool_exec(sp, lease.lease_id, &eo, &res, &err) == 0, "exec: %s", err.message);
	ck_assert_int_eq(res.exit_code, 0);
	ck_assert_str_eq(res.stdout_buf, "activated\n");
	sandpool_exec_result_free(&res);
	ck_assert_msg(sandpool_release(sp, lease.lease_id, &err) == 0, "release: %s", err.message);
	sandpool_lease_free(&lease);
	sandpool_close(sp);

	/* Not unlinked, not bound again, neither while serving nor at exit:
	 * the socket belongs to the manager. */
	ck_assert_int_eq(stat(fx.sock, &after), 0);
	ck_assert_uint_eq(after.st_ino, before.st_ino);
	ck_assert_int_eq(fixture_stop(&fx), 0);
	ck_assert_int_eq(stat(fx.sock, &after), 0);
	ck_assert_uint_eq(after.st_ino, before.st_ino);
	lf = fopen(fx.log, "r");
	ck_assert_ptr_nonnull(lf);
	log[fread(log, 1, sizeof(log) - 1, lf)] = '\0';
	fclose(lf);
	ck_assert_msg(strstr(log, "socket activation: serving fd 3 (sandpool.socket)"), "log: %s", log);
	close(lfd);
	notes_close(&nt);
}
END_TEST

/* $LISTEN_PID names another process: the sockets are not ours, and the
 * daemon binds its configured path as it would without a manager. */
START_TEST(test_listen_pid_mismatch)
{
	struct child_env env = { .listen_pid = 1 };
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int lfd;

	fixture_prepare(&fx, templates);
	lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(lfd, 0);
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/other.sock", fx.dir);
	ck_assert_int_eq(bind(lfd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	ck_assert_int_eq(listen(lfd, 8), 0);
	env.listen_fd = lfd;
	fixture_spawn(&fx, in_child, &env);
	fixture_wait_socket(&fx);
	ck_assert_int_ge(fixture_stat(&fx, "shell", "warm"), 0);
	close(lfd);
}
END_TEST

/* A passed socket that does not listen stops the start-up, with a reason. */
START_TEST(test_activation_rejects_non_listening)
{
	struct child_env env = { .listen_fd = -1 };
	char log[8192] = "";
	int status = -1;
	FILE *lf;

	fixture_prepare(&fx, templates);
	env.listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(env.listen_fd, 0);
	fixture_spawn(&fx, in_child, &env);
	for (int i = 0; i < 1000 && fx.pid > 0; i++) {
		if (waitpid(fx.pid, &status, WNOHANG) == fx.pid)
			fx.pid = 0;
		else
			usleep(10000);
	}
	ck_assert_msg(fx.pid == 0, "sandpoold still runs with a socket that does not listen on fd 3");
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 1, "status %d", status);
	close(env.listen_fd);
	lf = fopen(fx.log, "r");
	ck_assert_ptr_nonnull(lf);
	log[fread(log, 1, sizeof(log) - 1, lf)] = '\0';
	fclose(lf);
	ck_assert_msg(strstr(log, "socket activation: fd 3 (sandpool.socket) is not listening"), "log: %s", log);
	ck_assert_int_ne(access(fx.sock, F_OK), 0);
}
END_TEST

static Suite *systemd_suite(void)
{
	Suite *s = suite_create("systemd");
	TCase *tc = tcase_create("service");

	tcase_add_checked_fixture(tc, NULL, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_notify_sequence);
	tcase_add_test(tc, test_socket_activation);
	tcase_add_test(tc, test_listen_pid_mismatch);
	tcase_add_test(tc, test_activation_rejects_non_listening);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return run_suite(systemd_suite());
}
