#include "autoconfig.h"

#include "bench/bench.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ipc/codec.h"

/* --- time and failure ------------------------------------------------------ */

uint64_t bench_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void bench_sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

void bench_die(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fprintf(stderr, "bench: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

/* --- samples --------------------------------------------------------------- */

void samples_add(struct bench_samples *s, uint64_t v)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 1024;
		uint64_t *nv = realloc(s->v, cap * sizeof(*nv));

		if (!nv)
			bench_die("out of memory");
		s->v = nv;
		s->cap = cap;
	}
	s->v[s->n++] = v;
	s->sorted = false;
}

void samples_merge(struct bench_samples *dst, const struct bench_samples *src)
{
	for (size_t i = 0; i < src->n; i++)
		samples_add(dst, src->v[i]);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

double samples_pct(struct bench_samples *s, double p)
{
	size_t rank;

	if (!s->n)
		return 0;
	if (!s->sorted) {
		qsort(s->v, s->n, sizeof(s->v[0]), cmp_u64);
		s->sorted = true;
	}
	/* Nearest rank: the smallest sample with at least p% at or below it. */
	rank = (size_t)((p / 100.0) * (double)s->n + 0.999999);
	if (rank < 1)
		rank = 1;
	if (rank > s->n)
		rank = s->n;
	return (double)s->v[rank - 1];
}

double samples_mean(const struct bench_samples *s)
{
	double sum = 0;

	for (size_t i = 0; i < s->n; i++)
		sum += (double)s->v[i];
	return s->n ? sum / (double)s->n : 0;
}

void samples_free(struct bench_samples *s)
{
	free(s->v);
	memset(s, 0, sizeof(*s));
}

const char *bench_fmt_us(double us)
{
	/* A few formatted values live at once in one printf. */
	static __thread char ring[8][32];
	static __thread unsigned next;
	char *b = ring[next++ % 8];

	if (us < 1000)
		snprintf(b, 32, "%.3g µs", us);
	else if (us < 1e6)
		snprintf(b, 32, "%.3g ms", us / 1e3);
	else
		snprintf(b, 32, "%.3g s", us / 1e6);
	return b;
}

/* --- output ---------------------------------------------------------------- */

static void read_line(const char *path, const char *prefix, char *out, size_t len)
{
	FILE *f = fopen(path, "re");
	char line[512];

	snprintf(out, len, "?");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		if (prefix && strncmp(line, prefix, strlen(prefix)))
			continue;
		char *v = prefix ? strchr(line, ':') : line;

		if (!v)
			continue;
		v += prefix ? 1 : 0;
		v += strspn(v, " \t");
		v[strcspn(v, "\n")] = '\0';
		snprintf(out, len, "%s", v);
		break;
	}
	fclose(f);
}

static int cgroup_version(void)
{
	struct stat st;

	return stat("/sys/fs/cgroup/cgroup.controllers", &st) == 0 ? 2 : 1;
}

void bench_section(const char *title, int argc, char **argv)
{
	char cpu[256], load[128];
	struct utsname u;

	read_line("/proc/cpuinfo", "model name", cpu, sizeof(cpu));
	read_line("/proc/loadavg", NULL, load, sizeof(load));
	uname(&u);
	printf("## %s\n\n", title);
	load[strcspn(load, "/")] = '\0';
	if (strrchr(load, ' '))
		*strrchr(load, ' ') = '\0';
	printf("Machine: %s, %ld CPUs, Linux %s, cgroup v%d; load average (1, 5, 15 min) at start: "
	       "%s.\n",
	       cpu, sysconf(_SC_NPROCESSORS_ONLN), u.release, cgroup_version(), load);
	printf("Command: `");
	for (int i = 0; i < argc; i++) {
		const char *slash = i == 0 ? strrchr(argv[0], '/') : NULL;

		/* The program as run from the build tree, not its libtool path. */
		printf("%s%s", i ? " " : "", slash ? slash + 1 : argv[i]);
	}
	printf("` (in the build tree, `bench/`)\n\n");
	fflush(stdout);
}

void bench_print_block(const char *label, const char *text)
{
	size_t n = strlen(text);

	printf("%s\n\n```\n%s%s```\n\n", label, text, n && text[n - 1] == '\n' ? "" : "\n");
}

const char *bench_verdict(bool met)
{
	return met ? "met" : "MISSED";
}

/* --- the daemon ------------------------------------------------------------ */

