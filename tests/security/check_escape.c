/*
 * The escape suite (issue 3). Each test starts its own sandpoold with small
 * limits, runs one attack for real inside a sandbox, asserts the specific
 * outcome, then asserts that a sandbox leased before the attack and the
 * daemon itself still serve. docs/SECURITY.md lists the attacks with the
 * outcomes asserted here and the layer that produces each.
 *
 * Raw syscalls are made from python3 with ctypes: no compiler is promised
 * inside a sandbox, and the syscall numbers are this build's <sys/syscall.h>
 * ones, pasted into the scripts, since sandbox and host share the kernel.
 */
#include "autoconfig.h"

#include <arpa/inet.h>
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "daemon/log.h"
#include "ipc/codec.h"
#include "tests/harness.h"

/* Small limits, so that every bomb meets its wall quickly. */
#define LIMITS                                                                                     \
	"memory = 64M\npids = 64\ncpus = 0.5\nworkspace_size = 8M\ntimeout = 2s\n"
#define PIDS_MAX 64
#define SHELL_WARM 2
#define PYTHON_WARM 1

/* max_warm = min_warm: a fixed number of warm sandboxes, whatever the
 * demand, so that the leak test can compare like with like. */
static const char conf_fmt[] =
	"cgroup_root = %s\n"
	"[template shell]\nlanguage = shell\nmin_warm = 2\nmax_warm = 2\nmax_total = 8\n" LIMITS
	"[template python]\nlanguage = python\nmin_warm = 1\nmax_warm = 1\nmax_total = 4\n" LIMITS;

/* Prepended to every python attack. sc() makes a raw syscall with every
 * argument widened to a long; err() names the errno of a failed call. */
static const char py_prelude[] =
	"import ctypes, errno, os, socket, sys\n"
	"libc = ctypes.CDLL(None, use_errno=True)\n"
	"def sc(nr, *a):\n"
	"    return libc.syscall(ctypes.c_long(nr),\n"
	"                        *[ctypes.c_long(x) if isinstance(x, int) else x for x in a])\n"
	"def err(r):\n"
	"    e = ctypes.get_errno()\n"
	"    return 'ok' if r >= 0 else errno.errorcode.get(e, str(e))\n"
	"def say(k, v):\n"
	"    print('%s=%s' % (k, v), flush=True)\n"
	"def oserr(f, *a):\n"
	"    try:\n"
	"        f(*a)\n"
	"        return 'ok'\n"
	"    except OSError as e:\n"
	"        return errno.errorcode.get(e.errno, str(e.errno))\n";

static struct fixture fx;
/* This fixture's cgroup_root: its sandboxes' groups and nobody else's. */
static char cg_name[64];
/* A sandbox leased before the attack; it must still serve afterwards. */
static struct sandpool *by_sp;
static struct sandpool_lease bystander;

/* ---- cgroups of this fixture ---------------------------------------- */

#define MAX_BASES 16

/* The mount points of the cgroup (v1) and cgroup2 hierarchies. */
static unsigned cgroup_hierarchies(char out[][PATH_MAX])
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char line[4096], fstype[64];
	unsigned n = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f) && n < MAX_BASES) {
		char *dash = strstr(line, " - ");

		if (dash && sscanf(line, "%*s %*s %*s %*s %4095s", out[n]) == 1 &&
		    sscanf(dash + 3, "%63s", fstype) == 1 && (!strcmp(fstype, "cgroup") || !strcmp(fstype, "cgroup2")))
			n++;
	}
	fclose(f);
	return n;
}

/* <hierarchy>/<cg_name>, for every hierarchy that has it. */
static unsigned cgroup_bases(char out[][PATH_MAX])
{
	char hier[MAX_BASES][PATH_MAX];
	unsigned nh = cgroup_hierarchies(hier), n = 0;

	for (unsigned i = 0; i < nh; i++) {
		struct stat st;

		snprintf(out[n], PATH_MAX, "%.2048s/%s", hier[i], cg_name);
		if (stat(out[n], &st) == 0 && S_ISDIR(st.st_mode))
			n++;
	}
	return n;
}

/* Calls fn(base, entry) for each sandbox group (sb-*) under base. */
static unsigned for_each_group(const char *base, void (*fn)(const char *, const char *, void *), void *arg)
{
	DIR *d = opendir(base);
	struct dirent *e;
	unsigned n = 0;

	if (!d)
		return 0;
	while ((e = readdir(d))) {
		if (strncmp(e->d_name, "sb-", 3))
			continue;
		n++;
		if (fn)
			fn(base, e->d_name, arg);
	}
	closedir(d);
	return n;
}

/* The most sandbox groups found under any one hierarchy. */
static unsigned count_sandbox_groups(void)
{
	char bases[MAX_BASES][PATH_MAX];
	unsigned nb = cgroup_bases(bases), most = 0;

	for (unsigned i = 0; i < nb; i++) {
		unsigned n = for_each_group(bases[i], NULL, NULL);

		if (n > most)
			most = n;
	}
	return most;
}

static void max_pids_current(const char *base, const char *group, void *arg)
{
	char path[PATH_MAX * 2];
	long *most = arg, v = -1;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s/pids.current", base, group);
	f = fopen(path, "re");
	if (!f)
		return;
	if (fscanf(f, "%ld", &v) == 1 && v > *most)
		*most = v;
	fclose(f);
}

/* ---- the host's view ------------------------------------------------- */

static unsigned count_dir(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *e;
	unsigned n = 0;

	if (!d)
		return 0;
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

/* Processes descending from the fixture's daemon, wherever they run. */
static unsigned count_daemon_processes(void)
{
	DIR *d = opendir("/proc");
	struct dirent *e;
	unsigned n = 0;

	if (!d)
		return 0;
	while ((e = readdir(d))) {
		pid_t pid = (pid_t)atoi(e->d_name);

		if (pid > 0 && pid_descends_from(pid, fx.pid))
			n++;
	}
	closedir(d);
	return n;
}

static unsigned count_fds_of(pid_t pid)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	return count_dir(path);
}

static unsigned count_lines(const char *path)
{
	FILE *f = fopen(path, "re");
	unsigned n = 0;
	int c;

	if (!f)
		return 0;
	while ((c = getc(f)) != EOF)
		n += c == '\n';
	fclose(f);
	return n;
}

/* A "Key:\tvalue..." line of /proc/<pid>/status, value copied out. */
static bool proc_status(pid_t pid, const char *key, char *out, size_t len)
{
	char path[64], line[512];
	size_t kl = strlen(key);
	bool found = false;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f)) {
		if (!strncmp(line, key, kl) && line[kl] == ':') {
			snprintf(out, len, "%s", line + kl + 2);
			out[strcspn(out, "\n")] = '\0';
			found = true;
		}
	}
	fclose(f);
	return found;
}

static long status_first_number(pid_t pid, const char *key)
{
	char v[256];

	return proc_status(pid, key, v, sizeof(v)) ? strtol(v, NULL, 10) : -1;
}

/* The host pid of `sleep <arg>` whose pid inside its sandbox is inner,
 * among the fixture daemon's descendants; -1 if there is none. */
