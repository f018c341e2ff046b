/* Unit tests of sandbox/json.c: E2B's JSON into msgpack and back, base64. */
#include "autoconfig.h"

#include <check.h>
#include <errno.h>
#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>

#include "ipc/codec.h"
#include "sandbox/json.h"

static int parse(const char *text, msgpack_unpacked *u)
{
	return json_parse(text, strlen(text), u);
}

START_TEST(test_object_types)
{
	msgpack_unpacked u;
	const msgpack_object_array *a;
	const char *s;
	uint32_t len;
	int64_t i;
	uint64_t v;
	bool b;

	ck_assert_int_eq(parse(" {\"id\": \"ctx-1\", \"n\": [0, -2, 18446744073709551615, 2.5, 1e3, true, false, null],"
			       " \"nested\": {\"k\": {}} , \"e\": []} ", &u), 0);
	ck_assert_int_eq(ipc_get_str(&u.data, "id", &s, &len), 0);
	ck_assert_int_eq(len, 5);
	ck_assert(!memcmp(s, "ctx-1", 5));
	ck_assert_int_eq(ipc_get_array(&u.data, "n", &a), 0);
	ck_assert_int_eq(a->size, 8);
	ck_assert_int_eq(a->ptr[0].type, MSGPACK_OBJECT_POSITIVE_INTEGER);
	ck_assert_int_eq(a->ptr[1].via.i64, -2);
	ck_assert(a->ptr[2].via.u64 == UINT64_MAX);
	ck_assert(a->ptr[3].type == MSGPACK_OBJECT_FLOAT64 && a->ptr[3].via.f64 == 2.5);
	ck_assert(a->ptr[4].type == MSGPACK_OBJECT_FLOAT64 && a->ptr[4].via.f64 == 1000.0);
	ck_assert(a->ptr[5].type == MSGPACK_OBJECT_BOOLEAN && a->ptr[5].via.boolean);
	ck_assert(a->ptr[7].type == MSGPACK_OBJECT_NIL);
	ck_assert_ptr_nonnull(ipc_map_get(ipc_map_get(&u.data, "nested"), "k"));
	ck_assert_int_eq(ipc_get_array(&u.data, "e", &a), 0);
	ck_assert_int_eq(a->size, 0);
	msgpack_unpacked_destroy(&u);

	ck_assert_int_eq(parse("{\"exitCode\": -1, \"exited\": false}", &u), 0);
	ck_assert_int_eq(ipc_get_int(&u.data, "exitCode", &i), 0);
	ck_assert_int_eq(i, -1);
	ck_assert_int_eq(ipc_get_bool(&u.data, "exited", &b), 0);
	ck_assert(!b);
	ck_assert_int_eq(ipc_get_uint(&u.data, "exitCode", &v), -EINVAL);
	msgpack_unpacked_destroy(&u);
}
END_TEST

/* E2B answers some calls with a bare `null`: scalars parse too. */
START_TEST(test_scalars)
{
	static const char *const texts[] = { "null", " 1 ", "true", "-5", "1.5", "\"s\"" };
	msgpack_unpacked u;

	for (unsigned i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		ck_assert_int_eq(parse(texts[i], &u), 0);
		msgpack_unpacked_destroy(&u);
	}
	ck_assert_int_eq(parse("null", &u), 0);
	ck_assert_int_eq(u.data.type, MSGPACK_OBJECT_NIL);
	msgpack_unpacked_destroy(&u);
}
END_TEST

START_TEST(test_string_escapes)
{
	msgpack_unpacked u;
	const char *s;
	uint32_t len;
	/* quote, backslash, slash, controls, é (U+00E9), € (U+20AC), 😀 (a surrogate pair) */
	const char want[] = "\"\\/\b\f\n\r\t\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80";

	ck_assert_int_eq(parse("{\"t\": \"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\u20AC\\ud83d\\ude00\"}", &u), 0);
	ck_assert_int_eq(ipc_get_str(&u.data, "t", &s, &len), 0);
	ck_assert_uint_eq(len, sizeof(want) - 1);
	ck_assert(!memcmp(s, want, len));
	msgpack_unpacked_destroy(&u);
}
END_TEST

static const char *const bad_json[] = {
	"",
	"{",
	"{\"a\" 1}",
	"{\"a\": 1,}",
	"[1 2]",
	"{a: 1}",
	"\"unterminated",
	"\"tab\tinside\"",
	"\"\\x\"",
	"\"\\ud83d\"",	       /* a lone high surrogate */
	"\"\\ude00\"",	       /* a lone low surrogate */
	"\"\\u12\"",
	"tru",
	"nul",
	"-",
	"1e999",
	"{} {}",
	"[1]x",
};

