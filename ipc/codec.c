#include "autoconfig.h"

#include "ipc/codec.h"

#include <errno.h>
#include <event2/buffer.h>
#include <msgpack/unpack_define.h>
#include <stdlib.h>
#include <string.h>

/* The unpacker grows its buffer on demand; this is only the first slab. */
#define READER_INITIAL_BUFFER (64 * 1024)

_Static_assert(IPC_MAX_DEPTH <= MSGPACK_EMBED_STACK_SIZE, "deeper than libmsgpackc decodes");

int ipc_reader_init(struct ipc_reader *r, size_t max_frame)
{
	if (!msgpack_unpacker_init(&r->unpacker, READER_INITIAL_BUFFER))
		return -ENOMEM;
	msgpack_unpacked_init(&r->unpacked);
	r->max_frame = max_frame;
	memset(&r->check, 0, sizeof(r->check));
	r->check.failed = IPC_READ_MORE;
	return 0;
}

void ipc_reader_destroy(struct ipc_reader *r)
{
	msgpack_unpacked_destroy(&r->unpacked);
	msgpack_unpacker_destroy(&r->unpacker);
}

char *ipc_reader_buffer(struct ipc_reader *r, size_t want, size_t *len)
{
	if (msgpack_unpacker_buffer_capacity(&r->unpacker) < want &&
	    !msgpack_unpacker_reserve_buffer(&r->unpacker, want))
		return NULL;
	*len = msgpack_unpacker_buffer_capacity(&r->unpacker);
	return msgpack_unpacker_buffer(&r->unpacker);
}

/* --- the check before decoding (struct ipc_frame_check) ----------------- */

/* What a length being read counts. */
enum len_kind {
	LEN_RAW,   /* str or bin: payload bytes */
	LEN_EXT,   /* ext: payload bytes after a type byte */
	LEN_ARRAY, /* elements */
	LEN_MAP,   /* key-value pairs */
};

/* Type bytes 0xc4 to 0xdf: a length of len_bytes bytes that counts kind,
 * or (len_bytes 0) a payload of fixed bytes. */
static const struct {
	uint8_t len_bytes, kind, fixed;
} check_heads[0xe0 - 0xc4] = {
	[0xc4 - 0xc4] = { 1, LEN_RAW, 0 },   /* bin 8 */
	[0xc5 - 0xc4] = { 2, LEN_RAW, 0 },   /* bin 16 */
	[0xc6 - 0xc4] = { 4, LEN_RAW, 0 },   /* bin 32 */
	[0xc7 - 0xc4] = { 1, LEN_EXT, 0 },   /* ext 8 */
	[0xc8 - 0xc4] = { 2, LEN_EXT, 0 },   /* ext 16 */
	[0xc9 - 0xc4] = { 4, LEN_EXT, 0 },   /* ext 32 */
	[0xca - 0xc4] = { 0, 0, 4 },	     /* float 32 */
	[0xcb - 0xc4] = { 0, 0, 8 },	     /* float 64 */
	[0xcc - 0xc4] = { 0, 0, 1 },	     /* uint 8 */
	[0xcd - 0xc4] = { 0, 0, 2 },	     /* uint 16 */
	[0xce - 0xc4] = { 0, 0, 4 },	     /* uint 32 */
	[0xcf - 0xc4] = { 0, 0, 8 },	     /* uint 64 */
	[0xd0 - 0xc4] = { 0, 0, 1 },	     /* int 8 */
	[0xd1 - 0xc4] = { 0, 0, 2 },	     /* int 16 */
	[0xd2 - 0xc4] = { 0, 0, 4 },	     /* int 32 */
	[0xd3 - 0xc4] = { 0, 0, 8 },	     /* int 64 */
	[0xd4 - 0xc4] = { 0, 0, 2 },	     /* fixext 1, with its type byte */
	[0xd5 - 0xc4] = { 0, 0, 3 },	     /* fixext 2 */
	[0xd6 - 0xc4] = { 0, 0, 5 },	     /* fixext 4 */
	[0xd7 - 0xc4] = { 0, 0, 9 },	     /* fixext 8 */
	[0xd8 - 0xc4] = { 0, 0, 17 },	     /* fixext 16 */
	[0xd9 - 0xc4] = { 1, LEN_RAW, 0 },   /* str 8 */
	[0xda - 0xc4] = { 2, LEN_RAW, 0 },   /* str 16 */
	[0xdb - 0xc4] = { 4, LEN_RAW, 0 },   /* str 32 */
	[0xdc - 0xc4] = { 2, LEN_ARRAY, 0 }, /* array 16 */
	[0xdd - 0xc4] = { 4, LEN_ARRAY, 0 }, /* array 32 */
	[0xde - 0xc4] = { 2, LEN_MAP, 0 },   /* map 16 */
	[0xdf - 0xc4] = { 4, LEN_MAP, 0 },   /* map 32 */
};

