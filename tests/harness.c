#include "autoconfig.h"

#include "tests/harness.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ipc/codec.h"

const char *builddir(void)
{
	const char *b = getenv("SANDPOOL_BUILDDIR");

	return b ? b : ".";
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static void make_dir(struct fixture *f)
{
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	snprintf(f->dir, sizeof(f->dir), "/tmp/sandpool-test-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(f->dir));
	chmod(f->dir, 0755);
	snprintf(f->sock, sizeof(f->sock), "%s/sock", f->dir);
	snprintf(f->conf, sizeof(f->conf), "%s/sandpoold.conf", f->dir);
	snprintf(f->log, sizeof(f->log), "%s/daemon.log", f->dir);
	snprintf(f->ledger, sizeof(f->ledger), "%s/ledger.db", f->dir);
}

static void write_conf(struct fixture *f, const char *templates_conf, const char *agent)
{
	FILE *cf = fopen(f->conf, "w");

	ck_assert_ptr_nonnull(cf);
	fprintf(cf, "[daemon]\nsocket = %s\nstate_dir = %s/state\nagent_path = %s\nlog_level = debug\n",
		f->sock, f->dir, agent);
	if (!strstr(templates_conf, "ledger_path"))
		fprintf(cf, "ledger_path = %s\n", f->ledger);
	fputs(templates_conf, cf);
	fclose(cf);
}

void fixture_prepare(struct fixture *f, const char *templates_conf)
{
	char agent[512];

	make_dir(f);
	snprintf(agent, sizeof(agent), "%s/sandpool-agent", builddir());
	write_conf(f, templates_conf, agent);
}

static void copy_exe(const char *name, const char *to_dir)
{
	char src[512], dst[512], buf[65536];
	int in, out;
	ssize_t n;

	snprintf(src, sizeof(src), "%s/%s", builddir(), name);
	snprintf(dst, sizeof(dst), "%s/%s", to_dir, name);
	in = open(src, O_RDONLY | O_CLOEXEC);
	ck_assert_msg(in >= 0, "open %s: %s", src, strerror(errno));
	out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0755);
	ck_assert_msg(out >= 0, "create %s: %s", dst, strerror(errno));
	while ((n = read(in, buf, sizeof(buf))) > 0)
		ck_assert_int_eq(write(out, buf, (size_t)n), n);
	ck_assert_int_eq(n, 0);
	close(in);
	close(out);
}

void fixture_prepare_as(struct fixture *f, const char *templates_conf, uid_t uid, gid_t gid)
{
	char bin[320], agent[400];

	make_dir(f);
	snprintf(bin, sizeof(bin), "%s/bin", f->dir);
	ck_assert_int_eq(mkdir(bin, 0755), 0);
	copy_exe("sandpoold", bin);
	copy_exe("sandpool-agent", bin);
	snprintf(agent, sizeof(agent), "%s/sandpool-agent", bin);
	write_conf(f, templates_conf, agent);
	ck_assert_int_eq(chown(f->dir, uid, gid), 0);
	ck_assert_int_eq(chown(bin, uid, gid), 0);
}

static void spawn_exe(struct fixture *f, const char *exe, void (*in_child)(void *arg), void *arg)
{
	f->pid = fork();
	ck_assert_int_ge(f->pid, 0);
	if (f->pid == 0) {
		int fd = open(f->log, O_WRONLY | O_CREAT | O_APPEND, 0644);

		dup2(fd, STDERR_FILENO);
		if (in_child)
			in_child(arg);
		execl(exe, "sandpoold", "--foreground", "--config", f->conf, (char *)NULL);
		_exit(127);
	}
}

void fixture_spawn(struct fixture *f, void (*in_child)(void *arg), void *arg)
{
	char exe[512];

	snprintf(exe, sizeof(exe), "%s/sandpoold", builddir());
	spawn_exe(f, exe, in_child, arg);
}

struct ids {
	uid_t uid;
	gid_t gid;
};

/* In the daemon's child, before exec: no groups, then the ids. */
static void drop_to(void *arg)
{
	const struct ids *ids = arg;

	if (setgroups(0, NULL) < 0 || setresgid(ids->gid, ids->gid, ids->gid) < 0 ||
	    setresuid(ids->uid, ids->uid, ids->uid) < 0) {
		fprintf(stderr, "drop to %u:%u: %s\n", (unsigned)ids->uid, (unsigned)ids->gid, strerror(errno));
		_exit(126);
	}
}

void fixture_spawn_as(struct fixture *f, uid_t uid, gid_t gid)
{
	struct ids ids = { uid, gid };
	char exe[400];

	snprintf(exe, sizeof(exe), "%s/bin/sandpoold", f->dir);
	spawn_exe(f, exe, drop_to, &ids);
}

void fixture_wait_socket(struct fixture *f)
{
	for (int i = 0; i < 500; i++) {
		struct stat st;
		int status;

		if (stat(f->sock, &st) == 0)
			return;
		if (waitpid(f->pid, &status, WNOHANG) == f->pid) {
			fixture_dump_log(f);
			ck_abort_msg("sandpoold exited during start-up (status %d)", status);
		}
		sleep_ms(10);
	}
	fixture_dump_log(f);
	ck_abort_msg("sandpoold did not create its socket");
}

void fixture_start(struct fixture *f, const char *templates_conf)
{
	fixture_prepare(f, templates_conf);
	fixture_spawn(f, NULL, NULL);
	fixture_wait_socket(f);
}

int fixture_stop(struct fixture *f)
{
	int status;

	if (f->pid <= 0)
		return -1;
	kill(f->pid, SIGTERM);
	for (int i = 0; i < 1500; i++) {
		if (waitpid(f->pid, &status, WNOHANG) == f->pid) {
			f->pid = 0;
			return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
		}
		sleep_ms(10);
	}
	kill(f->pid, SIGKILL);
	waitpid(f->pid, &status, 0);
	f->pid = 0;
	return -1;
}

void fixture_cleanup(struct fixture *f)
{
	char cmd[400];

	if (f->pid > 0)
		fixture_stop(f);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", f->dir);
}

void fixture_finish(struct fixture *f)
{
	if (f->pid > 0) {
		int rc = fixture_stop(f);

		if (rc != 0)
			fixture_dump_log(f);
		ck_assert_int_eq(rc, 0);
	}
	ck_assert_uint_eq(count_orphans(), 0);
	fixture_cleanup(f);
}

int run_suite(Suite *s)
{
	SRunner *sr = srunner_create(s);
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}

void fixture_dump_log(const struct fixture *f)
{
	char buf[4096];
	FILE *lf = fopen(f->log, "r");
	size_t n;

	if (!lf)
		return;
	fprintf(stderr, "---- %s ----\n", f->log);
	while ((n = fread(buf, 1, sizeof(buf), lf)) > 0)
		fwrite(buf, 1, n, stderr);
	fclose(lf);
}

struct sandpool *fixture_connect(const struct fixture *f)
{
	struct sandpool_error err;
	struct sandpool *sp = sandpool_connect(f->sock, &err);

	ck_assert_msg(sp != NULL, "connect %s: %s", f->sock, err.message);
	sandpool_set_timeout_ms(sp, 60000);
	return sp;
}

long long fixture_stat(const struct fixture *f, const char *tmpl, const char *field)
{
	struct sandpool *sp = fixture_connect(f);
	struct sandpool_reply *r = NULL;
	struct sandpool_error err;
	const msgpack_object_array *ts = NULL;
	long long v = -1;

	ck_assert_int_eq(sandpool_call(sp, "pool.stats", NULL, 0, NULL, NULL, &r, &err), 0);
	ck_assert_int_eq(ipc_get_array(r->result, "templates", &ts), 0);
	for (uint32_t i = 0; i < ts->size; i++) {
		const char *name;
		uint32_t len;
		uint64_t u;

		if (ipc_get_str(&ts->ptr[i], "name", &name, &len) == 0 && strlen(tmpl) == len &&
		    !memcmp(name, tmpl, len) && ipc_get_uint(&ts->ptr[i], field, &u) == 0)
			v = (long long)u;
	}
	sandpool_reply_free(r);
	sandpool_close(sp);
	return v;
}

bool fixture_wait_warm(const struct fixture *f, const char *tmpl, unsigned n, int timeout_ms)
{
	for (int waited = 0; waited < timeout_ms; waited += 10) {
		if (fixture_stat(f, tmpl, "warm") >= (long long)n)
			return true;
		sleep_ms(10);
	}
	return false;
}

static unsigned scan_proc(bool (*match)(const char *pid, const void *arg), const void *arg)
{
	DIR *d = opendir("/proc");
	struct dirent *e;
	unsigned n = 0;

	if (!d)
		return 0;
	while ((e = readdir(d)))
		if (e->d_name[0] >= '1' && e->d_name[0] <= '9' && match(e->d_name, arg))
			n++;
	closedir(d);
	return n;
}

static bool is_orphan(const char *pid, const void *arg)
{
	char path[300], buf[512];
	FILE *fp;
	int ppid = -1;
	char *rp;

	snprintf(path, sizeof(path), "/proc/%s/stat", pid);
	fp = fopen(path, "r");
	if (!fp)
		return false;
	if (fgets(buf, sizeof(buf), fp) && (rp = strrchr(buf, ')')))
		sscanf(rp + 2, "%*c %d", &ppid);
	fclose(fp);
	return ppid == getpid();
}

static bool has_comm(const char *pid, const void *arg)
{
	char path[300], buf[64] = "";
	FILE *fp;

	snprintf(path, sizeof(path), "/proc/%s/comm", pid);
	fp = fopen(path, "r");
	if (!fp)
		return false;
	if (!fgets(buf, sizeof(buf), fp))
		buf[0] = '\0';
	fclose(fp);
	buf[strcspn(buf, "\n")] = '\0';
	return strcmp(buf, arg) == 0;
}

unsigned count_orphans(void)
{
	unsigned n = 0;

	/* Leftovers die asynchronously (a death signal, a namespace being
	 * torn down): give them two seconds, reaping as they go. */
	for (int i = 0; i < 200; i++) {
		while (waitpid(-1, NULL, WNOHANG) > 0)
			;
		n = scan_proc(is_orphan, NULL);
		if (n == 0)
			break;
		sleep_ms(10);
	}
	return n;
}

static pid_t parent_of(pid_t pid)
{
	char path[64], buf[512];
	FILE *fp;
	int ppid = -1;
	char *rp;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fp = fopen(path, "r");
	if (!fp)
		return -1;
	if (fgets(buf, sizeof(buf), fp) && (rp = strrchr(buf, ')')))
		sscanf(rp + 2, "%*c %d", &ppid);
	fclose(fp);
	return ppid;
}

bool pid_descends_from(pid_t pid, pid_t ancestor)
{
	pid_t p = pid;

	for (int depth = 0; p > 1 && depth < 64; depth++) {
		p = parent_of(p);
		if (p == ancestor)
			return true;
	}
	return false;
}

static bool descends_named(const char *pid, const void *arg)
{
	const struct fixture *f = arg;

	return has_comm(pid, "sandpool-agent") && pid_descends_from((pid_t)atoi(pid), f->pid);
}

unsigned count_agents(const struct fixture *f)
{
	return scan_proc(descends_named, f);
}

pid_t find_agent(const struct fixture *f)
{
	DIR *d = opendir("/proc");
	struct dirent *e;
	pid_t found = -1;

	if (!d)
		return -1;
	while (found < 0 && (e = readdir(d)))
		if (e->d_name[0] >= '1' && e->d_name[0] <= '9' && descends_named(e->d_name, f))
			found = (pid_t)atoi(e->d_name);
	closedir(d);
	return found;
}

unsigned count_open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	unsigned n = 0;

	if (!d)
		return 0;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1; /* the DIR's own fd */
}
