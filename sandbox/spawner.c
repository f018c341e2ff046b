#include "autoconfig.h"

#include "sandbox/spawner.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/sched.h>
#include <sched.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon/log.h"
#include "ipc/codec.h"

#define SPAWN_MSG_MAX (64 * 1024)

struct spawn_reply {
	uint32_t serial;
	int32_t err; /* 0 or -errno */
	int32_t pid;
	char msg[256];
};

struct spawn_pending {
	uint32_t serial;
	spawn_done_fn cb; /* NULL once cancelled */
	void *arg;
	TAILQ_ENTRY(spawn_pending) link;
};

struct spawner {
	int sock;
	pid_t pid;
	uint32_t next_serial;
	struct event *ev;
	TAILQ_HEAD(, spawn_pending) pending;
};

/* ---- the spawner process ----------------------------------------------- */

/* Spawner-process state, copied in by fork. */
static struct cgroup_layout sp_cg;
static struct spawner_ids sp_ids;
/* Which sandbox holds each host-id slot ("" when free). */
static char (*sp_slots)[32];
/* Slots whose sandbox is gone but whose cgroup still empties: the slot's
 * ids are not handed out again until it is removed. */
static bool *sp_removing;
static unsigned sp_n_removing;

static int slot_alloc(const char *id)
{
	for (unsigned i = 0; i < sp_ids.n_slots; i++) {
		if (!sp_slots[i][0]) {
			snprintf(sp_slots[i], sizeof(sp_slots[i]), "%s", id);
			return (int)i;
		}
	}
	return -1;
}

static void slot_free(const char *id)
{
	for (unsigned i = 0; i < sp_ids.n_slots; i++)
		if (!strcmp(sp_slots[i], id))
			sp_slots[i][0] = '\0';
}

/* Removes a gone sandbox's cgroup without waiting: if its processes are
 * still leaving, the slot is retried from the main loop. */
static void reap(const char *id)
{
	for (unsigned i = 0; i < sp_ids.n_slots; i++) {
		if (strcmp(sp_slots[i], id) || sp_removing[i])
			continue;
		if (cgroup_try_remove(&sp_cg, id) == -EBUSY) {
			sp_removing[i] = true;
			sp_n_removing++;
		} else {
			sp_slots[i][0] = '\0';
		}
		return;
	}
	(void)cgroup_try_remove(&sp_cg, id);
}

static void retry_removals(void)
{
	for (unsigned i = 0; i < sp_ids.n_slots && sp_n_removing; i++) {
		if (!sp_removing[i] || cgroup_try_remove(&sp_cg, sp_slots[i]) == -EBUSY)
			continue;
		sp_removing[i] = false;
		sp_n_removing--;
		sp_slots[i][0] = '\0';
	}
}

static int decode_params(const msgpack_object *m, struct spawn_params *p, uint32_t *serial)
{
	const msgpack_object_array *binds = NULL;
	const char *s;
	uint32_t len;
	uint64_t v;

	memset(p, 0, sizeof(*p));
	if (ipc_get_uint(m, "serial", &v) < 0)
		return -EINVAL;
	*serial = (uint32_t)v;
	if (ipc_get_str(m, "id", &s, &len) < 0 || len >= sizeof(p->id))
		return -EINVAL;
	memcpy(p->id, s, len);
	if (ipc_get_uint(m, "uid", &v) < 0)
		return -EINVAL;
	p->uid = (uid_t)v;
	if (ipc_get_uint(m, "gid", &v) < 0)
		return -EINVAL;
	p->gid = (gid_t)v;
	if (ipc_get_uint(m, "network", &v) < 0)
		return -EINVAL;
	p->network = v == NETWORK_HOST ? NETWORK_HOST : NETWORK_NONE;
	if (ipc_get_uint(m, "workspace_size", &p->workspace_size) < 0 ||
	    ipc_get_uint(m, "max_frame", &p->max_frame) < 0 ||
	    ipc_get_uint(m, "memory", &p->limits.memory) < 0 ||
	    ipc_get_uint(m, "cpu_milli", &p->limits.cpu_milli) < 0 || ipc_get_uint(m, "pids", &v) < 0)
		return -EINVAL;
	p->limits.pids = (unsigned)v;
	if (ipc_get_str(m, "rootfs", &s, &len) == 0) {
		if (len >= sizeof(p->rootfs))
			return -EINVAL;
		memcpy(p->rootfs, s, len);
	}
	if (ipc_get_array(m, "binds", &binds) == 0) {
		if (binds->size > CONFIG_MAX_BINDS)
			return -EINVAL;
		for (uint32_t i = 0; i < binds->size; i++) {
			const msgpack_object *b = &binds->ptr[i];

			if (b->type != MSGPACK_OBJECT_ARRAY || b->via.array.size != 3 ||
			    b->via.array.ptr[2].type != MSGPACK_OBJECT_BOOLEAN)
				return -EINVAL;
			p->binds[i].source = ipc_obj_strdup(&b->via.array.ptr[0]);
			p->binds[i].dest = ipc_obj_strdup(&b->via.array.ptr[1]);
			p->binds[i].writable = b->via.array.ptr[2].via.boolean;
			p->n_binds = i + 1;
			if (!p->binds[i].source || !p->binds[i].dest)
				return -EINVAL;
		}
	}
	return 0;
}