static void check_fail(struct ipc_frame_check *c, enum ipc_read_status st, const char *why)
{
	c->failed = st;
	c->why = why;
}

/* The current message must have n more bytes than known so far. */
static void check_grow(struct ipc_reader *r, uint64_t n)
{
	r->check.need += n;
	if (r->check.need > r->max_frame)
		check_fail(&r->check, IPC_READ_TOO_LARGE, "a declared size does not fit in max_frame");
}

/* An object ended: it counts in its container, which may end with it. */
static void check_object_done(struct ipc_frame_check *c)
{
	while (c->depth > 0) {
		if (--c->left[c->depth - 1] > 0)
			return;
		c->depth--;
	}
	c->ready++;
	c->need = 0;
}

/* A container of n objects (a map's keys and values both count), each of
 * at least one byte. */
static void check_open(struct ipc_reader *r, uint64_t n)
{
	struct ipc_frame_check *c = &r->check;

	if (c->depth == IPC_MAX_DEPTH) {
		check_fail(c, IPC_READ_MALFORMED, "containers nested too deep");
		return;
	}
	check_grow(r, n);
	if (c->failed != IPC_READ_MORE)
		return;
	if (n == 0)
		check_object_done(c);
	else
		c->left[c->depth++] = n;
}

static void check_payload(struct ipc_reader *r, uint64_t n)
{
	check_grow(r, n);
	if (r->check.failed != IPC_READ_MORE)
		return;
	if (n == 0)
		check_object_done(&r->check);
	else
		r->check.skip = n;
}

static void check_length_done(struct ipc_reader *r)
{
	uint64_t n = r->check.len;

	switch (r->check.len_kind) {
	case LEN_ARRAY:
		check_open(r, n);
		break;
	case LEN_MAP:
		check_open(r, 2 * n);
		break;
	case LEN_EXT:
		check_payload(r, n + 1);
		break;
	default:
		check_payload(r, n);
		break;
	}
}

/* b is the first byte of an object. */
static void check_type_byte(struct ipc_reader *r, uint8_t b)
{
	struct ipc_frame_check *c = &r->check;

	/* A message's first byte: any other object's first byte was counted
	 * when its container opened. */
	if (c->depth == 0)
		check_grow(r, 1);
	if (c->failed != IPC_READ_MORE)
		return;
	if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
		check_object_done(c); /* fixint, nil, bool */
	} else if (b <= 0x8f) {
		check_open(r, 2u * (b & 0x0f));
	} else if (b <= 0x9f) {
		check_open(r, b & 0x0f);
	} else if (b <= 0xbf) {
		check_payload(r, b & 0x1f);
	} else if (b == 0xc1) {
		check_fail(c, IPC_READ_MALFORMED, "invalid msgpack");
	} else if (check_heads[b - 0xc4].len_bytes == 0) {
		check_payload(r, check_heads[b - 0xc4].fixed);
	} else {
		c->len = 0;
		c->len_bytes = check_heads[b - 0xc4].len_bytes;
		c->len_kind = check_heads[b - 0xc4].kind;
		check_grow(r, c->len_bytes);
	}
}

static void check_bytes(struct ipc_reader *r, const uint8_t *p, size_t n)
{
	struct ipc_frame_check *c = &r->check;
	size_t i = 0;

	while (i < n && c->failed == IPC_READ_MORE) {
		if (c->skip > 0) {
			size_t k = c->skip < n - i ? (size_t)c->skip : n - i;

			c->skip -= k;
			i += k;
			if (c->skip == 0)
				check_object_done(c);
		} else if (c->len_bytes > 0) {
			c->len = c->len << 8 | p[i++];
			if (--c->len_bytes == 0)
				check_length_done(r);
		} else {
			check_type_byte(r, p[i++]);
		}
	}
}

