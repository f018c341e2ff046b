/*
 * files.write, files.read, files.list and files.remove (docs/AGENT.md,
 * "Files"). The agent itself never opens a user's path: it keeps
 * capabilities (CAP_SYS_PTRACE, CAP_SYS_ADMIN in the sandbox's user
 * namespace) that setfsuid() would not drop, so /proc/1/mem and friends
 * would stay within reach. Instead each request forks a helper that drops
 * exactly as user code does and then runs one operation below; the helper
 * writes one msgpack array, [nil, result] or [error code, message], to its
 * stdout, which the agent reads without blocking and relays.
 *
 * Paths resolve with openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS):
 * absolute ones in the sandbox's root, relative ones in /workspace, which
 * they cannot climb out of ("../../etc/shadow" is /workspace/etc/shadow).
 */
#include "autoconfig.h"

#include "sandbox/agent/files.h"

#include <dirent.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/openat2.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon/log.h"
#include "sandbox/agent/agent.h"

#define FILES_MAX_OPS 8
#define FILES_LIST_MAX 10000 /* entries in one listing */
#define FILES_REMOVE_DEPTH 128
#define FILES_REPLY_SLACK 4096 /* a reply may be max_frame plus this */

enum file_op_kind {
	FILE_WRITE,
	FILE_READ,
	FILE_LIST,
	FILE_REMOVE,
};

/* One request, as the helper needs it; data points into the request,
 * which the forked helper sees as it was at fork time. */
struct file_req {
	enum file_op_kind kind;
	char path[PATH_MAX];
	const char *data;
	uint32_t data_len;
	mode_t mode;
	bool append;
	uint64_t offset;
	uint64_t length;
	bool has_length;
	uint64_t max_size;
};

/* A helper in flight. */
struct file_op {
	bool busy;
	uint32_t msgid;
	pid_t pid; /* 0 once reaped */
	int status;
	int reply_fd; /* -1 at EOF */
	int report_fd;
	struct event *ev;
	struct evbuffer *reply;
	bool too_large;
};

static struct file_op ops[FILES_MAX_OPS];

/* --- the helper, as the sandbox user ------------------------------------------- */

/* Why an operation failed: a wire error code and a message. */
struct file_err {
	enum sandpool_errcode code;
	char msg[PATH_MAX + 128];
};

static int __attribute__((format(printf, 3, 4))) fail(struct file_err *e, enum sandpool_errcode code,
						       const char *fmt, ...)
{
	va_list ap;

	e->code = code;
	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	va_end(ap);
	return -1;
}

static enum sandpool_errcode errno_code(int err)
{
	switch (err) {
	case ENOENT:
	case ENOTDIR:
		return SANDPOOL_E_NOT_FOUND;
	case EACCES:
	case EPERM:
	case EROFS:
	case ETXTBSY:
		return SANDPOOL_E_FORBIDDEN;
	case ENOSPC:
	case EDQUOT:
	case EFBIG:
		return SANDPOOL_E_LIMIT_EXCEEDED;
	case EISDIR:
	case ELOOP:
	case ENAMETOOLONG:
	case EINVAL:
	case EXDEV:
	case ENOTEMPTY:
	case EEXIST:
	case ENXIO:
		return SANDPOOL_E_BAD_REQUEST;
	default:
		return SANDPOOL_E_BACKEND_ERROR;
	}
}

static int fail_errno(struct file_err *e, const char *what, const char *path)
{
	int err = errno;

	return fail(e, errno_code(err), "%s %s: %s", what, path, strerror(err));
}

/* Where path resolves: the sandbox's root, or /workspace when relative. */
static int path_anchor(const char *path)
{
	return open(path[0] == '/' ? "/" : "/workspace", O_PATH | O_DIRECTORY | O_CLOEXEC);
}