/* Absolute: the daemon's config wants absolute paths. */
static const char *builddir(void)
{
	static char dir[PATH_MAX];
	const char *b = getenv("SANDPOOL_BUILDDIR");

	if (!dir[0] && !realpath(b && *b ? b : ".", dir))
		bench_die("build dir %s: %s", b && *b ? b : ".", strerror(errno));
	return dir;
}

/* Whether keys (one "key = value" a line) sets key. */
static bool sets_key(const char *keys, const char *key)
{
	size_t n = strlen(key);

	for (const char *l = keys; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
		if (!strncmp(l, key, n) && l[n] && strchr(" \t=", l[n]))
			return true;
	return false;
}

static void write_config(struct bench_daemon *d, const char *daemon_keys, const char *templates)
{
	char agent[512], ledger[400] = "";
	FILE *f;
	int n;

	snprintf(agent, sizeof(agent), "%s/sandpool-agent", builddir());
	/* A key may appear once: daemon_keys may name the ledger itself (off). */
	if (!daemon_keys || !sets_key(daemon_keys, "ledger_path"))
		snprintf(ledger, sizeof(ledger), "ledger_path = %s/ledger.db\n", d->dir);
	n = snprintf(d->config_text, sizeof(d->config_text),
		     "[daemon]\nsocket = %s\nstate_dir = %s/state\n%s"
		     "agent_path = %s\nlog_level = warn\ndrain_timeout = 2s\n%s\n%s",
		     d->sock, d->dir, ledger, agent, daemon_keys ? daemon_keys : "", templates);
	if (n < 0 || (size_t)n >= sizeof(d->config_text))
		bench_die("config too long");
	f = fopen(d->conf, "we");
	if (!f || fputs(d->config_text, f) < 0 || fclose(f) != 0)
		bench_die("write %s: %s", d->conf, strerror(errno));
}

static void unix_addr(struct sockaddr_un *sun, const char *path)
{
	size_t n = strlen(path);

	if (n >= sizeof(sun->sun_path))
		bench_die("socket path too long: %s", path);
	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	memcpy(sun->sun_path, path, n + 1);
}

static bool socket_accepts(const char *path)
{
	struct sockaddr_un sun;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool ok;

	unix_addr(&sun, path);
	ok = fd >= 0 && connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0;
	if (fd >= 0)
		close(fd);
	return ok;
}

static void dump_log(const struct bench_daemon *d)
{
	char buf[4096];
	FILE *f = fopen(d->log, "re");
	size_t n;

	if (!f)
		return;
	fprintf(stderr, "---- %s ----\n", d->log);
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		fwrite(buf, 1, n, stderr);
	fclose(f);
}

void bench_daemon_start(struct bench_daemon *d, const char *daemon_keys, const char *templates)
{
	char exe[512];

	memset(d, 0, sizeof(*d));
	snprintf(d->dir, sizeof(d->dir), "/tmp/sandpool-bench-XXXXXX");
	if (!mkdtemp(d->dir))
		bench_die("mkdtemp: %s", strerror(errno));
	chmod(d->dir, 0755);
	snprintf(d->sock, sizeof(d->sock), "%s/sock", d->dir);
	snprintf(d->conf, sizeof(d->conf), "%s/sandpoold.conf", d->dir);
	snprintf(d->log, sizeof(d->log), "%s/daemon.log", d->dir);
	snprintf(exe, sizeof(exe), "%s/sandpoold", builddir());
	write_config(d, daemon_keys, templates);

	d->forked_us = bench_now_us();
	d->pid = fork();
	if (d->pid < 0)
		bench_die("fork: %s", strerror(errno));
	if (d->pid == 0) {
		int log = open(d->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
		int null = open("/dev/null", O_RDWR | O_CLOEXEC);

		prctl(PR_SET_PDEATHSIG, SIGTERM);
		dup2(null, STDIN_FILENO);
		dup2(null, STDOUT_FILENO);
		dup2(log, STDERR_FILENO);
		execl(exe, "sandpoold", "--foreground", "--config", d->conf, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 5000; i++) {
		int status;

		if (socket_accepts(d->sock)) {
			d->listening_us = bench_now_us();
			return;
		}
		if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
			dump_log(d);
			bench_die("%s exited during start-up (status %d)", exe, status);
		}
		bench_sleep_ms(2);
	}
	dump_log(d);
	bench_die("%s did not listen on %s within 10 s", exe, d->sock);
}

void bench_daemon_reload(struct bench_daemon *d, const char *daemon_keys, const char *templates)
{
	write_config(d, daemon_keys, templates);
	if (kill(d->pid, SIGHUP) < 0)
		bench_die("SIGHUP: %s", strerror(errno));
}

void bench_daemon_stop(struct bench_daemon *d)
{
	char cmd[400];
	int status;

	if (d->pid > 0) {
		kill(d->pid, SIGTERM);
		for (int i = 0; i < 3000; i++) {
			if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
				d->pid = 0;
				break;
			}
			bench_sleep_ms(10);
		}
		if (d->pid > 0) {
			fprintf(stderr, "bench: sandpoold %d ignored SIGTERM for 30 s; killing it\n",
				(int)d->pid);
			kill(d->pid, SIGKILL);
			waitpid(d->pid, &status, 0);
			d->pid = 0;
		} else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			fprintf(stderr, "bench: sandpoold exited with status %d\n", status);
			dump_log(d);
		}
	}
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "bench: could not remove %s\n", d->dir);
}

