/* Unit tests of the msgpack-RPC codec: round trips, malformed frames, and
 * the check of declared sizes before decoding. */
#include "autoconfig.h"

#include <check.h>
#include <errno.h>
#include <event2/buffer.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ipc/codec.h"

/* Feeds bytes to a fresh reader and returns the first status. */
static enum ipc_read_status feed(const void *bytes, size_t len, size_t max_frame, struct ipc_reader *r,
				 struct rpc_msg *m, const char **why)
{
	size_t cap;
	char *dst;

	ck_assert_int_eq(ipc_reader_init(r, max_frame), 0);
	dst = ipc_reader_buffer(r, len, &cap);
	ck_assert_ptr_nonnull(dst);
	ck_assert_uint_ge(cap, len);
	memcpy(dst, bytes, len);
	ipc_reader_consumed(r, len);
	return ipc_reader_next(r, m, why);
}

START_TEST(test_request_round_trip)
{
	struct evbuffer *b = evbuffer_new();
	msgpack_packer pk;
	struct ipc_reader r;
	struct rpc_msg m;
	const char *why = NULL, *s;
	uint32_t len;
	uint64_t u;
	int64_t i;
	bool flag;
	const msgpack_object_array *a;
	size_t n;

	msgpack_packer_init(&pk, b, ipc_evbuffer_write);
	ipc_pack_request_head(&pk, 4000000000u, "sandbox.exec");
	msgpack_pack_map(&pk, 6);
	ipc_pack_kv_str(&pk, "lease_id", "ls-1");
	ipc_pack_kv_uint(&pk, "timeout_ms", 1500);
	ipc_pack_kv_int(&pk, "neg", -7);
	ipc_pack_kv_bool(&pk, "stream", true);
	ipc_pack_kv_bin(&pk, "stdin", "\0\1\2", 3);
	ipc_pack_cstr(&pk, "argv");
	msgpack_pack_array(&pk, 2);
	ipc_pack_cstr(&pk, "echo");
	ipc_pack_cstr(&pk, "hi");

	n = evbuffer_get_length(b);
	ck_assert_int_eq(feed(evbuffer_pullup(b, -1), n, 1 << 20, &r, &m, &why), IPC_READ_MSG);
	ck_assert_int_eq(m.type, RPC_REQUEST);
	ck_assert_uint_eq(m.msgid, 4000000000u);
	ck_assert(ipc_method_is(&m, "sandbox.exec"));
	ck_assert(!ipc_method_is(&m, "sandbox.exe"));
	ck_assert_int_eq(ipc_get_str(m.params, "lease_id", &s, &len), 0);
	ck_assert_int_eq(len, 4);
	ck_assert_int_eq(ipc_get_uint(m.params, "timeout_ms", &u), 0);
	ck_assert_uint_eq(u, 1500);
	ck_assert_int_eq(ipc_get_int(m.params, "neg", &i), 0);
	ck_assert_int_eq(i, -7);
	ck_assert_int_eq(ipc_get_bool(m.params, "stream", &flag), 0);
	ck_assert(flag);
	ck_assert_int_eq(ipc_get_bytes(m.params, "stdin", &s, &len), 0);
	ck_assert_int_eq(len, 3);
	ck_assert_int_eq(ipc_get_array(m.params, "argv", &a), 0);
	ck_assert_uint_eq(a->size, 2);
	/* Wrong types and absent keys are told apart. */
	ck_assert_int_eq(ipc_get_uint(m.params, "lease_id", &u), -EINVAL);
	ck_assert_int_eq(ipc_get_uint(m.params, "missing", &u), -ENOENT);
	ck_assert_int_eq(ipc_reader_next(&r, &m, &why), IPC_READ_MORE);
	ipc_reader_destroy(&r);
	evbuffer_free(b);
}
END_TEST