START_TEST(test_rejects_malformed)
{
	msgpack_unpacked u;

	ck_assert_int_eq(json_parse(bad_json[_i], strlen(bad_json[_i]), &u), -EINVAL);
}
END_TEST

START_TEST(test_depth_limit)
{
	char deep[2 * (JSON_MAX_DEPTH + 1) + 1];
	msgpack_unpacked u;

	for (int i = 0; i <= JSON_MAX_DEPTH; i++) {
		deep[i] = '[';
		deep[JSON_MAX_DEPTH + 1 + i] = ']';
	}
	deep[sizeof(deep) - 1] = '\0';
	ck_assert_int_eq(parse(deep, &u), -EINVAL);
	/* One level less is fine. */
	ck_assert_int_eq(json_parse(deep + 1, strlen(deep) - 2, &u), 0);
	msgpack_unpacked_destroy(&u);
}
END_TEST

/* json_put_object then json_parse gives the same object back. */
START_TEST(test_round_trip_and_escaping)
{
	struct evbuffer *b = evbuffer_new();
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_unpacked in, out;
	size_t off = 0;
	const char *s;
	uint32_t len;
	char *text;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 4);
	ipc_pack_kv_str(&pk, "code", "print(\"a\\tb\")\n\x01");
	ipc_pack_kv_int(&pk, "neg", -7);
	ipc_pack_kv_bin(&pk, "bin", "\x00\xff", 2);
	ipc_pack_cstr(&pk, "arr");
	msgpack_pack_array(&pk, 2);
	msgpack_pack_nil(&pk);
	msgpack_pack_true(&pk);
	msgpack_unpacked_init(&in);
	ck_assert_int_eq(msgpack_unpack_next(&in, sb.data, sb.size, &off), MSGPACK_UNPACK_SUCCESS);
	ck_assert_int_eq(json_put_object(b, &in.data), 0);
	text = strndup((const char *)evbuffer_pullup(b, -1), evbuffer_get_length(b));
	/* Control characters never travel raw. */
	ck_assert_ptr_null(strchr(text, '\n'));
	ck_assert_ptr_null(strchr(text, '\x01'));
	ck_assert_int_eq(parse(text, &out), 0);
	ck_assert_int_eq(ipc_get_str(&out.data, "code", &s, &len), 0);
	ck_assert_uint_eq(len, strlen("print(\"a\\tb\")\n\x01"));
	ck_assert(!memcmp(s, "print(\"a\\tb\")\n\x01", len));
	ck_assert_int_eq(ipc_get_str(&out.data, "bin", &s, &len), 0);
	ck_assert_uint_eq(len, 4);
	ck_assert(!memcmp(s, "AP8=", 4));
	free(text);
	msgpack_unpacked_destroy(&in);
	msgpack_unpacked_destroy(&out);
	msgpack_sbuffer_destroy(&sb);
	evbuffer_free(b);
}
END_TEST

START_TEST(test_base64)
{
	const char *plain[] = { "", "f", "fo", "foo", "foob", "fooba", "foobar" };
	const char *enc[] = { "", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy" };
	char out[16], back[16];

	for (unsigned i = 0; i < 7; i++) {
		size_t n = base64_encode(plain[i], strlen(plain[i]), out);

		ck_assert_uint_eq(n, base64_encoded_len(strlen(plain[i])));
		ck_assert(n == strlen(enc[i]) && !memcmp(out, enc[i], n));
		ck_assert_int_eq(base64_decode(enc[i], strlen(enc[i]), back), (long)strlen(plain[i]));
		ck_assert(!memcmp(back, plain[i], strlen(plain[i])));
	}
	ck_assert_int_eq(base64_decode("Zm9v!", 5, back), -EINVAL);
	ck_assert_int_eq(base64_decode("Zg==Zg", 6, back), -EINVAL);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("json");
	TCase *tc = tcase_create("json");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_object_types);
	tcase_add_test(tc, test_scalars);
	tcase_add_test(tc, test_string_escapes);
	tcase_add_loop_test(tc, test_rejects_malformed, 0, sizeof(bad_json) / sizeof(bad_json[0]));
	tcase_add_test(tc, test_depth_limit);
	tcase_add_test(tc, test_round_trip_and_escaping);
	tcase_add_test(tc, test_base64);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
