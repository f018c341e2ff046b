#include "autoconfig.h"

#include "daemon/sdnotify.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "daemon/log.h"

static struct {
	int fd; /* datagram socket towards $NOTIFY_SOCKET; -1: notifications off */
	struct sockaddr_un addr;
	socklen_t addrlen;
	bool send_failed;	/* warned once; a dead manager must not flood the log */
	uint64_t watchdog_usec; /* 0: no watchdog for this process */
	struct event *watchdog;
	int listen_fds;		/* sockets passed to this very process */
	char listen_name[256];	/* the first one's name in $LISTEN_FDNAMES */
} sn = { .fd = -1 };

/* Strict decimal: the whole string, no sign, no overflow. */
static int parse_u64(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end)
		return -EINVAL;
	*out = v;
	return 0;
}

static bool is_our_pid(const char *s)
{
	uint64_t pid;

	return parse_u64(s, &pid) == 0 && pid == (uint64_t)getpid();
}

static int open_notify(const char *ns, char *err, size_t errlen)
{
	size_t len = strlen(ns);

	/* A path needs room for its NUL; an abstract name fills sun_path. */
	if (!(ns[0] == '/' && len < sizeof(sn.addr.sun_path)) &&
	    !(ns[0] == '@' && len > 1 && len <= sizeof(sn.addr.sun_path))) {
		snprintf(err, errlen, "NOTIFY_SOCKET=%s: not an absolute path or an @abstract name", ns);
		return -EINVAL;
	}
	memset(&sn.addr, 0, sizeof(sn.addr));
	sn.addr.sun_family = AF_UNIX;
	memcpy(sn.addr.sun_path, ns, len);
	if (ns[0] == '@')
		sn.addr.sun_path[0] = '\0';
	sn.addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
	sn.fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (sn.fd < 0) {
		int e = errno;

		snprintf(err, errlen, "NOTIFY_SOCKET: socket: %s", strerror(e));
		return -e;
	}
	return 0;
}

static void read_watchdog(void)
{
	const char *usec = getenv("WATCHDOG_USEC"), *pid = getenv("WATCHDOG_PID");
	uint64_t u;

	if (!usec)
		return;
	if (parse_u64(usec, &u) < 0 || u == 0) {
		log_warn("ignoring WATCHDOG_USEC=%s: not a positive number", usec);
		return;
	}
	/* Set for another process of the service: not ours to answer. */
	if (pid && !is_our_pid(pid))
		return;
	sn.watchdog_usec = u;
}

static void read_listen(void)
{
	const char *fds = getenv("LISTEN_FDS"), *names = getenv("LISTEN_FDNAMES");
	uint64_t n;

	/* LISTEN_PID guards against variables inherited from a parent that
	 * was itself socket-activated: the sockets were not meant for us. */
	if (!fds || !is_our_pid(getenv("LISTEN_PID")))
		return;
	if (parse_u64(fds, &n) < 0 || n > (uint64_t)(INT_MAX - SDNOTIFY_LISTEN_FD)) {
		log_warn("ignoring LISTEN_FDS=%s: not a number of sockets", fds);
		return;
	}
	sn.listen_fds = (int)n;
	/* systemd passes them without FD_CLOEXEC; nothing we exec may get one. */
	for (int fd = SDNOTIFY_LISTEN_FD; fd < SDNOTIFY_LISTEN_FD + sn.listen_fds; fd++)
		fcntl(fd, F_SETFD, FD_CLOEXEC);
	if (names)
		snprintf(sn.listen_name, sizeof(sn.listen_name), "%.*s", (int)strcspn(names, ":"), names);
}

int sdnotify_init(char *err, size_t errlen)
{
	static const char *const vars[] = { "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID",
					    "LISTEN_FDS",    "LISTEN_PID",    "LISTEN_FDNAMES" };
	const char *ns = getenv("NOTIFY_SOCKET");
	int rc = 0;

	read_watchdog();
	read_listen();
	if (ns && *ns)
		rc = open_notify(ns, err, errlen);
	for (size_t i = 0; i < ARRAY_SIZE(vars); i++)
		unsetenv(vars[i]);
	return rc;
}

bool sdnotify_enabled(void)
{
	return sn.fd >= 0;
}

