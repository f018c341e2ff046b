/*
 * sandpool-agent: PID 1 of a local sandbox, the daemon's hands inside it.
 * Speaks docs/AGENT.md on fd 3: runs each exec as the sandbox user in its
 * own process group, streams its output, enforces its timeout and output
 * cap, and reaps every process of the PID namespace. Owns the control
 * channel, the exec slots and every process, pipe and timer they hold,
 * and the child set-up that interpreter contexts (context.c) and file
 * helpers (files.c) share with execs.
 */
#include "autoconfig.h"

#include <dirent.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/capability.h>
#include <linux/securebits.h>
#include <sys/prctl.h>
#include <sys/queue.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "daemon/log.h"
#include "ipc/codec.h"
#include "ipc/sandpool.h"
#include "sandbox/agent/agent.h"
#include "sandbox/agent/context.h"
#include "sandbox/agent/files.h"
#include "sandbox/agent/seccomp.h"

#define AGENT_CTRL_FD 3
#define AGENT_MAX_EXECS 64
/* The daemon wraps a payload of up to max_frame (a client's stdin, argv
 * and env) in its own request and adds the base env: accept that much
 * more, as the daemon does for what we send. */
#define AGENT_FRAME_SLACK 4096
#define AGENT_DEFAULT_MAX_FRAME (4u << 20)
/* Exec pipes are not read while more than this waits for the daemon... */
#define AGENT_OUTBUF_HIGH (4u << 20)
/* ...and are read again once it has drained to this. */
#define AGENT_OUTBUF_LOW (1u << 20)
/* How long pipes may stay open after the exec's leader exited: whoever
 * still holds them is a left-behind process the response must not wait for. */
#define AGENT_DRAIN_MS 100
#define AGENT_MAX_TIMEOUT_MS UINT32_MAX
/* PATH of an env without one, as execvp(3) uses. */
#define AGENT_DEFAULT_PATH "/bin:/usr/bin"

enum exec_state {
	EXEC_FREE,     /* on agent.free: the slot is unused */
	EXEC_RUNNING,  /* on agent.running: the leader has not been reaped */
	EXEC_DRAINING, /* on agent.draining: leader reaped, stdout/stderr not yet at EOF */
};

struct agent_exec;

struct exec_pipe {
	struct agent_exec *ex;
	int fd; /* -1 once at EOF or closed */
	int stream; /* 1 stdout, 2 stderr: the wire value */
	struct event *ev;
};

struct agent_exec {
	enum exec_state state;
	TAILQ_ENTRY(agent_exec) link; /* on the list of its state */
	uint64_t id;
	uint32_t msgid; /* of the exec request, for the response */
	pid_t pid;	/* leader, and process group id */
	int status;	/* wait status, once reaped */
	uint64_t start_us;
	uint64_t duration_us;
	uint64_t max_output;
	uint64_t sent; /* output bytes sent, both streams */
	bool truncated;
	const char *limit; /* NULL, "timeout" or "output_limit" */
	struct exec_pipe out[2];
	int report_fd; /* read end of the child's exec-failure pipe */
	int stdin_fd;  /* -1 once all of stdin is written or the reader left */
	struct event *stdin_ev;
	struct evbuffer *stdin_buf;
	struct event *timer; /* the timeout while RUNNING, the drain deadline while DRAINING */
};

TAILQ_HEAD(exec_list, agent_exec);

static struct {
	struct event_base *base;
	struct bufferevent *ctrl;
	msgpack_packer pk; /* appends to ctrl's output buffer */
	struct ipc_reader reader;
	struct event *sigchld;
	uid_t uid;
	gid_t gid;
	/* Rootless: uid and gid are 0, the only ids the namespace maps; user
	 * code keeps them, with every capability dropped. */
	bool rootless;
	rlim_t nproc; /* RLIMIT_NPROC of user code; 0: none (a pids cgroup bounds it) */
	size_t max_frame;
	size_t chunk;
	bool paused; /* exec pipes unread: ctrl output above AGENT_OUTBUF_HIGH */
	bool stopping;
	int exit_status;
	unsigned n_execs; /* RUNNING + DRAINING */
	struct exec_list free, running, draining;
	struct agent_exec slots[AGENT_MAX_EXECS];
} agent;

/* The seccomp filter for user code, compiled once at start-up. */
static struct sock_fprog user_filter;

/* Per-process limits of user code; cgroups bound the sandbox as a whole. */
static const struct {
	int resource;
	rlim_t value;
} user_rlimits[] = {
	{ RLIMIT_CORE, 0 },		/* no core files in /workspace */
	{ RLIMIT_NOFILE, 4096 },	/* a descriptor leak fails, not the agent */
	{ RLIMIT_FSIZE, 1ull << 32 },	/* no single file past 4 GiB */
	{ RLIMIT_MEMLOCK, 64 << 10 },
};

/* Exec pipes are read one chunk at a time into this, then packed. */
static char chunk_buf[AGENT_CHUNK_MAX];

/* An exec request's validated parameters; pointers into the request. */
struct exec_spec {
	uint64_t id;
	uint64_t timeout_ms;
	uint64_t max_output;
	const msgpack_object_array *argv;
	const msgpack_object_array *env;
	const char *cwd;
	uint32_t cwd_len;
	const char *stdin_data; /* NULL: /dev/null */
	uint32_t stdin_len;
	size_t str_bytes; /* argv and env strings with their NULs */
};

uint64_t agent_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void agent_ms_to_tv(uint64_t ms, struct timeval *tv)
{
	tv->tv_sec = (time_t)(ms / 1000);
	tv->tv_usec = (suseconds_t)(ms % 1000) * 1000;
}

void agent_close_fd(int *fd)
{
	if (*fd >= 0) {
		close(*fd);
		*fd = -1;
	}
}

struct event_base *agent_base(void)
{
	return agent.base;
}

msgpack_packer *agent_packer(void)
{
	return &agent.pk;
}

bool agent_output_paused(void)
{
	return agent.paused;
}

size_t agent_chunk_size(void)
{
	return agent.chunk;
}

size_t agent_max_frame(void)
{
	return agent.max_frame;
}

/* --- the control channel ---------------------------------------------- */

static void agent_stop(int status)
{
	if (agent.stopping)
		return;
	agent.stopping = true;
	agent.exit_status = status;
	event_base_loopbreak(agent.base);
}

void agent_reply_error(uint32_t msgid, enum sandpool_errcode code, const char *fmt, ...)
{
	char msg[AGENT_REPORT_MAX + 64];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	ipc_pack_response_error(&agent.pk, msgid, sandpool_errcode_name(code), msg);
}