static pid_t find_sleep(pid_t inner, const char *arg)
{
	DIR *d = opendir("/proc");
	struct dirent *e;
	pid_t found = -1;

	ck_assert_ptr_nonnull(d);
	while (found < 0 && (e = readdir(d))) {
		char path[300], cmd[64], nspid[128];
		pid_t pid = (pid_t)atoi(e->d_name);
		const char *last;
		ssize_t n;
		int fd;

		if (pid <= 0 || !proc_status(pid, "NSpid", nspid, sizeof(nspid)))
			continue;
		last = strrchr(nspid, '\t');
		last = last ? last + 1 : nspid;
		if (atoi(last) != inner || !pid_descends_from(pid, fx.pid))
			continue;
		snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		n = read(fd, cmd, sizeof(cmd) - 1);
		close(fd);
		/* "sleep\0<arg>\0" */
		if (n > 6 && !memcmp(cmd, "sleep", 6) && !strncmp(cmd + 6, arg, (size_t)n - 6))
			found = pid;
	}
	closedir(d);
	return found;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- running attacks --------------------------------------------------- */

/* Runs argv through `run` on tmpl; the call itself must succeed. */
static void run_argv(const char *tmpl, const char *const *argv, uint32_t timeout_ms,
		     struct sandpool_exec_result *res)
{
	struct sandpool *sp = fixture_connect(&fx);
	struct sandpool_exec_opts o = { .argv = argv, .timeout_ms = timeout_ms };
	struct sandpool_error err;

	memset(res, 0, sizeof(*res));
	ck_assert_msg(sandpool_run(sp, tmpl, 10000, &o, res, &err) == 0, "run %s: %s", argv[0], err.message);
	sandpool_close(sp);
}

static void run_sh(const char *script, uint32_t timeout_ms, struct sandpool_exec_result *res)
{
	const char *argv[] = { "/bin/sh", "-c", script, NULL };

	run_argv("shell", argv, timeout_ms, res);
}

/* py_prelude then script, for python3 -c; free() it. */
static char *py_source(const char *script)
{
	size_t len = sizeof(py_prelude) + strlen(script);
	char *full = malloc(len);

	ck_assert_ptr_nonnull(full);
	snprintf(full, len, "%s%s", py_prelude, script);
	return full;
}

static void run_py(const char *script, uint32_t timeout_ms, struct sandpool_exec_result *res)
{
	char *src = py_source(script);
	const char *argv[] = { "python3", "-c", src, NULL };

	run_argv("python", argv, timeout_ms, res);
	free(src);
}

static void exec_opts_in(struct sandpool *sp, const char *lease_id, const struct sandpool_exec_opts *o,
			 struct sandpool_exec_result *res)
{
	struct sandpool_error err;

	memset(res, 0, sizeof(*res));
	ck_assert_msg(sandpool_exec(sp, lease_id, o, res, &err) == 0, "exec %s: %s",
		      o->cmd ? o->cmd : o->argv[0], err.message);
}

static void exec_in(struct sandpool *sp, const char *lease_id, const char *cmd, struct sandpool_exec_result *res)
{
	struct sandpool_exec_opts o = { .cmd = cmd };

	exec_opts_in(sp, lease_id, &o, res);
}

static void exec_py_in(struct sandpool *sp, const char *lease_id, const char *script,
		       struct sandpool_exec_result *res)
{
	char *src = py_source(script);
	const char *argv[] = { "python3", "-c", src, NULL };
	struct sandpool_exec_opts o = { .argv = argv };

	exec_opts_in(sp, lease_id, &o, res);
	free(src);
}

#define ASSERT_OUT(res, needle)                                                                    \
	ck_assert_msg(strstr((res)->stdout_buf, needle) != NULL,                                   \
		      "expected \"%s\" in stdout:\n%s\nstderr:\n%s", needle, (res)->stdout_buf,     \
		      (res)->stderr_buf)
#define ASSERT_ERR(res, needle)                                                                    \
	ck_assert_msg(strstr((res)->stderr_buf, needle) != NULL,                                   \
		      "expected \"%s\" in stderr:\n%s\nstdout:\n%s", needle, (res)->stderr_buf,     \
		      (res)->stdout_buf)
#define ASSERT_EXITED(res, code)                                                                   \
	ck_assert_msg((res)->has_exit_code && (res)->exit_code == (code),                          \
		      "expected exit %d, got %s %d (limit %s)\nstdout:\n%s\nstderr:\n%s", code,      \
		      (res)->has_exit_code ? "exit" : "signal",                                      \
		      (res)->has_exit_code ? (res)->exit_code : (res)->signal,                       \
		      (res)->limit ? (res)->limit : "none", (res)->stdout_buf, (res)->stderr_buf)
#define ASSERT_LIMIT(res, want)                                                                    \
	ck_assert_msg((res)->limit && !strcmp((res)->limit, want),                                 \
		      "expected limit %s, got %s (exit %d signal %d)\nstderr:\n%.2000s", want,       \
		      (res)->limit ? (res)->limit : "none", (res)->exit_code, (res)->signal,         \
		      (res)->stderr_buf)

/* The bystander leased before the attack and a fresh `run` both answer. */
static void assert_still_serving(void)
{
	const char *argv[] = { "echo", "ok", NULL };
	struct sandpool_exec_result res;
	struct sandpool_error err;

	exec_in(by_sp, bystander.lease_id, "echo ok", &res);
	ck_assert_str_eq(res.stdout_buf, "ok\n");
	sandpool_exec_result_free(&res);
	ck_assert_int_eq(sandpool_release(by_sp, bystander.lease_id, &err), 0);
	sandpool_lease_free(&bystander);
	sandpool_close(by_sp);
	by_sp = NULL;

	run_argv("shell", argv, 0, &res);
	ck_assert_str_eq(res.stdout_buf, "ok\n");
	ASSERT_EXITED(&res, 0);
	sandpool_exec_result_free(&res);
}

/* ---- fixture ------------------------------------------------------------ */

/* A failed assertion _exit()s the test process without teardown and check
 * SIGKILLs its process group, daemon included: the daemon's groups stay
 * behind (a restarted daemon would sweep them). Once all tests are done,
 * the parent removes the groups of fixtures whose test process is gone. */
static void sweep_dead_fixtures(void)
{
	char hier[MAX_BASES][PATH_MAX];
	unsigned nh = cgroup_hierarchies(hier);

	for (unsigned i = 0; i < nh; i++) {
		DIR *d = opendir(hier[i]);
		struct dirent *e;

		while (d && (e = readdir(d))) {
			char base[PATH_MAX * 2], group[PATH_MAX * 3];
			struct dirent *g;
			DIR *gd;
			int pid;

			if (sscanf(e->d_name, "sandpool-escape-%d", &pid) != 1 || kill(pid, 0) == 0)
				continue;
			snprintf(base, sizeof(base), "%.*s/%s", PATH_MAX - 1, hier[i], e->d_name);
			gd = opendir(base);
			while (gd && (g = readdir(gd))) {
				snprintf(group, sizeof(group), "%s/%s", base, g->d_name);
				if (!strncmp(g->d_name, "sb-", 3))
					rmdir(group);
			}
			if (gd)
				closedir(gd);
			rmdir(base);
		}
		if (d)
			closedir(d);
	}
}

/* The socket file appears at bind(), a moment before listen(): until
 * then a connection is refused. */
static void wait_listening(void)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int rc = -1;

	ck_assert_uint_lt(strlen(fx.sock), sizeof(sun.sun_path));
	memcpy(sun.sun_path, fx.sock, strlen(fx.sock) + 1);
	for (int i = 0; i < 500 && rc < 0; i++) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

		ck_assert_int_ge(fd, 0);
		rc = connect(fd, (struct sockaddr *)&sun, sizeof(sun));
		close(fd);
		if (rc < 0)
			usleep(10000);
	}
	ck_assert_msg(rc == 0, "%s never accepted a connection", fx.sock);
}

