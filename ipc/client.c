/*
 * libsandpool: one blocking Unix-socket connection to sandpoold speaking
 * docs/PROTOCOL.md. Owns the socket, the stream reader, and the list of
 * requests in flight with any responses that arrived before their caller
 * asked for them.
 */
#include "autoconfig.h"

#include "ipc/sandpool.h"

#include "ipc/codec.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* Far above the largest exec result a sane max_output produces, yet a bound
 * on what a confused peer can make us buffer. */
#define CLIENT_DEFAULT_MAX_FRAME (64u * 1024 * 1024)
/* Bytes asked of the reader per recv(); the unpacker grows past it for big
 * messages. */
#define CLIENT_READ_CHUNK (64 * 1024)

/* A request sent and not yet collected by sandpool_wait(). */
struct pending {
	struct pending *next;
	uint32_t msgid;
	bool done; /* its response arrived: rc, err and reply are final */
	int rc;	   /* 0, or a negative errno with err */
	struct sandpool_error err;
	struct sandpool_reply *reply;
};

struct sandpool {
	int fd;
	struct ipc_reader reader;
	msgpack_sbuffer head; /* envelope of the request being sent */
	uint32_t last_msgid;
	int timeout_ms;
	struct pending *pending;
	/* Non-zero once the stream is unusable; every later call reports the
	 * first cause. */
	int broken_rc;
	struct sandpool_error broken_err;
};

static int __attribute__((format(printf, 4, 5)))
set_error(struct sandpool_error *err, int rc, enum sandpool_errcode code, const char *fmt, ...)
{
	va_list ap;

	if (!err)
		return rc;
	err->code = code;
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
	return rc;
}

static int conn_report(const struct sandpool *sp, struct sandpool_error *err)
{
	if (err)
		*err = sp->broken_err;
	return sp->broken_rc;
}

/* Marks the connection unusable (keeping an earlier cause) and reports it. */
static int __attribute__((format(printf, 5, 6)))
conn_fail(struct sandpool *sp, struct sandpool_error *err, int rc, enum sandpool_errcode code,
	  const char *fmt, ...)
{
	va_list ap;

	if (!sp->broken_rc) {
		sp->broken_rc = rc;
		sp->broken_err.code = code;
		va_start(ap, fmt);
		vsnprintf(sp->broken_err.message, sizeof(sp->broken_err.message), fmt, ap);
		va_end(ap);
	}
	return conn_report(sp, err);
}

/* An {code, message} error map: -EREMOTEIO with the daemon's code. */
static int error_from_map(const msgpack_object *map, struct sandpool_error *err)
{
	const char *code, *msg = "";
	uint32_t code_len, msg_len = 0;
	enum sandpool_errcode c;

	if (ipc_get_str(map, "code", &code, &code_len) < 0)
		return set_error(err, -EREMOTEIO, SANDPOOL_E_INTERNAL, "malformed error from the daemon");
	(void)ipc_get_str(map, "message", &msg, &msg_len);
	c = sandpool_errcode_from_name(code, code_len);
	/* A code newer than this library still reaches the user by name. */
	if (c == SANDPOOL_E_INTERNAL && (code_len != 8 || memcmp(code, "internal", 8) != 0))
		return set_error(err, -EREMOTEIO, c, "%.*s: %.*s", (int)code_len, code, (int)msg_len,
				 msg);
	return set_error(err, -EREMOTEIO, c, "%.*s", (int)msg_len, msg);
}

/* --- time and socket I/O --------------------------------------------------- */

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Absolute deadline of a call starting now, or -1 for none. */
static int64_t call_deadline(const struct sandpool *sp)
{
	return sp->timeout_ms > 0 ? now_ms() + sp->timeout_ms : -1;
}

/* Waits until the socket is ready for events: 0, -ETIMEDOUT or -errno.
 * Errors and hang-ups count as ready so that the I/O call reports them. */
static int conn_poll(struct sandpool *sp, short events, int64_t deadline)
{
	struct pollfd pfd = {.fd = sp->fd, .events = events};
	int left = -1;

	for (;;) {
		if (deadline >= 0) {
			int64_t d = deadline - now_ms();

			if (d <= 0)
				return -ETIMEDOUT;
			left = d > INT_MAX ? INT_MAX : (int)d;
		}
		switch (poll(&pfd, 1, left)) {
		case -1:
			if (errno != EINTR)
				return -errno;
			break;
		case 0:
			return -ETIMEDOUT;
		default:
			return 0;
		}
	}
}

