#include "autoconfig.h"

#include "sandbox/setup.h"

#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "daemon/log.h"
#include "ipc/codec.h"

/* Where the child assembles things. BASE is a tmpfs that becomes the root
 * for a moment, so that the host's tree is reachable as /oldroot. */
#define BASE_DIR "/tmp"
#define NEWROOT "/newroot"
#define OLDROOT "/oldroot"

/* Host directories a "host" root is made of: bound read-only when they
 * are directories, recreated as symlinks when they are (merged /usr). */
static const char *const host_dirs[] = { "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32" };

/* The few /etc entries that programs need to start. The rest of /etc
 * (shadow, ssh keys, the daemon's own config) is never shown. */
static const char *const etc_entries[] = {
	"ld.so.cache", "ld.so.conf",	  "ld.so.conf.d", "alternatives",  "localtime", "timezone",
	"nsswitch.conf", "ssl",		  "ca-certificates", "mime.types", "protocols", "services",
	"os-release",	 "debian_version", "bash.bashrc", "profile",	   "inputrc",	"python3",
	"python3.11",	 "gai.conf",	  "host.conf",
};

static const char *const dev_nodes[] = { "null", "zero", "full", "random", "urandom", "tty" };

static int plan_push(struct setup_plan *plan, const struct setup_op *op)
{
	if (plan->n_ops == plan->cap) {
		unsigned cap = plan->cap ? plan->cap * 2 : 64;
		struct setup_op *ops = realloc(plan->ops, cap * sizeof(*ops));

		if (!ops)
			return -ENOMEM;
		plan->ops = ops;
		plan->cap = cap;
	}
	plan->ops[plan->n_ops++] = *op;
	return 0;
}

static char *xstrdup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

static int plan_add(struct setup_plan *plan, enum setup_op_kind kind, const char *src, const char *dest,
		    const char *data, mode_t mode, uint64_t size, uid_t uid, gid_t gid, bool optional)
{
	struct setup_op op = {
		.kind = kind,
		.src = xstrdup_or_null(src),
		.dest = xstrdup_or_null(dest),
		.data = xstrdup_or_null(data),
		.mode = mode,
		.size = size,
		.uid = uid,
		.gid = gid,
		.optional = optional,
	};

	if ((src && !op.src) || (dest && !op.dest) || (data && !op.data) || plan_push(plan, &op) < 0) {
		free(op.src);
		free(op.dest);
		free(op.data);
		return -ENOMEM;
	}
	return 0;
}

static int plan_host_root(struct setup_plan *plan)
{
	char link[256];
	int rc = 0;

	for (size_t i = 0; i < ARRAY_SIZE(host_dirs) && rc == 0; i++) {
		const char *d = host_dirs[i];
		struct stat st;
		ssize_t n;

		if (lstat(d, &st) < 0)
			continue;
		if (S_ISLNK(st.st_mode)) {
			n = readlink(d, link, sizeof(link) - 1);
			if (n < 0)
				continue;
			link[n] = '\0';
			rc = plan_add(plan, SETUP_SYMLINK, link, d, NULL, 0, 0, 0, 0, false);
		} else if (S_ISDIR(st.st_mode)) {
			rc = plan_add(plan, SETUP_RO_BIND, d, d, NULL, 0, 0, 0, 0, false);
		}
	}
	if (rc == 0)
		rc = plan_add(plan, SETUP_DIR, NULL, "/etc", NULL, 0755, 0, 0, 0, false);
	for (size_t i = 0; i < ARRAY_SIZE(etc_entries) && rc == 0; i++) {
		char path[128];

		snprintf(path, sizeof(path), "/etc/%s", etc_entries[i]);
		if (access(path, F_OK) == 0)
			rc = plan_add(plan, SETUP_RO_BIND, path, path, NULL, 0, 0, 0, 0, true);
	}
	return rc;
}