void ipc_reader_consumed(struct ipc_reader *r, size_t n)
{
	check_bytes(r, (const uint8_t *)msgpack_unpacker_buffer(&r->unpacker), n);
	/* libmsgpackc holds every byte but decodes only the messages the check
	 * saw whole, one per ipc_reader_next(). */
	msgpack_unpacker_buffer_consumed(&r->unpacker, n);
}

enum ipc_read_status ipc_reader_next(struct ipc_reader *r, struct rpc_msg *out, const char **why)
{
	if (r->check.ready == 0) {
		if (r->check.failed == IPC_READ_MORE)
			return IPC_READ_MORE;
		*why = r->check.why;
		return r->check.failed;
	}
	r->check.ready--;
	switch (msgpack_unpacker_next(&r->unpacker, &r->unpacked)) {
	case MSGPACK_UNPACK_SUCCESS:
		if (ipc_msg_parse(&r->unpacked.data, out, why) < 0)
			return IPC_READ_MALFORMED;
		return IPC_READ_MSG;
	case MSGPACK_UNPACK_NOMEM_ERROR:
		check_fail(&r->check, IPC_READ_MALFORMED, "out of memory decoding message");
		break;
	default:
		/* The check took for whole a message libmsgpackc did not. */
		check_fail(&r->check, IPC_READ_MALFORMED, "invalid msgpack");
		break;
	}
	r->check.ready = 0;
	*why = r->check.why;
	return IPC_READ_MALFORMED;
}

static int parse_params(const msgpack_object *p, struct rpc_msg *out, const char **why)
{
	out->params = NULL;
	if (p->type == MSGPACK_OBJECT_MAP) {
		out->params = p;
		return 0;
	}
	if (p->type == MSGPACK_OBJECT_NIL)
		return 0;
	if (p->type != MSGPACK_OBJECT_ARRAY || p->via.array.size > 1) {
		*why = "params must be an array holding at most one map";
		return -EINVAL;
	}
	if (p->via.array.size == 0)
		return 0;
	if (p->via.array.ptr[0].type == MSGPACK_OBJECT_NIL)
		return 0;
	if (p->via.array.ptr[0].type != MSGPACK_OBJECT_MAP) {
		*why = "params must be an array holding at most one map";
		return -EINVAL;
	}
	out->params = &p->via.array.ptr[0];
	return 0;
}

static int parse_msgid(const msgpack_object *o, struct rpc_msg *out, const char **why)
{
	if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 > UINT32_MAX) {
		*why = "msgid must be an unsigned 32-bit integer";
		return -EINVAL;
	}
	out->msgid = (uint32_t)o->via.u64;
	return 0;
}

static int parse_method(const msgpack_object *o, struct rpc_msg *out, const char **why)
{
	if (o->type != MSGPACK_OBJECT_STR || o->via.str.size == 0) {
		*why = "method must be a non-empty string";
		return -EINVAL;
	}
	out->method = o->via.str.ptr;
	out->method_len = o->via.str.size;
	return 0;
}