static int conn_write(struct sandpool *sp, const void *buf, size_t len, int64_t deadline)
{
	const char *p = buf;

	while (len > 0) {
		/* MSG_NOSIGNAL: a daemon that went away is an error, not SIGPIPE. */
		ssize_t n = send(sp->fd, p, len, MSG_NOSIGNAL);
		int rc;

		if (n >= 0) {
			p += n;
			len -= (size_t)n;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
		rc = conn_poll(sp, POLLOUT, deadline);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* Appends what the socket has to the reader: 0, -ECONNRESET at end of
 * stream, -ETIMEDOUT or -errno. */
static int conn_read(struct sandpool *sp, int64_t deadline)
{
	for (;;) {
		size_t cap;
		char *buf = ipc_reader_buffer(&sp->reader, CLIENT_READ_CHUNK, &cap);
		ssize_t n;
		int rc;

		if (!buf)
			return -ENOMEM;
		n = recv(sp->fd, buf, cap, 0);
		if (n > 0) {
			ipc_reader_consumed(&sp->reader, (size_t)n);
			return 0;
		}
		if (n == 0)
			return -ECONNRESET;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
		rc = conn_poll(sp, POLLIN, deadline);
		if (rc < 0)
			return rc;
	}
}

/* --- requests in flight ---------------------------------------------------- */

/* The link pointing at msgid's entry, or at the terminating NULL. */
static struct pending **pending_link(struct sandpool *sp, uint32_t msgid)
{
	struct pending **pp = &sp->pending;

	while (*pp && (*pp)->msgid != msgid)
		pp = &(*pp)->next;
	return pp;
}

/* Unlinks *pp and frees it with any reply its caller did not collect. */
static void pending_drop(struct pending **pp)
{
	struct pending *p = *pp;

	*pp = p->next;
	sandpool_reply_free(p->reply);
	free(p);
}

/* msgid 0 is the daemon's "this whole connection" id, so never one of ours;
 * after a wrap, ids still in flight are skipped. */
static uint32_t next_msgid(struct sandpool *sp)
{
	do
		sp->last_msgid++;
	while (sp->last_msgid == 0 || *pending_link(sp, sp->last_msgid));
	return sp->last_msgid;
}

static void conn_settle(struct sandpool *sp, const struct rpc_msg *msg)
{
	struct sandpool_error e;
	struct pending *p;

	if (msg->msgid == 0) {
		/* The daemon hangs up after an error addressed to the connection;
		 * that error is why every later call fails. */
		if (msg->error) {
			error_from_map(msg->error, &e);
			conn_fail(sp, NULL, -ECONNRESET, e.code, "%s", e.message);
		}
		return;
	}
	p = *pending_link(sp, msg->msgid);
	/* Responses to abandoned requests, and duplicates, are dropped. */
	if (!p || p->done)
		return;
	p->done = true;
	if (msg->error) {
		p->rc = error_from_map(msg->error, &p->err);
		return;
	}
	p->reply = malloc(sizeof(*p->reply));
	if (!p->reply) {
		p->rc = set_error(&p->err, -ENOMEM, SANDPOOL_E_INTERNAL, "out of memory");
		return;
	}
	/* Taking the message's zone from the reader keeps the result valid past
	 * the next read; the zone holds a reference to the bytes it points into. */
	p->reply->zone = msgpack_unpacked_release_zone(&sp->reader.unpacked);
	p->reply->result = msg->result;
}

static void conn_notify(struct sandpool *sp, const struct rpc_msg *msg, sandpool_notify_fn on_notify,
			void *arg)
{
	/* The method is copied into the message's own zone to NUL-terminate it. */
	char *method = msgpack_zone_malloc(sp->reader.unpacked.zone, (size_t)msg->method_len + 1);

	if (!method)
		return;
	memcpy(method, msg->method, msg->method_len);
	method[msg->method_len] = '\0';
	on_notify(arg, method, msg->params);
}

/* Reads and dispatches messages until *done, the deadline, or a broken
 * stream. With done NULL it runs until the stream stops. */
static int conn_wait(struct sandpool *sp, const bool *done, sandpool_notify_fn on_notify, void *arg,
		     int64_t deadline, struct sandpool_error *err)
{
	while (!done || !*done) {
		struct rpc_msg msg;
		const char *why = "";
		int rc;

		if (sp->broken_rc)
			return conn_report(sp, err);
		switch (ipc_reader_next(&sp->reader, &msg, &why)) {
		case IPC_READ_MSG:
			if (msg.type == RPC_RESPONSE)
				conn_settle(sp, &msg);
			else if (msg.type == RPC_NOTIFY && on_notify)
				conn_notify(sp, &msg, on_notify, arg);
			/* The daemon sends clients no requests: nothing to answer. */
			break;
		case IPC_READ_MORE:
			rc = conn_read(sp, deadline);
			if (rc == -ETIMEDOUT)
				return set_error(err, rc, SANDPOOL_E_CONNECTION,
						 "no response from the daemon within %d ms",
						 sp->timeout_ms);
			if (rc == -ECONNRESET)
				return conn_fail(
					sp, err, rc, SANDPOOL_E_CONNECTION, "the daemon closed the connection%s",
					msgpack_unpacker_message_size(&sp->reader.unpacker) > 0
						? " in the middle of a message"
						: "");
			if (rc < 0)
				return conn_fail(sp, err, rc, SANDPOOL_E_CONNECTION, "read: %s",
						 strerror(-rc));
			break;
		case IPC_READ_MALFORMED:
			return conn_fail(sp, err, -EPROTO, SANDPOOL_E_CONNECTION,
					 "malformed message from the daemon: %s", why);
		case IPC_READ_TOO_LARGE:
			return conn_fail(sp, err, -EMSGSIZE, SANDPOOL_E_CONNECTION,
					 "message from the daemon exceeds %zu bytes",
					 sp->reader.max_frame);
		}
	}
	return 0;
}

/* A request could not be sent whole, so the stream is out of step for good. */
static int conn_send_failed(struct sandpool *sp, int rc, struct sandpool_error *err)
{
	/* A daemon that hung up may have said why first (shutting_down, or
	 * limit_exceeded for one connection too many): read that, without
	 * blocking, before blaming the write. */
	if (rc == -EPIPE || rc == -ECONNRESET)
		(void)conn_wait(sp, NULL, NULL, NULL, now_ms(), NULL);
	if (rc == -ETIMEDOUT)
		return conn_fail(sp, err, rc, SANDPOOL_E_CONNECTION,
				 "could not send the request within %d ms", sp->timeout_ms);
	return conn_fail(sp, err, rc, SANDPOOL_E_CONNECTION, "send: %s", strerror(-rc));
}

/* --- connection ------------------------------------------------------------ */

/* secure_getenv: a set-uid caller must not be pointed at a socket of the
 * invoking user's choice. */
static int default_socket_path(char *buf, size_t size)
{
	const char *env = secure_getenv("SANDPOOL_SOCKET");
	const char *xdg = secure_getenv("XDG_RUNTIME_DIR");

	if (env && *env)
		return snprintf(buf, size, "%s", env);
	if (geteuid() == 0)
		return snprintf(buf, size, "/run/sandpool/sandpool.sock");
	if (xdg && *xdg)
		return snprintf(buf, size, "%s/sandpool/sandpool.sock", xdg);
	return snprintf(buf, size, "/tmp/sandpool-%u/sandpool.sock", (unsigned)geteuid());
}

struct sandpool *sandpool_connect(const char *socket_path, struct sandpool_error *err)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	char path[PATH_MAX];
	int n, fd;

	n = socket_path ? snprintf(path, sizeof(path), "%s", socket_path)
			: default_socket_path(path, sizeof(path));
	if (n < 0 || (size_t)n >= sizeof(addr.sun_path)) {
		set_error(err, -ENAMETOOLONG, SANDPOOL_E_CONNECTION, "socket path too long: %.200s",
			  path);
		return NULL;
	}
	memcpy(addr.sun_path, path, (size_t)n + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		set_error(err, -errno, SANDPOOL_E_CONNECTION, "socket: %s", strerror(errno));
		return NULL;
	}
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		set_error(err, -errno, SANDPOOL_E_CONNECTION, "connect %s: %s", path, strerror(errno));
		close(fd);
		return NULL;
	}
	return sandpool_connect_fd(fd, err);
}

struct sandpool *sandpool_connect_fd(int fd, struct sandpool_error *err)
{
	struct sandpool *sp;
	int flags = fcntl(fd, F_GETFL);

	if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
		set_error(err, -errno, SANDPOOL_E_CONNECTION, "fcntl: %s", strerror(errno));
		close(fd);
		return NULL;
	}
	sp = calloc(1, sizeof(*sp));
	if (!sp || ipc_reader_init(&sp->reader, CLIENT_DEFAULT_MAX_FRAME) < 0) {
		set_error(err, -ENOMEM, SANDPOOL_E_INTERNAL, "out of memory");
		free(sp);
		close(fd);
		return NULL;
	}
	sp->fd = fd;
	msgpack_sbuffer_init(&sp->head);
	return sp;
}