static void setup(void)
{
	char conf[1024];
	struct sandpool_lease_opts lo = { .template_name = "shell", .wait_ms = 10000 };
	struct sandpool_error err;

	snprintf(cg_name, sizeof(cg_name), "sandpool-escape-%d", (int)getpid());
	snprintf(conf, sizeof(conf), conf_fmt, cg_name);
	fixture_start(&fx, conf);
	wait_listening();
	ck_assert(fixture_wait_warm(&fx, "shell", SHELL_WARM, 20000));
	ck_assert(fixture_wait_warm(&fx, "python", PYTHON_WARM, 20000));
	by_sp = fixture_connect(&fx);
	memset(&bystander, 0, sizeof(bystander));
	ck_assert_msg(sandpool_lease(by_sp, &lo, &bystander, &err) == 0, "bystander: %s", err.message);
}

static void teardown(void)
{
	char bases[MAX_BASES][PATH_MAX];

	sandpool_lease_free(&bystander);
	sandpool_close(by_sp);
	by_sp = NULL;
	fixture_finish(&fx);
	/* A clean exit leaves no group at all: neither a sandbox's nor the
	 * base the daemon made for them. */
	ck_assert_msg(cgroup_bases(bases) == 0, "%s left behind, with %u sandbox groups", bases[0],
		      for_each_group(bases[0], NULL, NULL));
}

/* ---- 1. fork bomb -------------------------------------------------------- */

struct sampler {
	atomic_bool stop;
	unsigned max_procs;
	long max_pids;
};

static void *sample(void *arg)
{
	struct sampler *s = arg;

	while (!atomic_load(&s->stop)) {
		char bases[MAX_BASES][PATH_MAX];
		unsigned nb = cgroup_bases(bases), n = count_daemon_processes();

		if (n > s->max_procs)
			s->max_procs = n;
		for (unsigned i = 0; i < nb; i++)
			for_each_group(bases[i], max_pids_current, &s->max_pids);
		usleep(20000);
	}
	return NULL;
}

START_TEST(test_fork_bomb)
{
	/* The classic bomb, then a python loop that reports the failed fork. */
	const char *bomb[] = { "bash", "-c", ":(){ :|:& };:; sleep 10", NULL };
	static const char py_bomb[] = "import os, time\n"
				      "n = 0\n"
				      "while True:\n"
				      "    try:\n"
				      "        if os.fork() == 0:\n"
				      "            time.sleep(100)\n"
				      "            os._exit(0)\n"
				      "        n += 1\n"
				      "    except OSError as e:\n"
				      "        print('fork=%s after=%d' % (errno.errorcode[e.errno], n), flush=True)\n"
				      "        sys.exit(1)\n";
	struct sampler s = { .max_pids = -1 };
	struct sandpool_exec_result res;
	unsigned before = count_daemon_processes();
	pthread_t th;
	long after;

	s.max_procs = before;
	ck_assert_int_eq(pthread_create(&th, NULL, sample, &s), 0);
	run_argv("shell", bomb, 1500, &res);
	/* Killed at its timeout, but blamed on the wall it kept hitting. */
	ASSERT_LIMIT(&res, "pids_limit");
	ck_assert(!res.has_exit_code);
	ck_assert_int_eq(res.signal, SIGKILL);
	ASSERT_ERR(&res, "fork: retry: Resource temporarily unavailable");
	sandpool_exec_result_free(&res);

	run_py(py_bomb, 5000, &res);
	ASSERT_LIMIT(&res, "pids_limit");
	ASSERT_EXITED(&res, 1);
	ASSERT_OUT(&res, "fork=EAGAIN after=");
	/* The agent, python and its children share the 64: fewer than 62 forks. */
	after = strtol(strstr(res.stdout_buf, "after=") + 6, NULL, 10);
	ck_assert_int_lt(after, PIDS_MAX);
	sandpool_exec_result_free(&res);
	atomic_store(&s.stop, true);
	pthread_join(th, NULL);

	ck_assert_int_le(s.max_pids, PIDS_MAX);
	ck_assert_int_ge(s.max_pids, PIDS_MAX - 8);
	/* The daemon's tree on the host grew by at most one bomb's worth of
	 * processes, plus the sandboxes that refilled the shell pool. */
	ck_assert_msg(s.max_procs <= before + PIDS_MAX + 8, "daemon's processes %u -> %u", before, s.max_procs);
	assert_still_serving();
}
END_TEST

/* ---- 2. memory bomb ------------------------------------------------------ */

START_TEST(test_memory_bomb)
{
	static const char script[] = "b = bytearray(1 << 30)\n"
				     "for i in range(0, len(b), 4096):\n"
				     "    b[i] = 1\n"
				     "say('survived', len(b))\n";
	struct sandpool_exec_result res;

	run_py(script, 10000, &res);
	ASSERT_LIMIT(&res, "oom_killed");
	ck_assert(!res.has_exit_code);
	ck_assert_int_eq(res.signal, SIGKILL);
	ck_assert_ptr_null(strstr(res.stdout_buf, "survived"));
	sandpool_exec_result_free(&res);
	assert_still_serving();
}
END_TEST

/* ---- 3. CPU past its timeout --------------------------------------------- */

START_TEST(test_cpu_spin_timeout)
{
	struct sandpool_exec_result res;
	double t0 = now_s(), took;

	run_sh("while :; do :; done", 500, &res);
	took = now_s() - t0;
	ASSERT_LIMIT(&res, "timeout");
	ck_assert(!res.has_exit_code);
	ck_assert_int_eq(res.signal, SIGKILL);
	ck_assert_msg(took < 1.5, "run took %.2f s", took);
	ck_assert_uint_ge(res.duration_us, 500000);
	sandpool_exec_result_free(&res);
	assert_still_serving();
}
END_TEST

/* ---- 3b. processes that leave the exec's session ----------------------- */

/* Host processes below the daemon whose argv is exactly {"sleep", arg}. */
static unsigned count_host_sleeps(const char *arg)
{
	DIR *d = opendir("/proc");
	struct dirent *e;
	unsigned n = 0;

	ck_assert_ptr_nonnull(d);
	while ((e = readdir(d))) {
		char path[300], cmd[64], want[64];
		pid_t pid = (pid_t)atoi(e->d_name);
		int fd, wl = snprintf(want, sizeof(want), "sleep%c%s", '\0', arg) + 1;
		ssize_t len;

		if (pid <= 0)
			continue;
		snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		len = read(fd, cmd, sizeof(cmd));
		close(fd);
		if (len == wl && !memcmp(cmd, want, (size_t)wl) && pid_descends_from(pid, fx.pid))
			n++;
	}
	closedir(d);
	return n;
}

/* Each "started" line seen: how many of the three sleeps the host had then. */
struct tree_probe {
	int host_sleeps;
	char out[256];
	size_t len;
};