static void free_params(struct spawn_params *p)
{
	for (unsigned i = 0; i < p->n_binds; i++) {
		free(p->binds[i].source);
		free(p->binds[i].dest);
	}
}

static void send_reply(int sock, const struct spawn_reply *r, int ctrl_fd, int pidfd)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(2 * sizeof(int))];
	} cm;
	struct iovec iov = { .iov_base = (void *)r, .iov_len = sizeof(*r) };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };

	if (ctrl_fd >= 0) {
		int fds[2] = { ctrl_fd, pidfd };

		memset(&cm, 0, sizeof(cm));
		msg.msg_control = cm.buf;
		msg.msg_controllen = sizeof(cm.buf);
		cm.h.cmsg_level = SOL_SOCKET;
		cm.h.cmsg_type = SCM_RIGHTS;
		cm.h.cmsg_len = CMSG_LEN(sizeof(fds));
		memcpy(CMSG_DATA(&cm.h), fds, sizeof(fds));
	}
	while (sendmsg(sock, &msg, MSG_NOSIGNAL) < 0 && errno == EINTR)
		;
}

static void __attribute__((noreturn))
child_main(const struct setup_plan *plan, const struct spawn_params *p, int ctrl, int agent_fd, int go_fd)
{
	char uid[16], gid[16], frame[24], nproc[16];
	char *argv[12];
	char *envp[] = { "PATH=/usr/local/bin:/usr/bin:/bin", NULL };
	sigset_t all;
	char go;
	int c, a, n = 0;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	/* Nothing happens until the spawner has written our id maps and put
	 * us in our cgroup: set-up must already run as the mapped ids and be
	 * charged to the sandbox. */
	if (read(go_fd, &go, 1) != 1)
		_exit(1);
	close(go_fd);
	/* Become the namespace's root, i.e. the sandbox's own host uid: files
	 * we create must belong to an id that exists in here. Rootless, the
	 * kernel denies setgroups(): the daemon's supplementary groups stay. */
	if (setresgid(0, 0, 0) < 0 || (!sp_ids.rootless && setgroups(0, NULL) < 0) ||
	    setresuid(0, 0, 0) < 0)
		setup_fail(ctrl, "switch to the namespace's root");
	/* The id change cleared the death signal: set it again. A spawner
	 * that died meanwhile closed go_fd's writer only after admitting us,
	 * so the agent's control socket reaching EOF covers that window. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	/* Now that we sit in our own cgroup, make it our cgroup root: the
	 * host's cgroup paths stay out of /proc/self/cgroup. */
	if (unshare(CLONE_NEWCGROUP) < 0)
		setup_fail(ctrl, "unshare(CLONE_NEWCGROUP)");
	signal(SIGCHLD, SIG_DFL);
	sigemptyset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);

	/* The agent finds its control socket on fd 3; the agent binary rides
	 * on fd 4 until execveat. Move both above the targets first so the
	 * dup2()s cannot clobber one another. */
	c = fcntl(ctrl, F_DUPFD_CLOEXEC, 10);
	a = fcntl(agent_fd, F_DUPFD_CLOEXEC, 10);
	if (c < 0 || a < 0 || dup2(c, 3) < 0 || dup2(a, 4) < 0)
		setup_fail(ctrl, "arrange fds");
	fcntl(4, F_SETFD, FD_CLOEXEC);
	close_range(5, ~0U, 0);

	snprintf(uid, sizeof(uid), "%u", (unsigned)p->uid);
	snprintf(gid, sizeof(gid), "%u", (unsigned)p->gid);
	snprintf(frame, sizeof(frame), "%llu", (unsigned long long)p->max_frame);
	snprintf(nproc, sizeof(nproc), "%u", p->limits.pids);
	argv[n++] = "sandpool-agent";
	if (sp_ids.rootless) {
		argv[n++] = "--rootless";
	} else {
		argv[n++] = "--uid";
		argv[n++] = uid;
		argv[n++] = "--gid";
		argv[n++] = gid;
	}
	argv[n++] = "--max-frame";
	argv[n++] = frame;
	if (sp_ids.nproc_limit) {
		argv[n++] = "--nproc";
		argv[n++] = nproc;
	}
	argv[n] = NULL;

	setup_run(plan, 3);
	syscall(SYS_execveat, 4, "", argv, envp, AT_EMPTY_PATH);
	setup_fail(3, "execveat sandpool-agent");
}