START_TEST(test_response_and_notify)
{
	struct evbuffer *b = evbuffer_new();
	msgpack_packer pk;
	struct ipc_reader r;
	struct rpc_msg m;
	const char *why = NULL, *s;
	uint32_t len;
	size_t n;

	msgpack_packer_init(&pk, b, ipc_evbuffer_write);
	ipc_pack_response_error(&pk, 9, "not_found", "no lease");
	ipc_pack_notify_head(&pk, "exec.output");
	msgpack_pack_map(&pk, 1);
	ipc_pack_kv_str(&pk, "stream", "stdout");
	ipc_pack_response_ok_head(&pk, 10);
	msgpack_pack_nil(&pk);

	n = evbuffer_get_length(b);
	ck_assert_int_eq(feed(evbuffer_pullup(b, -1), n, 1 << 20, &r, &m, &why), IPC_READ_MSG);
	ck_assert_int_eq(m.type, RPC_RESPONSE);
	ck_assert_uint_eq(m.msgid, 9);
	ck_assert_ptr_nonnull(m.error);
	ck_assert_int_eq(ipc_get_str(m.error, "code", &s, &len), 0);
	ck_assert_int_eq(strncmp(s, "not_found", len), 0);
	ck_assert_int_eq(ipc_reader_next(&r, &m, &why), IPC_READ_MSG);
	ck_assert_int_eq(m.type, RPC_NOTIFY);
	ck_assert(ipc_method_is(&m, "exec.output"));
	ck_assert_int_eq(ipc_reader_next(&r, &m, &why), IPC_READ_MSG);
	ck_assert_int_eq(m.type, RPC_RESPONSE);
	ck_assert_ptr_null(m.error);
	ck_assert_int_eq(m.result->type, MSGPACK_OBJECT_NIL);
	ipc_reader_destroy(&r);
	evbuffer_free(b);
}
END_TEST

START_TEST(test_split_delivery)
{
	struct evbuffer *b = evbuffer_new();
	msgpack_packer pk;
	struct ipc_reader r;
	struct rpc_msg m;
	const char *why = NULL;
	const unsigned char *bytes;
	size_t n, cap;

	msgpack_packer_init(&pk, b, ipc_evbuffer_write);
	ipc_pack_request_head(&pk, 1, "hello");
	msgpack_pack_map(&pk, 0);
	n = evbuffer_get_length(b);
	bytes = evbuffer_pullup(b, -1);
	ck_assert_int_eq(ipc_reader_init(&r, 1024), 0);
	/* One byte at a time: every prefix is MORE, the whole is a message. */
	for (size_t i = 0; i < n; i++) {
		char *dst = ipc_reader_buffer(&r, 1, &cap);

		dst[0] = (char)bytes[i];
		ipc_reader_consumed(&r, 1);
		ck_assert_int_eq(ipc_reader_next(&r, &m, &why), i + 1 < n ? IPC_READ_MORE : IPC_READ_MSG);
	}
	ck_assert(ipc_method_is(&m, "hello"));
	ck_assert_ptr_nonnull(m.params);
	ck_assert_uint_eq(m.params->via.map.size, 0);
	ipc_reader_destroy(&r);
	evbuffer_free(b);
}
END_TEST

