/*
 * Rootless mode (issue 3): sandpoold started as an unprivileged user (uid
 * and gid 61234, no supplementary group), the way someone without root
 * runs it. Each test starts such a daemon of its own and checks what
 * docs/SECURITY.md ("Rootless mode") promises: it starts and says loudly
 * which limits it cannot enforce; user code is uid 0 of its sandbox with
 * no capability and cannot reach the agent; a host file of root's, the
 * host's loopback and other sandboxes' processes stay out of reach;
 * RLIMIT_NPROC bounds a sandbox's processes; nothing is left after stop.
 *
 * Exits 77 (skipped) when the kernel forbids unprivileged user namespaces
 * or the test cannot become another user.
 */
#include "autoconfig.h"

#include <arpa/inet.h>
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon/log.h"
#include "ipc/codec.h"
#include "tests/harness.h"

/* An id with no account and not the overflow id (65534), so that neither
 * can pass for the other. */
#define USER_ID 61234
#define PIDS_MAX 32
#define LIMITS "memory = 64M\npids = 32\ncpus = 0.5\nworkspace_size = 8M\ntimeout = 10s\n"

static const char conf_fmt[] =
	"[template shell]\nlanguage = shell\nmin_warm = 2\nmax_warm = 2\nmax_total = 6\n" LIMITS
	"bind_ro = %s:/secret\n"
	"[template python]\nlanguage = python\nmin_warm = 1\nmax_warm = 1\nmax_total = 3\n" LIMITS;

/* As in the escape suite: raw calls through ctypes, results as key=value. */
static const char py_prelude[] =
	"import ctypes, errno, os, socket, sys\n"
	"libc = ctypes.CDLL(None, use_errno=True)\n"
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
/* A root-owned directory bound into the shell sandboxes, holding a 0600 file. */
static char secret_dir[64];

/* Since 5.14 the kernel counts RLIMIT_NPROC per user namespace, so the
 * daemon can bound a sandbox's processes without a pids cgroup. */
static bool nproc_per_namespace(void)
{
	struct utsname u;
	unsigned major = 0, minor = 0;

	return uname(&u) == 0 && sscanf(u.release, "%u.%u", &major, &minor) == 2 &&
	       (major > 5 || (major == 5 && minor >= 14));
}

static long read_sysctl(const char *path)
{
	FILE *f = fopen(path, "re");
	long v = -1;

	if (f) {
		if (fscanf(f, "%ld", &v) != 1)
			v = -1;
		fclose(f);
	}
	return v;
}

/* ---- running things ------------------------------------------------------ */

static void run_argv(const char *tmpl, const char *const *argv, struct sandpool_exec_result *res)
{
	struct sandpool *sp = fixture_connect(&fx);
	struct sandpool_exec_opts o = { .argv = argv };
	struct sandpool_error err;

	memset(res, 0, sizeof(*res));
	ck_assert_msg(sandpool_run(sp, tmpl, 20000, &o, res, &err) == 0, "run %s: %s", argv[0], err.message);
	sandpool_close(sp);
}

static void run_sh(const char *script, struct sandpool_exec_result *res)
{
	const char *argv[] = { "/bin/sh", "-c", script, NULL };

	run_argv("shell", argv, res);
}

/* py_prelude then script; free() it. */
static char *py_source(const char *script)
{
	size_t len = sizeof(py_prelude) + strlen(script);
	char *full = malloc(len);

	ck_assert_ptr_nonnull(full);
	snprintf(full, len, "%s%s", py_prelude, script);
	return full;
}

/* Runs the script in tmpl's sandbox of lease_id (NULL: a fresh one). */
static void py_in(struct sandpool *sp, const char *lease_id, const char *tmpl, const char *script,
		  struct sandpool_exec_result *res)
{
	char *src = py_source(script);
	const char *argv[] = { "python3", "-c", src, NULL };
	struct sandpool_exec_opts o = { .argv = argv };
	struct sandpool_error err;

	memset(res, 0, sizeof(*res));
	if (lease_id)
		ck_assert_msg(sandpool_exec(sp, lease_id, &o, res, &err) == 0, "exec: %s", err.message);
	else
		ck_assert_msg(sandpool_run(sp, tmpl, 20000, &o, res, &err) == 0, "run: %s", err.message);
	free(src);
}

