/*
 * libFuzzer target: the msgpack-RPC frame decoder every peer of the daemon
 * goes through (ipc/codec.c). The first input byte picks how the stream is
 * cut into reads (1 to 128 bytes each, as a socket may deliver it) and a
 * small or a large max_frame; the rest is the byte stream. Every message
 * that decodes is taken apart with the ipc_get_* getters the daemon, the
 * agent and the client library use.
 */
#include "autoconfig.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ipc/codec.h"

/* The parameter names the daemon, the agent and the client look up. */
static const char *const keys[] = {
	"lease_id", "template", "argv",	   "cmd",      "env",	   "cwd",     "stdin",
	"timeout_ms", "wait_ms", "session", "detached", "stream",  "id",      "data",
	"code",	    "message",	"result",  "exit_code", "signal", "truncated", "limit",
	"duration_us", "max_output", "client", "protocol", "",	   "x",
};

static volatile unsigned sink;

static void touch(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		sink += (unsigned char)p[i];
}

static void take_string(const msgpack_object *o)
{
	char *s = ipc_obj_strdup(o);

	if (s) {
		touch(s, strlen(s) + 1);
		free(s);
	}
}

static void take_apart(const msgpack_object *map)
{
	if (!map)
		return;
	for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
		const msgpack_object_array *a;
		const msgpack_object *m;
		const char *s;
		uint32_t len;
		uint64_t u;
		int64_t i;
		bool b;

		if (ipc_get_str(map, keys[k], &s, &len) == 0)
			touch(s, len);
		if (ipc_get_bytes(map, keys[k], &s, &len) == 0)
			touch(s, len);
		if (ipc_get_uint(map, keys[k], &u) == 0)
			sink += (unsigned)u;
		if (ipc_get_int(map, keys[k], &i) == 0)
			sink += (unsigned)i;
		if (ipc_get_bool(map, keys[k], &b) == 0)
			sink += b;
		if (ipc_get_array(map, keys[k], &a) == 0)
			for (uint32_t j = 0; j < a->size; j++)
				take_string(&a->ptr[j]);
		if (ipc_get_map(map, keys[k], &m) == 0)
			for (uint32_t j = 0; j < m->via.map.size; j++) {
				take_string(&m->via.map.ptr[j].key);
				take_string(&m->via.map.ptr[j].val);
			}
	}
	if (map->type == MSGPACK_OBJECT_MAP)
		for (uint32_t j = 0; j < map->via.map.size; j++)
			take_string(&map->via.map.ptr[j].key);
}

static void check(const struct rpc_msg *m)
{
	/* What ipc_msg_parse() promises its callers. */
	if (m->type == RPC_REQUEST || m->type == RPC_NOTIFY) {
		if (!m->method || m->method_len == 0)
			__builtin_trap();
		touch(m->method, m->method_len);
		if (m->params && m->params->type != MSGPACK_OBJECT_MAP)
			__builtin_trap();
	}
	if (m->type == RPC_RESPONSE && !m->result)
		__builtin_trap();
	sink += ipc_method_is(m, "sandbox.exec");
	take_apart(m->params);
	take_apart(m->error);
	take_apart(m->result);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ipc_reader r;
	size_t chunk, max_frame, off = 0;

	if (size < 1)
		return 0;
	chunk = (data[0] & 0x7f) + 1u;
	max_frame = data[0] & 0x80 ? 1024 : 4u << 20;
	data++;
	size--;
	if (ipc_reader_init(&r, max_frame) < 0)
		return 0;
	while (off < size) {
		size_t want = size - off < chunk ? size - off : chunk, cap;
		char *buf = ipc_reader_buffer(&r, want, &cap);

		if (!buf)
			break;
		if (cap < want)
			__builtin_trap();
		memcpy(buf, data + off, want);
		ipc_reader_consumed(&r, want);
		off += want;
		for (;;) {
			struct rpc_msg m;
			const char *why = NULL;
			enum ipc_read_status st = ipc_reader_next(&r, &m, &why);

			if (st == IPC_READ_MORE)
				break;
			if (st == IPC_READ_MALFORMED && !why)
				__builtin_trap();
			if (st != IPC_READ_MSG)
				goto out; /* peers close the stream at the first bad message */
			check(&m);
		}
	}
out:
	ipc_reader_destroy(&r);
	return 0;
}
