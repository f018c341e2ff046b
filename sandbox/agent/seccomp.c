#include "autoconfig.h"

#include "sandbox/agent/seccomp.h"

#include <errno.h>
#include <linux/sched.h>
#include <seccomp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

/* Calls user code has no business making inside a sandbox: they change
 * mounts or namespaces, reach the kernel's most exposed interfaces, or
 * look at other processes' memory. */
static const char *const denied[] = {
	/* the mount table and the root */
	"mount", "umount", "umount2", "pivot_root", "chroot", "mount_setattr", "fsopen", "fsmount",
	"fsconfig", "fspick", "move_mount", "open_tree",
	/* namespaces (clone is filtered on its flags below) */
	"unshare", "setns",
	/* the kernel itself */
	"kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot",
	"swapon", "swapoff", "acct", "quotactl", "syslog", "iopl", "ioperm", "uselib",
	"lookup_dcookie", "nfsservctl", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
	"sethostname", "setdomainname", "vhangup",
	/* large attack surfaces */
	"bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter",
	"io_uring_register", "fanotify_init",
	/* keys */
	"keyctl", "add_key", "request_key",
	/* other processes */
	"ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
	/* files by handle bypass path checks */
	"open_by_handle_at", "name_to_handle_at",
};

static const unsigned long ns_flags[] = {
	CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWNET,
	CLONE_NEWUTS,  CLONE_NEWIPC, CLONE_NEWCGROUP, CLONE_NEWTIME,
};

static int add_rules(scmp_filter_ctx ctx)
{
	int rc = 0;

	for (size_t i = 0; i < sizeof(denied) / sizeof(denied[0]) && rc == 0; i++) {
		int nr = seccomp_syscall_resolve_name(denied[i]);

		if (nr != __NR_SCMP_ERROR)
			rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0);
	}
	/* clone may make threads and processes, not namespaces. */
	for (size_t i = 0; i < sizeof(ns_flags) / sizeof(ns_flags[0]) && rc == 0; i++)
		rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
				      SCMP_A0(SCMP_CMP_MASKED_EQ, ns_flags[i], ns_flags[i]));
	/* A process made with CLONE_PARENT is its parent's sibling: the exec
	 * leader's would be the agent's child, out of the tree an exec's
	 * timeout kills (agent.c, exec_kill). */
	if (rc == 0)
		rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
				      SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_PARENT, CLONE_PARENT));
	/* The leader stays a subreaper: clearing it would hand its orphans to
	 * the agent, out of that tree too. Setting it stays allowed. */
	if (rc == 0)
		rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(prctl), 2,
				      SCMP_A0(SCMP_CMP_EQ, PR_SET_CHILD_SUBREAPER), SCMP_A1(SCMP_CMP_EQ, 0));
	/* clone3 passes its flags in memory, out of seccomp's sight: say it
	 * does not exist, and libc falls back to clone. */
	if (rc == 0)
		rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
	/* Typing into the terminal of whoever reads our output. */
	if (rc == 0)
		rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(ioctl), 1,
				      SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, TIOCSTI));
	return rc;
}

int agent_seccomp_build(struct sock_fprog *prog)
{
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
	ssize_t len;
	void *buf = NULL;
	int fd = -1, rc;

	if (!ctx)
		return -ENOMEM;
	rc = add_rules(ctx);
	/* libseccomp 2.5 exports only to an fd: a memfd keeps it in memory. */
	if (rc == 0 && (fd = memfd_create("seccomp", MFD_CLOEXEC)) < 0)
		rc = -errno;
	if (rc == 0)
		rc = seccomp_export_bpf(ctx, fd);
	if (rc == 0) {
		len = lseek(fd, 0, SEEK_END);
		buf = len > 0 ? malloc((size_t)len) : NULL;
		if (!buf || pread(fd, buf, (size_t)len, 0) != len) {
			rc = -EIO;
		} else {
			prog->filter = buf;
			prog->len = (unsigned short)((size_t)len / sizeof(struct sock_filter));
			buf = NULL;
		}
	}
	free(buf);
	if (fd >= 0)
		close(fd);
	seccomp_release(ctx);
	return rc;
}

int agent_seccomp_apply(const struct sock_fprog *prog)
{
	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, prog) < 0)
		return -errno;
	return 0;
}