int setup_plan_build(struct setup_plan *plan, const struct spawn_params *p)
{
	char buf[512];
	int rc = 0;

	memset(plan, 0, sizeof(*plan));
	snprintf(plan->hostname, sizeof(plan->hostname), "sandbox-%s", p->id + 3);
	plan->loopback = p->network == NETWORK_NONE;
	if (p->rootfs[0]) {
		plan->rootfs = strdup(p->rootfs);
		if (!plan->rootfs)
			return -ENOMEM;
	} else {
		rc = plan_host_root(plan);
	}

	if (rc == 0 && !plan->rootfs) {
		/* Rootless, user code is the namespace's root (uid 0), at home in
		 * /workspace; no other user exists. */
		if (p->uid == 0)
			snprintf(buf, sizeof(buf),
				 "root:x:0:0:root:/workspace:/bin/sh\n"
				 "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n");
		else
			snprintf(buf, sizeof(buf),
				 "root:x:0:0:root:/root:/bin/sh\n"
				 "sandbox:x:%u:%u:sandbox:/workspace:/bin/sh\n"
				 "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
				 (unsigned)p->uid, (unsigned)p->gid);
		rc = plan_add(plan, SETUP_FILE, NULL, "/etc/passwd", buf, 0644, 0, 0, 0, false);
		if (p->gid == 0)
			snprintf(buf, sizeof(buf), "root:x:0:\nnogroup:x:65534:\n");
		else
			snprintf(buf, sizeof(buf), "root:x:0:\nsandbox:x:%u:\nnogroup:x:65534:\n", (unsigned)p->gid);
		if (rc == 0)
			rc = plan_add(plan, SETUP_FILE, NULL, "/etc/group", buf, 0644, 0, 0, 0, false);
		snprintf(buf, sizeof(buf), "127.0.0.1 localhost %s\n::1 localhost\n", plan->hostname);
		if (rc == 0)
			rc = plan_add(plan, SETUP_FILE, NULL, "/etc/hosts", buf, 0644, 0, 0, 0, false);
		if (rc == 0)
			rc = plan_add(plan, SETUP_FILE, NULL, "/etc/hostname", plan->hostname, 0644, 0, 0, 0,
				      false);
	}
	if (rc == 0)
		rc = plan_add(plan, SETUP_PROC, NULL, "/proc", NULL, 0, 0, 0, 0, false);
	if (rc == 0)
		rc = plan_add(plan, SETUP_TMPFS, NULL, "/dev", NULL, 0755, 1 << 20, 0, 0, false);
	for (size_t i = 0; i < ARRAY_SIZE(dev_nodes) && rc == 0; i++) {
		snprintf(buf, sizeof(buf), "/dev/%s", dev_nodes[i]);
		rc = plan_add(plan, SETUP_DEV_BIND, buf, buf, NULL, 0, 0, 0, 0, false);
	}
	if (rc == 0)
		rc = plan_add(plan, SETUP_SYMLINK, "/proc/self/fd", "/dev/fd", NULL, 0, 0, 0, 0, false);
	if (rc == 0)
		rc = plan_add(plan, SETUP_SYMLINK, "/proc/self/fd/0", "/dev/stdin", NULL, 0, 0, 0, 0, false);
	if (rc == 0)
		rc = plan_add(plan, SETUP_SYMLINK, "/proc/self/fd/1", "/dev/stdout", NULL, 0, 0, 0, 0, false);
	if (rc == 0)
		rc = plan_add(plan, SETUP_SYMLINK, "/proc/self/fd/2", "/dev/stderr", NULL, 0, 0, 0, 0, false);
	if (rc == 0)
		rc = plan_add(plan, SETUP_TMPFS, NULL, "/dev/shm", NULL, 01777, p->workspace_size, 0, 0, false);
	if (rc == 0)
		rc = plan_add(plan, SETUP_TMPFS, NULL, "/tmp", NULL, 01777, p->workspace_size, 0, 0, false);
	if (rc == 0)
		rc = plan_add(plan, SETUP_TMPFS, NULL, "/workspace", NULL, 0755, p->workspace_size, p->uid,
			      p->gid, false);
	for (unsigned i = 0; i < p->n_binds && rc == 0; i++)
		rc = plan_add(plan, p->binds[i].writable ? SETUP_RW_BIND : SETUP_RO_BIND, p->binds[i].source,
			      p->binds[i].dest, NULL, 0, 0, 0, 0, false);
	if (rc < 0)
		setup_plan_free(plan);
	return rc;
}

void setup_plan_free(struct setup_plan *plan)
{
	for (unsigned i = 0; i < plan->n_ops; i++) {
		free(plan->ops[i].src);
		free(plan->ops[i].dest);
		free(plan->ops[i].data);
	}
	free(plan->ops);
	free(plan->rootfs);
	memset(plan, 0, sizeof(*plan));
}

