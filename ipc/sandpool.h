/*
 * libsandpool: the client library for sandpoold's msgpack-RPC Unix socket.
 * The wire contract is docs/PROTOCOL.md; this header is its C face.
 *
 * A struct sandpool is one blocking connection. It is not thread-safe: use
 * one per thread. Strings returned inside result structs belong to the
 * struct and are released by the matching *_free() call.
 */
#ifndef SANDPOOL_H
#define SANDPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SANDPOOL_PROTOCOL_VERSION 1

/* Stable error codes carried in {code, message} error maps. X(name, text):
 * name is the C suffix, text the wire string. */
#define SANDPOOL_ERRORS(X)                                                                         \
	X(BAD_REQUEST, "bad_request")                                                              \
	X(UNKNOWN_METHOD, "unknown_method")                                                        \
	X(UNKNOWN_TEMPLATE, "unknown_template")                                                    \
	X(NOT_FOUND, "not_found")                                                                  \
	X(FORBIDDEN, "forbidden")                                                                  \
	X(POOL_EXHAUSTED, "pool_exhausted")                                                        \
	X(TIMEOUT, "timeout")                                                                      \
	X(LIMIT_EXCEEDED, "limit_exceeded")                                                        \
	X(BACKEND_ERROR, "backend_error")                                                          \
	X(ABORTED, "aborted")                                                                      \
	X(SHUTTING_DOWN, "shutting_down")                                                          \
	X(INTERNAL, "internal")                                                                    \
	X(CONNECTION, "connection") /* client side only: the socket failed */

enum sandpool_errcode {
	SANDPOOL_OK = 0,
#define SANDPOOL_X(name, text) SANDPOOL_E_##name,
	SANDPOOL_ERRORS(SANDPOOL_X)
#undef SANDPOOL_X
};

/* Wire string of a code, and back (unknown strings map to INTERNAL). */
const char *sandpool_errcode_name(enum sandpool_errcode code);
enum sandpool_errcode sandpool_errcode_from_name(const char *name, size_t len);

#ifdef __cplusplus
}
#endif

#endif