static void exec_sh(struct sandpool *sp, const char *lease_id, const char *cmd,
		    struct sandpool_exec_result *res)
{
	struct sandpool_exec_opts o = { .cmd = cmd };
	struct sandpool_error err;

	memset(res, 0, sizeof(*res));
	ck_assert_msg(sandpool_exec(sp, lease_id, &o, res, &err) == 0, "exec %s: %s", cmd, err.message);
}

static void lease(struct sandpool *sp, const char *tmpl, struct sandpool_lease *l)
{
	struct sandpool_lease_opts lo = { .template_name = tmpl, .wait_ms = 20000 };
	struct sandpool_error err;

	memset(l, 0, sizeof(*l));
	ck_assert_msg(sandpool_lease(sp, &lo, l, &err) == 0, "lease %s: %s", tmpl, err.message);
}

#define ASSERT_OUT(res, needle)                                                                    \
	ck_assert_msg(strstr((res)->stdout_buf, needle) != NULL,                                   \
		      "expected \"%s\" in stdout:\n%s\nstderr:\n%s", needle, (res)->stdout_buf,     \
		      (res)->stderr_buf)
#define ASSERT_EXITED(res, code)                                                                   \
	ck_assert_msg((res)->has_exit_code && (res)->exit_code == (code),                          \
		      "expected exit %d, got %s %d\nstdout:\n%s\nstderr:\n%s", code,                 \
		      (res)->has_exit_code ? "exit" : "signal",                                      \
		      (res)->has_exit_code ? (res)->exit_code : (res)->signal, (res)->stdout_buf,     \
		      (res)->stderr_buf)

/* ---- what the host sees ----------------------------------------------- */

/* The first number of a "Key:" line of /proc/PID/status, or -1. */
static long status_number(pid_t pid, const char *key)
{
	char path[64], line[256];
	size_t kl = strlen(key);
	long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return -1;
	while (v < 0 && fgets(line, sizeof(line), f))
		if (!strncmp(line, key, kl) && line[kl] == ':')
			v = strtol(line + kl + 1, NULL, 10);
	fclose(f);
	return v;
}

/* The host pid of a process below the daemon whose argv is {"sleep", arg}. */
static pid_t find_sleep(const char *arg)
{
	char want[64];
	int wl = snprintf(want, sizeof(want), "sleep%c%s", '\0', arg) + 1;
	DIR *d = opendir("/proc");
	struct dirent *e;
	pid_t found = -1;

	ck_assert_ptr_nonnull(d);
	while (found < 0 && (e = readdir(d))) {
		char path[300], cmd[64];
		pid_t pid = (pid_t)atoi(e->d_name);
		ssize_t n;
		int fd;

		if (pid <= 0)
			continue;
		snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		n = read(fd, cmd, sizeof(cmd));
		close(fd);
		if (n == wl && !memcmp(cmd, want, (size_t)wl) && pid_descends_from(pid, fx.pid))
			found = pid;
	}
	closedir(d);
	return found;
}

/* The template's limits_unenforced from pool.stats, as "memory,cpus". */
static void unenforced(const char *tmpl, char *out, size_t len)
{
	struct sandpool *sp = fixture_connect(&fx);
	struct sandpool_reply *r = NULL;
	struct sandpool_error err;
	const msgpack_object_array *ts = NULL, *lim;
	size_t off = 0;

	out[0] = '\0';
	ck_assert_int_eq(sandpool_call(sp, "pool.stats", NULL, 0, NULL, NULL, &r, &err), 0);
	ck_assert_int_eq(ipc_get_array(r->result, "templates", &ts), 0);
	for (uint32_t i = 0; i < ts->size; i++) {
		const char *name;
		uint32_t nl;

		if (ipc_get_str(&ts->ptr[i], "name", &name, &nl) < 0 || nl != strlen(tmpl) || memcmp(name, tmpl, nl))
			continue;
		ck_assert_int_eq(ipc_get_array(&ts->ptr[i], "limits_unenforced", &lim), 0);
		for (uint32_t j = 0; j < lim->size; j++)
			off += (size_t)snprintf(out + off, len - off, "%s%.*s", j ? "," : "",
						(int)lim->ptr[j].via.str.size, lim->ptr[j].via.str.ptr);
	}
	sandpool_reply_free(r);
	sandpool_close(sp);
}

