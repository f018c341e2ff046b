#include "autoconfig.h"

#include "ipc/server.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "daemon/log.h"

struct ipc_conn {
	struct ipc_server *srv;
	struct bufferevent *bev;
	struct ipc_reader reader;
	msgpack_packer pk;
	uint64_t id;
	uid_t uid;
	pid_t pid;
	unsigned inflight;
	bool closing;
	bool flush_queued; /* on srv->flushing */
	bool failing;	   /* an error frame is going out; then it closes */
	void *data;
	TAILQ_ENTRY(ipc_conn) link;
	TAILQ_ENTRY(ipc_conn) flush_link;
};

struct ipc_server {
	struct event_base *base;
	struct evconnlistener *listener;
	char *path; /* unlinked at free when we bound it */
	struct ipc_server_limits lim;
	struct ipc_handlers h;
	TAILQ_HEAD(, ipc_conn) conns;
	TAILQ_HEAD(, ipc_conn) closing; /* freed by reap_ev on the next loop pass */
	struct event *reap_ev;
	TAILQ_HEAD(, ipc_conn) flushing; /* with replies to write, by flush_ev */
	struct event *flush_ev;
	unsigned n_conns;
	uint64_t next_id;
};

/* Replies to a closing connection are packed into this sink and dropped. */
static int discard_write(void *data, const char *buf, size_t len)
{
	return 0;
}

static msgpack_packer discard_pk = { .data = NULL, .callback = discard_write };

static void conn_free(struct ipc_conn *c)
{
	if (c->flush_queued)
		TAILQ_REMOVE(&c->srv->flushing, c, flush_link);
	bufferevent_free(c->bev);
	ipc_reader_destroy(&c->reader);
	free(c);
}

static void on_reap(evutil_socket_t fd, short what, void *arg)
{
	struct ipc_server *srv = arg;
	struct ipc_conn *c;

	while ((c = TAILQ_FIRST(&srv->closing))) {
		TAILQ_REMOVE(&srv->closing, c, link);
		conn_free(c);
	}
}

/* Detaches c from everything now and frees it on the next loop pass, so a
 * callback further up the stack may still look at it. */
static void conn_close(struct ipc_conn *c)
{
	struct ipc_server *srv = c->srv;

	if (c->closing)
		return;
	c->closing = true;
	bufferevent_disable(c->bev, EV_READ | EV_WRITE);
	srv->h.on_close(c);
	TAILQ_REMOVE(&srv->conns, c, link);
	srv->n_conns--;
	TAILQ_INSERT_TAIL(&srv->closing, c, link);
	event_active(srv->reap_ev, 0, 0);
}

/*
 * Replies are written straight from the loop pass that made them: the
 * bufferevent's EV_WRITE stays disabled while its output is empty, so a
 * request costs one epoll_wait, a read and a write, and no epoll_ctl to
 * watch for writability. Only a reply the socket cannot take at once
 * enables EV_WRITE, until the bufferevent has written the rest.
 */
static void on_flush(evutil_socket_t fd, short what, void *arg)
{
	struct ipc_server *srv = arg;
	struct ipc_conn *c;

	while ((c = TAILQ_FIRST(&srv->flushing))) {
		struct evbuffer *out = bufferevent_get_output(c->bev);
		int n;

		TAILQ_REMOVE(&srv->flushing, c, flush_link);
		c->flush_queued = false;
		if (c->closing || evbuffer_get_length(out) == 0)
			continue;
		/* A socket bufferevent keeps the front of its output frozen but
		 * in its own write callback; writing here is the same act. */
		evbuffer_unfreeze(out, 1);
		n = evbuffer_write(out, bufferevent_getfd(c->bev));
		evbuffer_freeze(out, 1);
		if (n < 0 && errno != EAGAIN && errno != EINTR) {
			log_info("connection %llu: write: %s; closing", (unsigned long long)c->id, strerror(errno));
			conn_close(c);
			continue;
		}
		if (evbuffer_get_length(out) > 0)
			bufferevent_enable(c->bev, EV_WRITE);
		else if (c->failing)
			conn_close(c);
		else
			bufferevent_disable(c->bev, EV_WRITE);
	}
}