static void exec_pipes_arm(struct agent_exec *ex, bool on)
{
	for (int i = 0; i < 2; i++) {
		if (ex->out[i].fd < 0)
			continue;
		if (on)
			event_add(ex->out[i].ev, NULL);
		else
			event_del(ex->out[i].ev);
	}
}

static void agent_arm_all_pipes(bool on)
{
	struct agent_exec *ex;

	TAILQ_FOREACH(ex, &agent.running, link)
		exec_pipes_arm(ex, on);
	TAILQ_FOREACH(ex, &agent.draining, link)
		exec_pipes_arm(ex, on);
	contexts_arm_pipes(on);
}

/* Called after queueing output: a producer faster than the daemon must
 * not grow our memory, so stop reading pipes until ctrl_on_drained(). */
void agent_check_pressure(void)
{
	if (agent.paused || evbuffer_get_length(bufferevent_get_output(agent.ctrl)) <= AGENT_OUTBUF_HIGH)
		return;
	agent.paused = true;
	agent_arm_all_pipes(false);
}

/* bufferevent write callback: output is at or below AGENT_OUTBUF_LOW. */
static void ctrl_on_drained(struct bufferevent *bev, void *arg)
{
	if (!agent.paused)
		return;
	agent.paused = false;
	agent_arm_all_pipes(true);
}

/* --- exec lifecycle ---------------------------------------------------- */

static struct exec_list *exec_list_of(enum exec_state state)
{
	switch (state) {
	case EXEC_FREE:
		return &agent.free;
	case EXEC_RUNNING:
		return &agent.running;
	case EXEC_DRAINING:
		return &agent.draining;
	}
	fatal("exec state %d is unknown", (int)state);
}

static const char *exec_state_name(enum exec_state state)
{
	static const char *const names[] = { "free", "running", "draining" };

	return names[state];
}

static void exec_set_state(struct agent_exec *ex, enum exec_state state)
{
	bool legal;

	switch (ex->state) {
	case EXEC_FREE:
		legal = state == EXEC_RUNNING;
		break;
	case EXEC_RUNNING:
		/* Straight to FREE only when the agent is going away. */
		legal = state == EXEC_DRAINING || (state == EXEC_FREE && agent.stopping);
		break;
	case EXEC_DRAINING:
		legal = state == EXEC_FREE;
		break;
	default:
		legal = false;
	}
	if (!legal)
		fatal("exec %" PRIu64 ": illegal transition %s -> %s", ex->id, exec_state_name(ex->state),
		      exec_state_name(state));
	log_debug("exec %" PRIu64 ": %s -> %s", ex->id, exec_state_name(ex->state), exec_state_name(state));
	TAILQ_REMOVE(exec_list_of(ex->state), ex, link);
	TAILQ_INSERT_TAIL(exec_list_of(state), ex, link);
	if (ex->state == EXEC_FREE)
		agent.n_execs++;
	else if (state == EXEC_FREE)
		agent.n_execs--;
	ex->state = state;
}

static struct agent_exec *exec_find(uint64_t id)
{
	struct agent_exec *ex;

	TAILQ_FOREACH(ex, &agent.running, link)
		if (ex->id == id)
			return ex;
	TAILQ_FOREACH(ex, &agent.draining, link)
		if (ex->id == id)
			return ex;
	return NULL;
}

/* One process of the PID namespace, as /proc shows it. */
struct proc_entry {
	pid_t pid;
	pid_t ppid;
	bool live;	/* neither a zombie nor dead */
	int8_t below; /* below the root being killed: 1 yes, 0 no, -1 not known yet */
};

static int proc_entry_cmp(const void *a, const void *b)
{
	const struct proc_entry *x = a, *y = b;

	return (x->pid > y->pid) - (x->pid < y->pid);
}

/* Every process of our PID namespace, sorted by pid, into *tab (grown as
 * needed); the count, or -errno. */