/* f's daemon log, NUL-terminated; free() it. */
static char *read_log(const struct fixture *fix)
{
	FILE *f = fopen(fix->log, "re");
	char *buf = calloc(1, 1 << 20);
	size_t n;

	ck_assert_ptr_nonnull(f);
	ck_assert_ptr_nonnull(buf);
	n = fread(buf, 1, (1 << 20) - 1, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

/* ---- fixture ------------------------------------------------------------ */

static void setup(void)
{
	char conf[1024], path[128];
	int fd;

	/* Root's directory, open to all; root's file, open to root alone. */
	snprintf(secret_dir, sizeof(secret_dir), "/tmp/sandpool-rootless-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(secret_dir));
	ck_assert_int_eq(chmod(secret_dir, 0755), 0);
	snprintf(path, sizeof(path), "%s/secret", secret_dir);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, "TOPSECRET\n", 10), 10);
	close(fd);

	snprintf(conf, sizeof(conf), conf_fmt, secret_dir);
	fixture_prepare_as(&fx, conf, USER_ID, USER_ID);
	fixture_spawn_as(&fx, USER_ID, USER_ID);
	fixture_wait_socket(&fx);
	ck_assert(fixture_wait_warm(&fx, "shell", 2, 30000));
	ck_assert(fixture_wait_warm(&fx, "python", 1, 30000));
}

static void teardown(void)
{
	char cmd[128];

	/* Exit status 0, and no process left: the sandboxes' were the daemon's
	 * uid, so nothing but their namespaces could have ended them. */
	fixture_finish(&fx);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", secret_dir);
	ck_assert_int_eq(system(cmd), 0);
}

/* ---- the tests ------------------------------------------------------------ */

START_TEST(test_starts_and_reports)
{
	const bool nproc = nproc_per_namespace();
	char *log = read_log(&fx), got[64], cmd[700];
	const char *tmpl[] = { "shell", "python" };
	FILE *p;
	size_t n;

	ck_assert_msg(strstr(log, "warn: ROOTLESS (running as uid 61234)"), "no rootless warning:\n%s", log);
	for (size_t i = 0; i < ARRAY_SIZE(tmpl); i++) {
		char want[128], line[2048];
		const char *at;

		/* One warning line per template, every limit on it. */
		snprintf(want, sizeof(want), "warn: template %s: limits: ", tmpl[i]);
		at = strstr(log, want);
		ck_assert_msg(at, "no \"%s\" in the log:\n%s", want, log);
		snprintf(line, sizeof(line), "%.*s", (int)strcspn(at, "\n"), at);
		ck_assert_msg(strstr(line, "memory = 64M NOT ENFORCED ("), "%s", line);
		ck_assert_msg(strstr(line, "cpus = 0.5 NOT ENFORCED ("), "%s", line);
		ck_assert_msg(strstr(line, nproc ? "pids = 32 only by RLIMIT_NPROC" : "pids = 32 NOT ENFORCED ("),
			      "%s", line);

		unenforced(tmpl[i], got, sizeof(got));
		ck_assert_str_eq(got, nproc ? "memory,cpus" : "memory,pids,cpus");
	}
	free(log);

	/* sandpool status shows it too. */
	snprintf(cmd, sizeof(cmd), "%s/sandpool --socket %s status", builddir(), fx.sock);
	p = popen(cmd, "r");
	ck_assert_ptr_nonnull(p);
	log = calloc(1, 65536);
	ck_assert_ptr_nonnull(log);
	n = fread(log, 1, 65535, p);
	log[n] = '\0';
	ck_assert_int_eq(pclose(p), 0);
	ck_assert_msg(strstr(log, nproc ? "limits NOT ENFORCED (the daemon's log says why): shell (memory, cpus); "
					  "python (memory, cpus)\n"
					: "limits NOT ENFORCED (the daemon's log says why): shell (memory, pids, cpus); "
					  "python (memory, pids, cpus)\n"),
		      "sandpool status:\n%s", log);
	free(log);
}
END_TEST

START_TEST(test_inner_root_without_capabilities)
{
	static const char script[] =
		"id -u; id -g\n"
		"grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp):' /proc/self/status\n"
		"sleep 301 </dev/null >/dev/null 2>&1 &\n"
		"echo spawned\n";
	/* The agent (PID 1) has this very uid. What keeps its memory,
	 * descriptors and root out of reach is that it holds capabilities
	 * (in the sandbox's namespace) and user code none: a process may only
	 * inspect one whose capabilities it has too. Signals from inside do
	 * not reach a PID 1 that does not handle them. */
	static const char py_agent[] =
		"say('environ', oserr(lambda: open('/proc/1/environ').read()))\n"
		"say('mem', oserr(lambda: open('/proc/1/mem', 'rb')))\n"
		"say('fd', oserr(os.readlink, '/proc/1/fd/3'))\n"
		"say('root', oserr(os.listdir, '/proc/1/root/'))\n"
		"say('kill9', oserr(os.kill, 1, 9))\n"
		"say('term', oserr(os.kill, 1, 15))\n"
		"say('mount', err(libc.mount(b'none', b'/tmp', b'tmpfs', 0, None)))\n"
		"say('setuid', oserr(os.setuid, 1))\n";
	struct sandpool *sp = fixture_connect(&fx);
	struct sandpool_exec_result res;
	struct sandpool_lease l;
	struct sandpool_error err;
	pid_t agent, sleeper = -1;

	lease(sp, "shell", &l);
	exec_sh(sp, l.lease_id, script, &res);
	ASSERT_EXITED(&res, 0);
	ck_assert_msg(!strncmp(res.stdout_buf, "0\n0\n", 4), "id:\n%s", res.stdout_buf);
	ASSERT_OUT(&res, "CapInh:\t0000000000000000\n");
	ASSERT_OUT(&res, "CapPrm:\t0000000000000000\n");
	ASSERT_OUT(&res, "CapEff:\t0000000000000000\n");
	ASSERT_OUT(&res, "CapBnd:\t0000000000000000\n");
	ASSERT_OUT(&res, "CapAmb:\t0000000000000000\n");
	ASSERT_OUT(&res, "NoNewPrivs:\t1\n");
	ASSERT_OUT(&res, "Seccomp:\t2\n");
	sandpool_exec_result_free(&res);

	/* On the host, the agent and user code are the daemon's uid. */
	for (int i = 0; i < 200 && (sleeper = find_sleep("301")) < 0; i++)
		usleep(10000);
	ck_assert_int_gt(sleeper, 0);
	ck_assert_int_eq(status_number(sleeper, "Uid"), USER_ID);
	ck_assert_int_eq(status_number(sleeper, "Gid"), USER_ID);
	agent = find_agent(&fx);
	ck_assert_int_gt(agent, 0);
	ck_assert_int_eq(status_number(agent, "Uid"), USER_ID);

	py_in(sp, l.lease_id, NULL, py_agent, &res);
	ASSERT_EXITED(&res, 0);
	ASSERT_OUT(&res, "environ=EACCES\n");
	ASSERT_OUT(&res, "mem=EACCES\n");
	ASSERT_OUT(&res, "fd=EACCES\n");
	ASSERT_OUT(&res, "root=EACCES\n");
	ASSERT_OUT(&res, "kill9=ok\n");
	ASSERT_OUT(&res, "term=ok\n");
	ASSERT_OUT(&res, "mount=EPERM\n");
	ASSERT_OUT(&res, "setuid=EINVAL\n");
	sandpool_exec_result_free(&res);

	/* The agent shrugged both signals off: the lease still serves. */
	exec_sh(sp, l.lease_id, "echo alive", &res);
	ck_assert_str_eq(res.stdout_buf, "alive\n");
	sandpool_exec_result_free(&res);
	ck_assert_int_eq(sandpool_release(sp, l.lease_id, &err), 0);
	sandpool_lease_free(&l);
	sandpool_close(sp);
}
END_TEST

START_TEST(test_python)
{
	const char *argv[] = { "python3", "-c", "print(6*7)", NULL };
	struct sandpool *sp = fixture_connect(&fx);
	struct sandpool_code_opts co = { .code = "x = 6\nx * 7" };
	struct sandpool_exec_result res;
	struct sandpool_execution ex;
	struct sandpool_file_data fd;
	struct sandpool_lease l;
	struct sandpool_error err;

	run_argv("python", argv, &res);
	ASSERT_EXITED(&res, 0);
	ck_assert_str_eq(res.stdout_buf, "42\n");
	sandpool_exec_result_free(&res);

	/* A context (its driver) and a file helper drop as an exec does. */
	lease(sp, "python", &l);
	memset(&ex, 0, sizeof(ex));
	ck_assert_msg(sandpool_code_run(sp, l.lease_id, &co, &ex, &err) == 0, "code.run: %s", err.message);
	ck_assert_ptr_null(ex.error_name);
	ck_assert_ptr_nonnull(ex.text);
	ck_assert_str_eq(ex.text, "42");
	sandpool_execution_free(&ex);
	ck_assert_msg(sandpool_file_write(sp, l.lease_id, "answer.txt", "42\n", 3, 0, false, &err) == 0, "write: %s",
		      err.message);
	memset(&fd, 0, sizeof(fd));
	ck_assert_msg(sandpool_file_read(sp, l.lease_id, "/workspace/answer.txt", 0, 0, &fd, &err) == 0, "read: %s",
		      err.message);
	ck_assert_str_eq(fd.data, "42\n");
	sandpool_file_data_free(&fd);
	ck_assert_int_eq(sandpool_release(sp, l.lease_id, &err), 0);
	sandpool_lease_free(&l);
	sandpool_close(sp);
}
END_TEST

START_TEST(test_host_file_unreadable)
{
	/* The file is there (bound read-only) and belongs to an id the
	 * sandbox does not map; uid 0 inside has no capability to override
	 * that, and root of the host is not it. */
	static const char script[] =
		"st = os.stat('/secret/secret')\n"
		"say('owner', st.st_uid)\n"
		"say('mode', oct(st.st_mode & 0o777))\n"
		"say('read', oserr(lambda: open('/secret/secret').read()))\n"
		"say('chmod', oserr(os.chmod, '/secret/secret', 0o644))\n"
		"say('shadow', oserr(os.stat, '/etc/shadow'))\n";
	struct sandpool *sp = fixture_connect(&fx);
	struct sandpool_exec_result res;

	py_in(sp, NULL, "shell", script, &res);
	ASSERT_EXITED(&res, 0);
	ASSERT_OUT(&res, "owner=65534\n");
	ASSERT_OUT(&res, "mode=0o600\n");
	ASSERT_OUT(&res, "read=EACCES\n");
	ASSERT_OUT(&res, "chmod=EROFS\n");
	ASSERT_OUT(&res, "shadow=ENOENT\n");
	ck_assert_ptr_null(strstr(res.stdout_buf, "TOPSECRET"));
	sandpool_exec_result_free(&res);

	run_sh("cat /secret/secret; echo rc=$?", &res);
	ASSERT_OUT(&res, "rc=1\n");
	ck_assert_msg(strstr(res.stderr_buf, "Permission denied"), "stderr:\n%s", res.stderr_buf);
	ck_assert_ptr_null(strstr(res.stdout_buf, "TOPSECRET"));
	sandpool_exec_result_free(&res);
	sandpool_close(sp);
}
END_TEST

START_TEST(test_host_loopback_unreachable)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sin);
	int tcp = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	struct sandpool *sp = fixture_connect(&fx);
	struct sandpool_exec_result res;
	char script[512];

	ck_assert_int_ge(tcp, 0);
	ck_assert_int_eq(bind(tcp, (struct sockaddr *)&sin, sizeof(sin)), 0);
	ck_assert_int_eq(listen(tcp, 8), 0);
	ck_assert_int_eq(getsockname(tcp, (struct sockaddr *)&sin, &sl), 0);
	snprintf(script, sizeof(script),
		 "s = socket.socket()\n"
		 "s.settimeout(3)\n"
		 "say('tcp', oserr(s.connect, ('127.0.0.1', %u)))\n"
		 "say('ifaces', ','.join(n for i, n in socket.if_nameindex()))\n",
		 (unsigned)ntohs(sin.sin_port));
	py_in(sp, NULL, "shell", script, &res);
	ASSERT_EXITED(&res, 0);
	ASSERT_OUT(&res, "tcp=ECONNREFUSED\n");
	ASSERT_OUT(&res, "ifaces=lo\n");
	sandpool_exec_result_free(&res);
	ck_assert_int_lt(accept(tcp, NULL, NULL), 0);
	ck_assert_int_eq(errno, EAGAIN);
	close(tcp);
	sandpool_close(sp);
}
END_TEST