/* Frames that are msgpack but not msgpack-RPC, or not msgpack at all. */
static const struct {
	const char *name;
	const char *bytes;
	size_t len;
	enum ipc_read_status want;
} bad_frames[] = {
	{ "not msgpack", "\xc1", 1, IPC_READ_MALFORMED },
	{ "an integer", "\x05", 1, IPC_READ_MALFORMED },
	{ "a map", "\x80", 1, IPC_READ_MALFORMED },
	{ "empty array", "\x90", 1, IPC_READ_MALFORMED },
	{ "two elements", "\x92\x00\x01", 3, IPC_READ_MALFORMED },
	{ "type 3", "\x94\x03\x01\xa1x\x90", 6, IPC_READ_MALFORMED },
	{ "negative type", "\x94\xff\x01\xa1x\x90", 6, IPC_READ_MALFORMED },
	{ "request with 3 elements", "\x93\x00\x01\xa1x", 5, IPC_READ_MALFORMED },
	{ "msgid a string", "\x94\x00\xa1\x31\xa1x\x90", 7, IPC_READ_MALFORMED },
	{ "msgid negative", "\x94\x00\xff\xa1x\x90", 6, IPC_READ_MALFORMED },
	{ "msgid over 32 bits", "\x94\x00\xcf\x00\x00\x00\x01\x00\x00\x00\x00\xa1x\x90", 14,
	  IPC_READ_MALFORMED },
	{ "method an integer", "\x94\x00\x01\x05\x90", 5, IPC_READ_MALFORMED },
	{ "method empty", "\x94\x00\x01\xa0\x90", 5, IPC_READ_MALFORMED },
	{ "params a string", "\x94\x00\x01\xa1x\xa1y", 7, IPC_READ_MALFORMED },
	{ "params two maps", "\x94\x00\x01\xa1x\x92\x80\x80", 8, IPC_READ_MALFORMED },
	{ "params array of int", "\x94\x00\x01\xa1x\x91\x01", 7, IPC_READ_MALFORMED },
	{ "notify with 4 elements", "\x94\x02\xa1x\x90\x90", 6, IPC_READ_MALFORMED },
	{ "truncated", "\x94\x00\x01", 3, IPC_READ_MORE },
	{ "declared huge string", "\x94\x00\x01\xdb\x7f\xff\xff\xff", 8, IPC_READ_TOO_LARGE },
	{ "declared huge array", "\xdd\x00\x00\x10\x00", 5, IPC_READ_TOO_LARGE },
	{ "declared huge map", "\x94\x00\x01\xa1x\xde\x08\x00", 8, IPC_READ_TOO_LARGE },
	{ "declared huge bin", "\x94\x00\x01\xa1x\x91\x81\xa1k\xc5\x10\x00", 12, IPC_READ_TOO_LARGE },
	{ "declared huge ext", "\x94\x00\x01\xa1x\x91\x81\xa1k\xc8\x10\x00", 12, IPC_READ_TOO_LARGE },
	{ "0xc1 inside", "\x94\x00\x01\xa1x\x91\x81\xa1k\xc1", 10, IPC_READ_MALFORMED },
};

START_TEST(test_malformed_frames)
{
	struct ipc_reader r;
	struct rpc_msg m;
	const char *why = NULL;
	enum ipc_read_status st = feed(bad_frames[_i].bytes, bad_frames[_i].len, 4096, &r, &m, &why);

	ck_assert_msg(st == bad_frames[_i].want, "%s: got %d", bad_frames[_i].name, st);
	if (st == IPC_READ_MALFORMED)
		ck_assert_ptr_nonnull(why);
	ipc_reader_destroy(&r);
}
END_TEST

START_TEST(test_frame_limit)
{
	char big[2048];
	struct ipc_reader r;
	struct rpc_msg m;
	const char *why = NULL;

	/* A 4 KiB string inside a request, against a 1 KiB limit. */
	memcpy(big, "\x94\x00\x01\xa1x\x91\x81\xa1k\xda\x10\x00", 12);
	memset(big + 12, 'a', sizeof(big) - 12);
	ck_assert_int_eq(feed(big, sizeof(big), 1024, &r, &m, &why), IPC_READ_TOO_LARGE);
	ipc_reader_destroy(&r);
}
END_TEST

/* --- the check before decoding: declared sizes, depth, split reads ------- */

/* The inputs the fuzzers crashed on (tests/fuzz/corpus/frame/regress-huge-array-header and
 * tests/fuzz/corpus/agent/regress-huge-map-header), as
 * their targets feed them: fuzz_frame's first byte 0x02 picks 3-byte reads
 * and a 4 MiB max_frame; fuzz_agent reads 4 KiB at a time into the agent's
 * reader. Both declare billions of elements in a few bytes. */