static ssize_t proc_scan(struct proc_entry **tab, size_t *cap)
{
	DIR *d = opendir("/proc");
	struct dirent *e;
	size_t n = 0;

	if (!d)
		return -errno;
	while ((e = readdir(d))) {
		char path[300], buf[512], *rp, state;
		int ppid, fd;
		ssize_t len;

		if (e->d_name[0] < '1' || e->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue; /* gone meanwhile */
		len = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (len <= 0)
			continue;
		buf[len] = '\0';
		/* "pid (comm) S ppid ...": comm may hold spaces and parentheses. */
		rp = strrchr(buf, ')');
		if (!rp || sscanf(rp + 1, " %c %d", &state, &ppid) != 2)
			continue;
		if (n == *cap) {
			size_t ncap = *cap ? *cap * 2 : 64;
			struct proc_entry *t = realloc(*tab, ncap * sizeof(*t));

			if (!t) {
				closedir(d);
				return -ENOMEM;
			}
			*tab = t;
			*cap = ncap;
		}
		(*tab)[n++] = (struct proc_entry){ .pid = (pid_t)atoi(e->d_name), .ppid = (pid_t)ppid,
						   .live = state != 'Z' && state != 'X', .below = -1 };
	}
	closedir(d);
	qsort(*tab, n, sizeof(**tab), proc_entry_cmp);
	return (ssize_t)n;
}

/* The parent of p in the table, or NULL (pid 1's parent is not in it). */
static struct proc_entry *proc_parent(struct proc_entry *t, size_t n, const struct proc_entry *p)
{
	struct proc_entry key = { .pid = p->ppid };

	return bsearch(&key, t, n, sizeof(*t), proc_entry_cmp);
}

/* Whether t[i] descends from root. The answer is remembered for every
 * process on the way up, so a whole scan costs one walk per branch. */
static bool proc_below(struct proc_entry *t, size_t n, size_t i, pid_t root)
{
	struct proc_entry *p = &t[i];
	int8_t verdict = 0;

	/* A chain longer than the table is a loop (a pid reused mid-scan). */
	for (size_t steps = 0; p && steps <= n; steps++) {
		if (p->below >= 0 || p->ppid == root) {
			verdict = p->below >= 0 ? p->below : 1;
			break;
		}
		p = proc_parent(t, n, p);
	}
	for (p = &t[i]; p && p->below < 0; p = p->ppid == root ? NULL : proc_parent(t, n, p))
		p->below = verdict;
	return verdict == 1;
}

/*
 * Kills an exec: its leader and every process it started, wherever their
 * session or process group. Only while the leader is unreaped: until then
 * its pid cannot have been reused.
 *
 * Why this is complete: the leader is a child subreaper (set before its
 * execve, which keeps it; seccomp stops user code from clearing it) and
 * seccomp refuses clone(CLONE_PARENT), so while the leader lives every
 * process it started stays below it in the process tree: an orphan is
 * adopted by the leader, never by us. The leader is stopped first, so it
 * forks no more; each round kills every live process below it, and one
 * forked meanwhile is found in the next round, since a SIGKILLed process
 * cannot fork. Once nothing lives below the leader, it is killed too.
 *
 * Simpler options are wrong or not always there: the process group is
 * left by setsid()/setpgid(); killing all of the PID namespace would also
 * take the contexts and what earlier execs left running in the
 * background; a cgroup per exec needs a delegated cgroup (not rootless,
 * not every v1 host); a reaper process per exec costs a process per exec
 * and, rootless, runs as the very uid user code could kill it with.
 */
#define EXEC_KILL_ROUNDS 1000

/* exec_kill()'s view of /proc, kept between kills; as large as the most
 * processes the namespace has held at a kill. */
static struct proc_entry *proc_tab;
static size_t proc_tab_cap;

static void exec_kill(struct agent_exec *ex)
{
	struct timespec nap = { 0, 1000000 };
	unsigned round;

	if (ex->state != EXEC_RUNNING)
		return;
	kill(ex->pid, SIGSTOP);
	for (round = 0; round < EXEC_KILL_ROUNDS; round++) {
		ssize_t n = proc_scan(&proc_tab, &proc_tab_cap);
		unsigned killed = 0;

		if (n < 0) {
			log_warn("exec %" PRIu64 ": cannot list processes (%s); killing its process group only",
				 ex->id, strerror((int)-n));
			kill(-ex->pid, SIGKILL);
			break;
		}
		for (size_t i = 0; i < (size_t)n; i++)
			if (proc_tab[i].live && proc_below(proc_tab, (size_t)n, i, ex->pid) &&
			    kill(proc_tab[i].pid, SIGKILL) == 0)
				killed++;
		if (!killed)
			break;
		/* Give the killed a moment to become zombies. */
		nanosleep(&nap, NULL);
	}
	if (round == EXEC_KILL_ROUNDS)
		log_warn("exec %" PRIu64 ": processes still alive below it after %u rounds", ex->id, round);
	kill(ex->pid, SIGKILL);
}

static void exec_close_pipe(struct exec_pipe *p)
{
	if (p->ev) {
		event_free(p->ev);
		p->ev = NULL;
	}
	agent_close_fd(&p->fd);
}

static void exec_close_stdin(struct agent_exec *ex)
{
	if (ex->stdin_ev) {
		event_free(ex->stdin_ev);
		ex->stdin_ev = NULL;
	}
	if (ex->stdin_buf) {
		evbuffer_free(ex->stdin_buf);
		ex->stdin_buf = NULL;
	}
	agent_close_fd(&ex->stdin_fd);
}

/* Releases what a slot holds; the slot's state is the caller's business. */
static void exec_free_resources(struct agent_exec *ex)
{
	exec_close_pipe(&ex->out[0]);
	exec_close_pipe(&ex->out[1]);
	exec_close_stdin(ex);
	agent_close_fd(&ex->report_fd);
	if (ex->timer) {
		event_free(ex->timer);
		ex->timer = NULL;
	}
}

static void exec_send_output(struct agent_exec *ex, int stream, const char *data, size_t len)
{
	ipc_pack_notify_head(&agent.pk, "output");
	msgpack_pack_map(&agent.pk, 3);
	ipc_pack_kv_uint(&agent.pk, "id", ex->id);
	ipc_pack_kv_uint(&agent.pk, "stream", (uint64_t)stream);
	ipc_pack_kv_bin(&agent.pk, "data", data, len);
}

static void exec_answer(struct agent_exec *ex)
{
	char report[AGENT_REPORT_MAX];
	msgpack_packer *pk = &agent.pk;
	ssize_t n;

	/* The leader is reaped, so the pipe's write end is closed: this read
	 * returns the child's failure message or 0 at once. */
	n = read(ex->report_fd, report, sizeof(report) - 1);
	if (n > 0) {
		report[n] = '\0';
		agent_reply_error(ex->msgid, SANDPOOL_E_BACKEND_ERROR, "%s", report);
		return;
	}
	ipc_pack_response_ok_head(pk, ex->msgid);
	msgpack_pack_map(pk, 5);
	if (WIFEXITED(ex->status))
		ipc_pack_kv_int(pk, "exit_code", WEXITSTATUS(ex->status));
	else
		ipc_pack_kv_nil(pk, "exit_code");
	if (WIFSIGNALED(ex->status))
		ipc_pack_kv_uint(pk, "signal", (uint64_t)WTERMSIG(ex->status));
	else
		ipc_pack_kv_nil(pk, "signal");
	ipc_pack_kv_bool(pk, "truncated", ex->truncated);
	ipc_pack_kv_str(pk, "limit", ex->limit);
	ipc_pack_kv_uint(pk, "duration_us", ex->duration_us);
}

/* Answers and frees the exec once its leader is reaped and both pipes are
 * done; returns true when ex is gone. */
static bool exec_maybe_finish(struct agent_exec *ex)
{
	if (ex->state != EXEC_DRAINING || ex->out[0].fd >= 0 || ex->out[1].fd >= 0)
		return false;
	exec_answer(ex);
	exec_free_resources(ex);
	exec_set_state(ex, EXEC_FREE);
	return true;
}

/* len bytes of stream are in chunk_buf: send what fits under max_output. */
static void exec_deliver(struct agent_exec *ex, int stream, size_t len)
{
	uint64_t room = ex->max_output - ex->sent;

	if (len <= room) {
		exec_send_output(ex, stream, chunk_buf, len);
		ex->sent += len;
		agent_check_pressure();
		return;
	}
	if (room > 0)
		exec_send_output(ex, stream, chunk_buf, (size_t)room);
	ex->sent += room;
	ex->truncated = true;
	if (!ex->limit)
		ex->limit = "output_limit";
	log_debug("exec %" PRIu64 ": output passed %" PRIu64 " bytes, killing it", ex->id, ex->max_output);
	exec_kill(ex);
	/* Nothing more will be sent, so there is nothing left to drain. */
	exec_close_pipe(&ex->out[0]);
	exec_close_pipe(&ex->out[1]);
	exec_maybe_finish(ex);
	agent_check_pressure();
}

static void exec_on_pipe(evutil_socket_t fd, short what, void *arg)
{
	struct exec_pipe *p = arg;
	struct agent_exec *ex = p->ex;
	ssize_t n = read(fd, chunk_buf, agent.chunk);

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n < 0)
		log_warn("exec %" PRIu64 ": read stream %d: %s", ex->id, p->stream, strerror(errno));
	if (n <= 0) {
		exec_close_pipe(p);
		exec_maybe_finish(ex);
		return;
	}
	exec_deliver(ex, p->stream, (size_t)n);
}