/* Writes text to /proc/PID/file (an id map, setgroups). */
static int write_proc(pid_t pid, const char *file, const char *text)
{
	char path[64];
	size_t len = strlen(text);
	int fd, rc = 0;

	snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, file);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (write(fd, text, len) != (ssize_t)len)
		rc = errno ? -errno : -EIO;
	close(fd);
	return rc;
}

/*
 * Rootless, the kernel lets us map one id, our own, and a gid only once
 * setgroups is denied in the namespace (its root could otherwise drop a
 * supplementary group that denies it access). Inner 0 is the daemon's
 * uid: every sandbox and the daemon share it, and only the namespaces
 * keep them apart (docs/SECURITY.md). uid and gid are our ids as our own
 * user namespace sees them.
 */
static int write_rootless_maps(pid_t pid, uid_t uid, gid_t gid, const char **what)
{
	char map[32];
	int rc;

	*what = "uid_map";
	snprintf(map, sizeof(map), "0 %u 1\n", (unsigned)uid);
	if ((rc = write_proc(pid, "uid_map", map)) < 0)
		return rc;
	*what = "setgroups";
	if ((rc = write_proc(pid, "setgroups", "deny")) < 0)
		return rc;
	*what = "gid_map";
	snprintf(map, sizeof(map), "0 %u 1\n", (unsigned)gid);
	return write_proc(pid, "gid_map", map);
}

/* Inner root is the sandbox's own unprivileged host id; the user code id
 * is the next one. Nothing else exists inside. */
static int write_maps(pid_t pid, const struct spawn_params *p, unsigned base, const char **what)
{
	char map[96];
	int rc;

	*what = "uid_map";
	snprintf(map, sizeof(map), "0 %u 1\n%u %u 1\n", base, (unsigned)p->uid, base + 1);
	if ((rc = write_proc(pid, "uid_map", map)) < 0)
		return rc;
	*what = "gid_map";
	snprintf(map, sizeof(map), "0 %u 1\n%u %u 1\n", base, (unsigned)p->gid, base + 1);
	return write_proc(pid, "gid_map", map);
}