int ipc_msg_parse(const msgpack_object *obj, struct rpc_msg *out, const char **why)
{
	const msgpack_object *a;
	uint32_t n;

	memset(out, 0, sizeof(*out));
	if (obj->type != MSGPACK_OBJECT_ARRAY || obj->via.array.size < 3) {
		*why = "message must be an array of 3 or 4 elements";
		return -EINVAL;
	}
	a = obj->via.array.ptr;
	n = obj->via.array.size;
	if (a[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER || a[0].via.u64 > RPC_NOTIFY) {
		*why = "message type must be 0, 1 or 2";
		return -EINVAL;
	}
	out->type = (enum rpc_type)a[0].via.u64;
	switch (out->type) {
	case RPC_REQUEST:
		if (n != 4) {
			*why = "request must be [0, msgid, method, params]";
			return -EINVAL;
		}
		if (parse_msgid(&a[1], out, why) < 0 || parse_method(&a[2], out, why) < 0)
			return -EINVAL;
		return parse_params(&a[3], out, why);
	case RPC_RESPONSE:
		if (n != 4) {
			*why = "response must be [1, msgid, error, result]";
			return -EINVAL;
		}
		if (parse_msgid(&a[1], out, why) < 0)
			return -EINVAL;
		out->error = a[2].type == MSGPACK_OBJECT_NIL ? NULL : &a[2];
		out->result = &a[3];
		return 0;
	case RPC_NOTIFY:
		if (n != 3) {
			*why = "notification must be [2, method, params]";
			return -EINVAL;
		}
		if (parse_method(&a[1], out, why) < 0)
			return -EINVAL;
		return parse_params(&a[2], out, why);
	}
	*why = "unknown message type";
	return -EINVAL;
}

bool ipc_method_is(const struct rpc_msg *m, const char *name)
{
	size_t n = strlen(name);

	return m->method_len == n && memcmp(m->method, name, n) == 0;
}

int ipc_evbuffer_write(void *data, const char *buf, size_t len)
{
	return evbuffer_add(data, buf, len);
}

void ipc_pack_strn(msgpack_packer *pk, const char *s, size_t len)
{
	msgpack_pack_str(pk, len);
	msgpack_pack_str_body(pk, s, len);
}

void ipc_pack_cstr(msgpack_packer *pk, const char *s)
{
	if (!s) {
		msgpack_pack_nil(pk);
		return;
	}
	ipc_pack_strn(pk, s, strlen(s));
}

void ipc_pack_bin(msgpack_packer *pk, const void *p, size_t len)
{
	msgpack_pack_bin(pk, len);
	msgpack_pack_bin_body(pk, p, len);
}

void ipc_pack_kv_str(msgpack_packer *pk, const char *key, const char *val)
{
	ipc_pack_cstr(pk, key);
	ipc_pack_cstr(pk, val);
}

void ipc_pack_kv_int(msgpack_packer *pk, const char *key, int64_t val)
{
	ipc_pack_cstr(pk, key);
	msgpack_pack_int64(pk, val);
}

void ipc_pack_kv_uint(msgpack_packer *pk, const char *key, uint64_t val)
{
	ipc_pack_cstr(pk, key);
	msgpack_pack_uint64(pk, val);
}

void ipc_pack_kv_bool(msgpack_packer *pk, const char *key, bool val)
{
	ipc_pack_cstr(pk, key);
	if (val)
		msgpack_pack_true(pk);
	else
		msgpack_pack_false(pk);
}

void ipc_pack_kv_nil(msgpack_packer *pk, const char *key)
{
	ipc_pack_cstr(pk, key);
	msgpack_pack_nil(pk);
}

void ipc_pack_kv_bin(msgpack_packer *pk, const char *key, const void *p, size_t len)
{
	ipc_pack_cstr(pk, key);
	ipc_pack_bin(pk, p, len);
}

void ipc_pack_request_head(msgpack_packer *pk, uint32_t msgid, const char *method)
{
	msgpack_pack_array(pk, 4);
	msgpack_pack_uint8(pk, RPC_REQUEST);
	msgpack_pack_uint32(pk, msgid);
	ipc_pack_cstr(pk, method);
	msgpack_pack_array(pk, 1);
}

void ipc_pack_notify_head(msgpack_packer *pk, const char *method)
{
	msgpack_pack_array(pk, 3);
	msgpack_pack_uint8(pk, RPC_NOTIFY);
	ipc_pack_cstr(pk, method);
	msgpack_pack_array(pk, 1);
}

void ipc_pack_response_ok_head(msgpack_packer *pk, uint32_t msgid)
{
	msgpack_pack_array(pk, 4);
	msgpack_pack_uint8(pk, RPC_RESPONSE);
	msgpack_pack_uint32(pk, msgid);
	msgpack_pack_nil(pk);
}

void ipc_pack_response_error(msgpack_packer *pk, uint32_t msgid, const char *code, const char *message)
{
	msgpack_pack_array(pk, 4);
	msgpack_pack_uint8(pk, RPC_RESPONSE);
	msgpack_pack_uint32(pk, msgid);
	msgpack_pack_map(pk, 2);
	ipc_pack_kv_str(pk, "code", code);
	ipc_pack_kv_str(pk, "message", message);
	msgpack_pack_nil(pk);
}

/* libmsgpackc decodes an empty str or bin with a NULL pointer, which the
 * mem*() functions must not see even with a zero length, nor callers get. */
static const char *bytes_of(const char *p)
{
	return p ? p : "";
}

const msgpack_object *ipc_map_get(const msgpack_object *map, const char *key)
{
	size_t n;

	if (!map || map->type != MSGPACK_OBJECT_MAP)
		return NULL;
	n = strlen(key);
	for (uint32_t i = 0; i < map->via.map.size; i++) {
		const msgpack_object *k = &map->via.map.ptr[i].key;

		if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
		    memcmp(bytes_of(k->via.str.ptr), key, n) == 0)
			return &map->via.map.ptr[i].val;
	}
	return NULL;
}