static void exec_on_stdin(evutil_socket_t fd, short what, void *arg)
{
	struct agent_exec *ex = arg;
	int n = evbuffer_write(ex->stdin_buf, fd);

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	/* EPIPE: the process closed its stdin; it will not read the rest. */
	if (n < 0 || evbuffer_get_length(ex->stdin_buf) == 0)
		exec_close_stdin(ex);
}

static void exec_on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct agent_exec *ex = arg;
	struct timeval tv;

	if (ex->state == EXEC_RUNNING) {
		log_debug("exec %" PRIu64 ": timed out, killing it", ex->id);
		if (!ex->limit)
			ex->limit = "timeout";
		exec_kill(ex);
		return;
	}
	/* While paused the pipes may still hold the leader's own output. */
	if (agent.paused) {
		agent_ms_to_tv(AGENT_DRAIN_MS, &tv);
		evtimer_add(ex->timer, &tv);
		return;
	}
	log_debug("exec %" PRIu64 ": pipes held open after the leader exited, closing them", ex->id);
	exec_close_pipe(&ex->out[0]);
	exec_close_pipe(&ex->out[1]);
	exec_maybe_finish(ex);
}

static void exec_on_exit(struct agent_exec *ex, int status)
{
	struct timeval tv;

	ex->status = status;
	ex->duration_us = agent_now_us() - ex->start_us;
	exec_set_state(ex, EXEC_DRAINING);
	exec_close_stdin(ex);
	if (exec_maybe_finish(ex))
		return;
	agent_ms_to_tv(AGENT_DRAIN_MS, &tv);
	evtimer_add(ex->timer, &tv);
}

/* SIGCHLD: as PID 1 we inherit every orphan of the namespace, so reap them
 * all, and report only exec leaders. */
static void agent_on_sigchld(evutil_socket_t sig, short what, void *arg)
{
	struct agent_exec *ex;
	int status;
	pid_t pid;

	for (;;) {
		pid = waitpid(-1, &status, WNOHANG);
		if (pid < 0 && errno == EINTR)
			continue;
		if (pid <= 0)
			break;
		TAILQ_FOREACH(ex, &agent.running, link)
			if (ex->pid == pid)
				break;
		if (ex)
			exec_on_exit(ex, status);
		else if (!context_on_reap(pid, status))
			files_on_reap(pid, status);
	}
}

/* --- the forked child, up to execve -------------------------------------- */

/* Reports why the child could not become the exec and ends it. The agent
 * forwards msg as the request's error, so it must read like one. */
static void __attribute__((noreturn, format(printf, 2, 3))) child_fail(int report_fd, const char *fmt, ...)
{
	char msg[AGENT_REPORT_MAX];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(msg) - 1)
		n = sizeof(msg) - 1;
	if (n > 0)
		(void)!write(report_fd, msg, (size_t)n);
	_exit(127);
}

static const char *child_env_get(char **envp, const char *name)
{
	size_t n = strlen(name);

	for (; *envp; envp++)
		if (!strncmp(*envp, name, n) && (*envp)[n] == '=')
			return *envp + n + 1;
	return NULL;
}

/* execvpe(3) against the request's env, not ours: argv[0] without a '/' is
 * looked up in its PATH. Only returns by failing. */
static void __attribute__((noreturn)) child_execvpe(int report_fd, char **argv, char **envp)
{
	const char *name = argv[0], *dir, *end;
	size_t name_len = strlen(name);
	bool denied = false;
	char path[PATH_MAX];

	if (name_len == 0)
		child_fail(report_fd, "execvp %s: %s", name, strerror(ENOENT));
	if (strchr(name, '/')) {
		execve(name, argv, envp);
		child_fail(report_fd, "execvp %s: %s", name, strerror(errno));
	}
	dir = child_env_get(envp, "PATH");
	if (!dir)
		dir = AGENT_DEFAULT_PATH;
	for (;; dir = end + 1) {
		size_t dir_len;

		end = strchrnul(dir, ':');
		dir_len = (size_t)(end - dir);
		/* An empty element is the current directory, as in execvp(3). */
		if (dir_len + 1 + name_len < sizeof(path)) {
			memcpy(path, dir, dir_len);
			path[dir_len] = '/';
			memcpy(path + (dir_len ? dir_len + 1 : 0), name, name_len + 1);
			execve(path, argv, envp);
			switch (errno) {
			case EACCES:
				denied = true;
				break;
			case ENOENT:
			case ENOTDIR:
			case ESTALE:
			case ENODEV:
			case ETIMEDOUT:
				break;
			default:
				child_fail(report_fd, "execvp %s: %s", name, strerror(errno));
			}
		}
		if (!*end)
			break;
	}
	child_fail(report_fd, "execvp %s: %s", name, strerror(denied ? EACCES : ENOENT));
}

/* The child's fd 0-2 (and its channel) from the plan's descriptors. All
 * sources are above 3 (the agent holds 0-3), and the channel goes last,
 * once no other source is needed, so no dup2 clobbers another. */
static void child_place_fds(int rep, const struct child_plan *c)
{
	int src[3] = { c->stdin_fd, c->out_fd, c->err_fd };
	int null_fd = -1;

	for (int fd = 0; fd < 3; fd++) {
		if (src[fd] < 0) {
			if (null_fd < 0 && (null_fd = open("/dev/null", O_RDWR | O_CLOEXEC)) < 0)
				child_fail(rep, "open /dev/null: %s", strerror(errno));
			src[fd] = null_fd;
		}
		if (dup2(src[fd], fd) < 0)
			child_fail(rep, "dup2: %s", strerror(errno));
	}
	if (c->chan_fd >= 0) {
		/* dup2 onto itself would keep O_CLOEXEC: clear it by hand. */
		if (dup2(c->chan_fd, AGENT_CHAN_FD) < 0 || fcntl(AGENT_CHAN_FD, F_SETFD, 0) < 0)
			child_fail(rep, "dup2: %s", strerror(errno));
	}
	if (close_range(c->chan_fd >= 0 ? AGENT_CHAN_FD + 1 : 4, ~0U, 0) < 0)
		child_fail(rep, "close_range: %s", strerror(errno));
}