void sandpool_close(struct sandpool *sp)
{
	if (!sp)
		return;
	while (sp->pending)
		pending_drop(&sp->pending);
	ipc_reader_destroy(&sp->reader);
	msgpack_sbuffer_destroy(&sp->head);
	close(sp->fd);
	free(sp);
}

void sandpool_set_timeout_ms(struct sandpool *sp, int timeout_ms)
{
	sp->timeout_ms = timeout_ms > 0 ? timeout_ms : 0;
}

void sandpool_set_max_frame(struct sandpool *sp, size_t bytes)
{
	sp->reader.max_frame = bytes;
}

/* --- generic calls --------------------------------------------------------- */

void sandpool_reply_free(struct sandpool_reply *reply)
{
	if (!reply)
		return;
	if (reply->zone)
		msgpack_zone_free(reply->zone);
	free(reply);
}

int sandpool_send(struct sandpool *sp, const char *method, const void *params, size_t len,
		  uint32_t *msgid, struct sandpool_error *err)
{
	static const char empty_map = (char)0x80; /* msgpack fixmap of size 0 */
	msgpack_packer pk;
	struct pending *p;
	int64_t deadline;
	int rc;

	if (sp->broken_rc)
		return conn_report(sp, err);
	if (!method || !*method)
		return set_error(err, -EINVAL, SANDPOOL_E_BAD_REQUEST, "no method given");
	if (!params || len == 0) {
		params = &empty_map;
		len = 1;
	}
	p = calloc(1, sizeof(*p));
	if (!p)
		return set_error(err, -ENOMEM, SANDPOOL_E_INTERNAL, "out of memory");
	p->msgid = next_msgid(sp);

	msgpack_sbuffer_clear(&sp->head);
	msgpack_packer_init(&pk, &sp->head, msgpack_sbuffer_write);
	ipc_pack_request_head(&pk, p->msgid, method);
	deadline = call_deadline(sp);
	rc = conn_write(sp, sp->head.data, sp->head.size, deadline);
	if (rc == 0)
		rc = conn_write(sp, params, len, deadline);
	if (rc < 0) {
		free(p);
		return conn_send_failed(sp, rc, err);
	}
	p->next = sp->pending;
	sp->pending = p;
	*msgid = p->msgid;
	return 0;
}

int sandpool_wait(struct sandpool *sp, uint32_t msgid, sandpool_notify_fn on_notify, void *arg,
		  struct sandpool_reply **out, struct sandpool_error *err)
{
	struct pending *p = *pending_link(sp, msgid);
	int rc;

	if (!p)
		return set_error(err, -ENOENT, SANDPOOL_E_BAD_REQUEST, "no request %u is outstanding",
				 msgid);
	rc = conn_wait(sp, &p->done, on_notify, arg, call_deadline(sp), err);
	if (rc == 0) {
		rc = p->rc;
		if (rc < 0 && err)
			*err = p->err;
		if (rc == 0) {
			*out = p->reply;
			p->reply = NULL;
		}
	}
	/* Answered, failed or timed out: the request is over either way, and a
	 * late response to it will be dropped. */
	pending_drop(pending_link(sp, msgid));
	return rc;
}

int sandpool_call(struct sandpool *sp, const char *method, const void *params, size_t len,
		  sandpool_notify_fn on_notify, void *arg, struct sandpool_reply **out,
		  struct sandpool_error *err)
{
	uint32_t msgid;
	int rc = sandpool_send(sp, method, params, len, &msgid, err);

	if (rc < 0)
		return rc;
	return sandpool_wait(sp, msgid, on_notify, arg, out, err);
}

/* --- typed calls: results -------------------------------------------------- */

/* Reads typed fields out of a result map with a sticky first failure, so that
 * a parse is a flat list of gets and one check. Absent fields keep their
 * zero value; a wrong type is a protocol violation. */