static const msgpack_object *get_present(const msgpack_object *map, const char *key)
{
	const msgpack_object *o = ipc_map_get(map, key);

	return o && o->type != MSGPACK_OBJECT_NIL ? o : NULL;
}

int ipc_get_str(const msgpack_object *map, const char *key, const char **s, uint32_t *len)
{
	const msgpack_object *o = get_present(map, key);

	if (!o)
		return -ENOENT;
	if (o->type != MSGPACK_OBJECT_STR)
		return -EINVAL;
	*s = bytes_of(o->via.str.ptr);
	*len = o->via.str.size;
	return 0;
}

int ipc_get_bytes(const msgpack_object *map, const char *key, const char **p, uint32_t *len)
{
	const msgpack_object *o = get_present(map, key);

	if (!o)
		return -ENOENT;
	if (o->type == MSGPACK_OBJECT_STR) {
		*p = bytes_of(o->via.str.ptr);
		*len = o->via.str.size;
		return 0;
	}
	if (o->type == MSGPACK_OBJECT_BIN) {
		*p = bytes_of(o->via.bin.ptr);
		*len = o->via.bin.size;
		return 0;
	}
	return -EINVAL;
}

int ipc_get_uint(const msgpack_object *map, const char *key, uint64_t *v)
{
	const msgpack_object *o = get_present(map, key);

	if (!o)
		return -ENOENT;
	if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
		return -EINVAL;
	*v = o->via.u64;
	return 0;
}

int ipc_get_int(const msgpack_object *map, const char *key, int64_t *v)
{
	const msgpack_object *o = get_present(map, key);

	if (!o)
		return -ENOENT;
	if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT64_MAX)
		*v = (int64_t)o->via.u64;
	else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
		*v = o->via.i64;
	else
		return -EINVAL;
	return 0;
}

int ipc_get_bool(const msgpack_object *map, const char *key, bool *v)
{
	const msgpack_object *o = get_present(map, key);

	if (!o)
		return -ENOENT;
	if (o->type != MSGPACK_OBJECT_BOOLEAN)
		return -EINVAL;
	*v = o->via.boolean;
	return 0;
}

int ipc_get_array(const msgpack_object *map, const char *key, const msgpack_object_array **a)
{
	const msgpack_object *o = get_present(map, key);

	if (!o)
		return -ENOENT;
	if (o->type != MSGPACK_OBJECT_ARRAY)
		return -EINVAL;
	*a = &o->via.array;
	return 0;
}

int ipc_get_map(const msgpack_object *map, const char *key, const msgpack_object **m)
{
	const msgpack_object *o = get_present(map, key);

	if (!o)
		return -ENOENT;
	if (o->type != MSGPACK_OBJECT_MAP)
		return -EINVAL;
	*m = o;
	return 0;
}

char *ipc_obj_strdup(const msgpack_object *o)
{
	const char *p;
	uint32_t len;
	char *s;

	if (o->type == MSGPACK_OBJECT_STR) {
		p = bytes_of(o->via.str.ptr);
		len = o->via.str.size;
	} else if (o->type == MSGPACK_OBJECT_BIN) {
		p = bytes_of(o->via.bin.ptr);
		len = o->via.bin.size;
	} else {
		return NULL;
	}
	if (memchr(p, '\0', len))
		return NULL;
	s = malloc((size_t)len + 1);
	if (!s)
		return NULL;
	memcpy(s, p, len);
	s[len] = '\0';
	return s;
}