START_TEST(test_fuzz_reproducers)
{
	static const char frame[] = "\xdd\xdd\xdd\xdd\xdd\xdd\xdd\xdd";
	static const char agent[] = "\x91\xdf\x91\x29\xdf\x91\x29";
	struct ipc_reader r;
	struct rpc_msg m;
	const char *why = NULL;
	enum ipc_read_status st = IPC_READ_MORE;
	size_t cap;

	ck_assert_int_eq(ipc_reader_init(&r, 4u << 20), 0);
	for (size_t off = 0; off < sizeof(frame) - 1 && st == IPC_READ_MORE; off += 3) {
		size_t n = sizeof(frame) - 1 - off < 3 ? sizeof(frame) - 1 - off : 3;

		memcpy(ipc_reader_buffer(&r, n, &cap), frame + off, n);
		ipc_reader_consumed(&r, n);
		st = ipc_reader_next(&r, &m, &why);
	}
	ck_assert_int_eq(st, IPC_READ_TOO_LARGE);
	ck_assert_ptr_nonnull(why);
	ipc_reader_destroy(&r);

	ck_assert_int_eq(feed(agent, sizeof(agent) - 1, (4u << 20) + 4096, &r, &m, &why), IPC_READ_TOO_LARGE);
	/* For good: more bytes do not revive the stream. */
	memcpy(ipc_reader_buffer(&r, 1, &cap), "\x90", 1);
	ipc_reader_consumed(&r, 1);
	ck_assert_int_eq(ipc_reader_next(&r, &m, &why), IPC_READ_TOO_LARGE);
	ipc_reader_destroy(&r);
}
END_TEST

/* Deterministic xorshift, so that a failure replays. */
static uint64_t rnd_state;

static uint32_t rnd(uint32_t n)
{
	rnd_state ^= rnd_state << 13;
	rnd_state ^= rnd_state >> 7;
	rnd_state ^= rnd_state << 17;
	return (uint32_t)(rnd_state % n);
}

static char filler[70000];

/* One random object of every msgpack type and header size, nested at
 * most depth more levels. */
static void pack_random(msgpack_packer *pk, int depth)
{
	static const uint32_t lens[] = { 0, 1, 2, 4, 8, 16, 31, 32, 255, 256, 65535, 65536 };
	static const int64_t ints[] = { 0, 5, 127, 128, 255, 256, 65535, 65536, 4294967295ll, 4294967296ll,
					INT64_MAX, -1, -32, -33, -128, -129, -32768, -32769, INT64_MIN };
	uint32_t len = lens[rnd(sizeof(lens) / sizeof(lens[0]))];
	uint32_t n = rnd(4) ? rnd(4) : rnd(20);

	switch (rnd(depth > 0 ? 10 : 8)) {
	case 0:
		msgpack_pack_nil(pk);
		break;
	case 1:
		if (rnd(2))
			msgpack_pack_true(pk);
		else
			msgpack_pack_false(pk);
		break;
	case 2:
		msgpack_pack_int64(pk, ints[rnd(sizeof(ints) / sizeof(ints[0]))]);
		break;
	case 3:
		if (rnd(2))
			msgpack_pack_uint64(pk, UINT64_MAX - rnd(3));
		else if (rnd(2))
			msgpack_pack_float(pk, 1.5f);
		else
			msgpack_pack_double(pk, -2.25);
		break;
	case 4:
		ipc_pack_strn(pk, filler, len);
		break;
	case 5:
		ipc_pack_bin(pk, filler, len);
		break;
	case 6:
		msgpack_pack_ext(pk, len, (int8_t)rnd(256));
		msgpack_pack_ext_body(pk, filler, len);
		break;
	case 7:
		/* 16-bit and 32-bit container headers holding few elements */
		msgpack_pack_array(pk, rnd(2) ? 16 : 0);
		for (uint32_t i = 0; i < (rnd_state & 1 ? 16u : 0u); i++)
			msgpack_pack_nil(pk);
		break;
	case 8:
		msgpack_pack_array(pk, n);
		for (uint32_t i = 0; i < n; i++)
			pack_random(pk, depth - 1);
		break;
	default:
		msgpack_pack_map(pk, n);
		for (uint32_t i = 0; i < n; i++) {
			pack_random(pk, depth - 1);
			pack_random(pk, depth - 1);
		}
		break;
	}
}

