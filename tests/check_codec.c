/* Unit tests of the msgpack-RPC codec: round trips and malformed frames. */
#include "autoconfig.h"

#include <check.h>
#include <errno.h>
#include <event2/buffer.h>
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
	{ "declared huge string", "\x94\x00\x01\xdb\x7f\xff\xff\xff", 8, IPC_READ_MORE },
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
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