int sdnotify_send(const char *fmt, ...)
{
	char buf[2048];
	va_list ap;
	int n;

	if (sn.fd < 0)
		return 0;
	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0)
		return -EINVAL;
	if ((size_t)n >= sizeof(buf))
		n = (int)sizeof(buf) - 1; /* only a long STATUS= gets cut */
	/* Never wait for the manager: a full queue loses one message, a
	 * blocked loop would lose every client. */
	if (sendto(sn.fd, buf, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&sn.addr,
		   sn.addrlen) < 0) {
		int e = errno;

		if (!sn.send_failed)
			log_warn("notify the service manager: %s", strerror(e));
		sn.send_failed = true;
		return -e;
	}
	sn.send_failed = false;
	return 0;
}

int sdnotify_listen_fd(char *path, size_t pathlen, char *err, size_t errlen)
{
	const int fd = SDNOTIFY_LISTEN_FD;
	const char *name = sn.listen_name[0] ? sn.listen_name : "unnamed";
	struct sockaddr_un sun = { 0 };
	socklen_t len = sizeof(int);
	int domain = 0, type = 0, listening = 0;
	struct stat st;

	if (sn.listen_fds == 0)
		return -ENOENT;
	if (sn.listen_fds > 1) {
		snprintf(err, errlen, "%d sockets passed; sandpoold takes exactly one", sn.listen_fds);
		return -EINVAL;
	}
	if (fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode)) {
		snprintf(err, errlen, "fd %d (%s) is not a socket", fd, name);
		return -ENOTSOCK;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0 || domain != AF_UNIX) {
		snprintf(err, errlen, "fd %d (%s) is not a Unix socket: ListenStream= must be a path", fd, name);
		return -EAFNOSUPPORT;
	}
	len = sizeof(int);
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_STREAM) {
		snprintf(err, errlen, "fd %d (%s) is not a stream socket: use ListenStream=", fd, name);
		return -EPROTOTYPE;
	}
	len = sizeof(int);
	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0 || !listening) {
		snprintf(err, errlen, "fd %d (%s) is not listening", fd, name);
		return -EINVAL;
	}
	len = sizeof(sun);
	if (getsockname(fd, (struct sockaddr *)&sun, &len) < 0 || len <= offsetof(struct sockaddr_un, sun_path))
		snprintf(path, pathlen, "%s", "");
	else if (sun.sun_path[0] == '\0')
		snprintf(path, pathlen, "@%.*s", (int)(len - offsetof(struct sockaddr_un, sun_path) - 1),
			 sun.sun_path + 1);
	else
		snprintf(path, pathlen, "%.*s", (int)sizeof(sun.sun_path), sun.sun_path);
	log_info("socket activation: serving fd %d (%s) bound to %s", fd, name, path[0] ? path : "no name");
	return fd;
}

uint64_t sdnotify_watchdog_usec(void)
{
	return sn.watchdog_usec;
}

static void on_watchdog(evutil_socket_t fd, short what, void *arg)
{
	sdnotify_send("WATCHDOG=1");
}

int sdnotify_watchdog_start(struct event_base *base)
{
	/* Half the deadline, as systemd recommends: one late tick is not fatal. */
	uint64_t half = sn.watchdog_usec / 2 ? sn.watchdog_usec / 2 : 1;
	struct timeval tv = { (time_t)(half / 1000000), (suseconds_t)(half % 1000000) };

	if (!sn.watchdog_usec || sn.fd < 0 || sn.watchdog)
		return 0;
	sn.watchdog = event_new(base, -1, EV_PERSIST, on_watchdog, NULL);
	if (!sn.watchdog)
		return -ENOMEM;
	if (event_add(sn.watchdog, &tv) < 0) {
		event_free(sn.watchdog);
		sn.watchdog = NULL;
		return -EINVAL;
	}
	log_info("watchdog: pinging the service manager every %llu ms", (unsigned long long)half / 1000);
	return 0;
}

void sdnotify_close(void)
{
	if (sn.watchdog) {
		event_free(sn.watchdog);
		sn.watchdog = NULL;
	}
	if (sn.fd >= 0) {
		close(sn.fd);
		sn.fd = -1;
	}
}