/* Drains every message the reader has; their msgids go to ids. */
static void drain(struct ipc_reader *r, uint32_t *ids, size_t *got, size_t max)
{
	struct rpc_msg m;
	const char *why = NULL;
	enum ipc_read_status st;

	while ((st = ipc_reader_next(r, &m, &why)) == IPC_READ_MSG) {
		ck_assert_uint_lt(*got, max);
		ids[(*got)++] = m.msgid;
	}
	ck_assert_msg(st == IPC_READ_MORE, "status %d after %zu messages: %s", st, *got, why ? why : "");
}

static void feed_part(struct ipc_reader *r, const char *p, size_t n)
{
	size_t cap;
	char *dst = ipc_reader_buffer(r, n, &cap);

	ck_assert_ptr_nonnull(dst);
	memcpy(dst, p, n);
	ipc_reader_consumed(r, n);
}

/* A stream of requests whose params hold random objects. */
static void pack_stream(msgpack_sbuffer *sb, unsigned msgs, int depth)
{
	msgpack_packer pk;

	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	for (unsigned i = 0; i < msgs; i++) {
		ipc_pack_request_head(&pk, 1000 + i, "m");
		msgpack_pack_map(&pk, 1);
		ipc_pack_cstr(&pk, "k");
		pack_random(&pk, depth);
	}
}

/* Every byte offset as the end of a first read: the check's state carries
 * over, and the messages come out whole and in order. */
START_TEST(test_split_at_every_byte)
{
	msgpack_sbuffer sb;
	uint32_t ids[16];
	size_t got;

	rnd_state = 0x9e3779b97f4a7c15ull;
	msgpack_sbuffer_init(&sb);
	/* Small payloads only, so that the quadratic walk stays quick. */
	while (sb.size < 1500 || sb.size > 6000) {
		sb.size = 0;
		pack_stream(&sb, 12, 3);
	}
	for (size_t cut = 0; cut <= sb.size; cut++) {
		struct ipc_reader r;

		ck_assert_int_eq(ipc_reader_init(&r, 1 << 20), 0);
		got = 0;
		feed_part(&r, sb.data, cut);
		drain(&r, ids, &got, 12);
		feed_part(&r, sb.data + cut, sb.size - cut);
		drain(&r, ids, &got, 12);
		ck_assert_uint_eq(got, 12);
		for (size_t i = 0; i < got; i++)
			ck_assert_uint_eq(ids[i], 1000 + i);
		ipc_reader_destroy(&r);
	}
	msgpack_sbuffer_destroy(&sb);
}
END_TEST

/* Random streams of every type, in random reads: what libmsgpackc decodes
 * is what was packed, so the check never cuts a message short or long. */
START_TEST(test_random_streams)
{
	for (uint64_t seed = 1; seed <= 40; seed++) {
		msgpack_sbuffer sb;
		struct ipc_reader r;
		uint32_t ids[32];
		size_t got = 0, off = 0;

		rnd_state = seed * 0x2545f4914f6cdd1dull;
		msgpack_sbuffer_init(&sb);
		pack_stream(&sb, 32, 4);
		ck_assert_int_eq(ipc_reader_init(&r, 8u << 20), 0);
		while (off < sb.size) {
			size_t n = 1 + rnd(rnd(2) ? 16 : 70000);

			if (n > sb.size - off)
				n = sb.size - off;
			feed_part(&r, sb.data + off, n);
			off += n;
			drain(&r, ids, &got, 32);
		}
		ck_assert_msg(got == 32, "seed %llu: %zu messages", (unsigned long long)seed, got);
		for (size_t i = 0; i < got; i++)
			ck_assert_uint_eq(ids[i], 1000 + i);
		ipc_reader_destroy(&r);
		msgpack_sbuffer_destroy(&sb);
	}
}
END_TEST

/* A request [0, 1, "m", [{"k": <header>...}]]: the header is the 9th byte,
 * and the message can be header + payload bytes long. */
static size_t frame_with(char *buf, const char *head, size_t head_len)
{
	memcpy(buf, "\x94\x00\x01\xa1m\x91\x81\xa1k", 9);
	memcpy(buf + 9, head, head_len);
	return 9 + head_len;
}

/* Declared sizes right at the limit wait for their bytes; one more is
 * refused at once, before any element arrives. */