int spawner_check_rootless(char *err, size_t errlen)
{
	char msg[256] = "";
	int fds[2], status;
	pid_t pid;
	ssize_t n;

	if (pipe2(fds, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid < 0) {
		int rc = -errno;

		close(fds[0]);
		close(fds[1]);
		return rc;
	}
	if (pid == 0) {
		/* Taken before unshare(), after which they read as the overflow id. */
		uid_t uid = geteuid();
		gid_t gid = getegid();
		const char *what = "unshare(CLONE_NEWUSER)";
		int rc = unshare(CLONE_NEWUSER) < 0 ? -errno : 0;

		if (rc == 0)
			rc = write_rootless_maps(getpid(), uid, gid, &what);
		if (rc == 0 && unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWUTS | CLONE_NEWIPC |
				       CLONE_NEWCGROUP) < 0) {
			what = "unshare(CLONE_NEWNS|NEWPID|NEWNET|NEWUTS|NEWIPC|NEWCGROUP)";
			rc = -errno;
		}
		if (rc < 0)
			dprintf(fds[1], "%s: %s", what, strerror(-rc));
		_exit(rc < 0);
	}
	close(fds[1]);
	n = read(fds[0], msg, sizeof(msg) - 1);
	close(fds[0]);
	msg[n > 0 ? n : 0] = '\0';
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	snprintf(err, errlen, "%s", msg[0] ? msg : "the probe process died");
	return -EPERM;
}

static void reply_error(int sock, uint32_t serial, int err, const char *what)
{
	struct spawn_reply r = { .serial = serial, .err = err };

	snprintf(r.msg, sizeof(r.msg), "%s: %s", what, strerror(-err));
	send_reply(sock, &r, -1, -1);
}

/* Ids, maps and cgroup for a just-cloned child, then lets it go on. */
static int admit_child(pid_t pid, const struct spawn_params *p, int slot, int go_fd, const char **what)
{
	unsigned base = sp_ids.uid_base + 2u * (unsigned)slot;
	int rc;

	rc = sp_ids.rootless ? write_rootless_maps(pid, geteuid(), getegid(), what) : write_maps(pid, p, base, what);
	if (rc < 0)
		return rc;
	*what = "cgroup";
	if ((rc = cgroup_attach(&sp_cg, p->id, pid)) < 0)
		return rc;
	*what = "release";
	if (write(go_fd, "g", 1) != 1)
		return -errno;
	return 0;
}

static void spawn_one(int sock, int agent_fd, uint32_t serial, const struct spawn_params *p)
{
	struct spawn_reply r = { .serial = serial };
	struct setup_plan plan;
	int sv[2] = { -1, -1 }, go[2] = { -1, -1 }, pidfd = -1, slot, rc;
	struct clone_args ca = { 0 };
	const char *what = "clone3";
	char err[256];
	long pid;

	slot = slot_alloc(p->id);
	if (slot < 0) {
		reply_error(sock, serial, -EAGAIN, "no free host uid slot");
		return;
	}
	if (cgroup_create(&sp_cg, p->id, &p->limits, err, sizeof(err)) < 0) {
		r.err = -EIO;
		snprintf(r.msg, sizeof(r.msg), "%s", err);
		send_reply(sock, &r, -1, -1);
		slot_free(p->id);
		return;
	}
	if (setup_plan_build(&plan, p) < 0) {
		reply_error(sock, serial, -ENOMEM, "set-up plan");
		goto fail;
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0 || pipe2(go, O_CLOEXEC) < 0) {
		reply_error(sock, serial, -errno, "socketpair");
		goto fail_plan;
	}
	ca.flags = CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_PIDFD;
	if (p->network == NETWORK_NONE)
		ca.flags |= CLONE_NEWNET;
	ca.pidfd = (uint64_t)(uintptr_t)&pidfd;
	ca.exit_signal = SIGCHLD;
	pid = syscall(SYS_clone3, &ca, sizeof(ca));
	if (pid == 0) {
		close(sv[0]);
		close(go[1]);
		child_main(&plan, p, sv[1], agent_fd, go[0]);
	}
	if (pid < 0) {
		reply_error(sock, serial, -errno, "clone3");
		goto fail_plan;
	}
	close(go[0]);
	go[0] = -1;
	rc = admit_child((pid_t)pid, p, slot, go[1], &what);
	if (rc < 0) {
		syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
		close(pidfd);
		reply_error(sock, serial, rc, what);
		goto fail_plan;
	}
	r.pid = (int32_t)pid;
	send_reply(sock, &r, sv[0], pidfd);
	close(pidfd);
	close(go[1]);
	close(sv[0]);
	close(sv[1]);
	setup_plan_free(&plan);
	return;

fail_plan:
	for (int i = 0; i < 2; i++) {
		if (sv[i] >= 0)
			close(sv[i]);
		if (go[i] >= 0)
			close(go[i]);
	}
	setup_plan_free(&plan);
fail:
	cgroup_destroy(&sp_cg, p->id);
	slot_free(p->id);
}