static void on_output_added(struct evbuffer *b, const struct evbuffer_cb_info *info, void *arg)
{
	struct ipc_conn *c = arg;

	if (!info->n_added || c->flush_queued)
		return;
	c->flush_queued = true;
	TAILQ_INSERT_TAIL(&c->srv->flushing, c, flush_link);
	event_active(c->srv->flush_ev, 0, 0);
}

/* The bufferevent wrote what the socket could not take at once. */
static void on_written(struct bufferevent *bev, void *arg)
{
	bufferevent_disable(bev, EV_WRITE);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
	struct ipc_conn *c = arg;

	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT))
		conn_close(c);
}

/* After an error frame, stop reading and close once the frame is out. */
static void on_drained_close(struct bufferevent *bev, void *arg)
{
	struct ipc_conn *c = arg;

	if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		conn_close(c);
}

static void conn_fail(struct ipc_conn *c, enum sandpool_errcode code, const char *msg)
{
	log_info("connection %llu (uid %u pid %d): %s; closing", (unsigned long long)c->id,
		 (unsigned)c->uid, (int)c->pid, msg);
	c->failing = true;
	bufferevent_disable(c->bev, EV_READ);
	bufferevent_setcb(c->bev, NULL, on_drained_close, on_event, c);
	bufferevent_set_timeouts(c->bev, NULL, &(struct timeval){ 2, 0 });
	/* on_flush writes it, and closes, or leaves the rest to EV_WRITE. */
	ipc_pack_response_error(&c->pk, 0, sandpool_errcode_name(code), msg);
}

static bool output_overflow(struct ipc_conn *c)
{
	return evbuffer_get_length(bufferevent_get_output(c->bev)) > c->srv->lim.max_output_buffer;
}

static void dispatch(struct ipc_conn *c, const struct rpc_msg *m)
{
	if (m->type != RPC_REQUEST)
		return; /* clients have nothing to notify or answer */
	c->inflight++;
	if (c->inflight > c->srv->lim.max_inflight) {
		ipc_conn_reply_error(c, m->msgid, SANDPOOL_E_LIMIT_EXCEEDED,
				     "more than %u requests in flight on this connection",
				     c->srv->lim.max_inflight);
		return;
	}
	c->srv->h.on_request(c, m);
}

static void on_read(struct bufferevent *bev, void *arg)
{
	struct ipc_conn *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);

	while (!c->closing && evbuffer_get_length(in) > 0) {
		size_t avail = evbuffer_get_length(in), cap;
		char *dst = ipc_reader_buffer(&c->reader, avail < 65536 ? avail : 65536, &cap);
		int n;

		if (!dst) {
			conn_fail(c, SANDPOOL_E_INTERNAL, "out of memory");
			return;
		}
		n = evbuffer_remove(in, dst, avail < cap ? avail : cap);
		if (n <= 0)
			return;
		ipc_reader_consumed(&c->reader, (size_t)n);
		while (!c->closing) {
			struct rpc_msg m;
			const char *why = "malformed message";
			enum ipc_read_status st = ipc_reader_next(&c->reader, &m, &why);

			if (st == IPC_READ_MORE)
				break;
			if (st == IPC_READ_TOO_LARGE) {
				conn_fail(c, SANDPOOL_E_LIMIT_EXCEEDED, "message exceeds max_frame");
				return;
			}
			if (st == IPC_READ_MALFORMED) {
				conn_fail(c, SANDPOOL_E_BAD_REQUEST, why);
				return;
			}
			dispatch(c, &m);
		}
	}
	if (!c->closing && output_overflow(c)) {
		log_warn("connection %llu: peer does not read its replies; closing",
			 (unsigned long long)c->id);
		conn_close(c);
	}
}