struct result_parser {
	const char *method;
	const msgpack_object *map;
	int rc;
	const char *bad_key; /* NULL: the result itself is not a map, or no memory */
};

static void parser_init(struct result_parser *rp, const char *method, const msgpack_object *map)
{
	rp->method = method;
	rp->map = map;
	rp->bad_key = NULL;
	rp->rc = map->type == MSGPACK_OBJECT_MAP ? 0 : -EPROTO;
}

/* Folds a getter's return into the parser: -ENOENT is an absent field. */
static bool parser_check(struct result_parser *rp, const char *key, int rc)
{
	if (rc == -EINVAL && !rp->rc) {
		rp->rc = -EPROTO;
		rp->bad_key = key;
	}
	return rc == 0;
}

static void parser_oom(struct result_parser *rp)
{
	if (!rp->rc)
		rp->rc = -ENOMEM;
}

static int parser_error(const struct result_parser *rp, struct sandpool_error *err)
{
	if (rp->rc == -ENOMEM)
		return set_error(err, rp->rc, SANDPOOL_E_INTERNAL, "out of memory");
	if (!rp->bad_key)
		return set_error(err, rp->rc, SANDPOOL_E_INTERNAL, "malformed %s result: not a map",
				 rp->method);
	return set_error(err, rp->rc, SANDPOOL_E_INTERNAL,
			 "malformed %s result: %s is missing or of the wrong type", rp->method,
			 rp->bad_key);
}

static void get_uint(struct result_parser *rp, const char *key, uint64_t *v)
{
	if (!rp->rc)
		parser_check(rp, key, ipc_get_uint(rp->map, key, v));
}

static void get_bool(struct result_parser *rp, const char *key, bool *v)
{
	if (!rp->rc)
		parser_check(rp, key, ipc_get_bool(rp->map, key, v));
}

/* An int field that may be nil; *present (may be NULL) says which. */
static void get_int(struct result_parser *rp, const char *key, int *v, bool *present)
{
	int64_t i;

	if (rp->rc || !parser_check(rp, key, ipc_get_int(rp->map, key, &i)))
		return;
	if (i < INT_MIN || i > INT_MAX) {
		parser_check(rp, key, -EINVAL);
		return;
	}
	*v = (int)i;
	if (present)
		*present = true;
}

static void get_strdup(struct result_parser *rp, const char *key, char **s)
{
	const char *p;
	uint32_t len;

	if (rp->rc || !parser_check(rp, key, ipc_get_str(rp->map, key, &p, &len)))
		return;
	*s = strndup(p, len);
	if (!*s)
		parser_oom(rp);
}

/* A str or bin field copied NUL-terminated; absent gives an empty buffer. */
static void get_bytes(struct result_parser *rp, const char *key, char **buf, size_t *len)
{
	const char *p = "";
	uint32_t n = 0;

	if (rp->rc)
		return;
	parser_check(rp, key, ipc_get_bytes(rp->map, key, &p, &n));
	*buf = malloc((size_t)n + 1);
	if (!*buf) {
		parser_oom(rp);
		return;
	}
	memcpy(*buf, p, n);
	(*buf)[n] = '\0';
	*len = n;
}

static void get_required(struct result_parser *rp, const char *key, const void *got)
{
	if (!rp->rc && !got) {
		rp->rc = -EPROTO;
		rp->bad_key = key;
	}
}

/* Sends params (a packed map) and waits; the packer's buffer is the caller's. */
static int call_packed(struct sandpool *sp, const char *method, const msgpack_sbuffer *params,
		       sandpool_notify_fn on_notify, void *arg, struct sandpool_reply **out,
		       struct sandpool_error *err)
{
	return sandpool_call(sp, method, params->data, params->size, on_notify, arg, out, err);
}

/* --- typed calls ----------------------------------------------------------- */

int sandpool_hello(struct sandpool *sp, const char *client, struct sandpool_hello *out,
		   struct sandpool_error *err)
{
	struct result_parser rp;
	const msgpack_object *limits = NULL;
	struct sandpool_reply *reply;
	msgpack_sbuffer buf;
	msgpack_packer pk;
	int rc;

	memset(out, 0, sizeof(*out));
	msgpack_sbuffer_init(&buf);
	msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, client ? 1 : 0);
	if (client)
		ipc_pack_kv_str(&pk, "client", client);
	rc = call_packed(sp, "hello", &buf, NULL, NULL, &reply, err);
	msgpack_sbuffer_destroy(&buf);
	if (rc < 0)
		return rc;

	out->reply = reply;
	parser_init(&rp, "hello", reply->result);
	get_required(&rp, "protocol", ipc_map_get(reply->result, "protocol"));
	get_uint(&rp, "protocol", &out->protocol);
	get_strdup(&rp, "server", &out->server);
	if (!rp.rc && parser_check(&rp, "limits", ipc_get_map(reply->result, "limits", &limits))) {
		rp.map = limits;
		get_uint(&rp, "max_frame", &out->max_frame);
		get_uint(&rp, "max_inflight", &out->max_inflight);
		get_uint(&rp, "max_connections", &out->max_connections);
		get_uint(&rp, "max_leases_per_conn", &out->max_leases_per_conn);
		get_uint(&rp, "max_timeout_ms", &out->max_timeout_ms);
	}
	if (rp.rc) {
		sandpool_hello_free(out);
		return parser_error(&rp, err);
	}
	return 0;
}

void sandpool_hello_free(struct sandpool_hello *hello)
{
	free(hello->server);
	sandpool_reply_free(hello->reply);
	memset(hello, 0, sizeof(*hello));
}

int sandpool_lease(struct sandpool *sp, const struct sandpool_lease_opts *opts,
		   struct sandpool_lease *out, struct sandpool_error *err)
{
	struct result_parser rp;
	struct sandpool_reply *reply;
	msgpack_sbuffer buf;
	msgpack_packer pk;
	int rc;