static int open_in(int anchor, const char *path, int flags, mode_t mode)
{
	/* openat2 refuses O_PATH with any flag but a few. */
	int all = flags | O_CLOEXEC | ((flags & O_PATH) ? 0 : O_NOCTTY);
	struct open_how how = {
		.flags = (uint64_t)all,
		.mode = (flags & O_CREAT) ? mode : 0,
		.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
	};
	int fd = (int)syscall(SYS_openat2, anchor, path, &how, sizeof(how));

	/* Before Linux 5.6 there is no openat2; the process's root is the
	 * sandbox's all the same, only ".." may leave /workspace. */
	if (fd < 0 && errno == ENOSYS)
		fd = openat(anchor, path, all, mode);
	return fd;
}

/* mkdir -p for the directories above path, each resolved as open_in(). */
static int make_parents(int anchor, char *path)
{
	for (char *s = strchr(path + 1, '/'); s; s = strchr(s + 1, '/')) {
		char *name;
		int dir, rc;

		*s = '\0';
		name = strrchr(path, '/');
		if (name && name > path) {
			*name = '\0';
			dir = open_in(anchor, path, O_PATH | O_DIRECTORY, 0);
			*name = '/';
			name++;
		} else {
			dir = dup(anchor);
			name = name ? name + 1 : path;
		}
		rc = dir < 0 ? -1 : mkdirat(dir, name, 0755);
		if (rc < 0 && errno == EEXIST)
			rc = 0;
		if (dir >= 0)
			close(dir);
		*s = '/';
		if (rc < 0)
			return -1;
	}
	return 0;
}

/* The path fd has in the sandbox, for the answer. */
static void real_path(int fd, const char *fallback, char *buf, size_t len)
{
	char proc[64];
	ssize_t n;

	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	n = readlink(proc, buf, len - 1);
	if (n <= 0)
		n = snprintf(buf, len, "%s", fallback);
	buf[n < (ssize_t)len ? n : (ssize_t)len - 1] = '\0';
}

static int op_write(const struct file_req *r, int anchor, msgpack_packer *pk, struct file_err *e)
{
	int flags = O_WRONLY | O_CREAT | O_NONBLOCK | (r->append ? O_APPEND : O_TRUNC);
	char path[PATH_MAX], real[PATH_MAX];
	const char *p = r->data;
	size_t left = r->data_len;
	struct stat st;
	int fd;

	fd = open_in(anchor, r->path, flags, r->mode);
	if (fd < 0 && errno == ENOENT) {
		snprintf(path, sizeof(path), "%s", r->path);
		if (make_parents(anchor, path) < 0)
			return fail_errno(e, "mkdir for", r->path);
		fd = open_in(anchor, r->path, flags, r->mode);
	}
	if (fd < 0)
		return fail_errno(e, "open", r->path);
	if (fstat(fd, &st) < 0)
		return fail_errno(e, "fstat", r->path);
	if (!S_ISREG(st.st_mode))
		return fail(e, SANDPOOL_E_BAD_REQUEST, "%s is not a regular file", r->path);
	while (left > 0) {
		ssize_t n = write(fd, p, left);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return fail_errno(e, "write", r->path);
		p += n;
		left -= (size_t)n;
	}
	if (fstat(fd, &st) < 0)
		return fail_errno(e, "fstat", r->path);
	real_path(fd, r->path, real, sizeof(real));
	msgpack_pack_map(pk, 3);
	ipc_pack_kv_str(pk, "path", real);
	ipc_pack_kv_uint(pk, "size", (uint64_t)st.st_size);
	ipc_pack_kv_uint(pk, "written", r->data_len);
	return 0;
}