static void probe_output(void *arg, int stream, const void *data, size_t len)
{
	struct tree_probe *tp = arg;

	if (stream != SANDPOOL_STDOUT || len >= sizeof(tp->out) - tp->len)
		return;
	memcpy(tp->out + tp->len, data, len);
	tp->len += len;
	tp->out[tp->len] = '\0';
	if (strstr(tp->out, "started\n") && tp->host_sleeps < 0)
		tp->host_sleeps = (int)(count_host_sleeps("1000") + count_host_sleeps("1001") +
					count_host_sleeps("1002"));
}

START_TEST(test_exec_timeout_kills_tree)
{
	/* Three ways out of the exec's process group: setsid under a living
	 * parent, setsid then orphaned (the subshell exits), and setpgid. The
	 * numbers are spelt ${n}0 so that no command line holds them but the
	 * sleeps'. The leader waits until all three run, then outlives its
	 * timeout. */
	static const char script[] =
		"n=100\n"
		"setsid sh -c \"sleep ${n}0\" </dev/null >/dev/null 2>&1 &\n"
		"(setsid sleep ${n}1 </dev/null >/dev/null 2>&1 &)\n"
		"python3 -c \"import os; os.setpgid(0, 0); os.execvp('sleep', ['sleep', '${n}2'])\" "
		"</dev/null >/dev/null 2>&1 &\n"
		"until [ \"$(cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' '\\n' | grep -c \"^${n}[0-2]$\")\" = 3 ]; do\n"
		"  sleep 0.05\n"
		"done\n"
		"echo started\n"
		"sleep 30\n";
	static const char list[] = "cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' ' | tr -s ' ' '\\n'";
	/* What the sandbox's own code can try against the leader's role. */
	static const char py_escape[] =
		"PR_SET_CHILD_SUBREAPER = 36\n"
		"CLONE_PARENT = 0x8000\n"
		"say('unsubreaper', err(libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)))\n"
		"say('subreaper', err(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)))\n"
		"say('clone_parent', err(sc(%d, CLONE_PARENT | 17, 0, 0, 0, 0)))\n";
	struct sandpool *sp = fixture_connect(&fx);
	struct sandpool_lease_opts lo = { .template_name = "shell", .wait_ms = 10000 };
	struct tree_probe tp = { .host_sleeps = -1 };
	struct sandpool_exec_opts o = { .cmd = script, .timeout_ms = 4000, .on_output = probe_output,
					.output_arg = &tp };
	struct sandpool_exec_result res;
	struct sandpool_lease l;
	struct sandpool_error err;
	char pyscript[512];
	double t0, took;
	unsigned left = 0;

	memset(&l, 0, sizeof(l));
	ck_assert_msg(sandpool_lease(sp, &lo, &l, &err) == 0, "lease: %s", err.message);

	/* An exec that ends on its own leaves its background work running:
	 * the kill below must not touch it. */
	exec_in(sp, l.lease_id, "setsid sleep 1003 </dev/null >/dev/null 2>&1 &", &res);
	ASSERT_EXITED(&res, 0);
	sandpool_exec_result_free(&res);

	t0 = now_s();
	exec_opts_in(sp, l.lease_id, &o, &res);
	took = now_s() - t0;
	ck_assert_msg(strstr(tp.out, "started\n"), "the sleeps never all ran; stdout:\n%s\nstderr:\n%s", tp.out,
		      res.stderr_buf);
	ck_assert_int_eq(tp.host_sleeps, 3);
	ASSERT_LIMIT(&res, "timeout");
	ck_assert(!res.has_exit_code);
	ck_assert_int_eq(res.signal, SIGKILL);
	ck_assert_msg(took < 6.0, "exec took %.2f s", took);
	sandpool_exec_result_free(&res);

	/* Lease still held: none of the three is left, inside or on the host,
	 * and the earlier exec's sleep still runs. */
	exec_in(sp, l.lease_id, list, &res);
	ck_assert_msg(!strstr(res.stdout_buf, "\n1000\n") && !strstr(res.stdout_buf, "\n1001\n") &&
			      !strstr(res.stdout_buf, "\n1002\n"),
		      "left in the sandbox:\n%s", res.stdout_buf);
	ck_assert_msg(strstr(res.stdout_buf, "\n1003\n"), "the background sleep is gone:\n%s", res.stdout_buf);
	sandpool_exec_result_free(&res);
	for (int i = 0; i < 200; i++) {
		left = count_host_sleeps("1000") + count_host_sleeps("1001") + count_host_sleeps("1002");
		if (!left)
			break;
		usleep(10000);
	}
	ck_assert_uint_eq(left, 0);
	ck_assert_uint_eq(count_host_sleeps("1003"), 1);

	/* The leader's role cannot be undone from inside. */
	snprintf(pyscript, sizeof(pyscript), py_escape, SYS_clone);
	exec_py_in(sp, l.lease_id, pyscript, &res);
	ASSERT_EXITED(&res, 0);
	ASSERT_OUT(&res, "unsubreaper=EPERM\n");
	ASSERT_OUT(&res, "subreaper=ok\n");
	ASSERT_OUT(&res, "clone_parent=EPERM\n");
	sandpool_exec_result_free(&res);

	ck_assert_int_eq(sandpool_release(sp, l.lease_id, &err), 0);
	sandpool_lease_free(&l);
	sandpool_close(sp);
	assert_still_serving();
}
END_TEST

/* ---- 4. filling the disk ------------------------------------------------- */

START_TEST(test_fill_workspace)
{
	/* /workspace, /tmp and /dev/shm are each a workspace_size tmpfs. */
	static const char script[] =
		"for d in /workspace /tmp /dev/shm; do\n"
		"  dd if=/dev/zero of=$d/f bs=1M count=100 2>&1 | head -n 1\n"
		"  echo \"$d kib=$(du -k $d/f | cut -f1)\"\n"
		"done\n"
		"dd if=/dev/zero of=/workspace/f bs=1M count=100\n";
	struct sandpool_exec_result res;

	run_sh(script, 10000, &res);
	ASSERT_OUT(&res, "dd: error writing '/workspace/f': No space left on device\n");
	ASSERT_OUT(&res, "dd: error writing '/tmp/f': No space left on device\n");
	ASSERT_OUT(&res, "dd: error writing '/dev/shm/f': No space left on device\n");
	ASSERT_OUT(&res, "/workspace kib=8192\n");
	ASSERT_ERR(&res, "No space left on device");
	ASSERT_EXITED(&res, 1);
	sandpool_exec_result_free(&res);
	assert_still_serving();
}
END_TEST

/* ---- 5. host secrets and the daemon's own files ------------------------------ */

START_TEST(test_host_files_hidden)
{
	char script[4096], state[400];
	const char *paths[] = { "/etc/shadow", "/etc/gshadow", "/root", "/home", "/run", "/var",
				"/sys", fx.dir, fx.sock, state, fx.conf, fx.log };
	struct sandpool_exec_result res;
	size_t n;

	snprintf(state, sizeof(state), "%s/state", fx.dir);
	n = (size_t)snprintf(script, sizeof(script), "for p in (");
	for (size_t i = 0; i < ARRAY_SIZE(paths); i++)
		n += (size_t)snprintf(script + n, sizeof(script) - n, "'%s', ", paths[i]);
	snprintf(script + n, sizeof(script) - n,
		 "):\n"
		 "    say(p, oserr(os.stat, p))\n"
		 /* PID 1 is the agent: its root is this root, and it is not ours to look at. */
		 "say('agent_root', oserr(os.listdir, '/proc/1/root/'))\n");
	run_py(script, 0, &res);
	for (size_t i = 0; i < ARRAY_SIZE(paths); i++) {
		char want[512];

		snprintf(want, sizeof(want), "%s=ENOENT\n", paths[i]);
		ASSERT_OUT(&res, want);
	}
	ASSERT_OUT(&res, "agent_root=EACCES\n");
	ASSERT_EXITED(&res, 0);
	sandpool_exec_result_free(&res);
	assert_still_serving();
}
END_TEST

