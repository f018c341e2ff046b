/*
 * sandpoold: start-up, the event loop, signals and shutdown. Everything
 * else lives in its module; main only wires them together in order.
 */
#include "autoconfig.h"

#include <errno.h>
#include <limits.h>
#include <event2/event.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/capability.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "daemon/clock.h"
#include "daemon/config.h"
#include "daemon/fsutil.h"
#include "daemon/log.h"
#include "daemon/rpc.h"
#include "daemon/sdnotify.h"
#include "ipc/server.h"
#include "pool/lease.h"
#include "pool/pool.h"
#include "sandbox/cgroup.h"
#include "sandbox/e2b.h"
#include "sandbox/http.h"
#include "sandbox/local.h"
#include "sandbox/spawner.h"
#include "store/ledger.h"

/* Sandboxes get this long past drain_timeout to die before we stop waiting. */
#define SHUTDOWN_GRACE_SEC 10
/* Output a slow client may leave unread before it is dropped. */
#define MAX_OUTPUT_BUFFER (64u << 20)
/* How often the service manager's STATUS= line is refreshed. */
#define STATUS_INTERVAL_SEC 5

struct daemon {
	struct config *cfg;
	struct event_base *base;
	struct spawner *spawner;
	struct cgroup_layout cg;
	bool rootless;	  /* no host ids of their own for sandboxes */
	bool nproc_limit; /* RLIMIT_NPROC stands in for the pids cgroup */
	struct ipc_server *srv;
	struct event *sig_term, *sig_int, *sig_hup;
	struct event *deadline;
	struct event *status_timer;
	struct config_overrides ov; /* the command line's, applied again at reload */
	int lock_fd;
	int ready_fd; /* the waiting parent when daemonized, else -1 */
	int listen_fd; /* passed by socket activation, else -1 */
	char listen_path[112];
	char status[1024]; /* the STATUS= last sent */
	bool ready;	   /* READY=1 sent: serving, start-up fill attempted */
	bool stopping;
};

static struct daemon d = { .lock_fd = -1, .ready_fd = -1, .listen_fd = -1, .ov = { .log_level = -1 } };

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: sandpoold [OPTIONS]\n"
		"Keeps warm sandboxes and leases them over a Unix socket.\n\n"
		"  -c, --config FILE     configuration file (default: the embedded default)\n"
		"  -s, --socket PATH     listen on PATH (overrides the config's socket)\n"
		"  -d, --state-dir DIR   state directory (overrides the config's state_dir)\n"
		"  -f, --foreground      do not detach (implied when $NOTIFY_SOCKET is set)\n"
		"  -v, --verbose         log at debug level\n"
		"      --check-config    validate the configuration, print it, and exit\n"
		"      --version         print the version and exit\n"
		"  -h, --help            this help\n");
}

/* One daemon per state dir: a second one would fight over sandboxes. */
static int take_lock(const char *state_dir)
{
	char path[4096], pid[32];
	int fd;

	snprintf(path, sizeof(path), "%s/sandpoold.pid", state_dir);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0) {
		log_error("open %s: %s", path, strerror(errno));
		return -errno;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		log_error("%s is locked: another sandpoold uses state dir %s", path, state_dir);
		close(fd);
		return -EBUSY;
	}
	snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
	if (ftruncate(fd, 0) < 0 || write(fd, pid, strlen(pid)) < 0)
		log_warn("write %s: %s", path, strerror(errno));
	return fd;
}

static const char *socket_path(void)
{
	return d.listen_fd >= 0 && d.listen_path[0] ? d.listen_path : d.cfg->socket_path;
}

/* "python: 2 warm, 1 leased; shell: ...", for STATUS= and systemctl status. */
static void pool_status(char *buf, size_t len)
{
	size_t off = 0;

	buf[0] = '\0';
	for (unsigned i = 0; i < pool_count() && off < len; i++) {
		const struct pool *p = pool_at(i);
		struct pool_figures fg;

		pool_get_figures(p, &fg);
		off += (size_t)snprintf(buf + off, len - off, "%s%s: %u warm, %u leased%s", i ? "; " : "",
					pool_template(p)->name, fg.warm, fg.leased, fg.degraded ? " (degraded)" : "");
	}
}