/* ---- child side: no allocation below this line ---------------------- */

void setup_fail(int report_fd, const char *fmt, ...)
{
	char msg[512];
	char frame[600];
	msgpack_sbuffer sbuf = { .size = 0, .data = frame, .alloc = sizeof(frame) };
	msgpack_packer pk;
	va_list ap;
	int saved = errno;
	size_t n;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	n = strlen(msg);
	snprintf(msg + n, sizeof(msg) - n, ": %s", strerror(saved));

	/* A fixed buffer that msgpack_sbuffer_write can never need to grow:
	 * the message is at most 512 bytes and the envelope a dozen. */
	msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
	ipc_pack_notify_head(&pk, "failed");
	msgpack_pack_map(&pk, 1);
	ipc_pack_kv_str(&pk, "message", msg);
	if (report_fd >= 0)
		(void)!write(report_fd, sbuf.data, sbuf.size);
	_exit(127);
}

static void join(char *out, size_t len, const char *a, const char *b)
{
	snprintf(out, len, "%s%s", a, b);
}

/* Mount flags that the kernel would refuse to drop on a remount. */
static unsigned long locked_flags(const char *path)
{
	struct statvfs sv;
	unsigned long f = 0;

	if (statvfs(path, &sv) < 0)
		return 0;
	if (sv.f_flag & ST_NODEV)
		f |= MS_NODEV;
	if (sv.f_flag & ST_NOEXEC)
		f |= MS_NOEXEC;
	if (sv.f_flag & ST_NOSUID)
		f |= MS_NOSUID;
	/* Inside a user namespace atime flags are locked too. */
	if (sv.f_flag & ST_NOATIME)
		f |= MS_NOATIME;
	if (sv.f_flag & ST_NODIRATIME)
		f |= MS_NODIRATIME;
	if (sv.f_flag & ST_RELATIME)
		f |= MS_RELATIME;
	return f;
}

static void make_mountpoint(int fd, const char *dest, bool is_dir)
{
	int f;

	if (is_dir) {
		if (mkdir(dest, 0755) < 0 && errno != EEXIST)
			setup_fail(fd, "mkdir %s", dest);
		return;
	}
	f = open(dest, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOCTTY, 0644);
	if (f < 0 && errno != EEXIST && errno != EISDIR)
		setup_fail(fd, "create %s", dest);
	if (f >= 0)
		close(f);
}

static void do_bind(int fd, const struct setup_op *op, const char *src, const char *dest,
		    unsigned long extra)
{
	struct stat st;

	if (stat(src, &st) < 0) {
		if (op->optional)
			return;
		setup_fail(fd, "bind source %s", op->src);
	}
	make_mountpoint(fd, dest, S_ISDIR(st.st_mode));
	if (mount(src, dest, NULL, MS_BIND | MS_REC, NULL) < 0)
		setup_fail(fd, "bind %s on %s", op->src, op->dest);
	if (mount(NULL, dest, NULL, MS_REMOUNT | MS_BIND | extra | locked_flags(dest), NULL) < 0)
		setup_fail(fd, "remount %s", op->dest);
}