static void reject(evutil_socket_t fd, const char *code, const char *msg)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	ipc_pack_response_error(&pk, 0, code, msg);
	(void)!send(fd, sb.data, sb.size, MSG_DONTWAIT | MSG_NOSIGNAL);
	msgpack_sbuffer_destroy(&sb);
	evutil_closesocket(fd);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
		      void *arg)
{
	struct ipc_server *srv = arg;
	struct ucred cred = { .pid = -1, .uid = (uid_t)-1, .gid = (gid_t)-1 };
	socklen_t len = sizeof(cred);
	struct ipc_conn *c;

	if (srv->n_conns >= srv->lim.max_connections) {
		log_warn("refusing connection: max_connections (%u) reached", srv->lim.max_connections);
		reject(fd, "limit_exceeded", "too many connections");
		return;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
		log_warn("SO_PEERCRED: %s", strerror(errno));
		evutil_closesocket(fd);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (!c || ipc_reader_init(&c->reader, srv->lim.max_frame) < 0) {
		free(c);
		evutil_closesocket(fd);
		return;
	}
	c->bev = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (!c->bev) {
		ipc_reader_destroy(&c->reader);
		free(c);
		evutil_closesocket(fd);
		return;
	}
	c->srv = srv;
	c->id = ++srv->next_id;
	c->uid = cred.uid;
	c->pid = cred.pid;
	msgpack_packer_init(&c->pk, bufferevent_get_output(c->bev), ipc_evbuffer_write);
	bufferevent_setcb(c->bev, on_read, on_written, on_event, c);
	bufferevent_enable(c->bev, EV_READ);
	bufferevent_disable(c->bev, EV_WRITE);
	if (!evbuffer_add_cb(bufferevent_get_output(c->bev), on_output_added, c)) {
		bufferevent_free(c->bev);
		ipc_reader_destroy(&c->reader);
		free(c);
		return;
	}
	TAILQ_INSERT_TAIL(&srv->conns, c, link);
	srv->n_conns++;
	log_debug("connection %llu from uid %u pid %d", (unsigned long long)c->id, (unsigned)c->uid,
		  (int)c->pid);
}

static void on_accept_error(struct evconnlistener *l, void *arg)
{
	/* EMFILE and friends: keep serving who we have, try again later. */
	log_warn("accept: %s", strerror(errno));
}

static int bind_socket(const char *path, mode_t mode, gid_t gid, char *err, size_t errlen)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	mode_t old;
	int fd;

	if (strlen(path) >= sizeof(sun.sun_path)) {
		snprintf(err, errlen, "socket path too long: %s", path);
		return -ENAMETOOLONG;
	}
	strcpy(sun.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -errno;
	}
	/* A socket file left by a dead daemon refuses connections; one that
	 * accepts belongs to a live daemon we must not steal from. */
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0) {
		snprintf(err, errlen, "%s: another daemon is listening there", path);
		close(fd);
		return -EADDRINUSE;
	}
	close(fd);
	/* Bound and listening under a temporary name, then renamed into
	 * place: a client that sees the path can connect at once. */
	if ((size_t)snprintf(sun.sun_path, sizeof(sun.sun_path), "%s.%d", path, (int)getpid()) >=
	    sizeof(sun.sun_path)) {
		snprintf(err, errlen, "socket path too long: %s", path);
		return -ENAMETOOLONG;
	}
	unlink(sun.sun_path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -errno;
	}
	old = umask(0777 & ~mode);
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		int e = errno;

		umask(old);
		snprintf(err, errlen, "bind %s: %s", sun.sun_path, strerror(e));
		close(fd);
		return -e;
	}
	umask(old);
	if (chmod(sun.sun_path, mode) < 0 ||
	    (gid != (gid_t)-1 && chown(sun.sun_path, (uid_t)-1, gid) < 0) || listen(fd, 512) < 0 ||
	    rename(sun.sun_path, path) < 0) {
		int e = errno;

		snprintf(err, errlen, "prepare socket %s: %s", path, strerror(e));
		close(fd);
		unlink(sun.sun_path);
		return -e;
	}
	return fd;
}