/* Rootful: to the sandbox user, a host uid of the sandbox's own. The
 * uid change clears every capability set. */
static void child_become_user(int rep)
{
	if (setgroups(0, NULL) < 0)
		child_fail(rep, "setgroups: %s", strerror(errno));
	if (setresgid(agent.gid, agent.gid, agent.gid) < 0)
		child_fail(rep, "setgid %u: %s", (unsigned)agent.gid, strerror(errno));
	if (setresuid(agent.uid, agent.uid, agent.uid) < 0)
		child_fail(rep, "setuid %u: %s", (unsigned)agent.uid, strerror(errno));
	if (setuid(0) == 0 || setgid(0) == 0)
		child_fail(rep, "setuid %u: root could be regained", (unsigned)agent.uid);
}

/* Rootless: no other id to become, so uid 0 stays and the capability
 * sets are emptied instead; checked, as the rootful drop checks that root
 * cannot be regained. */
static void child_drop_capabilities(int rep)
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct none[2] = { { 0 } }, now[2];

	if (syscall(SYS_capset, &h, none) < 0)
		child_fail(rep, "capset: %s", strerror(errno));
	if (syscall(SYS_capget, &h, now) < 0)
		child_fail(rep, "capget: %s", strerror(errno));
	for (int i = 0; i < 2; i++)
		if (now[i].effective || now[i].permitted || now[i].inheritable)
			child_fail(rep, "capset: capabilities left");
}

/* Runs in the forked child; the agent is single-threaded, so everything
 * (stdio formatting, strerror, malloc) is safe here. */
static void __attribute__((noreturn)) child_main(const struct child_plan *c, pid_t agent_pid)
{
	struct sigaction dfl = { .sa_handler = SIG_DFL };
	int rep = c->report_fd;
	sigset_t none;

	if (setsid() < 0)
		child_fail(rep, "setsid: %s", strerror(errno));
	/* fd 3 (the control socket's copy) becomes the failure pipe, kept
	 * until execve closes it. */
	if (dup3(rep, 3, O_CLOEXEC) < 0)
		child_fail(rep, "dup3: %s", strerror(errno));
	rep = 3;
	child_place_fds(rep, c);
	/* libevent's SIGCHLD handler and our SIGPIPE ignore must not leak in. */
	for (int sig = 1; sig < NSIG; sig++)
		sigaction(sig, &dfl, NULL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);

	for (size_t i = 0; i < sizeof(user_rlimits) / sizeof(user_rlimits[0]); i++) {
		struct rlimit rl = { user_rlimits[i].value, user_rlimits[i].value };

		if (setrlimit(user_rlimits[i].resource, &rl) < 0)
			child_fail(rep, "setrlimit: %s", strerror(errno));
	}
	if (agent.nproc && setrlimit(RLIMIT_NPROC, &(struct rlimit){ agent.nproc, agent.nproc }) < 0)
		child_fail(rep, "setrlimit(RLIMIT_NPROC): %s", strerror(errno));
	/* Rootless, user code stays uid 0: first take from uid 0 what it means
	 * to execve (capabilities granted to root), for good. Needs
	 * CAP_SETPCAP, so before the capabilities go. */
	if (agent.rootless &&
	    prctl(PR_SET_SECUREBITS, SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP |
					     SECBIT_NO_SETUID_FIXUP_LOCKED | SECBIT_KEEP_CAPS_LOCKED |
					     SECBIT_NO_CAP_AMBIENT_RAISE | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED,
		  0, 0, 0) < 0)
		child_fail(rep, "prctl(PR_SET_SECUREBITS): %s", strerror(errno));
	/* Empty the bounding and ambient sets while we may: after the uid
	 * change below nothing can give user code a capability back. */
	for (int cap = 0; prctl(PR_CAPBSET_READ, cap, 0, 0, 0) >= 0; cap++)
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
			child_fail(rep, "drop capability %d: %s", cap, strerror(errno));
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
		child_fail(rep, "clear ambient capabilities: %s", strerror(errno));
	if (agent.rootless)
		child_drop_capabilities(rep);
	else
		child_become_user(rep);
	/* After the drop, so that the user's permissions apply to the path. */
	if (chdir(c->cwd) < 0)
		child_fail(rep, "chdir %s: %s", c->cwd, strerror(errno));
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		child_fail(rep, "prctl(PR_SET_NO_NEW_PRIVS): %s", strerror(errno));
	/* After setresuid(), which clears the parent-death signal. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
		child_fail(rep, "prctl(PR_SET_PDEATHSIG): %s", strerror(errno));
	/* Kept across execve; exec_kill() says why. */
	if (c->subreaper && prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0)
		child_fail(rep, "prctl(PR_SET_CHILD_SUBREAPER): %s", strerror(errno));
	if (getppid() != agent_pid)
		_exit(127); /* the agent died before PDEATHSIG was set: nobody to answer */
	/* Last, as in bubblewrap: nothing after this needs a denied call. */
	if (agent_seccomp_apply(&user_filter) < 0)
		child_fail(rep, "seccomp: %s", strerror(errno));
	if (c->run)
		_exit(c->run(c->run_arg));
	child_execvpe(rep, c->argv, c->envp);
}

int agent_spawn(const struct child_plan *c, pid_t *pid)
{
	pid_t agent_pid = getpid();

	*pid = fork();
	if (*pid == 0)
		child_main(c, agent_pid);
	return *pid < 0 ? -errno : 0;
}

/* --- requests ----------------------------------------------------------- */

bool agent_obj_bytes(const msgpack_object *o, const char **p, uint32_t *len)
{
	if (o->type == MSGPACK_OBJECT_STR) {
		*p = o->via.str.ptr;
		*len = o->via.str.size;
		return true;
	}
	if (o->type == MSGPACK_OBJECT_BIN) {
		*p = o->via.bin.ptr;
		*len = o->via.bin.size;
		return true;
	}
	return false;
}

/* An array of str/bin without NULs (each with a '=' when need_eq);
 * adds the bytes they take as C strings to *bytes. */
static bool strings_ok(const msgpack_object_array *a, bool need_eq, size_t *bytes)
{
	const char *p;
	uint32_t len;

	for (uint32_t i = 0; i < a->size; i++) {
		if (!agent_obj_bytes(&a->ptr[i], &p, &len) || memchr(p, '\0', len))
			return false;
		if (need_eq && !memchr(p, '=', len))
			return false;
		*bytes += (size_t)len + 1;
	}
	return true;
}