struct sandpool *bench_connect(const struct bench_daemon *d)
{
	struct sandpool_error err;
	struct sandpool *sp = sandpool_connect(d->sock, &err);

	if (!sp)
		bench_die("connect %s: %s", d->sock, err.message);
	sandpool_set_timeout_ms(sp, 120000);
	return sp;
}

static struct sandpool_reply *pool_stats(struct sandpool *sp)
{
	struct sandpool_reply *r = NULL;
	struct sandpool_error err;

	if (sandpool_call(sp, "pool.stats", NULL, 0, NULL, NULL, &r, &err) < 0)
		bench_die("pool.stats: %s", err.message);
	return r;
}

long long bench_stat(struct sandpool *sp, const char *tmpl, const char *field)
{
	struct sandpool_reply *r = pool_stats(sp);
	const msgpack_object_array *ts = NULL;
	long long v = -1;

	if (ipc_get_array(r->result, "templates", &ts) == 0) {
		for (uint32_t i = 0; i < ts->size; i++) {
			const char *name;
			uint32_t len;
			uint64_t u;

			if (ipc_get_str(&ts->ptr[i], "name", &name, &len) == 0 && strlen(tmpl) == len &&
			    !memcmp(name, tmpl, len) && ipc_get_uint(&ts->ptr[i], field, &u) == 0)
				v = (long long)u;
		}
	}
	sandpool_reply_free(r);
	return v;
}

long long bench_stat_top(struct sandpool *sp, const char *field)
{
	struct sandpool_reply *r = pool_stats(sp);
	uint64_t u;
	long long v = ipc_get_uint(r->result, field, &u) == 0 ? (long long)u : -1;

	sandpool_reply_free(r);
	return v;
}

bool bench_wait_stat(struct sandpool *sp, const char *tmpl, const char *field, long long value,
		     unsigned poll_ms, unsigned timeout_ms)
{
	uint64_t end = bench_now_us() + (uint64_t)timeout_ms * 1000;

	for (;;) {
		if (bench_stat(sp, tmpl, field) >= value)
			return true;
		if (bench_now_us() >= end)
			return false;
		bench_sleep_ms(poll_ms);
	}
}

/* --- processes ------------------------------------------------------------- */

static long status_kib(const char *path, const char *key)
{
	char v[128];

	read_line(path, key, v, sizeof(v));
	return v[0] == '?' ? -1 : strtol(v, NULL, 10);
}

long bench_rss_kib(pid_t pid)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	return status_kib(path, "VmRSS");
}

long bench_pss_kib(pid_t pid)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", (int)pid);
	return status_kib(path, "Pss");
}