struct ipc_server *ipc_server_new(struct event_base *base, const char *path, int listen_fd,
				  mode_t mode, gid_t gid, const struct ipc_server_limits *lim,
				  const struct ipc_handlers *h, char *err, size_t errlen)
{
	struct ipc_server *srv = calloc(1, sizeof(*srv));
	int fd = listen_fd;

	if (!srv) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	srv->base = base;
	srv->lim = *lim;
	srv->h = *h;
	TAILQ_INIT(&srv->conns);
	TAILQ_INIT(&srv->closing);
	TAILQ_INIT(&srv->flushing);
	srv->reap_ev = event_new(base, -1, 0, on_reap, srv);
	srv->flush_ev = event_new(base, -1, 0, on_flush, srv);
	if (!srv->reap_ev || !srv->flush_ev) {
		snprintf(err, errlen, "out of memory");
		if (srv->reap_ev)
			event_free(srv->reap_ev);
		if (srv->flush_ev)
			event_free(srv->flush_ev);
		free(srv);
		return NULL;
	}
	if (fd < 0) {
		fd = bind_socket(path, mode, gid, err, errlen);
		if (fd < 0) {
			event_free(srv->reap_ev);
			event_free(srv->flush_ev);
			free(srv);
			return NULL;
		}
		srv->path = strdup(path);
	} else {
		evutil_make_socket_nonblocking(fd);
		evutil_make_socket_closeonexec(fd);
	}
	srv->listener = evconnlistener_new(base, on_accept, srv, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC,
					   -1, fd);
	if (!srv->listener) {
		snprintf(err, errlen, "evconnlistener_new: %s", strerror(errno));
		close(fd);
		ipc_server_free(srv);
		return NULL;
	}
	evconnlistener_set_error_cb(srv->listener, on_accept_error);
	return srv;
}

void ipc_server_stop_accepting(struct ipc_server *srv)
{
	if (srv->listener) {
		evconnlistener_free(srv->listener);
		srv->listener = NULL;
	}
	if (srv->path) {
		unlink(srv->path);
		free(srv->path);
		srv->path = NULL;
	}
}

void ipc_server_free(struct ipc_server *srv)
{
	struct ipc_conn *c;

	if (!srv)
		return;
	ipc_server_stop_accepting(srv);
	while ((c = TAILQ_FIRST(&srv->conns)))
		conn_close(c);
	on_reap(-1, 0, srv);
	event_free(srv->reap_ev);
	event_free(srv->flush_ev);
	free(srv);
}

unsigned ipc_server_connection_count(const struct ipc_server *srv)
{
	return srv->n_conns;
}

uid_t ipc_conn_uid(const struct ipc_conn *c)
{
	return c->uid;
}

pid_t ipc_conn_pid(const struct ipc_conn *c)
{
	return c->pid;
}

uint64_t ipc_conn_id(const struct ipc_conn *c)
{
	return c->id;
}

void *ipc_conn_get_data(const struct ipc_conn *c)
{
	return c->data;
}

void ipc_conn_set_data(struct ipc_conn *c, void *data)
{
	c->data = data;
}

msgpack_packer *ipc_conn_reply_ok(struct ipc_conn *c, uint32_t msgid)
{
	if (c->inflight)
		c->inflight--;
	if (c->closing)
		return &discard_pk;
	ipc_pack_response_ok_head(&c->pk, msgid);
	return &c->pk;
}

void ipc_conn_reply_error(struct ipc_conn *c, uint32_t msgid, enum sandpool_errcode code,
			  const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	if (c->inflight)
		c->inflight--;
	if (c->closing)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	ipc_pack_response_error(&c->pk, msgid, sandpool_errcode_name(code), msg);
}

msgpack_packer *ipc_conn_notify(struct ipc_conn *c, const char *method)
{
	if (c->closing)
		return &discard_pk;
	ipc_pack_notify_head(&c->pk, method);
	return &c->pk;
}