static int exec_parse(const msgpack_object *params, struct exec_spec *s, char *why, size_t whylen)
{
	int rc;

	memset(s, 0, sizeof(*s));
	if (ipc_get_uint(params, "id", &s->id) < 0) {
		snprintf(why, whylen, "exec: id must be an unsigned integer");
		return -EINVAL;
	}
	if (ipc_get_array(params, "argv", &s->argv) < 0 || s->argv->size == 0 ||
	    !strings_ok(s->argv, false, &s->str_bytes)) {
		snprintf(why, whylen, "exec: argv must be a non-empty array of strings without NUL bytes");
		return -EINVAL;
	}
	if (ipc_get_array(params, "env", &s->env) < 0 || !strings_ok(s->env, true, &s->str_bytes)) {
		snprintf(why, whylen, "exec: env must be an array of \"K=V\" strings without NUL bytes");
		return -EINVAL;
	}
	if (ipc_get_bytes(params, "cwd", &s->cwd, &s->cwd_len) < 0 || s->cwd_len == 0 ||
	    memchr(s->cwd, '\0', s->cwd_len)) {
		snprintf(why, whylen, "exec: cwd must be a non-empty path without NUL bytes");
		return -EINVAL;
	}
	rc = ipc_get_bytes(params, "stdin", &s->stdin_data, &s->stdin_len);
	if (rc == -EINVAL) {
		snprintf(why, whylen, "exec: stdin must be bin");
		return -EINVAL;
	}
	if (ipc_get_uint(params, "timeout_ms", &s->timeout_ms) < 0 || s->timeout_ms == 0 ||
	    s->timeout_ms > AGENT_MAX_TIMEOUT_MS) {
		snprintf(why, whylen, "exec: timeout_ms must be an integer from 1 to %" PRIu64,
			 (uint64_t)AGENT_MAX_TIMEOUT_MS);
		return -EINVAL;
	}
	if (ipc_get_uint(params, "max_output", &s->max_output) < 0) {
		snprintf(why, whylen, "exec: max_output must be an unsigned integer");
		return -EINVAL;
	}
	return 0;
}

/* o was checked by strings_ok(). */
static char *copy_string(char *pos, const msgpack_object *o, char **slot)
{
	const char *p = "";
	uint32_t len = 0;

	(void)agent_obj_bytes(o, &p, &len);
	memcpy(pos, p, len);
	pos[len] = '\0';
	*slot = pos;
	return pos + len + 1;
}

/* argv, envp and cwd as C strings in one allocation the caller frees. */
static void *exec_build_plan(const struct exec_spec *s, struct child_plan *c)
{
	size_t nptr = (size_t)s->argv->size + 1 + s->env->size + 1;
	char **v = malloc(nptr * sizeof(char *) + s->str_bytes + s->cwd_len + 1);
	char *pos;

	if (!v)
		return NULL;
	pos = (char *)(v + nptr);
	c->argv = v;
	c->envp = v + s->argv->size + 1;
	for (uint32_t i = 0; i < s->argv->size; i++)
		pos = copy_string(pos, &s->argv->ptr[i], &c->argv[i]);
	c->argv[s->argv->size] = NULL;
	for (uint32_t i = 0; i < s->env->size; i++)
		pos = copy_string(pos, &s->env->ptr[i], &c->envp[i]);
	c->envp[s->env->size] = NULL;
	memcpy(pos, s->cwd, s->cwd_len);
	pos[s->cwd_len] = '\0';
	c->cwd = pos;
	return v;
}

int agent_pipe(int fds[2], int agent_end)
{
	if (pipe2(fds, O_CLOEXEC) < 0)
		return -errno;
	if (fcntl(fds[agent_end], F_SETFL, O_NONBLOCK) < 0) {
		int err = -errno;

		close(fds[0]);
		close(fds[1]);
		return err;
	}
	return 0;
}

/* Everything that can fail is done before fork, so a failure leaves no
 * process behind. On error *what names the failing step. */
static int exec_prepare(struct agent_exec *ex, const struct exec_spec *s, struct child_plan *c,
			const char **what)
{
	int fds[2], rc;

	*what = "pipe";
	if ((rc = agent_pipe(fds, 0)) < 0)
		return rc;
	ex->out[0].fd = fds[0];
	c->out_fd = fds[1];
	if ((rc = agent_pipe(fds, 0)) < 0)
		return rc;
	ex->out[1].fd = fds[0];
	c->err_fd = fds[1];
	if ((rc = agent_pipe(fds, 0)) < 0)
		return rc;
	ex->report_fd = fds[0];
	c->report_fd = fds[1];
	if (s->stdin_data && s->stdin_len > 0) {
		if ((rc = agent_pipe(fds, 1)) < 0)
			return rc;
		c->stdin_fd = fds[0];
		ex->stdin_fd = fds[1];
	}

	*what = "allocating the exec";
	for (int i = 0; i < 2; i++) {
		ex->out[i].ev = event_new(agent.base, ex->out[i].fd, EV_READ | EV_PERSIST, exec_on_pipe,
					  &ex->out[i]);
		if (!ex->out[i].ev)
			return -ENOMEM;
	}
	ex->timer = evtimer_new(agent.base, exec_on_timer, ex);
	if (!ex->timer)
		return -ENOMEM;
	if (ex->stdin_fd >= 0) {
		ex->stdin_ev = event_new(agent.base, ex->stdin_fd, EV_WRITE | EV_PERSIST, exec_on_stdin, ex);
		ex->stdin_buf = evbuffer_new();
		if (!ex->stdin_ev || !ex->stdin_buf || evbuffer_add(ex->stdin_buf, s->stdin_data, s->stdin_len) < 0)
			return -ENOMEM;
	}
	return 0;
}

static void child_plan_close(struct child_plan *c)
{
	agent_close_fd(&c->out_fd);
	agent_close_fd(&c->err_fd);
	agent_close_fd(&c->report_fd);
	agent_close_fd(&c->stdin_fd);
}