/* {op: "reap", id}: copies id out and says yes. */
static bool is_reap(const msgpack_object *m, char *id, size_t idlen)
{
	const char *s;
	uint32_t len;

	if (ipc_get_str(m, "op", &s, &len) < 0 || len != 4 || memcmp(s, "reap", 4) ||
	    ipc_get_str(m, "id", &s, &len) < 0 || len >= idlen)
		return false;
	memcpy(id, s, len);
	id[len] = '\0';
	return true;
}

static void __attribute__((noreturn)) spawner_main(int sock, int agent_fd)
{
	static char buf[SPAWN_MSG_MAX];
	struct sigaction sa = { .sa_handler = SIG_IGN, .sa_flags = SA_NOCLDWAIT };
	int devnull;

	/* Sandboxes are reaped by the kernel: their exit reaches the daemon
	 * through the pidfd, so the spawner never needs to wait. */
	sigaction(SIGCHLD, &sa, NULL);
	/* A service manager signals the whole group at stop; the spawner
	 * leaves when the daemon closes its socket (cleaning up) or dies
	 * (PR_SET_PDEATHSIG), never on a signal meant for the daemon. */
	signal(SIGPIPE, SIG_IGN);
	signal(SIGTERM, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (devnull >= 0)
		dup2(devnull, STDIN_FILENO);
	if (devnull > STDIN_FILENO)
		close(devnull);

	for (;;) {
		struct spawn_params p;
		msgpack_unpacked up;
		uint32_t serial = 0;
		struct pollfd pfd = { .fd = sock, .events = POLLIN };
		ssize_t n;

		if (sp_n_removing && poll(&pfd, 1, 20) == 0) {
			retry_removals();
			continue;
		}
		n = recv(sock, buf, sizeof(buf), 0);
		if (n == 0) {
			/* The daemon is gone: leave no group behind. */
			for (int i = 0; i < 500 && sp_n_removing; i++) {
				poll(NULL, 0, 20);
				retry_removals();
			}
			cgroup_teardown(&sp_cg);
			_exit(0);
		}
		if (n < 0) {
			if (errno == EINTR)
				continue;
			_exit(1);
		}
		msgpack_unpacked_init(&up);
		memset(&p, 0, sizeof(p));
		if (msgpack_unpack_next(&up, buf, (size_t)n, NULL) == MSGPACK_UNPACK_SUCCESS &&
		    is_reap(&up.data, p.id, sizeof(p.id))) {
			reap(p.id);
		} else if (up.data.type != MSGPACK_OBJECT_MAP || decode_params(&up.data, &p, &serial) < 0) {
			struct spawn_reply r = { .serial = serial, .err = -EINVAL };

			snprintf(r.msg, sizeof(r.msg), "malformed spawn request");
			send_reply(sock, &r, -1, -1);
		} else {
			/* Rootless, inner 0 is the only id there is: user code
			 * runs as it (without capabilities), and owns /workspace. */
			if (sp_ids.rootless)
				p.uid = p.gid = 0;
			spawn_one(sock, agent_fd, serial, &p);
		}
		free_params(&p);
		msgpack_unpacked_destroy(&up);
	}
}

int spawner_start(struct spawner **out, const char *agent_path, const struct cgroup_layout *cg,
		  const struct spawner_ids *ids)
{
	struct spawner *sp;
	int sv[2], agent_fd;
	pid_t parent = getpid();
	pid_t pid;

	sp_cg = *cg;
	sp_ids = *ids;
	agent_fd = open(agent_path, O_PATH | O_CLOEXEC);
	if (agent_fd < 0) {
		int err = -errno;

		log_error("spawner: open agent %s: %s", agent_path, strerror(errno));
		return err;
	}
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
		int err = -errno;

		close(agent_fd);
		return err;
	}
	pid = fork();
	if (pid < 0) {
		int err = -errno;

		close(agent_fd);
		close(sv[0]);
		close(sv[1]);
		return err;
	}
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(1);
		/* Keep only what the spawner uses: stdio, its socket, the agent. */
		int s = fcntl(sv[1], F_DUPFD_CLOEXEC, 3);
		int a = fcntl(agent_fd, F_DUPFD_CLOEXEC, s + 1);

		if (s < 0 || a < 0 || dup2(s, 3) < 0 || dup2(a, 4) < 0)
			_exit(1);
		fcntl(3, F_SETFD, FD_CLOEXEC);
		fcntl(4, F_SETFD, FD_CLOEXEC);
		close_range(5, ~0U, 0);
		prctl(PR_SET_NAME, "sandpool-spawn");
		sp_slots = calloc(sp_ids.n_slots, sizeof(*sp_slots));
		sp_removing = calloc(sp_ids.n_slots, sizeof(*sp_removing));
		if (!sp_slots || !sp_removing)
			_exit(1);
		spawner_main(3, 4);
	}
	close(sv[1]);
	close(agent_fd);
	sp = calloc(1, sizeof(*sp));
	if (!sp) {
		close(sv[0]);
		return -ENOMEM;
	}
	sp->sock = sv[0];
	sp->pid = pid;
	sp->next_serial = 1;
	TAILQ_INIT(&sp->pending);
	*out = sp;
	return 0;
}