	memset(out, 0, sizeof(*out));
	if (!opts || !opts->template_name)
		return set_error(err, -EINVAL, SANDPOOL_E_BAD_REQUEST, "no template given");
	msgpack_sbuffer_init(&buf);
	msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, opts->session ? 4 : 3);
	ipc_pack_kv_str(&pk, "template", opts->template_name);
	ipc_pack_kv_uint(&pk, "wait_ms", opts->wait_ms);
	ipc_pack_kv_bool(&pk, "detached", opts->detached);
	if (opts->session)
		ipc_pack_kv_str(&pk, "session", opts->session);
	rc = call_packed(sp, "sandbox.lease", &buf, NULL, NULL, &reply, err);
	msgpack_sbuffer_destroy(&buf);
	if (rc < 0)
		return rc;

	out->reply = reply;
	parser_init(&rp, "sandbox.lease", reply->result);
	get_strdup(&rp, "lease_id", &out->lease_id);
	get_required(&rp, "lease_id", out->lease_id);
	get_strdup(&rp, "sandbox_id", &out->sandbox_id);
	get_strdup(&rp, "template", &out->template_name);
	get_bool(&rp, "warm", &out->warm);
	get_bool(&rp, "reused", &out->reused);
	get_uint(&rp, "waited_us", &out->waited_us);
	if (rp.rc) {
		sandpool_lease_free(out);
		return parser_error(&rp, err);
	}
	return 0;
}

void sandpool_lease_free(struct sandpool_lease *lease)
{
	free(lease->lease_id);
	free(lease->sandbox_id);
	free(lease->template_name);
	sandpool_reply_free(lease->reply);
	memset(lease, 0, sizeof(*lease));
}

/* A call whose only parameter is one string and whose result is ignored. */
static int call_one_string(struct sandpool *sp, const char *method, const char *key, const char *val,
			   struct sandpool_error *err)
{
	struct sandpool_reply *reply;
	msgpack_sbuffer buf;
	msgpack_packer pk;
	int rc;

	if (!val)
		return set_error(err, -EINVAL, SANDPOOL_E_BAD_REQUEST, "no %s given", key);
	msgpack_sbuffer_init(&buf);
	msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 1);
	ipc_pack_kv_str(&pk, key, val);
	rc = call_packed(sp, method, &buf, NULL, NULL, &reply, err);
	msgpack_sbuffer_destroy(&buf);
	if (rc == 0)
		sandpool_reply_free(reply);
	return rc;
}

int sandpool_release(struct sandpool *sp, const char *lease_id, struct sandpool_error *err)
{
	return call_one_string(sp, "sandbox.release", "lease_id", lease_id, err);
}

int sandpool_renew(struct sandpool *sp, const char *lease_id, struct sandpool_error *err)
{
	return call_one_string(sp, "sandbox.renew", "lease_id", lease_id, err);
}

int sandpool_session_end(struct sandpool *sp, const char *session, struct sandpool_error *err)
{
	return call_one_string(sp, "session.end", "session", session, err);
}

static int env_check(const char *const *env, struct sandpool_error *err)
{
	for (const char *const *e = env; e && *e; e++) {
		const char *eq = strchr(*e, '=');

		if (!eq || eq == *e)
			return set_error(err, -EINVAL, SANDPOOL_E_BAD_REQUEST,
					 "env entry \"%.100s\" is not KEY=VALUE", *e);
	}
	return 0;
}

/* "K=V" strings, which callers have at hand, as the wire's env map. */
static void pack_env_map(msgpack_packer *pk, const char *const *env)
{
	uint32_t n = 0;

	while (env[n])
		n++;
	ipc_pack_cstr(pk, "env");
	msgpack_pack_map(pk, n);
	for (uint32_t i = 0; i < n; i++) {
		const char *eq = strchr(env[i], '=');

		ipc_pack_strn(pk, env[i], (size_t)(eq - env[i]));
		ipc_pack_cstr(pk, eq + 1);
	}
}

static int exec_opts_check(const struct sandpool_exec_opts *o, struct sandpool_error *err)
{
	if (!o || !o->argv == !o->cmd)
		return set_error(err, -EINVAL, SANDPOOL_E_BAD_REQUEST,
				 "exactly one of argv and cmd must be given");
	if (o->argv && !o->argv[0])
		return set_error(err, -EINVAL, SANDPOOL_E_BAD_REQUEST, "argv is empty");
	return env_check(o->env, err);
}

static uint32_t exec_param_count(const struct sandpool_exec_opts *o)
{
	return 1 + !!o->env + !!o->cwd + !!o->stdin_data + !!o->timeout_ms + !!o->on_output;
}

/* The exec keys shared by sandbox.exec and run: exec_param_count() of them. */
static void pack_exec_params(msgpack_packer *pk, const struct sandpool_exec_opts *o)
{
	uint32_t n = 0;

	if (o->argv) {
		while (o->argv[n])
			n++;
		ipc_pack_cstr(pk, "argv");
		msgpack_pack_array(pk, n);
		for (uint32_t i = 0; i < n; i++)
			ipc_pack_cstr(pk, o->argv[i]);
	} else {
		ipc_pack_kv_str(pk, "cmd", o->cmd);
	}
	if (o->env)
		pack_env_map(pk, o->env);
	if (o->cwd)
		ipc_pack_kv_str(pk, "cwd", o->cwd);
	if (o->stdin_data)
		ipc_pack_kv_bin(pk, "stdin", o->stdin_data, o->stdin_len);
	if (o->timeout_ms)
		ipc_pack_kv_uint(pk, "timeout_ms", o->timeout_ms);
	if (o->on_output)
		ipc_pack_kv_bool(pk, "stream", true);
}