START_TEST(test_sandboxes_apart)
{
	struct sandpool *sp = fixture_connect(&fx);
	struct sandpool_lease a, b;
	struct sandpool_exec_result res;
	struct sandpool_error err;
	char script[1024];
	pid_t a_inner, a_host = -1;

	lease(sp, "shell", &a);
	exec_sh(sp, a.lease_id, "sleep 302 </dev/null >/dev/null 2>&1 & echo $!", &res);
	a_inner = (pid_t)atoi(res.stdout_buf);
	ck_assert_int_gt(a_inner, 1);
	sandpool_exec_result_free(&res);
	for (int i = 0; i < 200 && (a_host = find_sleep("302")) < 0; i++)
		usleep(10000);
	ck_assert_int_gt(a_host, 0);

	/* B sees its own processes only, and can name none of A's: the same
	 * uid, so only the PID namespace stands between them. */
	lease(sp, "shell", &b);
	snprintf(script, sizeof(script),
		 "mine = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\n"
		 "say('pids', ','.join(map(str, mine)))\n"
		 "others = [p for p in mine if p != os.getpid()]\n"
		 "say('sleep', any(b'sleep' in open('/proc/%%d/cmdline' %% p, 'rb').read() for p in others))\n"
		 "for tag, pid in (('host', %d), ('inner', %d)):\n"
		 "    if pid in mine:\n"
		 "        say(tag, 'mine')\n"
		 "        continue\n"
		 "    say(tag + '_kill', err(libc.kill(pid, 9)))\n"
		 "say('kill_all', err(libc.kill(-1, 9)))\n",
		 (int)a_host, (int)a_inner);
	py_in(sp, b.lease_id, NULL, script, &res);
	ASSERT_EXITED(&res, 0);
	/* The agent and this python: nothing else. */
	ASSERT_OUT(&res, "pids=1,2\n");
	ASSERT_OUT(&res, "sleep=False\n");
	ASSERT_OUT(&res, "host_kill=ESRCH\n");
	ASSERT_OUT(&res, "inner_kill=ESRCH\n");
	ASSERT_OUT(&res, "kill_all=ESRCH\n");
	sandpool_exec_result_free(&res);

	/* A's sleep lived through it, and both sandboxes are the same host uid. */
	ck_assert_int_eq(kill(a_host, 0), 0);
	ck_assert_int_eq(find_sleep("302"), a_host);
	ck_assert_int_eq(status_number(a_host, "Uid"), USER_ID);
	ck_assert_int_eq(sandpool_release(sp, a.lease_id, &err), 0);
	ck_assert_int_eq(sandpool_release(sp, b.lease_id, &err), 0);
	sandpool_lease_free(&a);
	sandpool_lease_free(&b);
	/* Destroying A took its sleep: PID 1 of its namespace died. */
	for (int i = 0; i < 300 && kill(a_host, 0) == 0; i++)
		usleep(10000);
	ck_assert_int_eq(find_sleep("302"), -1);
	sandpool_close(sp);
}
END_TEST