/* ---- 6. other sandboxes' processes --------------------------------------- */

/* Leases one shell sandbox and leaves `sleep <arg>` running in it; returns
 * its pid inside the sandbox. */
static pid_t start_sleeper(struct sandpool *sp, struct sandpool_lease *l, const char *arg)
{
	struct sandpool_lease_opts lo = { .template_name = "shell", .wait_ms = 10000 };
	struct sandpool_exec_result res;
	struct sandpool_error err;
	char cmd[128];
	pid_t inner;

	memset(l, 0, sizeof(*l));
	ck_assert_msg(sandpool_lease(sp, &lo, l, &err) == 0, "lease: %s", err.message);
	snprintf(cmd, sizeof(cmd), "sleep %s </dev/null >/dev/null 2>&1 & echo $!", arg);
	exec_in(sp, l->lease_id, cmd, &res);
	inner = (pid_t)atoi(res.stdout_buf);
	ck_assert_int_gt(inner, 1);
	sandpool_exec_result_free(&res);
	return inner;
}

static pid_t wait_sleep(pid_t inner, const char *arg)
{
	pid_t pid = -1;

	for (int i = 0; i < 100 && (pid = find_sleep(inner, arg)) < 0; i++)
		usleep(10000);
	ck_assert_msg(pid > 0, "no host process for sleep %s (pid %d inside)", arg, (int)inner);
	return pid;
}

START_TEST(test_cross_sandbox_signals)
{
	struct sandpool *sp = fixture_connect(&fx);
	struct sandpool_lease_opts lo = { .template_name = "shell", .wait_ms = 10000 };
	struct sandpool_lease a, b;
	struct sandpool_exec_result res;
	struct sandpool_error err;
	char script[2048], cmd[256];
	pid_t a_inner, a_host, b_host;
	long a_uid, b_uid;

	a_inner = start_sleeper(sp, &a, "300");
	a_host = wait_sleep(a_inner, "300");

	/* B's first exec: python is B's pid 2, alone with the agent, so
	 * neither of A's numbers names anything of B's own. */
	memset(&b, 0, sizeof(b));
	ck_assert_msg(sandpool_lease(sp, &lo, &b, &err) == 0, "lease B: %s", err.message);
	snprintf(script, sizeof(script),
		 "for tag, pid in (('host', %d), ('inner', %d)):\n"
		 "    if os.path.exists('/proc/%%d' %% pid):\n"
		 "        say(tag, 'visible')\n"
		 "        continue\n"
		 "    say(tag + '_kill', err(libc.kill(pid, 9)))\n"
		 "    say(tag + '_ptrace', err(sc(%d, 16, pid, 0, 0)))\n"
		 "    say(tag + '_pidfd', err(sc(%d, pid, 0)))\n"
		 "say('kill_all', err(libc.kill(-1, 9)))\n",
		 (int)a_host, (int)a_inner, SYS_ptrace, SYS_pidfd_open);
	exec_py_in(sp, b.lease_id, script, &res);
	ASSERT_EXITED(&res, 0);
	/* A's pids mean nothing in B's pid namespace; ptrace is refused
	 * before the kernel even looks (seccomp). */
	ASSERT_OUT(&res, "host_kill=ESRCH\n");
	ASSERT_OUT(&res, "host_ptrace=EPERM\n");
	ASSERT_OUT(&res, "host_pidfd=ESRCH\n");
	ASSERT_OUT(&res, "inner_kill=ESRCH\n");
	ASSERT_OUT(&res, "inner_ptrace=EPERM\n");
	ASSERT_OUT(&res, "inner_pidfd=ESRCH\n");
	/* kill(-1) reaches every process B may signal: none but itself. */
	ASSERT_OUT(&res, "kill_all=ESRCH\n");
	sandpool_exec_result_free(&res);

	/* The same with kill(1), by host pid (A's inner pid could be this
	 * very shell in B). */
	snprintf(cmd, sizeof(cmd), "kill -9 %d; echo kill_host=$?", (int)a_host);
	exec_in(sp, b.lease_id, cmd, &res);
	ASSERT_OUT(&res, "kill_host=1\n");
	ASSERT_ERR(&res, "No such process");
	sandpool_exec_result_free(&res);

	/* A's sleep survived all of it, as seen from the host and from A. */
	ck_assert_int_eq(kill(a_host, 0), 0);
	ck_assert_int_eq(find_sleep(a_inner, "300"), a_host);
	snprintf(cmd, sizeof(cmd), "kill -0 %d && echo alive", (int)a_inner);
	exec_in(sp, a.lease_id, cmd, &res);
	ck_assert_str_eq(res.stdout_buf, "alive\n");
	sandpool_exec_result_free(&res);

	/* Two sandboxes, two unprivileged host uids. */
	snprintf(cmd, sizeof(cmd), "sleep 301 </dev/null >/dev/null 2>&1 & echo $!");
	exec_in(sp, b.lease_id, cmd, &res);
	b_host = wait_sleep((pid_t)atoi(res.stdout_buf), "301");
	sandpool_exec_result_free(&res);
	ck_assert_int_gt(b_host, 0);
	a_uid = status_first_number(a_host, "Uid");
	b_uid = status_first_number(b_host, "Uid");
	ck_assert_int_gt(a_uid, 0);
	ck_assert_int_gt(b_uid, 0);
	ck_assert_int_ne(a_uid, b_uid);
	ck_assert_int_ne(a_uid, (long)getuid());
	ck_assert_int_eq(status_first_number(a_host, "Gid"), a_uid);
	ck_assert_int_eq(sandpool_release(sp, a.lease_id, &err), 0);
	ck_assert_int_eq(sandpool_release(sp, b.lease_id, &err), 0);
	sandpool_lease_free(&a);
	sandpool_lease_free(&b);
	sandpool_close(sp);
	assert_still_serving();
}
END_TEST

/* ---- 7. the host's network ---------------------------------------------- */