/* Hands the exec.output notifications of one request to its on_output. */
struct output_route {
	uint32_t msgid;
	const struct sandpool_exec_opts *opts;
};

static void route_output(void *arg, const char *method, const msgpack_object *params)
{
	const struct output_route *route = arg;
	const char *stream, *data;
	uint32_t stream_len, len;
	uint64_t request;
	int which;

	if (strcmp(method, "exec.output") != 0 || ipc_get_uint(params, "request", &request) < 0 ||
	    request != route->msgid || ipc_get_str(params, "stream", &stream, &stream_len) < 0 ||
	    ipc_get_bytes(params, "data", &data, &len) < 0)
		return;
	if (stream_len == 6 && memcmp(stream, "stdout", 6) == 0)
		which = SANDPOOL_STDOUT;
	else if (stream_len == 6 && memcmp(stream, "stderr", 6) == 0)
		which = SANDPOOL_STDERR;
	else
		return;
	route->opts->on_output(route->opts->output_arg, which, data, len);
}

static int parse_exec_result(struct sandpool_reply *reply, const char *method, bool run,
			     struct sandpool_exec_result *out, struct sandpool_error *err)
{
	struct result_parser rp;

	out->reply = reply;
	parser_init(&rp, method, reply->result);
	get_uint(&rp, "exec_id", &out->exec_id);
	get_int(&rp, "exit_code", &out->exit_code, &out->has_exit_code);
	get_int(&rp, "signal", &out->signal, NULL);
	get_bytes(&rp, "stdout", &out->stdout_buf, &out->stdout_len);
	get_bytes(&rp, "stderr", &out->stderr_buf, &out->stderr_len);
	get_bool(&rp, "truncated", &out->truncated);
	get_strdup(&rp, "limit", &out->limit);
	get_uint(&rp, "duration_us", &out->duration_us);
	if (run) {
		get_strdup(&rp, "sandbox_id", &out->sandbox_id);
		get_bool(&rp, "warm", &out->warm);
		get_uint(&rp, "waited_us", &out->waited_us);
	}
	if (rp.rc) {
		sandpool_exec_result_free(out);
		return parser_error(&rp, err);
	}
	return 0;
}

/* Sends an exec-shaped request, routes its output and parses its result. */
static int exec_call(struct sandpool *sp, const char *method, const msgpack_sbuffer *params,
		     const struct sandpool_exec_opts *opts, bool run,
		     struct sandpool_exec_result *out, struct sandpool_error *err)
{
	struct output_route route = {.opts = opts};
	struct sandpool_reply *reply;
	int rc;

	rc = sandpool_send(sp, method, params->data, params->size, &route.msgid, err);
	if (rc < 0)
		return rc;
	rc = sandpool_wait(sp, route.msgid, opts->on_output ? route_output : NULL, &route, &reply,
			   err);
	if (rc < 0)
		return rc;
	return parse_exec_result(reply, method, run, out, err);
}

int sandpool_exec(struct sandpool *sp, const char *lease_id, const struct sandpool_exec_opts *opts,
		  struct sandpool_exec_result *out, struct sandpool_error *err)
{
	msgpack_sbuffer buf;
	msgpack_packer pk;
	int rc;

	memset(out, 0, sizeof(*out));
	if (!lease_id)
		return set_error(err, -EINVAL, SANDPOOL_E_BAD_REQUEST, "no lease given");
	rc = exec_opts_check(opts, err);
	if (rc < 0)
		return rc;
	msgpack_sbuffer_init(&buf);
	msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 1 + exec_param_count(opts));
	ipc_pack_kv_str(&pk, "lease_id", lease_id);
	pack_exec_params(&pk, opts);
	rc = exec_call(sp, "sandbox.exec", &buf, opts, false, out, err);
	msgpack_sbuffer_destroy(&buf);
	return rc;
}

int sandpool_run(struct sandpool *sp, const char *template_name, uint32_t wait_ms,
		 const struct sandpool_exec_opts *opts, struct sandpool_exec_result *out,
		 struct sandpool_error *err)
{
	msgpack_sbuffer buf;
	msgpack_packer pk;
	int rc;

	memset(out, 0, sizeof(*out));
	if (!template_name)
		return set_error(err, -EINVAL, SANDPOOL_E_BAD_REQUEST, "no template given");
	rc = exec_opts_check(opts, err);
	if (rc < 0)
		return rc;
	msgpack_sbuffer_init(&buf);
	msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 2 + (opts->session != NULL) + exec_param_count(opts));
	ipc_pack_kv_str(&pk, "template", template_name);
	ipc_pack_kv_uint(&pk, "wait_ms", wait_ms);
	if (opts->session)
		ipc_pack_kv_str(&pk, "session", opts->session);
	pack_exec_params(&pk, opts);
	rc = exec_call(sp, "run", &buf, opts, true, out, err);
	msgpack_sbuffer_destroy(&buf);
	return rc;
}

void sandpool_exec_result_free(struct sandpool_exec_result *result)
{
	free(result->stdout_buf);
	free(result->stderr_buf);
	free(result->limit);
	free(result->sandbox_id);
	sandpool_reply_free(result->reply);
	memset(result, 0, sizeof(*result));
}

/* --- code ------------------------------------------------------------------ */

/* Hands the code.output notifications of one request to its callbacks. */
struct code_route {
	uint32_t msgid;
	const struct sandpool_code_opts *opts;
};