START_TEST(test_fork_bounded)
{
	static const char script[] = "import time\n"
				     "n = 0\n"
				     "while True:\n"
				     "    try:\n"
				     "        if os.fork() == 0:\n"
				     "            time.sleep(100)\n"
				     "            os._exit(0)\n"
				     "        n += 1\n"
				     "    except OSError as e:\n"
				     "        say('fork', errno.errorcode[e.errno])\n"
				     "        say('after', n)\n"
				     "        sys.exit(1)\n";
	struct sandpool *sp = fixture_connect(&fx);
	struct sandpool_exec_result res;
	const char *argv[] = { "echo", "ok", NULL };

	if (!nproc_per_namespace()) {
		fprintf(stderr, "check_rootless: this kernel counts RLIMIT_NPROC per host uid; pids is not "
				"bounded rootless, nothing to test\n");
		sandpool_close(sp);
		return;
	}
	py_in(sp, NULL, "shell", script, &res);
	ASSERT_EXITED(&res, 1);
	ASSERT_OUT(&res, "fork=EAGAIN\n");
	/* The agent and python count too: fewer than pids forks. */
	ck_assert_int_lt(strtol(strstr(res.stdout_buf, "after=") + 6, NULL, 10), PIDS_MAX);
	ck_assert_int_gt(strtol(strstr(res.stdout_buf, "after=") + 6, NULL, 10), PIDS_MAX / 2);
	sandpool_exec_result_free(&res);

	/* Other sandboxes share the uid but not the count. */
	run_argv("shell", argv, &res);
	ck_assert_str_eq(res.stdout_buf, "ok\n");
	sandpool_exec_result_free(&res);
	sandpool_close(sp);
}
END_TEST