static int op_read(const struct file_req *r, int anchor, msgpack_packer *pk, struct file_err *e)
{
	int fd = open_in(anchor, r->path, O_RDONLY | O_NONBLOCK, 0);
	uint64_t size, want, got = 0;
	char real[PATH_MAX];
	struct stat st;
	char *buf;

	if (fd < 0)
		return fail_errno(e, "open", r->path);
	if (fstat(fd, &st) < 0)
		return fail_errno(e, "fstat", r->path);
	if (S_ISDIR(st.st_mode))
		return fail(e, SANDPOOL_E_BAD_REQUEST, "%s is a directory (files.list lists it)", r->path);
	if (!S_ISREG(st.st_mode))
		return fail(e, SANDPOOL_E_BAD_REQUEST, "%s is not a regular file", r->path);
	size = (uint64_t)st.st_size;
	if (r->offset > size)
		want = 0;
	else
		want = r->has_length && r->length < size - r->offset ? r->length : size - r->offset;
	if (want > r->max_size)
		return fail(e, SANDPOOL_E_LIMIT_EXCEEDED,
			    "%s: %" PRIu64 " bytes to read, at most %" PRIu64 " per files.read: read it in parts with offset and length",
			    r->path, want, r->max_size);
	buf = malloc(want ? want : 1);
	if (!buf)
		return fail(e, SANDPOOL_E_INTERNAL, "out of memory");
	while (got < want) {
		ssize_t n = pread(fd, buf + got, want - got, (off_t)(r->offset + got));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return fail_errno(e, "read", r->path);
		if (n == 0)
			break; /* it shrank meanwhile */
		got += (uint64_t)n;
	}
	real_path(fd, r->path, real, sizeof(real));
	msgpack_pack_map(pk, 5);
	ipc_pack_kv_str(pk, "path", real);
	ipc_pack_kv_bin(pk, "data", buf, got);
	ipc_pack_kv_uint(pk, "size", size);
	ipc_pack_kv_uint(pk, "offset", r->offset);
	ipc_pack_kv_bool(pk, "eof", r->offset + got >= size);
	free(buf);
	return 0;
}

