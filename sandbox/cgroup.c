#include "autoconfig.h"

#include "sandbox/cgroup.h"

#include "daemon/fsutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Names in /proc/self/mountinfo super options, per controller (v1). */
static const char *const ctrl_names[CG_NCTRL] = { "memory", "pids", "cpu", "freezer" };
/* The template keys the controllers enforce. */
static const char *const limit_keys[CG_NCTRL] = { "memory", "pids", "cpus", NULL };
/* Removing a group waits this long for its processes to be gone. */
#define DRAIN_TRIES 1000
#define DRAIN_SLEEP_NS 5000000L

static int write_file(const char *dir, const char *file, const char *val)
{
	char path[PATH_MAX + 64];
	ssize_t n;
	int fd, rc = 0;

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = write(fd, val, strlen(val));
	if (n < 0)
		rc = -errno;
	close(fd);
	return rc;
}

static int read_file(const char *dir, const char *file, char *buf, size_t len)
{
	char path[PATH_MAX + 64];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	return 0;
}

/* "key N" lines, as in memory.events or memory.oom_control. */
static uint64_t event_count(const char *text, const char *key)
{
	size_t kl = strlen(key);

	for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
		if (!strncmp(p, key, kl) && p[kl] == ' ')
			return strtoull(p + kl + 1, NULL, 10);
	return 0;
}

/* Our own group in the unified hierarchy ("0::/path"). */
static int own_v2_group(char *out, size_t len)
{
	char buf[4096];
	char *p;

	if (read_file("/proc/self", "cgroup", buf, sizeof(buf)) < 0)
		return -ENOENT;
	p = strstr(buf, "0::");
	if (!p || (p != buf && p[-1] != '\n'))
		return -ENOENT;
	p += 3;
	p[strcspn(p, "\n")] = '\0';
	snprintf(out, len, "%s", strcmp(p, "/") ? p : "");
	return 0;
}

struct mounts {
	char v2[PATH_MAX];
	char v1[CG_NCTRL][PATH_MAX];
};

static bool has_option(const char *opts, const char *name)
{
	size_t n = strlen(name);

	for (const char *p = opts; p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL)
		if (!strncmp(p, name, n) && (p[n] == ',' || p[n] == '\0' || p[n] == '\n'))
			return true;
	return false;
}

static void find_mounts(struct mounts *m)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char line[4096];

	memset(m, 0, sizeof(*m));
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		char root[PATH_MAX], point[PATH_MAX], fstype[64], super[1024];
		char *dash = strstr(line, " - ");

		if (!dash || sscanf(line, "%*s %*s %*s %4095s %4095s", root, point) != 2 ||
		    sscanf(dash + 3, "%63s %*s %1023s", fstype, super) != 2 || strcmp(root, "/"))
			continue;
		if (!strcmp(fstype, "cgroup2") && !m->v2[0])
			snprintf(m->v2, sizeof(m->v2), "%s", point);
		else if (!strcmp(fstype, "cgroup"))
			for (int c = 0; c < CG_NCTRL; c++)
				if (!m->v1[c][0] && has_option(super, ctrl_names[c]))
					snprintf(m->v1[c], sizeof(m->v1[c]), "%s", point);
	}
	fclose(f);
}