/* ---- start-ups that must be refused ------------------------------------ */

/* Waits for a daemon that must stop during start-up; its exit status. */
static int wait_refused(struct fixture *f)
{
	int status;

	for (int i = 0; i < 1000; i++) {
		if (waitpid(f->pid, &status, WNOHANG) == f->pid) {
			f->pid = 0;
			return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
		}
		usleep(10000);
	}
	fixture_dump_log(f);
	ck_abort_msg("sandpoold did not stop");
	return -1;
}

static void assert_log_has(const struct fixture *f, const char *needle)
{
	char *log = read_log(f);

	ck_assert_msg(strstr(log, needle), "no \"%s\" in the log:\n%s", needle, log);
	free(log);
}

START_TEST(test_foreign_state_dir)
{
	/* A state dir made by someone else (as /tmp/sandpool-UID could be),
	 * open to us so that we would use it: whoever owns it could swap our
	 * lock or socket. */
	struct fixture f;
	char state[400];

	fixture_prepare_as(&f, "[template shell]\nmin_warm = 0\n", USER_ID, USER_ID);
	snprintf(state, sizeof(state), "%s/state", f.dir);
	ck_assert_int_eq(mkdir(state, 0777), 0);
	ck_assert_int_eq(chmod(state, 0777), 0);
	ck_assert_int_eq(chown(state, 4321, 4321), 0);
	fixture_spawn_as(&f, USER_ID, USER_ID);
	ck_assert_int_eq(wait_refused(&f), 1);
	assert_log_has(&f, "belongs to uid 4321 with mode 0777: it must be ours");
	ck_assert_uint_eq(count_orphans(), 0);
	fixture_cleanup(&f);
}
END_TEST