int bench_fd_count(pid_t pid)
{
	char path[64];
	struct dirent *e;
	DIR *d;
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	d = opendir(path);
	if (!d)
		return -1;
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

/* ppid and comm of pid from /proc/PID/stat; false when gone. */
static bool proc_stat(pid_t pid, pid_t *ppid, char *comm, size_t len)
{
	char path[64], buf[512], *l, *r;
	FILE *f;
	int pp = -1;
	bool ok = false;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return false;
	if (fgets(buf, sizeof(buf), f) && (l = strchr(buf, '(')) && (r = strrchr(buf, ')')) &&
	    sscanf(r + 2, "%*c %d", &pp) == 1) {
		*r = '\0';
		snprintf(comm, len, "%s", l + 1);
		*ppid = pp;
		ok = true;
	}
	fclose(f);
	return ok;
}

static unsigned scan(pid_t ancestor, const char *comm, bool direct, pid_t *out, unsigned max)
{
	DIR *d = opendir("/proc");
	struct dirent *e;
	unsigned n = 0;

	if (!d)
		return 0;
	while ((e = readdir(d))) {
		pid_t pid = (pid_t)atoi(e->d_name), pp = -1, p;
		char c[64];

		if (pid <= 0 || !proc_stat(pid, &pp, c, sizeof(c)) || strcmp(c, comm))
			continue;
		for (p = pp; !direct && p > 1 && p != ancestor;) {
			char ignored[64];

			if (!proc_stat(p, &p, ignored, sizeof(ignored)))
				break;
		}
		if ((direct ? pp : p) != ancestor)
			continue;
		if (n < max)
			out[n] = pid;
		n++;
	}
	closedir(d);
	return n;
}

unsigned bench_children(pid_t pid, const char *comm, pid_t *out, unsigned max)
{
	return scan(pid, comm, true, out, max);
}

unsigned bench_descendants(pid_t pid, const char *comm, pid_t *out, unsigned max)
{
	return scan(pid, comm, false, out, max);
}

int bench_run_cmd(char *const argv[], char *out, size_t outlen)
{
	int pfd[2], status;
	size_t got = 0;
	pid_t pid;

	if (pipe2(pfd, O_CLOEXEC) < 0)
		return -1;
	pid = fork();
	if (pid < 0) {
		close(pfd[0]);
		close(pfd[1]);
		return -1;
	}
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);

		dup2(null, STDIN_FILENO);
		dup2(pfd[1], STDOUT_FILENO);
		dup2(null, STDERR_FILENO);
		execv(argv[0], argv);
		_exit(127);
	}
	close(pfd[1]);
	for (;;) {
		char tmp[4096];
		ssize_t n = read(pfd[0], tmp, sizeof(tmp));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		for (ssize_t i = 0; i < n && got + 1 < outlen; i++)
			out[got++] = tmp[i];
	}
	if (outlen)
		out[got] = '\0';
	close(pfd[0]);
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	return status;
}

const char *bench_argv_str(char *const argv[])
{
	static char buf[2048];
	size_t off = 0;

	buf[0] = '\0';
	for (int i = 0; argv[i] && off < sizeof(buf); i++) {
		bool plain = strspn(argv[i], "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
					     "0123456789-_./=:,+") == strlen(argv[i]);

		off += (size_t)snprintf(buf + off, sizeof(buf) - off, plain ? "%s%s" : "%s'%s'",
					i ? " " : "", argv[i]);
	}
	return buf;
}

void bench_raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/* --- the ping-pong baseline ------------------------------------------------- */

struct echo_conn {
	int fd;
	size_t got;
};

static void __attribute__((noreturn)) echo_serve(int lfd, size_t req, size_t resp)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL }, evs[64];
	char *in = malloc(req), *out = calloc(1, resp);
	int ep = epoll_create1(EPOLL_CLOEXEC);

	if (!in || !out || ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) < 0)
		_exit(1);
	for (;;) {
		int n = epoll_wait(ep, evs, 64, -1);

		for (int i = 0; i < n; i++) {
			struct echo_conn *c = evs[i].data.ptr;

			if (!c) {
				int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

				if (fd < 0)
					continue;
				c = calloc(1, sizeof(*c));
				c->fd = fd;
				ev = (struct epoll_event){ .events = EPOLLIN, .data.ptr = c };
				epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
				continue;
			}
			for (;;) {
				ssize_t r = read(c->fd, in, req - c->got);

				if (r <= 0) {
					if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
						close(c->fd);
						free(c);
					}
					break;
				}
				c->got += (size_t)r;
				if (c->got == req) {
					/* Small replies fit the socket buffer: one write. */
					c->got = 0;
					if (write(c->fd, out, resp) != (ssize_t)resp)
						_exit(2);
				}
			}
		}
	}
}

void bench_echo_start(struct bench_echo *e, size_t req, size_t resp)
{
	static unsigned serial;
	struct sockaddr_un sun;
	int lfd;

	e->req = req;
	e->resp = resp;
	snprintf(e->path, sizeof(e->path), "/tmp/sandpool-bench-echo-%d-%u.sock", (int)getpid(),
		 serial++);
	unix_addr(&sun, e->path);
	unlink(e->path);
	lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sun, sizeof(sun)) < 0 || listen(lfd, 512) < 0)
		bench_die("echo server on %s: %s", e->path, strerror(errno));
	e->pid = fork();
	if (e->pid < 0)
		bench_die("fork: %s", strerror(errno));
	if (e->pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		echo_serve(lfd, req, resp);
	}
	close(lfd);
}