static void kill_orphan(pid_t pid, int ctrl_fd, int pidfd)
{
	/* Nobody wants this sandbox any more; closing ctrl_fd alone would do,
	 * but the pidfd makes it immediate. */
	syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
	close(ctrl_fd);
	close(pidfd);
	(void)pid;
}

static void fail_all(struct spawner *sp, int err, const char *msg)
{
	struct spawn_pending *pd;

	while ((pd = TAILQ_FIRST(&sp->pending))) {
		TAILQ_REMOVE(&sp->pending, pd, link);
		if (pd->cb)
			pd->cb(pd->arg, err, msg, -1, -1, -1);
		free(pd);
	}
}

static void on_reply(evutil_socket_t fd, short what, void *arg)
{
	struct spawner *sp = arg;
	struct spawn_reply r;
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(2 * sizeof(int))];
	} cm;
	struct iovec iov = { .iov_base = &r, .iov_len = sizeof(r) };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.buf,
			      .msg_controllen = sizeof(cm.buf) };
	struct spawn_pending *pd;
	int fds[2] = { -1, -1 };
	ssize_t n;

	n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		log_error("spawner: process %d went away; no more sandboxes can be created", (int)sp->pid);
		event_del(sp->ev);
		close(sp->sock);
		sp->sock = -1;
		fail_all(sp, -EPIPE, "the sandbox spawner died");
		return;
	}
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
	    c->cmsg_len == CMSG_LEN(sizeof(fds)))
		memcpy(fds, CMSG_DATA(c), sizeof(fds));
	r.msg[sizeof(r.msg) - 1] = '\0';

	pd = TAILQ_FIRST(&sp->pending);
	if (!pd || pd->serial != r.serial || (size_t)n != sizeof(r) ||
	    (r.err == 0 && (fds[0] < 0 || fds[1] < 0)))
		fatal("spawner: reply %u out of sequence", r.serial);
	TAILQ_REMOVE(&sp->pending, pd, link);
	if (!pd->cb) {
		if (r.err == 0)
			kill_orphan(r.pid, fds[0], fds[1]);
	} else if (r.err) {
		pd->cb(pd->arg, r.err, r.msg, -1, -1, -1);
	} else {
		pd->cb(pd->arg, 0, NULL, r.pid, fds[0], fds[1]);
	}
	free(pd);
}