START_TEST(test_declared_size_boundary)
{
	/* header bytes, and the bytes each declared unit takes at least */
	static const struct {
		const char *head;
		size_t len;
		unsigned unit;
		size_t extra; /* bytes after the length (ext's type byte) */
	} heads[] = {
		{ "\xdd", 1, 1, 0 }, /* array 32 */
		{ "\xdf", 1, 2, 0 }, /* map 32 */
		{ "\xdb", 1, 1, 0 }, /* str 32 */
		{ "\xc6", 1, 1, 0 }, /* bin 32 */
		{ "\xc9", 1, 1, 1 }, /* ext 32 */
	};
	const size_t max_frame = 100000;

	for (size_t h = 0; h < sizeof(heads) / sizeof(heads[0]); h++) {
		for (int over = 0; over <= 1; over++) {
			struct ipc_reader r;
			struct rpc_msg m;
			const char *why = NULL;
			char buf[32];
			size_t n = frame_with(buf, heads[h].head, heads[h].len);
			/* what is left of max_frame after the 4 length bytes */
			uint32_t count = (uint32_t)((max_frame - n - 4 - heads[h].extra) / heads[h].unit) + (uint32_t)over;

			buf[n++] = (char)(count >> 24);
			buf[n++] = (char)(count >> 16);
			buf[n++] = (char)(count >> 8);
			buf[n++] = (char)count;
			ck_assert_int_eq(feed(buf, n, max_frame, &r, &m, &why),
					 over ? IPC_READ_TOO_LARGE : IPC_READ_MORE);
			ipc_reader_destroy(&r);
		}
	}
}
END_TEST

/* A message of exactly max_frame bytes is whole; one byte more is not. */
START_TEST(test_frame_exact_limit)
{
	static char payload[5000];
	msgpack_sbuffer sb;
	msgpack_packer pk;
	struct ipc_reader r;
	struct rpc_msg m;
	const char *why = NULL;
	size_t size;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	ipc_pack_request_head(&pk, 3, "files.write");
	msgpack_pack_map(&pk, 1);
	ipc_pack_kv_bin(&pk, "data", payload, sizeof(payload));
	size = sb.size;
	ck_assert_int_eq(feed(sb.data, size, size, &r, &m, &why), IPC_READ_MSG);
	ck_assert(ipc_method_is(&m, "files.write"));
	ipc_reader_destroy(&r);
	ck_assert_int_eq(feed(sb.data, size, size - 1, &r, &m, &why), IPC_READ_TOO_LARGE);
	ipc_reader_destroy(&r);
	msgpack_sbuffer_destroy(&sb);
}
END_TEST

static size_t nested(char *buf, unsigned containers)
{
	/* the envelope, the params array and the params map are 3 */
	size_t n = frame_with(buf, "", 0);

	for (unsigned i = 4; i < containers; i++)
		buf[n++] = '\x91';
	buf[n++] = '\x90';
	return n;
}

START_TEST(test_depth_limit)
{
	char buf[128];
	struct ipc_reader r;
	struct rpc_msg m;
	const char *why = NULL;

	/* As deep as libmsgpackc goes: decodes. */
	ck_assert_int_eq(feed(buf, nested(buf, IPC_MAX_DEPTH), 4096, &r, &m, &why), IPC_READ_MSG);
	ipc_reader_destroy(&r);
	/* One deeper: a bad frame that names the reason (libmsgpackc alone
	 * would call it out of memory). */
	ck_assert_int_eq(feed(buf, nested(buf, IPC_MAX_DEPTH + 1), 4096, &r, &m, &why), IPC_READ_MALFORMED);
	ck_assert_ptr_nonnull(strstr(why, "deep"));
	ipc_reader_destroy(&r);
}
END_TEST