static void route_code(void *arg, const char *method, const msgpack_object *params)
{
	const struct code_route *route = arg;
	const struct sandpool_code_opts *o = route->opts;
	const msgpack_object *result;
	const char *type, *data;
	uint32_t type_len, len;
	uint64_t request;

	if (strcmp(method, "code.output") != 0 || ipc_get_uint(params, "request", &request) < 0 ||
	    request != route->msgid || ipc_get_str(params, "type", &type, &type_len) < 0)
		return;
	if (type_len == 6 && (!memcmp(type, "stdout", 6) || !memcmp(type, "stderr", 6))) {
		if (o->on_output && ipc_get_bytes(params, "data", &data, &len) == 0)
			o->on_output(o->output_arg, type[3] == 'o' ? SANDPOOL_STDOUT : SANDPOOL_STDERR, data,
				     len);
	} else if (type_len == 6 && !memcmp(type, "result", 6)) {
		if (o->on_result && ipc_get_map(params, "result", &result) == 0)
			o->on_result(o->output_arg, result);
	}
}

static void parse_results(struct result_parser *rp, struct sandpool_execution *out)
{
	const msgpack_object_array *a = NULL;

	if (rp->rc || !parser_check(rp, "results", ipc_get_array(rp->map, "results", &a)))
		return;
	out->results = calloc(a->size ? a->size : 1, sizeof(*out->results));
	if (!out->results) {
		parser_oom(rp);
		return;
	}
	for (uint32_t i = 0; i < a->size && !rp->rc; i++) {
		struct sandpool_code_result *r = &out->results[out->n_results++];
		struct result_parser sub;
		char *text = NULL;

		parser_init(&sub, rp->method, &a->ptr[i]);
		get_bool(&sub, "is_main_result", &r->is_main_result);
		get_strdup(&sub, "text", &text);
		r->text = text;
		r->map = &a->ptr[i];
		if (sub.rc) {
			rp->rc = sub.rc;
			rp->bad_key = "results";
		}
		if (r->is_main_result && r->text)
			out->text = r->text;
	}
}

int sandpool_code_run(struct sandpool *sp, const char *lease_id, const struct sandpool_code_opts *opts,
		      struct sandpool_execution *out, struct sandpool_error *err)
{
	struct code_route route = {.opts = opts};
	const msgpack_object *error = NULL;
	bool stream = opts && (opts->on_output || opts->on_result);
	struct sandpool_reply *reply;
	struct result_parser rp;
	msgpack_sbuffer buf;
	msgpack_packer pk;
	int rc;

	memset(out, 0, sizeof(*out));
	if (!lease_id || !opts || !opts->code)
		return set_error(err, -EINVAL, SANDPOOL_E_BAD_REQUEST, "no lease or no code given");
	if (opts->language && opts->context_id)
		return set_error(err, -EINVAL, SANDPOOL_E_BAD_REQUEST,
				 "give a language or a context, not both");
	rc = env_check(opts->env, err);
	if (rc < 0)
		return rc;
	msgpack_sbuffer_init(&buf);
	msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 2 + !!opts->language + !!opts->context_id + !!opts->env +
				      !!opts->timeout_ms + stream);
	ipc_pack_kv_str(&pk, "lease_id", lease_id);
	ipc_pack_kv_str(&pk, "code", opts->code);
	if (opts->language)
		ipc_pack_kv_str(&pk, "language", opts->language);
	if (opts->context_id)
		ipc_pack_kv_str(&pk, "context_id", opts->context_id);
	if (opts->env)
		pack_env_map(&pk, opts->env);
	if (opts->timeout_ms)
		ipc_pack_kv_uint(&pk, "timeout_ms", opts->timeout_ms);
	if (stream)
		ipc_pack_kv_bool(&pk, "stream", true);
	rc = sandpool_send(sp, "code.run", buf.data, buf.size, &route.msgid, err);
	msgpack_sbuffer_destroy(&buf);
	if (rc == 0)
		rc = sandpool_wait(sp, route.msgid, stream ? route_code : NULL, &route, &reply, err);
	if (rc < 0)
		return rc;

	out->reply = reply;
	parser_init(&rp, "code.run", reply->result);
	get_uint(&rp, "execution_count", &out->execution_count);
	get_strdup(&rp, "context_id", &out->context_id);
	get_bool(&rp, "truncated", &out->truncated);
	get_strdup(&rp, "limit", &out->limit);
	get_bool(&rp, "restarted", &out->restarted);
	get_uint(&rp, "duration_us", &out->duration_us);
	get_bytes(&rp, "stdout", &out->stdout_buf, &out->stdout_len);
	get_bytes(&rp, "stderr", &out->stderr_buf, &out->stderr_len);
	parse_results(&rp, out);
	if (!rp.rc && parser_check(&rp, "error", ipc_get_map(reply->result, "error", &error))) {
		rp.map = error;
		get_strdup(&rp, "name", &out->error_name);
		get_required(&rp, "error.name", out->error_name);
		get_strdup(&rp, "value", &out->error_value);
		get_strdup(&rp, "traceback", &out->error_traceback);
	}
	if (rp.rc) {
		sandpool_execution_free(out);
		return parser_error(&rp, err);
	}
	return 0;
}

void sandpool_execution_free(struct sandpool_execution *execution)
{
	for (size_t i = 0; i < execution->n_results; i++)
		free((char *)execution->results[i].text);
	free(execution->results);
	free(execution->stdout_buf);
	free(execution->stderr_buf);
	free(execution->error_name);
	free(execution->error_value);
	free(execution->error_traceback);
	free(execution->context_id);
	free(execution->limit);
	sandpool_reply_free(execution->reply);
	memset(execution, 0, sizeof(*execution));
}