static int exec_start(const struct exec_spec *s, uint32_t msgid, char *why, size_t whylen)
{
	struct agent_exec *ex = TAILQ_FIRST(&agent.free);
	struct child_plan c = {
		.stdin_fd = -1, .out_fd = -1, .err_fd = -1, .chan_fd = -1, .report_fd = -1,
		.subreaper = true,
	};
	struct timeval tv;
	const char *what;
	void *plan;
	int rc;

	ex->id = s->id;
	ex->msgid = msgid;
	ex->max_output = s->max_output;
	ex->sent = 0;
	ex->truncated = false;
	ex->limit = NULL;
	rc = exec_prepare(ex, s, &c, &what);
	plan = rc == 0 ? exec_build_plan(s, &c) : NULL;
	if (rc == 0 && !plan) {
		what = "allocating the exec";
		rc = -ENOMEM;
	}
	if (rc == 0) {
		ex->start_us = agent_now_us();
		rc = agent_spawn(&c, &ex->pid);
		if (rc < 0)
			what = "fork";
	}
	free(plan);
	child_plan_close(&c);
	if (rc < 0) {
		exec_free_resources(ex);
		snprintf(why, whylen, "%s: %s", what, strerror(-rc));
		return rc;
	}

	exec_set_state(ex, EXEC_RUNNING);
	log_debug("exec %" PRIu64 ": started as pid %d", ex->id, (int)ex->pid);
	if (!agent.paused)
		exec_pipes_arm(ex, true);
	agent_ms_to_tv(s->timeout_ms, &tv);
	evtimer_add(ex->timer, &tv);
	if (ex->stdin_fd >= 0)
		event_add(ex->stdin_ev, NULL);
	return 0;
}

static void req_exec(const struct rpc_msg *m)
{
	struct exec_spec s;
	char why[AGENT_REPORT_MAX];

	if (exec_parse(m->params, &s, why, sizeof(why)) < 0) {
		agent_reply_error(m->msgid, SANDPOOL_E_BAD_REQUEST, "%s", why);
		return;
	}
	if (exec_find(s.id)) {
		agent_reply_error(m->msgid, SANDPOOL_E_BAD_REQUEST, "exec: id %" PRIu64 " is already running", s.id);
		return;
	}
	if (agent.n_execs >= AGENT_MAX_EXECS) {
		agent_reply_error(m->msgid, SANDPOOL_E_LIMIT_EXCEEDED, "exec: at most %d execs run at once",
			    AGENT_MAX_EXECS);
		return;
	}
	if (exec_start(&s, m->msgid, why, sizeof(why)) < 0) {
		log_error("exec %" PRIu64 ": %s", s.id, why);
		agent_reply_error(m->msgid, SANDPOOL_E_BACKEND_ERROR, "%s", why);
	}
}

static void req_kill(const struct rpc_msg *m)
{
	struct agent_exec *ex;
	uint64_t id;

	if (ipc_get_uint(m->params, "id", &id) < 0) {
		agent_reply_error(m->msgid, SANDPOOL_E_BAD_REQUEST, "kill: id must be an unsigned integer");
		return;
	}
	ex = exec_find(id);
	if (ex)
		exec_kill(ex);
	else
		context_interrupt_run(id);
	ipc_pack_response_ok_head(&agent.pk, m->msgid);
	msgpack_pack_map(&agent.pk, 0);
}

static void req_ping(const struct rpc_msg *m)
{
	ipc_pack_response_ok_head(&agent.pk, m->msgid);
	msgpack_pack_map(&agent.pk, 1);
	ipc_pack_kv_uint(&agent.pk, "execs", agent.n_execs);
}

static const struct {
	const char *method;
	void (*handle)(const struct rpc_msg *m);
} agent_requests[] = {
	{ "exec", req_exec },
	{ "kill", req_kill },
	{ "ping", req_ping },
	{ "code.run", context_req_run },
	{ "context.create", context_req_create },
	{ "context.list", context_req_list },
	{ "context.restart", context_req_restart },
	{ "context.remove", context_req_remove },
	{ "files.write", files_req_write },
	{ "files.read", files_req_read },
	{ "files.list", files_req_list },
	{ "files.remove", files_req_remove },
};

static void agent_dispatch(const struct rpc_msg *m)
{
	if (m->type != RPC_REQUEST) {
		log_debug("ignoring a message of type %d from the daemon", (int)m->type);
		return;
	}
	for (size_t i = 0; i < ARRAY_SIZE(agent_requests); i++) {
		if (ipc_method_is(m, agent_requests[i].method)) {
			agent_requests[i].handle(m);
			return;
		}
	}
	agent_reply_error(m->msgid, SANDPOOL_E_UNKNOWN_METHOD, "unknown method %.*s", (int)m->method_len, m->method);
}

static void ctrl_on_read(struct bufferevent *bev, void *arg)
{
	struct evbuffer *in = bufferevent_get_input(bev);

	while (!agent.stopping && evbuffer_get_length(in) > 0) {
		size_t avail = evbuffer_get_length(in), cap;
		char *dst = ipc_reader_buffer(&agent.reader, avail, &cap);
		int n;

		if (!dst) {
			log_error("control channel: out of memory");
			agent_stop(1);
			return;
		}
		n = evbuffer_remove(in, dst, avail < cap ? avail : cap);
		if (n <= 0)
			break;
		ipc_reader_consumed(&agent.reader, (size_t)n);
		while (!agent.stopping) {
			struct rpc_msg m;
			const char *why = NULL;
			enum ipc_read_status st = ipc_reader_next(&agent.reader, &m, &why);

			if (st == IPC_READ_MORE)
				break;
			if (st == IPC_READ_TOO_LARGE) {
				log_error("control channel: a message is larger than %zu bytes", agent.reader.max_frame);
				agent_stop(1);
			} else if (st == IPC_READ_MALFORMED) {
				log_error("control channel: malformed message: %s", why ? why : "?");
				agent_stop(1);
			} else {
				agent_dispatch(&m);
			}
		}
	}
}

static void ctrl_on_event(struct bufferevent *bev, short what, void *arg)
{
	if (what & BEV_EVENT_EOF) {
		agent_stop(0);
	} else if (what & BEV_EVENT_ERROR) {
		log_error("control channel: %s", evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
		agent_stop(1);
	}
}

/* --- start-up and shutdown ---------------------------------------------- */

static void __attribute__((noreturn)) usage(void)
{
	die("usage: sandpool-agent {--uid UID --gid GID | --rootless} [--max-frame BYTES] [--nproc N]");
}

static unsigned long long parse_number(const char *opt, const char *s, unsigned long long min,
				       unsigned long long max)
{
	unsigned long long v;
	char *end;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end || *s == '-' || v < min || v > max)
		die("%s: '%s' is not a number from %llu to %llu", opt, s, min, max);
	return v;
}