/* In the daemon's child: root, but with CAP_SETUID and CAP_SETGID out
 * of the bounding set, so that execve does not grant them back. */
static void drop_setid_caps(void *arg)
{
	(void)arg;
	if (prctl(PR_CAPBSET_DROP, CAP_SETUID, 0, 0, 0) < 0 || prctl(PR_CAPBSET_DROP, CAP_SETGID, 0, 0, 0) < 0)
		_exit(125);
}

START_TEST(test_root_without_setid_refused)
{
	/* Rootless as the host's root would map every sandbox to uid 0. */
	struct fixture f;

	fixture_prepare(&f, "[template shell]\nmin_warm = 0\n");
	fixture_spawn(&f, drop_setid_caps, NULL);
	ck_assert_int_eq(wait_refused(&f), 1);
	assert_log_has(&f, "running as root without CAP_SETUID and CAP_SETGID: rootless, every sandbox would "
			   "run as the host's root");
	ck_assert_uint_eq(count_orphans(), 0);
	fixture_cleanup(&f);
}
END_TEST

static Suite *rootless_suite(void)
{
	Suite *s = suite_create("rootless");
	TCase *tc = tcase_create("rootless");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 90);
	tcase_add_test(tc, test_starts_and_reports);
	tcase_add_test(tc, test_inner_root_without_capabilities);
	tcase_add_test(tc, test_python);
	tcase_add_test(tc, test_host_file_unreadable);
	tcase_add_test(tc, test_host_loopback_unreachable);
	tcase_add_test(tc, test_sandboxes_apart);
	tcase_add_test(tc, test_fork_bounded);
	suite_add_tcase(s, tc);
	tc = tcase_create("refused");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_foreign_state_dir);
	tcase_add_test(tc, test_root_without_setid_refused);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	if (geteuid() != 0) {
		fprintf(stderr, "check_rootless: SKIP: run as root, to start the daemon as uid %d\n", USER_ID);
		return 77;
	}
	if (read_sysctl("/proc/sys/kernel/unprivileged_userns_clone") == 0 ||
	    read_sysctl("/proc/sys/user/max_user_namespaces") == 0) {
		fprintf(stderr, "check_rootless: SKIP: this kernel forbids unprivileged user namespaces "
				"(kernel.unprivileged_userns_clone or user.max_user_namespaces is 0)\n");
		return 77;
	}
	return run_suite(rootless_suite());
}
