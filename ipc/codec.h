/*
 * msgpack-RPC framing shared by the daemon, the agent and the client
 * library: a size-bounded stream reader that turns bytes into whole
 * messages, validation of the [type, msgid, method, params] envelope, and
 * small packing and parameter-lookup helpers. Owns no sockets.
 */
#ifndef SANDPOOL_IPC_CODEC_H
#define SANDPOOL_IPC_CODEC_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum rpc_type {
	RPC_REQUEST = 0,
	RPC_RESPONSE = 1,
	RPC_NOTIFY = 2,
};

/* One decoded message; every pointer points into the reader's zone and is
 * valid until the next ipc_reader_next() call. */
struct rpc_msg {
	enum rpc_type type;
	uint32_t msgid;			  /* requests and responses */
	const char *method;		  /* requests and notifications; not NUL-terminated */
	uint32_t method_len;
	const msgpack_object *params; /* the map inside [params-map]; NULL when absent or empty array */
	const msgpack_object *error;  /* responses: NULL when nil */
	const msgpack_object *result; /* responses */
};

enum ipc_read_status {
	IPC_READ_MSG = 0,	/* *out holds a message */
	IPC_READ_MORE = 1,	/* need more bytes */
	IPC_READ_MALFORMED = -1, /* bytes are not msgpack, or not a msgpack-RPC envelope */
	IPC_READ_TOO_LARGE = -2, /* a message is, or declares itself, bigger than max_frame */
};

/* Containers open at once in one message: libmsgpackc's own limit, past
 * which it fails as if out of memory (MSGPACK_EMBED_STACK_SIZE). */
#define IPC_MAX_DEPTH 32

/*
 * The reader's check of the bytes it is given, before libmsgpackc sees
 * them. libmsgpackc reserves room for all of a container's elements when it
 * reads the header, so five bytes declaring 2^32 elements would cost
 * gigabytes. The check walks the msgpack structure incrementally, its state
 * kept across reads split anywhere, and fails a message as soon as its
 * declared sizes cannot fit in max_frame, counting one byte for each object
 * still to come (a map entry is two) and the declared payload of each str,
 * bin and ext. Only whole messages are then handed to libmsgpackc, so what
 * it allocates is bounded by the bytes that arrived.
 */
struct ipc_frame_check {
	uint64_t need;		      /* least size of the current message, in bytes */
	uint64_t skip;		      /* payload bytes to pass over */
	uint64_t left[IPC_MAX_DEPTH]; /* objects still to come in each open container */
	unsigned depth;		      /* open containers */
	uint32_t len;		      /* a length or count being read, big-endian */
	uint8_t len_bytes;	      /* bytes of it still to come */
	uint8_t len_kind;	      /* what it counts (codec.c) */
	size_t ready;		      /* whole messages buffered and not yet decoded */
	enum ipc_read_status failed;  /* IPC_READ_MORE while the stream is sound */
	const char *why;
};

/* Reads a byte stream into messages with a bound on a message's size. */
struct ipc_reader {
	msgpack_unpacker unpacker;
	msgpack_unpacked unpacked;
	size_t max_frame;
	struct ipc_frame_check check;
};

int ipc_reader_init(struct ipc_reader *r, size_t max_frame) __attribute__((warn_unused_result));
void ipc_reader_destroy(struct ipc_reader *r);
/* Buffer space to copy incoming bytes into; *len receives its size. */
char *ipc_reader_buffer(struct ipc_reader *r, size_t want, size_t *len);
/* n bytes were copied into that buffer; they are checked here, in O(n). */
void ipc_reader_consumed(struct ipc_reader *r, size_t n);
/* Next whole message. The messages before a bad one come out first, then
 * MALFORMED or TOO_LARGE for good, with *why naming what was wrong. */
enum ipc_read_status ipc_reader_next(struct ipc_reader *r, struct rpc_msg *out, const char **why);

/* Validates one msgpack object as a msgpack-RPC message. */
int ipc_msg_parse(const msgpack_object *obj, struct rpc_msg *out, const char **why);

bool ipc_method_is(const struct rpc_msg *m, const char *name);

/* --- packing ------------------------------------------------------------ */

/* msgpack_packer write callback appending to a struct evbuffer (data). */
int ipc_evbuffer_write(void *data, const char *buf, size_t len);

void ipc_pack_cstr(msgpack_packer *pk, const char *s);
void ipc_pack_strn(msgpack_packer *pk, const char *s, size_t len);
void ipc_pack_bin(msgpack_packer *pk, const void *p, size_t len);
/* Packs "key" followed by a value of the named kind. */
void ipc_pack_kv_str(msgpack_packer *pk, const char *key, const char *val);
void ipc_pack_kv_int(msgpack_packer *pk, const char *key, int64_t val);
void ipc_pack_kv_uint(msgpack_packer *pk, const char *key, uint64_t val);
void ipc_pack_kv_bool(msgpack_packer *pk, const char *key, bool val);
void ipc_pack_kv_nil(msgpack_packer *pk, const char *key);
void ipc_pack_kv_bin(msgpack_packer *pk, const char *key, const void *p, size_t len);

/* Envelope heads: the caller packs exactly one more object after each
 * (the params map, or the result). */
void ipc_pack_request_head(msgpack_packer *pk, uint32_t msgid, const char *method);
void ipc_pack_notify_head(msgpack_packer *pk, const char *method);
void ipc_pack_response_ok_head(msgpack_packer *pk, uint32_t msgid);
void ipc_pack_response_error(msgpack_packer *pk, uint32_t msgid, const char *code, const char *message);

/* --- parameter lookup --------------------------------------------------- */

/* The value under key in a map, or NULL (also when map is NULL). */
const msgpack_object *ipc_map_get(const msgpack_object *map, const char *key);

/* Typed getters: 0 when found and of the right type, -ENOENT when absent
 * or nil, -EINVAL when of the wrong type. Strings are not NUL-terminated. */
int ipc_get_str(const msgpack_object *map, const char *key, const char **s, uint32_t *len);
/* A str or a bin. */
int ipc_get_bytes(const msgpack_object *map, const char *key, const char **p, uint32_t *len);
int ipc_get_uint(const msgpack_object *map, const char *key, uint64_t *v);
int ipc_get_int(const msgpack_object *map, const char *key, int64_t *v);
int ipc_get_bool(const msgpack_object *map, const char *key, bool *v);
int ipc_get_array(const msgpack_object *map, const char *key, const msgpack_object_array **a);
int ipc_get_map(const msgpack_object *map, const char *key, const msgpack_object **m);

/* Copies a str/bin object into a NUL-terminated malloc'd string; NULL on
 * a wrong type, an embedded NUL or allocation failure. */
char *ipc_obj_strdup(const msgpack_object *o);

#endif