static void agent_parse_args(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "uid", required_argument, NULL, 'u' },
		{ "gid", required_argument, NULL, 'g' },
		{ "max-frame", required_argument, NULL, 'f' },
		{ "rootless", no_argument, NULL, 'r' },
		{ "nproc", required_argument, NULL, 'n' },
		{ NULL, 0, NULL, 0 },
	};
	bool have_uid = false, have_gid = false;
	int c;

	agent.max_frame = AGENT_DEFAULT_MAX_FRAME;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'u':
			/* Never 0: user code must not run as root. */
			agent.uid = (uid_t)parse_number("--uid", optarg, 1, UINT32_MAX - 1);
			have_uid = true;
			break;
		case 'g':
			agent.gid = (gid_t)parse_number("--gid", optarg, 1, UINT32_MAX - 1);
			have_gid = true;
			break;
		case 'f':
			agent.max_frame = (size_t)parse_number("--max-frame", optarg, 1024, 1u << 30);
			break;
		case 'r':
			agent.rootless = true;
			break;
		case 'n':
			agent.nproc = (rlim_t)parse_number("--nproc", optarg, 1, 1u << 22);
			break;
		default:
			usage();
		}
	}
	/* Rootless takes no ids: 0 is the only one there is. */
	if (agent.rootless == (have_uid || have_gid) || (!agent.rootless && have_uid != have_gid) ||
	    optind != argc)
		usage();
	agent.chunk = agent.max_frame < AGENT_CHUNK_MAX ? agent.max_frame : AGENT_CHUNK_MAX;
}

/* A closed fd 0-2 would be handed out by pipe() and then clobbered by the
 * child's dup2() onto 0-2; fill any gap with /dev/null. */
static void agent_check_fds(void)
{
	struct stat st;

	for (int fd = 0; fd < 3; fd++) {
		if (fcntl(fd, F_GETFD) >= 0)
			continue;
		if (open("/dev/null", O_RDWR) != fd)
			die("cannot open /dev/null as fd %d", fd);
	}
	if (fstat(AGENT_CTRL_FD, &st) < 0 || !S_ISSOCK(st.st_mode))
		die("fd %d is not the control socket", AGENT_CTRL_FD);
	if (fcntl(AGENT_CTRL_FD, F_SETFD, FD_CLOEXEC) < 0 || evutil_make_socket_nonblocking(AGENT_CTRL_FD) < 0)
		die("fd %d: %s", AGENT_CTRL_FD, strerror(errno));
}

static void agent_setup(void)
{
	struct sigaction ign = { .sa_handler = SIG_IGN };
	int rc = agent_seccomp_build(&user_filter);

	if (rc < 0)
		die("building the seccomp filter: %s", strerror(-rc));
	/* A reader that went away is an error return, not our death. */
	sigaction(SIGPIPE, &ign, NULL);
	/* Outside a PID namespace (tests, debugging), still inherit orphans so
	 * that reaping works as it does as PID 1. */
	if (getpid() != 1 && prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0)
		log_warn("prctl(PR_SET_CHILD_SUBREAPER): %s", strerror(errno));

	TAILQ_INIT(&agent.free);
	TAILQ_INIT(&agent.running);
	TAILQ_INIT(&agent.draining);
	contexts_init();
	for (int i = 0; i < AGENT_MAX_EXECS; i++) {
		struct agent_exec *ex = &agent.slots[i];

		ex->state = EXEC_FREE;
		ex->report_fd = ex->stdin_fd = -1;
		for (int j = 0; j < 2; j++)
			ex->out[j] = (struct exec_pipe){ .ex = ex, .fd = -1, .stream = j + 1 };
		TAILQ_INSERT_TAIL(&agent.free, ex, link);
	}

	if (ipc_reader_init(&agent.reader, agent.max_frame + AGENT_FRAME_SLACK) < 0)
		die("out of memory");
	agent.base = event_base_new();
	if (!agent.base)
		die("event_base_new failed");
	agent.sigchld = evsignal_new(agent.base, SIGCHLD, agent_on_sigchld, NULL);
	if (!agent.sigchld || event_add(agent.sigchld, NULL) < 0)
		die("cannot watch SIGCHLD");
	agent.ctrl = bufferevent_socket_new(agent.base, AGENT_CTRL_FD, BEV_OPT_CLOSE_ON_FREE);
	if (!agent.ctrl)
		die("cannot attach the control socket");
	bufferevent_setcb(agent.ctrl, ctrl_on_read, ctrl_on_drained, ctrl_on_event, NULL);
	bufferevent_setwatermark(agent.ctrl, EV_WRITE, AGENT_OUTBUF_LOW, 0);
	if (bufferevent_enable(agent.ctrl, EV_READ | EV_WRITE) < 0)
		die("cannot watch the control socket");
	msgpack_packer_init(&agent.pk, bufferevent_get_output(agent.ctrl), ipc_evbuffer_write);

	ipc_pack_notify_head(&agent.pk, "ready");
	msgpack_pack_map(&agent.pk, 2);
	ipc_pack_kv_int(&agent.pk, "pid", getpid());
	ipc_pack_kv_str(&agent.pk, "version", PACKAGE_VERSION);
}

/* The daemon is gone or broke the protocol: nothing may outlive us. */
static void agent_teardown(void)
{
	struct agent_exec *ex;

	while ((ex = TAILQ_FIRST(&agent.running))) {
		exec_kill(ex);
		/* SIGKILLed, so this wait is short; it leaves no zombie behind. */
		while (waitpid(ex->pid, NULL, 0) < 0 && errno == EINTR)
			;
		exec_free_resources(ex);
		exec_set_state(ex, EXEC_FREE);
	}
	while ((ex = TAILQ_FIRST(&agent.draining))) {
		exec_free_resources(ex);
		exec_set_state(ex, EXEC_FREE);
	}
	contexts_teardown();
	files_teardown();
	/* As PID 1 this also gets processes that left their exec's group. */
	if (getpid() == 1)
		kill(-1, SIGKILL);
	event_free(agent.sigchld);
	bufferevent_free(agent.ctrl);
	event_base_free(agent.base);
	ipc_reader_destroy(&agent.reader);
	free(user_filter.filter);
	free(proc_tab);
}

int main(int argc, char **argv)
{
	log_init("sandpool-agent");
	agent_parse_args(argc, argv);
	agent_check_fds();
	agent_setup();
	if (event_base_dispatch(agent.base) < 0) {
		log_error("event loop failed");
		agent.stopping = true;
		agent.exit_status = 1;
	}
	agent_teardown();
	return agent.exit_status;
}