static void do_tmpfs(int fd, const struct setup_op *op, const char *dest)
{
	char opts[96];

	make_mountpoint(fd, dest, true);
	snprintf(opts, sizeof(opts), "mode=%o,size=%llu,uid=%u,gid=%u", (unsigned)op->mode,
		 (unsigned long long)op->size, (unsigned)op->uid, (unsigned)op->gid);
	if (mount("tmpfs", dest, "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0)
		setup_fail(fd, "tmpfs on %s", op->dest);
}

static void do_proc(int fd, const char *dest)
{
	/* Read-only over the writable knobs of /proc, as bubblewrap does: user
	 * code has no business with sysctls or the sysrq trigger. */
	static const char *const ro[] = { "/sys", "/sysrq-trigger", "/irq", "/bus" };
	char p[4096];

	make_mountpoint(fd, dest, true);
	if (mount("proc", dest, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
		setup_fail(fd, "mount proc on %s", dest);
	for (size_t i = 0; i < ARRAY_SIZE(ro); i++) {
		join(p, sizeof(p), dest, ro[i]);
		if (access(p, F_OK) < 0)
			continue;
		if (mount(p, p, NULL, MS_BIND | MS_REC, NULL) < 0 ||
		    mount(NULL, p, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | locked_flags(p), NULL) < 0)
			setup_fail(fd, "read-only %s", p);
	}
}

static void do_file(int fd, const struct setup_op *op, const char *dest)
{
	size_t len = strlen(op->data);
	int f = open(dest, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, op->mode);

	if (f < 0)
		setup_fail(fd, "create %s", op->dest);
	if (write(f, op->data, len) != (ssize_t)len)
		setup_fail(fd, "write %s", op->dest);
	close(f);
}

static void run_op(int fd, const struct setup_op *op)
{
	char dest[4096], src[4096];

	join(dest, sizeof(dest), NEWROOT, op->dest);
	if (op->src)
		join(src, sizeof(src), OLDROOT, op->src);
	switch (op->kind) {
	case SETUP_RO_BIND:
		do_bind(fd, op, src, dest, MS_RDONLY | MS_NOSUID);
		break;
	case SETUP_RW_BIND:
		do_bind(fd, op, src, dest, MS_NOSUID | MS_NODEV);
		break;
	case SETUP_DEV_BIND:
		do_bind(fd, op, src, dest, MS_NOSUID | MS_NOEXEC);
		break;
	case SETUP_TMPFS:
		do_tmpfs(fd, op, dest);
		break;
	case SETUP_PROC:
		do_proc(fd, dest);
		break;
	case SETUP_DIR:
		make_mountpoint(fd, dest, true);
		break;
	case SETUP_SYMLINK:
		if (symlink(op->src, dest) < 0 && errno != EEXIST)
			setup_fail(fd, "symlink %s", op->dest);
		break;
	case SETUP_FILE:
		do_file(fd, op, dest);
		break;
	}
}

static void loopback_up(int fd)
{
	struct ifreq ifr = { 0 };
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (s < 0)
		setup_fail(fd, "socket for lo");
	strcpy(ifr.ifr_name, "lo");
	if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
		setup_fail(fd, "SIOCGIFFLAGS lo");
	ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
	if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
		setup_fail(fd, "SIOCSIFFLAGS lo");
	close(s);
}

static void make_root(int fd, const struct setup_plan *plan)
{
	if (plan->rootfs) {
		char src[4096];

		join(src, sizeof(src), OLDROOT, plan->rootfs);
		if (mount(src, NEWROOT, NULL, MS_BIND | MS_REC, NULL) < 0)
			setup_fail(fd, "bind rootfs %s", plan->rootfs);
		return;
	}
	if (mount("tmpfs", NEWROOT, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m") < 0)
		setup_fail(fd, "tmpfs root");
}

void setup_run(const struct setup_plan *plan, int report_fd)
{
	/* Nothing we mount may propagate back to the host. */
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		setup_fail(report_fd, "make / private");
	if (mount("tmpfs", BASE_DIR, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64k") < 0)
		setup_fail(report_fd, "tmpfs on " BASE_DIR);
	if (chdir(BASE_DIR) < 0 || mkdir("newroot", 0755) < 0 || mkdir("oldroot", 0755) < 0)
		setup_fail(report_fd, "prepare " BASE_DIR);
	if (syscall(SYS_pivot_root, BASE_DIR, BASE_DIR "/oldroot") < 0)
		setup_fail(report_fd, "pivot_root to " BASE_DIR);
	if (chdir("/") < 0)
		setup_fail(report_fd, "chdir /");

	make_root(report_fd, plan);
	for (unsigned i = 0; i < plan->n_ops; i++)
		run_op(report_fd, &plan->ops[i]);
	if (mount(NULL, NEWROOT, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | locked_flags(NEWROOT), NULL) < 0)
		setup_fail(report_fd, "remount root read-only");

	if (umount2(OLDROOT, MNT_DETACH) < 0)
		setup_fail(report_fd, "detach old root");
	/* Stack the new root on the base and drop the base from view. */
	if (chdir(NEWROOT) < 0 || syscall(SYS_pivot_root, ".", ".") < 0)
		setup_fail(report_fd, "pivot_root to new root");
	if (umount2(".", MNT_DETACH) < 0 || chdir("/") < 0)
		setup_fail(report_fd, "detach base");

	if (sethostname(plan->hostname, strlen(plan->hostname)) < 0)
		setup_fail(report_fd, "sethostname");
	if (plan->loopback)
		loopback_up(report_fd);
}