/* Sends STATUS= when the figures changed since the last one. */
static void notify_status(bool ready)
{
	char st[sizeof(d.status)];

	pool_status(st, sizeof(st));
	if (!ready && !strcmp(st, d.status))
		return;
	memcpy(d.status, st, sizeof(st));
	sdnotify_send("%sSTATUS=%s", ready ? "READY=1\n" : "", st);
}

static void on_status_timer(evutil_socket_t fd, short what, void *arg)
{
	notify_status(false);
}

/* The socket is open and every template's start-up fill has been tried:
 * what "started" means to a service manager. */
static void announce_ready(evutil_socket_t fd, short what, void *arg)
{
	if (d.ready || d.stopping)
		return;
	d.ready = true;
	notify_status(true);
	log_info("start-up fill attempted: ready (%s)", d.status);
}

/* Runs inside the pool's bookkeeping of the last creation, before that
 * sandbox is warm: announce on the next turn of the loop, so that the
 * STATUS= sent with READY=1 counts it. */
static void on_initial_fill(void)
{
	static const struct timeval now = { 0, 0 };

	if (event_base_once(d.base, -1, EV_TIMEOUT, announce_ready, NULL, &now) < 0)
		announce_ready(-1, 0, NULL);
}

static void on_empty(void)
{
	log_info("all sandboxes destroyed");
	event_base_loopexit(d.base, NULL);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
	log_error("%u sandboxes still dying after %d s; exiting anyway", pool_system_live_sandboxes(),
		  SHUTDOWN_GRACE_SEC);
	event_base_loopexit(d.base, NULL);
}

static void begin_shutdown(const char *why)
{
	struct timeval tv = { SHUTDOWN_GRACE_SEC + (time_t)(d.cfg->drain_timeout_ms / 1000), 0 };

	if (d.stopping)
		return;
	d.stopping = true;
	log_info("%s: shutting down", why);
	sdnotify_send("STOPPING=1\nSTATUS=stopping (%s): draining leases", why);
	ipc_server_stop_accepting(d.srv);
	d.deadline = evtimer_new(d.base, on_deadline, NULL);
	if (d.deadline)
		evtimer_add(d.deadline, &tv);
	pool_system_shutdown(on_empty, d.cfg->drain_timeout_ms);
}

/* Each template whose limits are not all enforced, loudly. */
static void report_limits(void)
{
	for (unsigned i = 0; i < pool_count(); i++)
		local_report_limits(pool_template(pool_at(i)));
}