int sandpool_context_create(struct sandpool *sp, const char *lease_id, const char *language,
			    const char *cwd, struct sandpool_context *out, struct sandpool_error *err)
{
	struct sandpool_reply *reply;
	struct result_parser rp;
	msgpack_sbuffer buf;
	msgpack_packer pk;
	int rc;

	memset(out, 0, sizeof(*out));
	if (!lease_id)
		return set_error(err, -EINVAL, SANDPOOL_E_BAD_REQUEST, "no lease given");
	msgpack_sbuffer_init(&buf);
	msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 1 + !!language + !!cwd);
	ipc_pack_kv_str(&pk, "lease_id", lease_id);
	if (language)
		ipc_pack_kv_str(&pk, "language", language);
	if (cwd)
		ipc_pack_kv_str(&pk, "cwd", cwd);
	rc = call_packed(sp, "code.context.create", &buf, NULL, NULL, &reply, err);
	msgpack_sbuffer_destroy(&buf);
	if (rc < 0)
		return rc;
	out->reply = reply;
	parser_init(&rp, "code.context.create", reply->result);
	get_strdup(&rp, "context_id", &out->context_id);
	get_required(&rp, "context_id", out->context_id);
	get_strdup(&rp, "language", &out->language);
	get_strdup(&rp, "cwd", &out->cwd);
	if (rp.rc) {
		sandpool_context_free(out);
		return parser_error(&rp, err);
	}
	return 0;
}

void sandpool_context_free(struct sandpool_context *context)
{
	free(context->context_id);
	free(context->language);
	free(context->cwd);
	sandpool_reply_free(context->reply);
	memset(context, 0, sizeof(*context));
}

/* A call on a lease naming one more thing; the result is ignored. */
static int call_on_lease(struct sandpool *sp, const char *method, const char *lease_id, const char *key,
			 const char *val, struct sandpool_error *err)
{
	struct sandpool_reply *reply;
	msgpack_sbuffer buf;
	msgpack_packer pk;
	int rc;

	if (!lease_id || !val)
		return set_error(err, -EINVAL, SANDPOOL_E_BAD_REQUEST, "no lease or no %s given", key);
	msgpack_sbuffer_init(&buf);
	msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 2);
	ipc_pack_kv_str(&pk, "lease_id", lease_id);
	ipc_pack_kv_str(&pk, key, val);
	rc = call_packed(sp, method, &buf, NULL, NULL, &reply, err);
	msgpack_sbuffer_destroy(&buf);
	if (rc == 0)
		sandpool_reply_free(reply);
	return rc;
}

int sandpool_context_restart(struct sandpool *sp, const char *lease_id, const char *context_id,
			     struct sandpool_error *err)
{
	return call_on_lease(sp, "code.context.restart", lease_id, "context_id", context_id, err);
}

int sandpool_context_remove(struct sandpool *sp, const char *lease_id, const char *context_id,
			    struct sandpool_error *err)
{
	return call_on_lease(sp, "code.context.remove", lease_id, "context_id", context_id, err);
}

/* --- files ----------------------------------------------------------------- */

int sandpool_file_write(struct sandpool *sp, const char *lease_id, const char *path, const void *data,
			size_t len, unsigned mode, bool append, struct sandpool_error *err)
{
	struct sandpool_reply *reply;
	msgpack_sbuffer buf;
	msgpack_packer pk;
	int rc;

	if (!lease_id || !path || (!data && len))
		return set_error(err, -EINVAL, SANDPOOL_E_BAD_REQUEST, "no lease, path or data given");
	if (len > UINT32_MAX)
		return set_error(err, -EMSGSIZE, SANDPOOL_E_BAD_REQUEST, "more data than one message holds");
	msgpack_sbuffer_init(&buf);
	msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 3 + !!mode + append);
	ipc_pack_kv_str(&pk, "lease_id", lease_id);
	ipc_pack_kv_str(&pk, "path", path);
	ipc_pack_kv_bin(&pk, "data", len ? data : "", len);
	if (mode)
		ipc_pack_kv_uint(&pk, "mode", mode);
	if (append)
		ipc_pack_kv_bool(&pk, "append", true);
	rc = call_packed(sp, "files.write", &buf, NULL, NULL, &reply, err);
	msgpack_sbuffer_destroy(&buf);
	if (rc == 0)
		sandpool_reply_free(reply);
	return rc;
}

int sandpool_file_read(struct sandpool *sp, const char *lease_id, const char *path, uint64_t offset,
		       uint64_t length, struct sandpool_file_data *out, struct sandpool_error *err)
{
	struct sandpool_reply *reply;
	struct result_parser rp;
	msgpack_sbuffer buf;
	msgpack_packer pk;
	int rc;

	memset(out, 0, sizeof(*out));
	if (!lease_id || !path)
		return set_error(err, -EINVAL, SANDPOOL_E_BAD_REQUEST, "no lease or path given");
	msgpack_sbuffer_init(&buf);
	msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 3 + !!length);
	ipc_pack_kv_str(&pk, "lease_id", lease_id);
	ipc_pack_kv_str(&pk, "path", path);
	ipc_pack_kv_uint(&pk, "offset", offset);
	if (length)
		ipc_pack_kv_uint(&pk, "length", length);
	rc = call_packed(sp, "files.read", &buf, NULL, NULL, &reply, err);
	msgpack_sbuffer_destroy(&buf);
	if (rc < 0)
		return rc;
	out->reply = reply;
	parser_init(&rp, "files.read", reply->result);
	get_required(&rp, "data", ipc_map_get(reply->result, "data"));
	get_bytes(&rp, "data", &out->data, &out->len);
	get_uint(&rp, "size", &out->size);
	get_bool(&rp, "eof", &out->eof);
	if (rp.rc) {
		sandpool_file_data_free(out);
		return parser_error(&rp, err);
	}
	return 0;
}

void sandpool_file_data_free(struct sandpool_file_data *data)
{
	free(data->data);
	sandpool_reply_free(data->reply);
	memset(data, 0, sizeof(*data));
}

int sandpool_file_remove(struct sandpool *sp, const char *lease_id, const char *path,
			 struct sandpool_error *err)
{
	return call_on_lease(sp, "files.remove", lease_id, "path", path, err);
}