START_TEST(test_host_network_unreachable)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	socklen_t sl = sizeof(sin);
	int tcp = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int unx = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	char abstract[64], script[2048];
	struct sandpool_exec_result res;
	size_t alen;

	/* A TCP listener on the host's loopback, and an abstract Unix socket
	 * (those are per network namespace too). */
	ck_assert_int_ge(tcp, 0);
	ck_assert_int_ge(unx, 0);
	ck_assert_int_eq(bind(tcp, (struct sockaddr *)&sin, sizeof(sin)), 0);
	ck_assert_int_eq(listen(tcp, 8), 0);
	ck_assert_int_eq(getsockname(tcp, (struct sockaddr *)&sin, &sl), 0);
	alen = (size_t)snprintf(abstract, sizeof(abstract), "sandpool-escape-%d", (int)getpid());
	memcpy(sun.sun_path + 1, abstract, alen);
	ck_assert_int_eq(bind(unx, (struct sockaddr *)&sun, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + alen)), 0);
	ck_assert_int_eq(listen(unx, 8), 0);

	snprintf(script, sizeof(script),
		 "for tag, fam, addr in (('tcp', socket.AF_INET, ('127.0.0.1', %u)),\n"
		 "                       ('route', socket.AF_INET, ('1.1.1.1', 80)),\n"
		 "                       ('abstract', socket.AF_UNIX, '\\0%s')):\n"
		 "    s = socket.socket(fam)\n"
		 "    s.settimeout(3)\n"
		 "    say(tag, oserr(s.connect, addr))\n"
		 "say('ifaces', ','.join(n for i, n in socket.if_nameindex()))\n",
		 (unsigned)ntohs(sin.sin_port), abstract);
	run_py(script, 10000, &res);
	ASSERT_OUT(&res, "tcp=ECONNREFUSED\n");
	ASSERT_OUT(&res, "route=ENETUNREACH\n");
	ASSERT_OUT(&res, "abstract=ECONNREFUSED\n");
	ASSERT_OUT(&res, "ifaces=lo\n");
	ASSERT_EXITED(&res, 0);
	sandpool_exec_result_free(&res);

	/* Nothing ever reached either listener. */
	ck_assert_int_lt(accept(tcp, NULL, NULL), 0);
	ck_assert_int_eq(errno, EAGAIN);
	ck_assert_int_lt(accept(unx, NULL, NULL), 0);
	ck_assert_int_eq(errno, EAGAIN);
	close(tcp);
	close(unx);
	assert_still_serving();
}
END_TEST

/* ---- 8. the read-only root ----------------------------------------------- */

START_TEST(test_usr_read_only)
{
	static const char script[] =
		"say('usr_create', oserr(lambda: open('/usr/escape', 'w')))\n"
		"say('usr_bin_create', oserr(lambda: open('/usr/bin/escape', 'w')))\n"
		"say('usr_mkdir', oserr(os.mkdir, '/usr/lib/escape'))\n"
		"say('usr_chmod', oserr(os.chmod, '/usr/bin/python3', 0o4777))\n"
		"say('usr_unlink', oserr(os.unlink, '/usr/bin/python3'))\n"
		"say('etc_passwd', oserr(lambda: open('/etc/passwd', 'a')))\n"
		"say('etc_passwd_trunc', oserr(lambda: open('/etc/passwd', 'w')))\n"
		"say('root_create', oserr(lambda: open('/escape', 'w')))\n";
	struct sandpool_exec_result res;

	run_py(script, 0, &res);
	ASSERT_OUT(&res, "usr_create=EROFS\n");
	ASSERT_OUT(&res, "usr_bin_create=EROFS\n");
	ASSERT_OUT(&res, "usr_mkdir=EROFS\n");
	ASSERT_OUT(&res, "usr_chmod=EROFS\n");
	ASSERT_OUT(&res, "usr_unlink=EROFS\n");
	/* Appending is checked against the file's owner (the sandbox's root)
	 * before the mount; truncating meets the read-only mount first. */
	ASSERT_OUT(&res, "etc_passwd=EACCES\n");
	ASSERT_OUT(&res, "etc_passwd_trunc=EROFS\n");
	ASSERT_OUT(&res, "root_create=EROFS\n");
	sandpool_exec_result_free(&res);

	run_sh("touch /usr/escape", 0, &res);
	ASSERT_ERR(&res, "Read-only file system");
	ASSERT_EXITED(&res, 1);
	sandpool_exec_result_free(&res);
	assert_still_serving();
}
END_TEST

/* ---- 9. mounts --------------------------------------------------------------- */

START_TEST(test_mount_denied)
{
	char script[2048];
	struct sandpool_exec_result res;

	/* mount(8) is setuid root on the host, but runs as the sandbox user. */
	run_sh("mount -t tmpfs none /tmp; echo mount_exit=$?", 0, &res);
	ASSERT_OUT(&res, "mount_exit=32\n");
	ASSERT_ERR(&res, "must be superuser to use mount");
	sandpool_exec_result_free(&res);

	snprintf(script, sizeof(script),
		 "say('mount', err(sc(%d, b'none', b'/tmp', b'tmpfs', 0, None)))\n"
		 "say('bind', err(sc(%d, b'/usr', b'/workspace', None, 4096, None)))\n"
		 "say('umount', err(sc(%d, b'/usr', 2)))\n"
		 "say('chroot', err(sc(%d, b'/workspace')))\n"
		 "say('pivot_root', err(sc(%d, b'/workspace', b'/workspace')))\n"
		 "say('fsopen', err(sc(%d, b'tmpfs', 0)))\n"
		 "say('open_tree', err(sc(%d, -100, b'/usr', 1)))\n",
		 SYS_mount, SYS_mount, SYS_umount2, SYS_chroot, SYS_pivot_root, SYS_fsopen, SYS_open_tree);
	run_py(script, 0, &res);
	ASSERT_OUT(&res, "mount=EPERM\n");
	ASSERT_OUT(&res, "bind=EPERM\n");
	ASSERT_OUT(&res, "umount=EPERM\n");
	ASSERT_OUT(&res, "chroot=EPERM\n");
	ASSERT_OUT(&res, "pivot_root=EPERM\n");
	ASSERT_OUT(&res, "fsopen=EPERM\n");
	ASSERT_OUT(&res, "open_tree=EPERM\n");
	ASSERT_EXITED(&res, 0);
	sandpool_exec_result_free(&res);
	assert_still_serving();
}
END_TEST

/* ---- 10. setuid binaries ------------------------------------------------- */

START_TEST(test_setuid_gains_nothing)
{
	static const char *const candidates[] = { "/usr/bin/su", "/usr/bin/passwd", "/usr/bin/newgrp",
						  "/usr/bin/chsh" };
	const char *suid = NULL;
	char script[1024];
	struct sandpool_exec_result res;

	for (size_t i = 0; i < ARRAY_SIZE(candidates) && !suid; i++) {
		struct stat st;

		if (stat(candidates[i], &st) == 0 && st.st_uid == 0 && (st.st_mode & S_ISUID))
			suid = candidates[i];
	}
	ck_assert_msg(suid != NULL, "no setuid-root binary among the candidates on this host");

	/* The setuid binary waits for a password on stdin while we read its
	 * ids: every one of them is still the sandbox user's. */
	snprintf(script, sizeof(script),
		 "grep -E '^(NoNewPrivs|CapPrm|CapEff|CapBnd|CapAmb):' /proc/self/status\n"
		 "sleep 1 | %s root -c 'id -u' >/workspace/suid.out 2>&1 &\n"
		 "p=$!\n"
		 "sleep 0.3\n"
		 "grep -E '^(Uid|Gid):' /proc/$p/status\n"
		 "wait $p; echo suid_exit=$?\n"
		 "sed 's/^/suid_said: /' /workspace/suid.out\n"
		 "echo id=$(id -u)\n",
		 suid);
	run_sh(script, 5000, &res);
	ASSERT_OUT(&res, "NoNewPrivs:\t1\n");
	ASSERT_OUT(&res, "CapPrm:\t0000000000000000\n");
	ASSERT_OUT(&res, "CapEff:\t0000000000000000\n");
	ASSERT_OUT(&res, "CapBnd:\t0000000000000000\n");
	ASSERT_OUT(&res, "CapAmb:\t0000000000000000\n");
	ASSERT_OUT(&res, "Uid:\t65534\t65534\t65534\t65534\n");
	ASSERT_OUT(&res, "Gid:\t65534\t65534\t65534\t65534\n");
	ck_assert_msg(strstr(res.stdout_buf, "suid_exit=0\n") == NULL, "%s succeeded:\n%s", suid, res.stdout_buf);
	ck_assert_msg(strstr(res.stdout_buf, "suid_said: 0\n") == NULL, "%s ran id as root", suid);
	ASSERT_OUT(&res, "id=65534\n");
	sandpool_exec_result_free(&res);
	assert_still_serving();
}
END_TEST