static const char *entry_type(mode_t m)
{
	if (S_ISREG(m))
		return "file";
	if (S_ISDIR(m))
		return "dir";
	if (S_ISLNK(m))
		return "symlink";
	return "other";
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int op_list(const struct file_req *r, int anchor, msgpack_packer *pk, struct file_err *e)
{
	int fd = open_in(anchor, r->path, O_RDONLY | O_DIRECTORY, 0);
	char real[PATH_MAX], **names = NULL;
	size_t n = 0, cap = 0;
	bool truncated = false;
	struct dirent *de;
	DIR *d;

	if (fd < 0)
		return fail_errno(e, "open", r->path);
	real_path(fd, r->path, real, sizeof(real));
	d = fdopendir(fd);
	if (!d)
		return fail_errno(e, "opendir", r->path);
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (n == FILES_LIST_MAX) {
			truncated = true;
			break;
		}
		if (n == cap) {
			char **more = realloc(names, (cap = cap ? 2 * cap : 64) * sizeof(*names));

			if (!more)
				return fail(e, SANDPOOL_E_INTERNAL, "out of memory");
			names = more;
		}
		if (!(names[n++] = strdup(de->d_name)))
			return fail(e, SANDPOOL_E_INTERNAL, "out of memory");
	}
	qsort(names, n, sizeof(*names), name_cmp);
	msgpack_pack_map(pk, 3);
	ipc_pack_kv_str(pk, "path", real);
	ipc_pack_kv_bool(pk, "truncated", truncated);
	ipc_pack_cstr(pk, "entries");
	msgpack_pack_array(pk, (uint32_t)n);
	for (size_t i = 0; i < n; i++) {
		struct stat st = { 0 };

		/* One that vanished meanwhile still shows, with zeroes. */
		(void)fstatat(dirfd(d), names[i], &st, AT_SYMLINK_NOFOLLOW);
		msgpack_pack_map(pk, 5);
		ipc_pack_kv_str(pk, "name", names[i]);
		ipc_pack_kv_str(pk, "type", entry_type(st.st_mode));
		ipc_pack_kv_uint(pk, "size", (uint64_t)st.st_size);
		ipc_pack_kv_uint(pk, "mode", st.st_mode & 07777);
		ipc_pack_kv_int(pk, "mtime_ms", (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000);
	}
	return 0;
}

/* Empties directory name of dir, depth first, never following symlinks. */
static int remove_tree(int dir, const char *name, unsigned depth)
{
	int fd = depth < FILES_REMOVE_DEPTH ? openat(dir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) : -1;
	struct dirent *de;
	DIR *d;
	int rc = 0;

	if (fd < 0) {
		if (depth >= FILES_REMOVE_DEPTH)
			errno = ELOOP;
		return -1;
	}
	if (!(d = fdopendir(fd))) {
		close(fd);
		return -1;
	}
	while (rc == 0 && (de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (unlinkat(fd, de->d_name, 0) == 0)
			continue;
		if (errno != EISDIR || remove_tree(fd, de->d_name, depth + 1) < 0 ||
		    unlinkat(fd, de->d_name, AT_REMOVEDIR) < 0)
			rc = -1;
	}
	closedir(d);
	return rc;
}

static int op_remove(const struct file_req *r, int anchor, msgpack_packer *pk, struct file_err *e)
{
	char parent[PATH_MAX], *name;
	size_t len = strlen(r->path);
	int dir;

	snprintf(parent, sizeof(parent), "%s", r->path);
	while (len > 1 && parent[len - 1] == '/')
		parent[--len] = '\0';
	name = strrchr(parent, '/');
	if (name) {
		*name++ = '\0';
	} else {
		name = parent;
	}
	if (!*name || !strcmp(name, ".") || !strcmp(name, ".."))
		return fail(e, SANDPOOL_E_BAD_REQUEST, "%s: refusing to remove that", r->path);
	dir = open_in(anchor, name == parent ? "." : (*parent ? parent : "/"), O_PATH | O_DIRECTORY, 0);
	if (dir < 0)
		return fail_errno(e, "open", r->path);
	if (unlinkat(dir, name, 0) < 0) {
		if (errno != EISDIR || remove_tree(dir, name, 0) < 0 || unlinkat(dir, name, AT_REMOVEDIR) < 0)
			return fail_errno(e, "remove", r->path);
	}
	msgpack_pack_map(pk, 1);
	ipc_pack_kv_bool(pk, "removed", true);
	return 0;
}

static int write_all(int fd, const char *p, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* The helper's body: runs as the sandbox user, answers on stdout. */
static int file_helper(void *arg)
{
	static int (*const run[])(const struct file_req *, int, msgpack_packer *, struct file_err *) = {
		[FILE_WRITE] = op_write, [FILE_READ] = op_read, [FILE_LIST] = op_list, [FILE_REMOVE] = op_remove,
	};
	const struct file_req *r = arg;
	struct file_err e = { 0 };
	msgpack_sbuffer result, out;
	msgpack_packer rp, op;
	int anchor = path_anchor(r->path), rc;

	msgpack_sbuffer_init(&result);
	msgpack_sbuffer_init(&out);
	msgpack_packer_init(&rp, &result, msgpack_sbuffer_write);
	msgpack_packer_init(&op, &out, msgpack_sbuffer_write);
	rc = anchor < 0 ? fail_errno(&e, "open", r->path[0] == '/' ? "/" : "/workspace")
			: run[r->kind](r, anchor, &rp, &e);
	msgpack_pack_array(&op, 2);
	if (rc == 0) {
		msgpack_pack_nil(&op);
		msgpack_sbuffer_write(&out, result.data, result.size);
	} else {
		ipc_pack_cstr(&op, sandpool_errcode_name(e.code));
		ipc_pack_cstr(&op, e.msg);
	}
	return write_all(STDOUT_FILENO, out.data, out.size) < 0 ? 1 : 0;
}

/* --- the agent's side -------------------------------------------------------------- */

static void op_release(struct file_op *op)
{
	if (op->ev) {
		event_free(op->ev);
		op->ev = NULL;
	}
	if (op->reply) {
		evbuffer_free(op->reply);
		op->reply = NULL;
	}
	agent_close_fd(&op->reply_fd);
	agent_close_fd(&op->report_fd);
	op->busy = false;
}

/* Relays the helper's answer once it has exited and its stdout is done. */
static void op_maybe_finish(struct file_op *op)
{
	char report[AGENT_REPORT_MAX];
	msgpack_unpacked msg;
	size_t len, off = 0;
	const char *data;
	ssize_t n;

	if (op->pid || op->reply_fd >= 0)
		return;
	len = evbuffer_get_length(op->reply);
	data = len ? (const char *)evbuffer_pullup(op->reply, -1) : "";
	msgpack_unpacked_init(&msg);
	if (op->too_large) {
		agent_reply_error(op->msgid, SANDPOOL_E_LIMIT_EXCEEDED, "the answer is larger than max_frame");
	} else if (len && msgpack_unpack_next(&msg, data, len, &off) == MSGPACK_UNPACK_SUCCESS && off == len &&
		   msg.data.type == MSGPACK_OBJECT_ARRAY && msg.data.via.array.size == 2) {
		const msgpack_object *code = &msg.data.via.array.ptr[0], *what = &msg.data.via.array.ptr[1];

		if (code->type == MSGPACK_OBJECT_NIL && what->type == MSGPACK_OBJECT_MAP) {
			ipc_pack_response_ok_head(agent_packer(), op->msgid);
			msgpack_pack_object(agent_packer(), *what);
		} else if (code->type == MSGPACK_OBJECT_STR && what->type == MSGPACK_OBJECT_STR) {
			agent_reply_error(op->msgid, sandpool_errcode_from_name(code->via.str.ptr, code->via.str.size),
					  "%.*s", (int)what->via.str.size, what->via.str.ptr);
		} else {
			agent_reply_error(op->msgid, SANDPOOL_E_BACKEND_ERROR, "the file helper answered nonsense");
		}
	} else if ((n = read(op->report_fd, report, sizeof(report) - 1)) > 0) {
		report[n] = '\0';
		agent_reply_error(op->msgid, SANDPOOL_E_BACKEND_ERROR, "%s", report);
	} else {
		agent_reply_error(op->msgid, SANDPOOL_E_BACKEND_ERROR, "the file helper %s %d without answering",
				  WIFSIGNALED(op->status) ? "was killed by signal" : "exited with status",
				  WIFSIGNALED(op->status) ? WTERMSIG(op->status) : WEXITSTATUS(op->status));
	}
	msgpack_unpacked_destroy(&msg);
	agent_check_pressure();
	op_release(op);
}

static void op_on_reply(evutil_socket_t fd, short what, void *arg)
{
	struct file_op *op = arg;
	int n = evbuffer_read(op->reply, fd, 64 * 1024);

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n > 0 && evbuffer_get_length(op->reply) <= agent_max_frame() + FILES_REPLY_SLACK)
		return;
	if (n > 0) {
		/* Whatever it says, it says too much: stop it and say so. */
		op->too_large = true;
		if (op->pid)
			kill(op->pid, SIGKILL);
	}
	event_free(op->ev);
	op->ev = NULL;
	agent_close_fd(&op->reply_fd);
	op_maybe_finish(op);
}

static void files_start(uint32_t msgid, const struct file_req *req)
{
	struct file_op *op = NULL;
	int out[2] = { -1, -1 }, rep[2] = { -1, -1 }, rc;
	struct child_plan c = {
		.cwd = "/", .stdin_fd = -1, .err_fd = -1, .chan_fd = -1, .report_fd = -1,
		.run = file_helper, .run_arg = (void *)req,
	};

	for (size_t i = 0; i < FILES_MAX_OPS && !op; i++)
		if (!ops[i].busy)
			op = &ops[i];
	if (!op) {
		agent_reply_error(msgid, SANDPOOL_E_LIMIT_EXCEEDED, "at most %d file operations run at once",
				  FILES_MAX_OPS);
		return;
	}
	*op = (struct file_op){ .busy = true, .msgid = msgid, .reply_fd = -1, .report_fd = -1 };
	rc = agent_pipe(out, 0);
	if (rc == 0)
		rc = agent_pipe(rep, 0);
	op->reply = evbuffer_new();
	if (rc == 0 && !op->reply)
		rc = -ENOMEM;
	if (rc == 0) {
		op->ev = event_new(agent_base(), out[0], EV_READ | EV_PERSIST, op_on_reply, op);
		if (!op->ev)
			rc = -ENOMEM;
	}
	if (rc == 0) {
		c.out_fd = out[1];
		c.report_fd = rep[1];
		rc = agent_spawn(&c, &op->pid);
	}
	agent_close_fd(&out[1]);
	agent_close_fd(&rep[1]);
	op->reply_fd = out[0];
	op->report_fd = rep[0];
	if (rc < 0) {
		agent_reply_error(msgid, SANDPOOL_E_BACKEND_ERROR, "starting the file helper: %s", strerror(-rc));
		op_release(op);
		return;
	}
	event_add(op->ev, NULL);
}

bool files_on_reap(pid_t pid, int status)
{
	for (size_t i = 0; i < FILES_MAX_OPS; i++) {
		if (ops[i].busy && ops[i].pid == pid) {
			ops[i].pid = 0;
			ops[i].status = status;
			op_maybe_finish(&ops[i]);
			return true;
		}
	}
	return false;
}

void files_teardown(void)
{
	for (size_t i = 0; i < FILES_MAX_OPS; i++) {
		if (!ops[i].busy)
			continue;
		if (ops[i].pid) {
			kill(ops[i].pid, SIGKILL);
			while (waitpid(ops[i].pid, NULL, 0) < 0 && errno == EINTR)
				;
		}
		op_release(&ops[i]);
	}
}

/* --- requests ------------------------------------------------------------------ */

/* Fills r's path (and max_size when needed) or answers the request. */
static bool parse_common(const struct rpc_msg *m, struct file_req *r, bool need_max)
{
	const char *p;
	uint32_t len;

	if (ipc_get_bytes(m->params, "path", &p, &len) < 0 || len == 0 || len >= sizeof(r->path) ||
	    memchr(p, '\0', len)) {
		agent_reply_error(m->msgid, SANDPOOL_E_BAD_REQUEST,
				  "path must be 1 to %zu bytes without NUL bytes", sizeof(r->path) - 1);
		return false;
	}
	memcpy(r->path, p, len);
	r->path[len] = '\0';
	if (need_max && ipc_get_uint(m->params, "max_size", &r->max_size) < 0) {
		agent_reply_error(m->msgid, SANDPOOL_E_BAD_REQUEST, "max_size must be an unsigned integer");
		return false;
	}
	return true;
}

void files_req_write(const struct rpc_msg *m)
{
	struct file_req r = { .kind = FILE_WRITE, .mode = 0644 };
	uint64_t mode = 0644;
	int rc;

	if (!parse_common(m, &r, true))
		return;
	if (ipc_get_bytes(m->params, "data", &r.data, &r.data_len) < 0) {
		agent_reply_error(m->msgid, SANDPOOL_E_BAD_REQUEST, "data (bin) is required");
		return;
	}
	rc = ipc_get_uint(m->params, "mode", &mode);
	if (rc == -EINVAL || mode > 07777 || ipc_get_bool(m->params, "append", &r.append) == -EINVAL) {
		agent_reply_error(m->msgid, SANDPOOL_E_BAD_REQUEST, "mode must be 0 to 07777, append a boolean");
		return;
	}
	if (r.data_len > r.max_size) {
		agent_reply_error(m->msgid, SANDPOOL_E_LIMIT_EXCEEDED, "%u bytes is more than max_size (%" PRIu64 ")",
				  r.data_len, r.max_size);
		return;
	}
	r.mode = (mode_t)mode;
	files_start(m->msgid, &r);
}

void files_req_read(const struct rpc_msg *m)
{
	struct file_req r = { .kind = FILE_READ };
	int rc;

	if (!parse_common(m, &r, true))
		return;
	rc = ipc_get_uint(m->params, "length", &r.length);
	r.has_length = rc == 0;
	if (rc == -EINVAL || ipc_get_uint(m->params, "offset", &r.offset) == -EINVAL) {
		agent_reply_error(m->msgid, SANDPOOL_E_BAD_REQUEST, "offset and length must be unsigned integers");
		return;
	}
	files_start(m->msgid, &r);
}

void files_req_list(const struct rpc_msg *m)
{
	struct file_req r = { .kind = FILE_LIST };

	if (parse_common(m, &r, false))
		files_start(m->msgid, &r);
}

void files_req_remove(const struct rpc_msg *m)
{
	struct file_req r = { .kind = FILE_REMOVE };

	if (parse_common(m, &r, false))
		files_start(m->msgid, &r);
}
