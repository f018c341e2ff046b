/*
 * JSON for the e2b backend, in terms of what the daemon already speaks:
 * a JSON text is converted to msgpack, so that the codec's getters
 * (ipc_get_str, ipc_map_get, ...) read E2B's answers, and results pass
 * on to clients unchanged. Writing JSON is a few helpers appending to an
 * evbuffer. Base64 is here too: E2B's envd sends bytes as base64 strings.
 * Owns nothing; every function works on caller-owned buffers.
 */
#ifndef SANDPOOL_SANDBOX_JSON_H
#define SANDPOOL_SANDBOX_JSON_H

#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

struct evbuffer;

/* Deeper documents are refused: the parser recurses, and msgpack-c's
 * unpacker stops at 32 levels of containers. */
#define JSON_MAX_DEPTH 32

/*
 * Parses one JSON value (surrounding white space allowed) into out, an
 * initialised sbuffer the caller owns and destroys; objects become maps,
 * strings str, integers int/uint, other numbers float64. Returns 0, or
 * -EINVAL for text that is not exactly one JSON value, -ENOMEM.
 */
int json_to_msgpack(const char *text, size_t len, msgpack_sbuffer *out)
	__attribute__((warn_unused_result));

/*
 * Parses text into a msgpack object living in *zone_out's unpacked
 * result, which the caller destroys with msgpack_unpacked_destroy().
 */
int json_parse(const char *text, size_t len, msgpack_unpacked *out)
	__attribute__((warn_unused_result));

/* Appends s as a JSON string literal (quoted, escaped). */
int json_put_str(struct evbuffer *b, const char *s, size_t len);
int json_put_cstr(struct evbuffer *b, const char *s);
/* Appends `"key":` */
int json_put_key(struct evbuffer *b, const char *key);
/* Appends a msgpack object as JSON (bin as a base64 string). */
int json_put_object(struct evbuffer *b, const msgpack_object *o);

/* Base64 (RFC 4648). encode: out needs base64_encoded_len(n) bytes
 * (padded), returns the length written. decode (padding optional):
 * returns the bytes written into out, which needs len / 4 * 3 + 3
 * bytes, or -EINVAL. */
size_t base64_encoded_len(size_t n);
size_t base64_encode(const void *in, size_t n, char *out);
long base64_decode(const char *in, size_t len, void *out);

#endif