/* The messages before a bad one still come out, then the error. */
START_TEST(test_good_then_bad)
{
	char buf[64];
	size_t n;
	struct ipc_reader r;
	struct rpc_msg m;
	const char *why = NULL;

	memcpy(buf, "\x94\x00\x07\xa1m\x90", 6);
	n = 6 + frame_with(buf + 6, "\xdd\xff\xff\xff\xff", 5);
	ck_assert_int_eq(feed(buf, n, 4096, &r, &m, &why), IPC_READ_MSG);
	ck_assert_uint_eq(m.msgid, 7);
	ck_assert_int_eq(ipc_reader_next(&r, &m, &why), IPC_READ_TOO_LARGE);
	ipc_reader_destroy(&r);
}
END_TEST

static long vm_kib(const char *field)
{
	char line[256];
	long v = -1;
	size_t fl = strlen(field);
	FILE *f = fopen("/proc/self/status", "r");

	ck_assert_ptr_nonnull(f);
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, field, fl) == 0 && line[fl] == ':')
			v = strtol(line + fl + 1, NULL, 10);
	fclose(f);
	return v;
}

/* What headers cost in memory before their elements arrive: nothing worth
 * counting. VmPeak counts address space even when no page is touched,
 * which is what libmsgpackc's reservation for 2^24 elements (384 MiB)
 * took before the check. */
START_TEST(test_declared_sizes_bounded_memory)
{
	static const char *const heads[] = {
		"\xdd\xff\xff\xff\xff", /* array of 2^32 - 1: over any max_frame */
		"\xdf\x7f\xff\xff\xff", /* map of 2^31 - 1 */
		"\xdd\x01\x00\x00\x00", /* array of 2^24: plausible under 64 MiB */
		"\xdf\x00\x80\x00\x00", /* map of 2^23 */
	};
	enum { CONNS = 64 };
	static struct ipc_reader r[CONNS];
	long before = vm_kib("VmSize"), peak;
	struct rpc_msg m;
	const char *why = NULL;
	char buf[32];

	ck_assert_int_gt(before, 0);
	/* libsandpool's max_frame, the largest a reader here has. */
	for (int i = 0; i < CONNS; i++) {
		const char *h = heads[i % 4];
		enum ipc_read_status st = feed(buf, frame_with(buf, h, 5), 64u << 20, &r[i], &m, &why);

		ck_assert_int_eq(st, i % 4 < 2 ? IPC_READ_TOO_LARGE : IPC_READ_MORE);
	}
	peak = vm_kib("VmPeak");
	for (int i = 0; i < CONNS; i++)
		ipc_reader_destroy(&r[i]);
	/* 64 readers' 64 KiB buffers are 4 MiB; anything above 32 MiB is a
	 * reservation made for a header. */
	ck_assert_msg(peak - before < 32 * 1024, "address space grew by %ld KiB", peak - before);
}
END_TEST

START_TEST(test_strdup_rejects_nul)
{
	msgpack_object o = { .type = MSGPACK_OBJECT_STR, .via.str = { .size = 3, .ptr = "a\0b" } };
	char *s;

	ck_assert_ptr_null(ipc_obj_strdup(&o));
	o.via.str.ptr = "abc";
	s = ipc_obj_strdup(&o);
	ck_assert_str_eq(s, "abc");
	free(s);
	o.type = MSGPACK_OBJECT_POSITIVE_INTEGER;
	ck_assert_ptr_null(ipc_obj_strdup(&o));
}
END_TEST

int main(void)
{
	Suite *s = suite_create("codec");
	TCase *tc = tcase_create("codec");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_request_round_trip);
	tcase_add_test(tc, test_response_and_notify);
	tcase_add_test(tc, test_split_delivery);
	tcase_add_loop_test(tc, test_malformed_frames, 0, sizeof(bad_frames) / sizeof(bad_frames[0]));
	tcase_add_test(tc, test_frame_limit);
	tcase_add_test(tc, test_strdup_rejects_nul);
	tcase_add_test(tc, test_fuzz_reproducers);
	tcase_add_test(tc, test_split_at_every_byte);
	tcase_add_test(tc, test_random_streams);
	tcase_add_test(tc, test_declared_size_boundary);
	tcase_add_test(tc, test_frame_exact_limit);
	tcase_add_test(tc, test_depth_limit);
	tcase_add_test(tc, test_good_then_bad);
	tcase_add_test(tc, test_declared_sizes_bounded_memory);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