static bool has_word(const char *list, const char *word)
{
	size_t n = strlen(word);

	for (const char *p = strstr(list, word); p; p = strstr(p + 1, word))
		if ((p == list || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\n' || p[n] == '\0'))
			return true;
	return false;
}

static bool v2_has_controllers(const char *dir)
{
	char buf[512];

	return read_file(dir, "cgroup.controllers", buf, sizeof(buf)) == 0 && has_word(buf, "memory") &&
	       has_word(buf, "pids") && has_word(buf, "cpu");
}

static int enable_subtree(const char *dir)
{
	char buf[512];

	/* Already handed down (systemd's ancestors of a delegated unit): no
	 * write, which we might not be allowed to make. */
	if (read_file(dir, "cgroup.subtree_control", buf, sizeof(buf)) == 0 && has_word(buf, "memory") &&
	    has_word(buf, "pids") && has_word(buf, "cpu"))
		return 0;
	return write_file(dir, "cgroup.subtree_control", "+memory +pids +cpu");
}

/* mkdir -p mnt/rel, enabling the controllers in every group on the way
 * down: a v2 group only has what its parent hands out. */
static int make_v2_path(const char *mnt, const char *rel, char *dir, size_t len)
{
	int rc = 0;

	if ((size_t)snprintf(dir, len, "%s/%s", mnt, rel) >= len)
		return -ENAMETOOLONG;
	if ((rc = fs_mkdir_p(dir, 0755)) < 0)
		return rc;
	for (char *p = dir + strlen(mnt); p && rc == 0; p = strchr(p + 1, '/')) {
		char c = *p;

		*p = '\0';
		rc = enable_subtree(dir);
		*p = c;
	}
	return rc < 0 ? rc : enable_subtree(dir);
}

static int setup_v2(struct cgroup_layout *l, const char *mnt, const char *root, const char *instance,
		    char *err, size_t errlen)
{
	char own[PATH_MAX], rel[PATH_MAX + 32], leaf[PATH_MAX * 2 + 16], dir[sizeof(l->base[0])];
	int rc;

	if (root[0]) {
		snprintf(rel, sizeof(rel), "%s", root[0] == '/' ? root + 1 : root);
	} else if (own_v2_group(own, sizeof(own)) < 0) {
		snprintf(err, errlen, "cannot read our cgroup from /proc/self/cgroup");
		return -ENOENT;
	} else if (own[0]) {
		/* A delegated group may hold processes or hand controllers to
		 * children, not both: we move into a leaf of our own and keep
		 * sandboxes beside it. */
		snprintf(leaf, sizeof(leaf), "%s%s/daemon", mnt, own);
		if ((rc = fs_mkdir_p(leaf, 0755)) < 0 || (rc = write_file(leaf, "cgroup.procs", "0")) < 0) {
			snprintf(err, errlen, "move into %s: %s", leaf, strerror(-rc));
			return rc;
		}
		snprintf(rel, sizeof(rel), "%s/sandboxes", own + 1);
	} else {
		/* The root group: no delegation to lean on; a directory per
		 * daemon instance, as on v1. */
		snprintf(rel, sizeof(rel), "%s", instance);
	}
	if ((rc = make_v2_path(mnt, rel, dir, sizeof(dir))) < 0) {
		snprintf(err, errlen, "prepare %s/%s: %s", mnt, rel, strerror(-rc));
		return rc;
	}
	l->version = 2;
	memcpy(l->base[0], dir, sizeof(dir));
	return 0;
}

static int setup_v1(struct cgroup_layout *l, const struct mounts *m, const char *root, bool best_effort,
		    char *err, size_t errlen)
{
	const char *rel = root[0] == '/' ? root + 1 : root;
	bool any = false;
	int rc;

	for (int c = 0; c < CG_NCTRL; c++) {
		if (!m->v1[c][0]) {
			snprintf(l->why[c], sizeof(l->why[c]), "no cgroup v1 hierarchy has the %s controller",
				 ctrl_names[c]);
			continue;
		}
		if ((size_t)snprintf(l->base[c], sizeof(l->base[c]), "%s/%s", m->v1[c], rel) >=
		    sizeof(l->base[c]))
			rc = -ENAMETOOLONG;
		else
			rc = fs_mkdir_p(l->base[c], 0755);
		if (rc < 0 && !best_effort) {
			snprintf(err, errlen, "create %s: %s", l->base[c], strerror(-rc));
			return rc;
		}
		if (rc < 0) {
			snprintf(l->why[c], sizeof(l->why[c]), "cannot create %s: %s", l->base[c], strerror(-rc));
			l->base[c][0] = '\0';
			continue;
		}
		any |= c != CG_FREEZER;
	}
	/* A freezer alone limits nothing: no groups at all then. */
	if (!any && l->base[CG_FREEZER][0]) {
		(void)rmdir(l->base[CG_FREEZER]);
		l->base[CG_FREEZER][0] = '\0';
	}
	l->version = any ? 1 : 0;
	return 0;
}

/* Every limit unenforced for the same reason. */
static void why_all(struct cgroup_layout *l, const char *why)
{
	for (int c = 0; c < CG_NCTRL; c++)
		snprintf(l->why[c], sizeof(l->why[c]), "%s", why);
}

int cgroup_setup(struct cgroup_layout *l, const char *root, const char *instance, bool best_effort,
		 char *err, size_t errlen)
{
	struct mounts m;
	char own[PATH_MAX], dir[PATH_MAX * 2], v1root[PATH_MAX], why[sizeof(l->why[0])] = "";
	int rc;

	memset(l, 0, sizeof(*l));
	/* Without a configured root, each daemon instance gets a directory of
	 * its own: the start-up sweep must only ever remove its own groups. */
	if (root[0])
		snprintf(v1root, sizeof(v1root), "%s", root);
	else
		snprintf(v1root, sizeof(v1root), "%s", instance);
	find_mounts(&m);
	if (m.v2[0] && own_v2_group(own, sizeof(own)) == 0) {
		snprintf(dir, sizeof(dir), "%s%s", m.v2, own);
		if (v2_has_controllers(dir)) {
			rc = setup_v2(l, m.v2, root, instance, err, errlen);
			if (rc == 0 || !best_effort)
				return rc;
			/* Not a delegated group of ours: no limits, said loudly. */
			snprintf(why, sizeof(why), "cgroup v2: %s", err);
			why_all(l, why);
			err[0] = '\0';
			return 0;
		}
		snprintf(why, sizeof(why), "cgroup v2 group %.180s lacks the memory, pids or cpu controller", dir);
	}
	if (m.v1[CG_MEMORY][0] || m.v1[CG_PIDS][0] || m.v1[CG_CPU][0])
		return setup_v1(l, &m, v1root, best_effort, err, errlen);
	why_all(l, why[0] ? why : "no cgroup hierarchy with memory, pids or cpu controllers");
	return 0;
}

bool cgroup_enforces(const struct cgroup_layout *l, enum cgroup_ctrl c)
{
	if (l->version == 2)
		return c != CG_FREEZER;
	return l->version == 1 && l->base[c][0];
}

const char *cgroup_limit_key(enum cgroup_ctrl c)
{
	return limit_keys[c];
}

static void group_dir(const struct cgroup_layout *l, int c, const char *id, char *out, size_t len)
{
	snprintf(out, len, "%s/%s", l->base[l->version == 2 ? 0 : c], id);
}

static bool ctrl_present(const struct cgroup_layout *l, int c)
{
	if (l->version == 2)
		return c == 0;
	return l->version == 1 && l->base[c][0];
}

int cgroup_create(const struct cgroup_layout *l, const char *id, const struct cgroup_limits *lim,
		  char *err, size_t errlen)
{
	char dir[PATH_MAX * 2], v[64];
	int rc = 0;

	for (int c = 0; c < CG_NCTRL && l->version; c++) {
		if (!ctrl_present(l, c))
			continue;
		group_dir(l, c, id, dir, sizeof(dir));
		if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
			rc = -errno;
			snprintf(err, errlen, "mkdir %s: %s", dir, strerror(errno));
			return rc;
		}
	}
	if (l->version == 2) {
		group_dir(l, 0, id, dir, sizeof(dir));
		snprintf(v, sizeof(v), "%" PRIu64, lim->memory);
		rc = write_file(dir, "memory.max", v);
		/* Without swap a memory bomb meets the OOM killer, not the disk. */
		if (rc == 0)
			(void)write_file(dir, "memory.swap.max", "0");
		snprintf(v, sizeof(v), "%u", lim->pids);
		if (rc == 0)
			rc = write_file(dir, "pids.max", v);
		snprintf(v, sizeof(v), "%" PRIu64 " 100000", lim->cpu_milli * 100);
		if (rc == 0)
			rc = write_file(dir, "cpu.max", v);
	} else if (l->version == 1) {
		if (ctrl_present(l, CG_MEMORY)) {
			group_dir(l, CG_MEMORY, id, dir, sizeof(dir));
			snprintf(v, sizeof(v), "%" PRIu64, lim->memory);
			rc = write_file(dir, "memory.limit_in_bytes", v);
			if (rc == 0)
				(void)write_file(dir, "memory.memsw.limit_in_bytes", v);
		}
		if (rc == 0 && ctrl_present(l, CG_PIDS)) {
			group_dir(l, CG_PIDS, id, dir, sizeof(dir));
			snprintf(v, sizeof(v), "%u", lim->pids);
			rc = write_file(dir, "pids.max", v);
		}
		if (rc == 0 && ctrl_present(l, CG_CPU)) {
			group_dir(l, CG_CPU, id, dir, sizeof(dir));
			snprintf(v, sizeof(v), "%" PRIu64, lim->cpu_milli * 100);
			rc = write_file(dir, "cpu.cfs_period_us", "100000");
			if (rc == 0)
				rc = write_file(dir, "cpu.cfs_quota_us", v);
		}
	}
	if (rc < 0) {
		snprintf(err, errlen, "set limits in %s: %s", dir, strerror(-rc));
		cgroup_destroy(l, id);
	}
	return rc;
}

int cgroup_attach(const struct cgroup_layout *l, const char *id, pid_t pid)
{
	char dir[PATH_MAX * 2], v[16];
	int rc;

	snprintf(v, sizeof(v), "%d", (int)pid);
	for (int c = 0; c < CG_NCTRL && l->version; c++) {
		if (!ctrl_present(l, c))
			continue;
		group_dir(l, c, id, dir, sizeof(dir));
		if ((rc = write_file(dir, "cgroup.procs", v)) < 0)
			return rc;
	}
	return 0;
}

static void nap(void)
{
	struct timespec ts = { 0, DRAIN_SLEEP_NS };

	nanosleep(&ts, NULL);
}

/* SIGKILLs every pid listed in dir/cgroup.procs; returns how many. */
static unsigned kill_listed(const char *dir)
{
	char buf[65536];
	unsigned n = 0;

	if (read_file(dir, "cgroup.procs", buf, sizeof(buf)) < 0)
		return 0;
	for (char *p = buf; *p;) {
		char *end;
		long pid = strtol(p, &end, 10);

		if (end == p)
			break;
		if (pid > 0 && kill((pid_t)pid, SIGKILL) == 0)
			n++;
		p = end + (*end == '\n');
	}
	return n;
}

static void kill_all(const struct cgroup_layout *l, const char *id)
{
	char dir[PATH_MAX * 2];

	if (l->version == 2) {
		group_dir(l, 0, id, dir, sizeof(dir));
		if (write_file(dir, "cgroup.kill", "1") < 0)
			kill_listed(dir);
		return;
	}
	/* v1 has no atomic kill: freeze so nothing forks while we kill. */
	if (ctrl_present(l, CG_FREEZER)) {
		group_dir(l, CG_FREEZER, id, dir, sizeof(dir));
		(void)write_file(dir, "freezer.state", "FROZEN");
		kill_listed(dir);
		(void)write_file(dir, "freezer.state", "THAWED");
		return;
	}
	for (int c = 0; c < CG_NCTRL; c++) {
		if (ctrl_present(l, c)) {
			group_dir(l, c, id, dir, sizeof(dir));
			kill_listed(dir);
			return;
		}
	}
}

int cgroup_try_remove(const struct cgroup_layout *l, const char *id)
{
	char dir[PATH_MAX * 2];
	int rc = 0;

	if (!l->version)
		return 0;
	kill_all(l, id);
	for (int c = 0; c < CG_NCTRL; c++) {
		if (!ctrl_present(l, c))
			continue;
		group_dir(l, c, id, dir, sizeof(dir));
		if (rmdir(dir) < 0 && errno != ENOENT)
			rc = -errno;
	}
	return rc;
}

int cgroup_destroy(const struct cgroup_layout *l, const char *id)
{
	int rc = cgroup_try_remove(l, id);

	/* Dying processes leave their group a moment after SIGKILL. */
	for (int i = 0; rc == -EBUSY && i < DRAIN_TRIES; i++) {
		nap();
		rc = cgroup_try_remove(l, id);
	}
	return rc;
}

unsigned cgroup_sweep(const struct cgroup_layout *l)
{
	unsigned n = 0;

	for (int c = 0; c < CG_NCTRL && l->version; c++) {
		DIR *d;
		struct dirent *e;

		if (!ctrl_present(l, c) || !(d = opendir(l->base[c])))
			continue;
		while ((e = readdir(d)))
			if (!strncmp(e->d_name, "sb-", 3) && cgroup_destroy(l, e->d_name) == 0)
				n++;
		closedir(d);
	}
	return n;
}

void cgroup_teardown(const struct cgroup_layout *l)
{
	cgroup_sweep(l);
	for (int c = 0; c < CG_NCTRL && l->version; c++) {
		if (!ctrl_present(l, c))
			continue;
		/* A just-removed child keeps its parent busy for a moment. */
		for (int i = 0; i < DRAIN_TRIES && rmdir(l->base[c]) < 0 && errno == EBUSY; i++)
			nap();
	}
}

int cgroup_read_events(const struct cgroup_layout *l, const char *id, struct cgroup_events *ev)
{
	char dir[PATH_MAX * 2], buf[1024];

	memset(ev, 0, sizeof(*ev));
	if (l->version == 2) {
		group_dir(l, 0, id, dir, sizeof(dir));
		if (read_file(dir, "memory.events", buf, sizeof(buf)) == 0)
			ev->oom_kills = event_count(buf, "oom_kill");
		if (read_file(dir, "pids.events", buf, sizeof(buf)) == 0)
			ev->pids_max = event_count(buf, "max");
		return 0;
	}
	if (l->version == 1) {
		if (ctrl_present(l, CG_MEMORY)) {
			group_dir(l, CG_MEMORY, id, dir, sizeof(dir));
			if (read_file(dir, "memory.oom_control", buf, sizeof(buf)) == 0)
				ev->oom_kills = event_count(buf, "oom_kill");
		}
		if (ctrl_present(l, CG_PIDS)) {
			group_dir(l, CG_PIDS, id, dir, sizeof(dir));
			if (read_file(dir, "pids.events", buf, sizeof(buf)) == 0)
				ev->pids_max = event_count(buf, "max");
		}
	}
	return 0;
}