/* ---- 11. kernel knobs ---------------------------------------------------- */

START_TEST(test_proc_sys_read_only)
{
	static const char *const knobs[] = { "/proc/sys/vm/drop_caches", "/proc/sys/kernel/core_pattern",
					     "/proc/sys/kernel/sysrq", "/proc/sysrq-trigger" };
	char script[1024], want[128];
	struct sandpool_exec_result res;
	size_t n = 0;

	n += (size_t)snprintf(script + n, sizeof(script) - n, "for p in (");
	for (size_t i = 0; i < ARRAY_SIZE(knobs); i++)
		n += (size_t)snprintf(script + n, sizeof(script) - n, "'%s', ", knobs[i]);
	snprintf(script + n, sizeof(script) - n,
		 "):\n"
		 "    def w():\n"
		 "        with open(p, 'w') as f:\n"
		 "            f.write('1\\n')\n"
		 "    say(p, oserr(w))\n"
		 "say('/sys', oserr(os.stat, '/sys/kernel'))\n");
	run_py(script, 0, &res);
	for (size_t i = 0; i < ARRAY_SIZE(knobs); i++) {
		/* Knobs this kernel lacks (no MAGIC_SYSRQ) cannot be written either. */
		snprintf(want, sizeof(want), "%s=%s\n", knobs[i], access(knobs[i], F_OK) == 0 ? "EROFS" : "ENOENT");
		ASSERT_OUT(&res, want);
	}
	ASSERT_OUT(&res, "/sys=ENOENT\n");
	ASSERT_EXITED(&res, 0);
	sandpool_exec_result_free(&res);

	run_sh("echo 3 > /proc/sys/vm/drop_caches", 0, &res);
	ASSERT_ERR(&res, "Read-only file system");
	ck_assert(res.has_exit_code && res.exit_code != 0);
	sandpool_exec_result_free(&res);
	assert_still_serving();
}
END_TEST

/* ---- 12. user namespaces ------------------------------------------------- */

START_TEST(test_no_user_namespace)
{
	char script[2048];
	struct sandpool_exec_result res;

	run_sh("unshare -U true; echo unshare_exit=$?", 0, &res);
	ASSERT_OUT(&res, "unshare_exit=1\n");
	ASSERT_ERR(&res, "unshare failed: Operation not permitted");
	sandpool_exec_result_free(&res);

	/* clone() with a namespace flag would return 0 in a child: it exits. */
	snprintf(script, sizeof(script),
		 "say('unshare_user', err(sc(%d, 0x%x)))\n"
		 "say('unshare_mnt', err(sc(%d, 0x%x)))\n"
		 "r = sc(%d, 0x%x | 17, 0, 0, 0, 0)\n"
		 "if r == 0:\n"
		 "    os._exit(0)\n"
		 "say('clone_user', err(r))\n"
		 "say('clone3', err(sc(%d, 0, 0)))\n"
		 "fd = os.open('/proc/self/ns/user', os.O_RDONLY)\n"
		 "say('setns', err(sc(%d, fd, 0)))\n",
		 SYS_unshare, CLONE_NEWUSER, SYS_unshare, CLONE_NEWNS, SYS_clone, CLONE_NEWUSER,
		 SYS_clone3, SYS_setns);
	run_py(script, 0, &res);
	ASSERT_OUT(&res, "unshare_user=EPERM\n");
	ASSERT_OUT(&res, "unshare_mnt=EPERM\n");
	ASSERT_OUT(&res, "clone_user=EPERM\n");
	/* clone3 hides its flags from seccomp, so it claims not to exist. */
	ASSERT_OUT(&res, "clone3=ENOSYS\n");
	ASSERT_OUT(&res, "setns=EPERM\n");
	ASSERT_EXITED(&res, 0);
	sandpool_exec_result_free(&res);

#ifdef __x86_64__
	/* The filter's other ABIs: an x32 syscall number, and the i386 entry
	 * (int 0x80) from executable memory. Either is killed as a foreign
	 * architecture (SIGSYS); a kernel without ia32 emulation answers
	 * int 0x80 with SIGSEGV. Neither may print. */
	snprintf(script, sizeof(script), "say('x32_unshare', err(sc(0x40000000 | %d, 0x%x)))\n", SYS_unshare,
		 CLONE_NEWUSER);
	run_py(script, 0, &res);
	ck_assert_msg(!res.has_exit_code && res.signal == SIGSYS, "x32 unshare: exit %d signal %d, stdout %s",
		      res.exit_code, res.signal, res.stdout_buf);
	ck_assert_str_eq(res.stdout_buf, "");
	sandpool_exec_result_free(&res);

	run_py("import mmap\n"
	       /* push rbx; mov eax, 310 (i386 unshare); mov ebx, CLONE_NEWUSER; int 0x80; pop rbx; ret */
	       "code = bytes([0x53, 0xb8, 0x36, 0x01, 0, 0, 0xbb, 0, 0, 0, 0x10, 0xcd, 0x80, 0x5b, 0xc3])\n"
	       "m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
	       "m.write(code)\n"
	       "buf = (ctypes.c_char * 4096).from_buffer(m)\n"
	       "say('i386_unshare', ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(buf))())\n",
	       0, &res);
	ck_assert_msg(!res.has_exit_code && (res.signal == SIGSYS || res.signal == SIGSEGV),
		      "i386 unshare: exit %d signal %d, stdout %s", res.exit_code, res.signal, res.stdout_buf);
	ck_assert_str_eq(res.stdout_buf, "");
	sandpool_exec_result_free(&res);
#endif
	assert_still_serving();
}
END_TEST

/* ---- 13. the kernel keyring ---------------------------------------------- */

START_TEST(test_keyctl_denied)
{
	char script[1024];
	struct sandpool_exec_result res;

	/* KEY_SPEC_SESSION_KEYRING = -3; KEYCTL_GET_KEYRING_ID = 0,
	 * KEYCTL_JOIN_SESSION_KEYRING = 1. */
	snprintf(script, sizeof(script),
		 "say('add_key', err(sc(%d, b'user', b'escape', b'secret', 6, -3)))\n"
		 "say('keyctl_get', err(sc(%d, 0, -3, 1)))\n"
		 "say('keyctl_join', err(sc(%d, 1, None)))\n"
		 "say('request_key', err(sc(%d, b'user', b'escape', None, 0)))\n",
		 SYS_add_key, SYS_keyctl, SYS_keyctl, SYS_request_key);
	run_py(script, 0, &res);
	ASSERT_OUT(&res, "add_key=EPERM\n");
	ASSERT_OUT(&res, "keyctl_get=EPERM\n");
	ASSERT_OUT(&res, "keyctl_join=EPERM\n");
	ASSERT_OUT(&res, "request_key=EPERM\n");
	ASSERT_EXITED(&res, 0);
	sandpool_exec_result_free(&res);
	assert_still_serving();
}
END_TEST