/* SIGHUP: a bad file is rejected whole and the running one stays. */
static void reload_config(void)
{
	char err[1024];
	struct config *next;

	if (d.stopping)
		return;
	next = config_load(d.cfg->path, &d.ov, err, sizeof(err));
	if (!next) {
		log_error("reload rejected, keeping the running configuration: %s", err);
		return;
	}
	if (!config_daemon_equal(d.cfg, next))
		log_warn("reload: [daemon] settings other than log_level take effect at restart");
	d.cfg->log_level = next->log_level;
	log_set_level(next->log_level);
	if (pool_system_reload(d.cfg, next, err, sizeof(err)) < 0) {
		log_error("reload: %s", err);
	} else {
		log_info("configuration reloaded from %s", d.cfg->path ? d.cfg->path : "the embedded default");
		report_limits();
	}
	e2b_backend_reconfigure(d.cfg);
	config_free(next);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	if (sig == SIGHUP) {
		/* Bracketed only once started: before READY=1 the manager still
		 * waits for the start-up, and after STOPPING=1 nothing reloads. */
		bool bracket = d.ready && !d.stopping;

		if (bracket)
			sdnotify_send("RELOADING=1\nMONOTONIC_USEC=%llu", (unsigned long long)monotonic_us());
		reload_config();
		if (bracket)
			notify_status(true);
		return;
	}
	begin_shutdown(sig == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* Forks; the parent waits until the child is serving, then exits with
 * its verdict, so "sandpoold && sandpool run ..." works. */
static void daemonize(void)
{
	int p[2];
	pid_t pid;
	char ok = 0;

	if (pipe2(p, O_CLOEXEC) < 0)
		die("pipe: %s", strerror(errno));
	pid = fork();
	if (pid < 0)
		die("fork: %s", strerror(errno));
	if (pid > 0) {
		close(p[1]);
		_exit(read(p[0], &ok, 1) == 1 && ok == 1 ? 0 : 1);
	}
	close(p[0]);
	setsid();
	d.ready_fd = p[1];
}

static void signal_ready(void)
{
	char ok = 1;
	int devnull;

	if (d.ready_fd < 0)
		return;
	(void)!write(d.ready_fd, &ok, 1);
	close(d.ready_fd);
	d.ready_fd = -1;
	devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (devnull >= 0) {
		dup2(devnull, STDIN_FILENO);
		dup2(devnull, STDOUT_FILENO);
		close(devnull);
	}
}

/* "sandpool/i-" and a hash of the state dir: the same daemon finds its
 * groups again after a crash, and two daemons never touch each other's. */
static const char *instance_name(void)
{
	static char name[32];
	uint32_t h = 2166136261u; /* FNV-1a */

	for (const char *p = d.cfg->state_dir; *p; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	snprintf(name, sizeof(name), "sandpool/i-%08x", h);
	return name;
}

/*
 * The label our E2B sandboxes carry (metadata sandpool_instance): the
 * host's name and the instance hash, so that this daemon, restarted,
 * finds what it left, and daemons on other hosts or state dirs do not.
 * Only [a-z0-9-], so that it needs no escaping in a metadata query.
 */
static void e2b_instance_label(char *out, size_t len)
{
	char host[HOST_NAME_MAX + 1] = "localhost";
	size_t n;

	gethostname(host, sizeof(host) - 1);
	snprintf(out, len, "%s-%s", host, instance_name() + strlen("sandpool/"));
	for (n = 0; out[n]; n++) {
		char c = out[n];

		if (c >= 'A' && c <= 'Z')
			out[n] = (char)(c - 'A' + 'a');
		else if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
			out[n] = '-';
	}
}

/* Since Linux 5.14 RLIMIT_NPROC counts the processes of a uid in each
 * user namespace apart, so in a sandbox it counts that sandbox's alone;
 * before, all processes of the host uid, which rootless is the daemon's. */
static bool nproc_counts_per_user_namespace(void)
{
	struct utsname u;
	unsigned major = 0, minor = 0;

	return uname(&u) == 0 && sscanf(u.release, "%u.%u", &major, &minor) == 2 &&
	       (major > 5 || (major == 5 && minor >= 14));
}

/* Finds the cgroup hierarchy and removes what a killed predecessor left.
 * Rootless, a hierarchy we may not write costs its limits, not the start:
 * local_report_limits() says which at start, template by template. */
static void prepare_cgroups(void)
{
	char err[512] = "";
	unsigned swept;

	if (cgroup_setup(&d.cg, d.cfg->cgroup_root ? d.cfg->cgroup_root : "", instance_name(), d.rootless,
			 err, sizeof(err)) < 0)
		die("cgroups: %s", err);
	d.nproc_limit = !cgroup_enforces(&d.cg, CG_PIDS) && nproc_counts_per_user_namespace();
	if (d.cg.version == 0) {
		log_warn("sandbox cgroups: none usable; memory, pids and cpus are not enforced by cgroups");
		return;
	}
	swept = cgroup_sweep(&d.cg);
	if (swept)
		log_info("removed %u sandbox cgroups left by a previous run", swept);
	log_info("sandbox cgroups: v%d under %s", d.cg.version, d.cg.base[0][0] ? d.cg.base[0] : d.cg.base[1]);
}

/* Whether [first, first + n) lies in one extent of /proc/self/FILE. */
static bool ids_mapped(const char *file, unsigned long first, unsigned long n)
{
	char path[64];
	unsigned long in, out, count;
	bool found = false;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/%s", file);
	f = fopen(path, "re");
	if (!f)
		return false;
	while (!found && fscanf(f, "%lu %lu %lu", &in, &out, &count) == 3)
		found = first >= in && first + n <= in + count;
	fclose(f);
	return found;
}

/* CAP_SETUID and CAP_SETGID in our effective set. */
static bool can_set_ids(void)
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct c[2];
	uint32_t want = (1u << CAP_SETUID) | (1u << CAP_SETGID);

	return syscall(SYS_capget, &h, c) == 0 && (c[0].effective & want) == want;
}

/*
 * Rootful, sandboxes get host ids of their own, which takes root's
 * CAP_SETUID and CAP_SETGID over the range from host_uid_base in our user
 * namespace. Without them we are rootless: said loudly, and refused for
 * the host's root, whose rootless sandboxes would run as the host's uid 0.
 */
static void decide_rootless(void)
{
	unsigned long n = 2ul * d.cfg->max_sandboxes;
	char why[128];
	gid_t groups[64];
	int ng;

	if (geteuid() != 0)
		snprintf(why, sizeof(why), "running as uid %u", (unsigned)geteuid());
	else if (!can_set_ids())
		snprintf(why, sizeof(why), "running as root without CAP_SETUID and CAP_SETGID");
	else if (!ids_mapped("uid_map", d.cfg->host_uid_base, n) || !ids_mapped("gid_map", d.cfg->host_uid_base, n))
		snprintf(why, sizeof(why), "host ids %u..%lu are not mapped in our user namespace",
			 (unsigned)d.cfg->host_uid_base, d.cfg->host_uid_base + n - 1);
	else
		return;
	/* Only the initial user namespace maps every id (0..2^32-2) at once. */
	if (geteuid() == 0 && ids_mapped("uid_map", 0, 4294967295ul))
		die("%s: rootless, every sandbox would run as the host's root; give sandpoold CAP_SETUID and "
		    "CAP_SETGID or run it as an unprivileged user", why);
	d.rootless = true;
	log_warn("ROOTLESS (%s): user code runs as uid 0 of each sandbox's user namespace, which is uid %u here, "
		 "with no capabilities; sandbox_uid, sandbox_gid and host_uid_base are not used; the sandboxes "
		 "and the daemon share that uid and only their namespaces keep them apart (docs/SECURITY.md)",
		 why, (unsigned)geteuid());
	ng = getgroups((int)ARRAY_SIZE(groups), groups);
	for (int i = 0; i < ng; i++) {
		if (groups[i] != getegid()) {
			log_warn("ROOTLESS: sandboxes keep the daemon's supplementary groups (gid %u among them): "
				 "an unprivileged user namespace may not drop them; run sandpoold as a user in no "
				 "other group", (unsigned)groups[i]);
			break;
		}
	}
	if (spawner_check_rootless(why, sizeof(why)) < 0)
		die("rootless mode needs unprivileged user namespaces, and %s (is kernel.unprivileged_userns_clone "
		    "or user.max_user_namespaces 0?)", why);
}

/* Non-root defaults are predictable (/tmp/sandpool-UID): a directory
 * another user made, or may write, could hand our socket or lock to them. */
static void check_own_dir(const char *what, const char *dir)
{
	struct stat st;

	if (geteuid() == 0)
		return;
	if (stat(dir, &st) < 0)
		die("%s %s: %s", what, dir, strerror(errno));
	if ((st.st_uid != geteuid() && st.st_uid != 0) || ((st.st_mode & 022) && !(st.st_mode & S_ISVTX)))
		die("%s %s belongs to uid %u with mode %04o: it must be ours (or root's) and writable by no one "
		    "else (or sticky)", what, dir, (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777));
}

static gid_t socket_gid(const struct config *cfg)
{
	struct group *g;

	if (!cfg->socket_group)
		return (gid_t)-1;
	g = getgrnam(cfg->socket_group);
	if (!g)
		die("socket_group '%s': no such group", cfg->socket_group);
	return g->gr_gid;
}

static int setup_runtime(void)
{
	struct ipc_server_limits lim = {
		.max_connections = d.cfg->max_connections,
		.max_inflight = d.cfg->max_inflight,
		.max_frame = d.cfg->max_frame,
		.max_output_buffer = MAX_OUTPUT_BUFFER,
	};
	char err[512], sockdir[4096], label[128];
	int rc;

	d.base = event_base_new();
	if (!d.base)
		return -ENOMEM;
	if ((rc = spawner_attach(d.spawner, d.base)) < 0 || (rc = lease_table_init(d.base)) < 0)
		return rc;
	local_backend_init(d.base, d.spawner, d.cfg, &d.cg, d.nproc_limit);
	e2b_instance_label(label, sizeof(label));
	if ((rc = http_init(d.base)) < 0 || (rc = e2b_backend_init(d.base, d.cfg, label)) < 0)
		return rc;
	if ((rc = rpc_init(d.base, d.cfg)) < 0)
		return rc;
	rc = pool_system_init(d.base, d.cfg, rpc_sandbox_lost);
	if (rc < 0)
		return rc;
	snprintf(sockdir, sizeof(sockdir), "%s", d.cfg->socket_path);
	if (d.listen_fd < 0 && (rc = fs_mkdir_p(dirname(sockdir), 0755)) < 0) {
		log_error("create socket directory for %s: %s", d.cfg->socket_path, strerror(-rc));
		return rc;
	}
	if (d.listen_fd < 0)
		check_own_dir("socket directory", sockdir);
	d.srv = ipc_server_new(d.base, d.cfg->socket_path, d.listen_fd, d.cfg->socket_mode, socket_gid(d.cfg),
			       &lim, &rpc_handlers, err, sizeof(err));
	if (!d.srv) {
		log_error("%s", err);
		return -EADDRINUSE;
	}
	rpc_set_server(d.srv);
	d.sig_term = evsignal_new(d.base, SIGTERM, on_signal, NULL);
	d.sig_int = evsignal_new(d.base, SIGINT, on_signal, NULL);
	d.sig_hup = evsignal_new(d.base, SIGHUP, on_signal, NULL);
	if (!d.sig_term || !d.sig_int || !d.sig_hup)
		return -ENOMEM;
	event_add(d.sig_term, NULL);
	event_add(d.sig_int, NULL);
	event_add(d.sig_hup, NULL);
	return 0;
}

/* Watchdog pings and STATUS= refreshes, then READY=1 once the start-up
 * fill has been tried (at once when no template wants warm sandboxes). */
static int start_notify(void)
{
	struct timeval tv = ms_timeval(STATUS_INTERVAL_SEC * 1000);
	int rc;

	if ((rc = sdnotify_watchdog_start(d.base)) < 0)
		return rc;
	if (sdnotify_enabled()) {
		d.status_timer = event_new(d.base, -1, EV_PERSIST, on_status_timer, NULL);
		if (!d.status_timer || event_add(d.status_timer, &tv) < 0)
			return -ENOMEM;
		sdnotify_send("STATUS=warming %u templates", pool_count());
	}
	pool_system_on_initial_fill(on_initial_fill);
	return 0;
}

static void teardown(void)
{
	if (d.srv)
		ipc_server_free(d.srv);
	pool_system_free();
	e2b_backend_shutdown();
	http_shutdown();
	/* After everything that may still end a lease or a sandbox. */
	ledger_stop();
	lease_table_free();
	spawner_stop(d.spawner);
	/* The spawner removes groups as sandboxes go; whatever it could not
	 * (it died, or a group was still busy) goes now, before we exit. */
	cgroup_teardown(&d.cg);
	if (d.sig_term)
		event_free(d.sig_term);
	if (d.sig_int)
		event_free(d.sig_int);
	if (d.sig_hup)
		event_free(d.sig_hup);
	if (d.deadline)
		event_free(d.deadline);
	if (d.status_timer)
		event_free(d.status_timer);
	sdnotify_close();
	if (d.base)
		event_base_free(d.base);
	if (d.lock_fd >= 0)
		close(d.lock_fd);
	config_free(d.cfg);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "socket", required_argument, NULL, 's' },
		{ "state-dir", required_argument, NULL, 'd' },
		{ "foreground", no_argument, NULL, 'f' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "check-config", no_argument, NULL, 'C' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct config_overrides *ov = &d.ov;
	const char *config_path = NULL;
	bool foreground = false, check_only = false;
	char err[1024];
	int c, rc;

	log_init("sandpoold");
	while ((c = getopt_long(argc, argv, "c:s:d:fvh", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			config_path = optarg;
			break;
		case 's':
			ov->socket_path = optarg;
			break;
		case 'd':
			ov->state_dir = optarg;
			break;
		case 'f':
			foreground = true;
			break;
		case 'v':
			ov->log_level = LOG_DEBUG;
			break;
		case 'C':
			check_only = true;
			break;
		case 'V':
			printf("sandpoold %s\n", PACKAGE_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "sandpoold: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	d.cfg = config_load(config_path, ov, err, sizeof(err));
	if (!d.cfg) {
		log_error("%s", err);
		return 1;
	}
	log_set_level(d.cfg->log_level);
	if (check_only) {
		config_dump(d.cfg, stdout);
		config_free(d.cfg);
		return 0;
	}
	signal(SIGPIPE, SIG_IGN);
	if (sdnotify_init(err, sizeof(err)) < 0)
		log_warn("%s; not notifying the service manager", err);
	d.listen_fd = sdnotify_listen_fd(d.listen_path, sizeof(d.listen_path), err, sizeof(err));
	if (d.listen_fd == -ENOENT)
		d.listen_fd = -1;
	else if (d.listen_fd < 0)
		die("socket activation: %s", err);
	else if (strcmp(d.listen_path, d.cfg->socket_path) != 0)
		log_warn("socket activation: serving %s; the configured socket %s is not used", d.listen_path,
			 d.cfg->socket_path);
	/* A manager waiting for READY=1 supervises this very process. */
	if (!foreground && !sdnotify_enabled())
		daemonize();
	/* 0755: the socket may live here and socket_mode/socket_group decide who
	 * may connect; nothing in the state dir is secret. */
	if ((rc = fs_mkdir_p(d.cfg->state_dir, 0755)) < 0)
		die("create state dir %s: %s", d.cfg->state_dir, strerror(-rc));
	check_own_dir("state dir", d.cfg->state_dir);
	d.lock_fd = take_lock(d.cfg->state_dir);
	if (d.lock_fd < 0)
		return 1;
	/* Before the event base and any thread: the spawner (and the rootless
	 * probe) is a plain fork. */
	decide_rootless();
	prepare_cgroups();
	rc = spawner_start(&d.spawner, d.cfg->agent_path, &d.cg,
			   &(struct spawner_ids){ .uid_base = d.cfg->host_uid_base,
						  .n_slots = d.cfg->max_sandboxes,
						  .rootless = d.rootless,
						  .nproc_limit = d.nproc_limit });
	if (rc < 0)
		die("cannot start the sandbox spawner: %s", strerror(-rc));
	/* After the spawner's fork: the ledger's writer is a thread. */
	if (ledger_start_config(d.cfg, err, sizeof(err)) < 0) {
		log_error("start-up failed: %s (or set ledger_path = off)", err);
		teardown();
		return 1;
	}
	rc = setup_runtime();
	if (rc < 0) {
		log_error("start-up failed: %s", strerror(-rc));
		teardown();
		return 1;
	}
	log_info("sandpoold %s listening on %s%s (%u templates, state in %s)", PACKAGE_VERSION, socket_path(),
		 d.listen_fd >= 0 ? " (socket activation)" : "", d.cfg->n_templates, d.cfg->state_dir);
	report_limits();
	if ((rc = start_notify()) < 0) {
		log_error("start-up failed: service manager notification: %s", strerror(-rc));
		teardown();
		return 1;
	}
	signal_ready();
	event_base_dispatch(d.base);
	teardown();
	log_info("stopped");
	return 0;
}