int bench_echo_connect(const struct bench_echo *e)
{
	struct sockaddr_un sun;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	unix_addr(&sun, e->path);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0)
		bench_die("connect %s: %s", e->path, strerror(errno));
	return fd;
}

static void full_io(int fd, char *buf, size_t len, bool wr)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = wr ? write(fd, buf + done, len - done) : read(fd, buf + done, len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			bench_die("echo %s: %s", wr ? "write" : "read", n ? strerror(errno) : "EOF");
		done += (size_t)n;
	}
}

void bench_echo_rtt(const struct bench_echo *e, int fd)
{
	char buf[65536];

	if (e->req > sizeof(buf) || e->resp > sizeof(buf))
		bench_die("echo payload above %zu bytes", sizeof(buf));
	memset(buf, 'x', e->req);
	full_io(fd, buf, e->req, true);
	full_io(fd, buf, e->resp, false);
}

void bench_echo_stop(struct bench_echo *e)
{
	if (e->pid > 0) {
		kill(e->pid, SIGKILL);
		waitpid(e->pid, NULL, 0);
		e->pid = 0;
	}
	unlink(e->path);
}

/* --- closed-loop load -------------------------------------------------------- */

struct load_shared {
	const struct bench_load *l;
	pthread_barrier_t ready, go;
	uint64_t start_us;
};

struct load_thread {
	struct load_shared *sh;
	unsigned index;
	pthread_t tid;
	struct bench_samples samples;
	uint64_t last_us;
};

static void *load_main(void *arg)
{
	struct load_thread *t = arg;
	const struct bench_load *l = t->sh->l;
	void *state = l->setup ? l->setup(l->arg, t->index) : l->arg;
	uint64_t rec_from, end;

	pthread_barrier_wait(&t->sh->ready);
	pthread_barrier_wait(&t->sh->go);
	rec_from = t->sh->start_us + (l->ops_per_thread ? 0 : (uint64_t)l->warm_ms * 1000);
	end = t->sh->start_us + (uint64_t)l->duration_ms * 1000;
	for (unsigned k = 0;; k++) {
		uint64_t t0, t1;

		if (l->ops_per_thread ? k >= l->ops_per_thread : bench_now_us() >= end)
			break;
		t0 = bench_now_us();
		l->op(state, t->index);
		t1 = bench_now_us();
		if (t0 >= rec_from && (l->ops_per_thread || t1 <= end))
			samples_add(&t->samples, t1 - t0);
		t->last_us = t1;
	}
	if (l->teardown)
		l->teardown(state);
	return NULL;
}

void bench_load_run(const struct bench_load *l, struct bench_samples *out, double *ops_per_s)
{
	struct load_shared sh = { .l = l };
	struct load_thread *ts = calloc(l->threads, sizeof(*ts));
	uint64_t last = 0, window;
	size_t recorded = 0;

	if (!ts)
		bench_die("out of memory");
	pthread_barrier_init(&sh.ready, NULL, l->threads + 1);
	pthread_barrier_init(&sh.go, NULL, l->threads + 1);
	for (unsigned i = 0; i < l->threads; i++) {
		pthread_attr_t attr;

		ts[i].sh = &sh;
		ts[i].index = i;
		pthread_attr_init(&attr);
		pthread_attr_setstacksize(&attr, 256 * 1024);
		if (pthread_create(&ts[i].tid, &attr, load_main, &ts[i]) != 0)
			bench_die("pthread_create: %s", strerror(errno));
		pthread_attr_destroy(&attr);
	}
	pthread_barrier_wait(&sh.ready);
	sh.start_us = bench_now_us();
	pthread_barrier_wait(&sh.go);
	for (unsigned i = 0; i < l->threads; i++) {
		pthread_join(ts[i].tid, NULL);
		recorded += ts[i].samples.n;
		samples_merge(out, &ts[i].samples);
		samples_free(&ts[i].samples);
		if (ts[i].last_us > last)
			last = ts[i].last_us;
	}
	if (ops_per_s) {
		window = l->ops_per_thread ? last - sh.start_us
					   : (uint64_t)(l->duration_ms - l->warm_ms) * 1000;
		*ops_per_s = window ? (double)recorded * 1e6 / (double)window : 0;
	}
	pthread_barrier_destroy(&sh.ready);
	pthread_barrier_destroy(&sh.go);
	free(ts);
}