int spawner_attach(struct spawner *sp, struct event_base *base)
{
	sp->ev = event_new(base, sp->sock, EV_READ | EV_PERSIST, on_reply, sp);
	if (!sp->ev || event_add(sp->ev, NULL) < 0)
		return -ENOMEM;
	return 0;
}

static void pack_params(msgpack_packer *pk, uint32_t serial, const struct spawn_params *p)
{
	msgpack_pack_map(pk, 12);
	ipc_pack_kv_uint(pk, "serial", serial);
	ipc_pack_kv_uint(pk, "memory", p->limits.memory);
	ipc_pack_kv_uint(pk, "pids", p->limits.pids);
	ipc_pack_kv_uint(pk, "cpu_milli", p->limits.cpu_milli);
	ipc_pack_kv_str(pk, "id", p->id);
	ipc_pack_kv_uint(pk, "uid", p->uid);
	ipc_pack_kv_uint(pk, "gid", p->gid);
	ipc_pack_kv_uint(pk, "network", p->network);
	ipc_pack_kv_uint(pk, "workspace_size", p->workspace_size);
	ipc_pack_kv_uint(pk, "max_frame", p->max_frame);
	ipc_pack_kv_str(pk, "rootfs", p->rootfs);
	ipc_pack_cstr(pk, "binds");
	msgpack_pack_array(pk, p->n_binds);
	for (unsigned i = 0; i < p->n_binds; i++) {
		msgpack_pack_array(pk, 3);
		ipc_pack_cstr(pk, p->binds[i].source);
		ipc_pack_cstr(pk, p->binds[i].dest);
		if (p->binds[i].writable)
			msgpack_pack_true(pk);
		else
			msgpack_pack_false(pk);
	}
}

int spawner_request(struct spawner *sp, const struct spawn_params *p, spawn_done_fn cb, void *arg)
{
	struct spawn_pending *pd;
	msgpack_sbuffer sbuf;
	msgpack_packer pk;
	ssize_t n;

	if (sp->sock < 0)
		return -EPIPE;
	pd = calloc(1, sizeof(*pd));
	if (!pd)
		return -ENOMEM;
	msgpack_sbuffer_init(&sbuf);
	msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
	pd->serial = sp->next_serial++;
	pack_params(&pk, pd->serial, p);
	if (sbuf.size > SPAWN_MSG_MAX) {
		msgpack_sbuffer_destroy(&sbuf);
		free(pd);
		return -E2BIG;
	}
	n = send(sp->sock, sbuf.data, sbuf.size, MSG_DONTWAIT | MSG_NOSIGNAL);
	msgpack_sbuffer_destroy(&sbuf);
	if (n < 0) {
		int err = -errno;

		free(pd);
		return err;
	}
	pd->cb = cb;
	pd->arg = arg;
	TAILQ_INSERT_TAIL(&sp->pending, pd, link);
	return 0;
}

int spawner_reap(struct spawner *sp, const char *id)
{
	msgpack_sbuffer sbuf;
	msgpack_packer pk;
	ssize_t n;

	if (sp->sock < 0)
		return -EPIPE;
	msgpack_sbuffer_init(&sbuf);
	msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 2);
	ipc_pack_kv_str(&pk, "op", "reap");
	ipc_pack_kv_str(&pk, "id", id);
	n = send(sp->sock, sbuf.data, sbuf.size, MSG_DONTWAIT | MSG_NOSIGNAL);
	msgpack_sbuffer_destroy(&sbuf);
	return n < 0 ? -errno : 0;
}

void spawner_cancel(struct spawner *sp, void *arg)
{
	struct spawn_pending *pd;

	TAILQ_FOREACH(pd, &sp->pending, link)
		if (pd->arg == arg)
			pd->cb = NULL;
}

void spawner_stop(struct spawner *sp)
{
	if (!sp)
		return;
	if (sp->ev)
		event_free(sp->ev);
	if (sp->sock >= 0)
		close(sp->sock);
	/* The spawner exits on EOF; reap it so no zombie outlives us. */
	waitpid(sp->pid, NULL, 0);
	fail_all(sp, -ECANCELED, "shutting down");
	free(sp);
}