/* ---- 14. leaks over many sandboxes ---------------------------------------- */

#define LEAK_THREADS 4
#define LEAK_RUNS 200

/* pool.stats through sp: true when nothing is being created, destroyed or
 * leased, every pool is back at its minimum and sp is the only client.
 * why says what is not. */
static bool pool_settled(struct sandpool *sp, char *why, size_t whylen)
{
	struct sandpool_reply *r = NULL;
	struct sandpool_error err;
	const msgpack_object_array *ts = NULL;
	bool settled = true;
	uint64_t v = 0;

	ck_assert_int_eq(sandpool_call(sp, "pool.stats", NULL, 0, NULL, NULL, &r, &err), 0);
	ck_assert_int_eq(ipc_get_array(r->result, "templates", &ts), 0);
	for (uint32_t i = 0; i < ts->size; i++) {
		const msgpack_object *t = &ts->ptr[i];
		uint64_t warm = 0, leased = 1, creating = 1, destroying = 1, want;
		const char *name = "";
		uint32_t len = 0;

		ipc_get_str(t, "name", &name, &len);
		want = len == 5 && !memcmp(name, "shell", 5) ? SHELL_WARM : PYTHON_WARM;
		if (ipc_get_uint(t, "warm", &warm) < 0 || ipc_get_uint(t, "leased", &leased) < 0 ||
		    ipc_get_uint(t, "creating", &creating) < 0 || ipc_get_uint(t, "destroying", &destroying) < 0 ||
		    leased || creating || destroying || warm != want) {
			snprintf(why, whylen, "%.*s: warm %llu leased %llu creating %llu destroying %llu", (int)len,
				 name, (unsigned long long)warm, (unsigned long long)leased,
				 (unsigned long long)creating, (unsigned long long)destroying);
			settled = false;
		}
	}
	if (settled && (ipc_get_uint(r->result, "connections", &v) < 0 || v != 1)) {
		snprintf(why, whylen, "%llu connections", (unsigned long long)v);
		settled = false;
	}
	sandpool_reply_free(r);
	return settled;
}

static void wait_settled(struct sandpool *sp)
{
	char why[256] = "";

	for (int i = 0; i < 1000 && !pool_settled(sp, why, sizeof(why)); i++)
		usleep(10000);
	ck_assert_msg(pool_settled(sp, why, sizeof(why)), "pool not settled after 10 s: %s", why);
}

/* Settled pools, and only the warm sandboxes' agents and cgroups left:
 * groups are removed by the spawner after the pool has let go. */
static void wait_quiet(struct sandpool *sp, unsigned warm)
{
	wait_settled(sp);
	for (int i = 0; i < 500 && (count_agents(&fx) != warm || count_sandbox_groups() != warm); i++)
		usleep(10000);
	ck_assert_uint_eq(count_agents(&fx), warm);
	ck_assert_uint_eq(count_sandbox_groups(), warm);
}

/* The spawner: the daemon's child that clones sandboxes. */
static pid_t find_spawner(void)
{
	DIR *d = opendir("/proc");
	struct dirent *e;
	pid_t found = -1;

	ck_assert_ptr_nonnull(d);
	while (found < 0 && (e = readdir(d))) {
		pid_t pid = (pid_t)atoi(e->d_name);
		char name[64];

		if (pid > 0 && proc_status(pid, "Name", name, sizeof(name)) && !strcmp(name, "sandpool-spawn") &&
		    status_first_number(pid, "PPid") == fx.pid)
			found = pid;
	}
	closedir(d);
	return found;
}

static void *leak_thread(void *arg)
{
	const char *argv[] = { "true", NULL };
	struct sandpool_error err;
	struct sandpool *sp = sandpool_connect(fx.sock, &err);
	long ok = 0;

	(void)arg;
	if (!sp)
		return (void *)0;
	sandpool_set_timeout_ms(sp, 30000);
	for (int i = 0; i < LEAK_RUNS / LEAK_THREADS; i++) {
		struct sandpool_exec_opts o = { .argv = argv };
		struct sandpool_exec_result res = { 0 };

		if (sandpool_run(sp, "shell", 20000, &o, &res, &err) == 0 && res.has_exit_code && res.exit_code == 0)
			ok++;
		else
			fprintf(stderr, "leak run %d: %s\n", i, err.message);
		sandpool_exec_result_free(&res);
	}
	sandpool_close(sp);
	return (void *)ok;
}

START_TEST(test_no_leaks)
{
	const unsigned warm = SHELL_WARM + PYTHON_WARM;
	struct sandpool *sp;
	pthread_t th[LEAK_THREADS];
	unsigned fds, spawner_fds, mounts;
	pid_t spawner;
	long total = 0;

	assert_still_serving();
	sp = fixture_connect(&fx);
	wait_quiet(sp, warm);
	spawner = find_spawner();
	ck_assert_int_gt(spawner, 0);
	fds = count_fds_of(fx.pid);
	spawner_fds = count_fds_of(spawner);
	mounts = count_lines("/proc/self/mountinfo");

	for (long i = 0; i < LEAK_THREADS; i++)
		ck_assert_int_eq(pthread_create(&th[i], NULL, leak_thread, NULL), 0);
	for (int i = 0; i < LEAK_THREADS; i++) {
		void *r;

		pthread_join(th[i], &r);
		total += (long)r;
	}
	ck_assert_int_eq(total, LEAK_RUNS);
	ck_assert_int_ge(fixture_stat(&fx, "shell", "created"), LEAK_RUNS);

	/* Back to the warm sandboxes alone: as many agents and groups as
	 * before, the same descriptors, no mount left on the host. */
	wait_quiet(sp, warm);
	ck_assert_uint_eq(count_lines("/proc/self/mountinfo"), mounts);
	for (int i = 0; i < 200 && (count_fds_of(fx.pid) != fds || count_fds_of(spawner) != spawner_fds); i++)
		usleep(10000);
	ck_assert_uint_eq(count_fds_of(fx.pid), fds);
	ck_assert_int_eq(find_spawner(), spawner);
	ck_assert_uint_eq(count_fds_of(spawner), spawner_fds);
	sandpool_close(sp);

	/* teardown checks what stopping leaves: no orphans, no groups. */
}
END_TEST

static Suite *escape_suite(void)
{
	Suite *s = suite_create("escape");
	TCase *tc = tcase_create("attacks");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_unchecked_fixture(tc, NULL, sweep_dead_fixtures);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_fork_bomb);
	tcase_add_test(tc, test_memory_bomb);
	tcase_add_test(tc, test_cpu_spin_timeout);
	tcase_add_test(tc, test_exec_timeout_kills_tree);
	tcase_add_test(tc, test_fill_workspace);
	tcase_add_test(tc, test_host_files_hidden);
	tcase_add_test(tc, test_cross_sandbox_signals);
	tcase_add_test(tc, test_host_network_unreachable);
	tcase_add_test(tc, test_usr_read_only);
	tcase_add_test(tc, test_mount_denied);
	tcase_add_test(tc, test_setuid_gains_nothing);
	tcase_add_test(tc, test_proc_sys_read_only);
	tcase_add_test(tc, test_no_user_namespace);
	tcase_add_test(tc, test_keyctl_denied);
	tcase_add_test(tc, test_no_leaks);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return run_suite(escape_suite());
}
