#include "autoconfig.h"

#include "sandbox/json.h"

#include <errno.h>
#include <event2/buffer.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * A recursive-descent parser. msgpack wants a container's element count
 * before its elements, so each array or object packs its elements into a
 * buffer of its own and is copied into its parent when complete: a copy
 * per nesting level, which is nothing for E2B's shallow answers.
 */
struct json_parser {
	const char *p, *end;
	unsigned depth;
};

static int parse_value(struct json_parser *jp, msgpack_packer *pk);

static void skip_ws(struct json_parser *jp)
{
	while (jp->p < jp->end && (*jp->p == ' ' || *jp->p == '\t' || *jp->p == '\n' || *jp->p == '\r'))
		jp->p++;
}

static int hex4(const char *s, unsigned *v)
{
	*v = 0;
	for (int i = 0; i < 4; i++) {
		char c = s[i];

		*v <<= 4;
		if (c >= '0' && c <= '9')
			*v |= (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			*v |= (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			*v |= (unsigned)(c - 'A' + 10);
		else
			return -EINVAL;
	}
	return 0;
}

static size_t put_utf8(char *out, unsigned cp)
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xc0 | (cp >> 6));
		out[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xe0 | (cp >> 12));
		out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		out[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	out[0] = (char)(0xf0 | (cp >> 18));
	out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
	out[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/* A string literal at jp->p, unescaped into a malloc'd buffer. */
static int parse_string(struct json_parser *jp, char **out, size_t *outlen)
{
	const char *s = jp->p + 1;
	size_t n = 0;
	char *buf;

	if (jp->p >= jp->end || *jp->p != '"')
		return -EINVAL;
	/* Unescaping never makes a string longer than its literal. */
	buf = malloc((size_t)(jp->end - s) + 1);
	if (!buf)
		return -ENOMEM;
	while (s < jp->end && *s != '"') {
		unsigned char c = (unsigned char)*s;

		if (c < 0x20)
			goto bad;
		if (c != '\\') {
			buf[n++] = (char)c;
			s++;
			continue;
		}
		if (++s >= jp->end)
			goto bad;
		switch (*s) {
		case '"': case '\\': case '/':
			buf[n++] = *s;
			break;
		case 'b': buf[n++] = '\b'; break;
		case 'f': buf[n++] = '\f'; break;
		case 'n': buf[n++] = '\n'; break;
		case 'r': buf[n++] = '\r'; break;
		case 't': buf[n++] = '\t'; break;
		case 'u': {
			unsigned cp, lo;

			if (jp->end - s < 5 || hex4(s + 1, &cp) < 0)
				goto bad;
			s += 4;
			if (cp >= 0xd800 && cp < 0xdc00) {
				if (jp->end - s < 7 || s[1] != '\\' || s[2] != 'u' || hex4(s + 3, &lo) < 0 ||
				    lo < 0xdc00 || lo >= 0xe000)
					goto bad;
				cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
				s += 6;
			} else if (cp >= 0xdc00 && cp < 0xe000) {
				goto bad;
			}
			n += put_utf8(buf + n, cp);
			break;
		}
		default:
			goto bad;
		}
		s++;
	}
	if (s >= jp->end)
		goto bad;
	jp->p = s + 1;
	*out = buf;
	*outlen = n;
	return 0;
bad:
	free(buf);
	return -EINVAL;
}

static int parse_number(struct json_parser *jp, msgpack_packer *pk)
{
	const char *s = jp->p;
	bool integral = true;
	char tmp[64];
	size_t n;
	char *end;

	if (s < jp->end && *s == '-')
		s++;
	if (s >= jp->end || *s < '0' || *s > '9')
		return -EINVAL;
	while (s < jp->end && ((*s >= '0' && *s <= '9') || *s == '.' || *s == 'e' || *s == 'E' ||
			       *s == '+' || *s == '-')) {
		if (*s == '.' || *s == 'e' || *s == 'E')
			integral = false;
		s++;
	}
	n = (size_t)(s - jp->p);
	if (n >= sizeof(tmp))
		return -EINVAL;
	memcpy(tmp, jp->p, n);
	tmp[n] = '\0';
	errno = 0;
	if (integral && tmp[0] == '-') {
		long long v = strtoll(tmp, &end, 10);

		if (!errno && *end == '\0') {
			jp->p = s;
			return msgpack_pack_int64(pk, v);
		}
	} else if (integral) {
		unsigned long long v = strtoull(tmp, &end, 10);

		if (!errno && *end == '\0') {
			jp->p = s;
			return msgpack_pack_uint64(pk, v);
		}
	}
	errno = 0;
	double d = strtod(tmp, &end);

	if (*end != '\0' || !isfinite(d))
		return -EINVAL;
	jp->p = s;
	return msgpack_pack_double(pk, d);
}

static int parse_literal(struct json_parser *jp, const char *word)
{
	size_t n = strlen(word);

	if ((size_t)(jp->end - jp->p) < n || memcmp(jp->p, word, n))
		return -EINVAL;
	jp->p += n;
	return 0;
}

/* An array or object: elements into a buffer of its own, then copied. */
static int parse_container(struct json_parser *jp, msgpack_packer *pk, bool object)
{
	char close = object ? '}' : ']';
	msgpack_sbuffer sb;
	msgpack_packer inner;
	uint32_t count = 0;
	int rc = 0;

	if (++jp->depth > JSON_MAX_DEPTH)
		return -EINVAL;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&inner, &sb, msgpack_sbuffer_write);
	jp->p++;
	skip_ws(jp);
	if (jp->p < jp->end && *jp->p == close) {
		jp->p++;
		goto done;
	}
	for (;;) {
		skip_ws(jp);
		if (object) {
			char *key;
			size_t klen;

			rc = parse_string(jp, &key, &klen);
			if (rc < 0)
				break;
			rc = msgpack_pack_str_with_body(&inner, key, klen) ? -ENOMEM : 0;
			free(key);
			skip_ws(jp);
			if (rc == 0 && (jp->p >= jp->end || *jp->p++ != ':'))
				rc = -EINVAL;
			if (rc < 0)
				break;
		}
		rc = parse_value(jp, &inner);
		if (rc < 0)
			break;
		count++;
		skip_ws(jp);
		if (jp->p < jp->end && *jp->p == ',') {
			jp->p++;
			continue;
		}
		if (jp->p < jp->end && *jp->p == close) {
			jp->p++;
			break;
		}
		rc = -EINVAL;
		break;
	}
done:
	if (rc == 0) {
		if (object ? msgpack_pack_map(pk, count) : msgpack_pack_array(pk, count))
			rc = -ENOMEM;
		else if (sb.size && pk->callback(pk->data, sb.data, sb.size))
			rc = -ENOMEM;
	}
	msgpack_sbuffer_destroy(&sb);
	jp->depth--;
	return rc;
}

static int parse_value(struct json_parser *jp, msgpack_packer *pk)
{
	int rc;

	skip_ws(jp);
	if (jp->p >= jp->end)
		return -EINVAL;
	switch (*jp->p) {
	case '{':
		return parse_container(jp, pk, true);
	case '[':
		return parse_container(jp, pk, false);
	case '"': {
		char *s;
		size_t n;

		rc = parse_string(jp, &s, &n);
		if (rc < 0)
			return rc;
		rc = msgpack_pack_str_with_body(pk, s, n) ? -ENOMEM : 0;
		free(s);
		return rc;
	}
	case 't':
		return parse_literal(jp, "true") ?: msgpack_pack_true(pk);
	case 'f':
		return parse_literal(jp, "false") ?: msgpack_pack_false(pk);
	case 'n':
		return parse_literal(jp, "null") ?: msgpack_pack_nil(pk);
	default:
		return parse_number(jp, pk);
	}
}

int json_to_msgpack(const char *text, size_t len, msgpack_sbuffer *out)
{
	struct json_parser jp = { .p = text, .end = text + len };
	msgpack_packer pk;
	int rc;

	msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
	rc = parse_value(&jp, &pk);
	if (rc < 0)
		return rc == -1 ? -ENOMEM : rc;
	skip_ws(&jp);
	return jp.p == jp.end ? 0 : -EINVAL;
}

int json_parse(const char *text, size_t len, msgpack_unpacked *out)
{
	msgpack_sbuffer sb;
	size_t off = 0;
	int rc;

	msgpack_sbuffer_init(&sb);
	rc = json_to_msgpack(text, len, &sb);
	msgpack_unpacked_init(out);
	if (rc == 0 && msgpack_unpack_next(out, sb.data, sb.size, &off) != MSGPACK_UNPACK_SUCCESS)
		rc = -ENOMEM;
	/* The object's strings point into the buffer: the zone keeps it. A
	 * scalar (E2B answers some calls with `null`) has no zone and points
	 * into nothing. */
	if (rc == 0 && out->zone && !msgpack_zone_push_finalizer(out->zone, free, sb.data))
		rc = -ENOMEM;
	if (rc == 0 && out->zone)
		(void)msgpack_sbuffer_release(&sb);
	msgpack_sbuffer_destroy(&sb);
	if (rc < 0)
		msgpack_unpacked_destroy(out);
	return rc;
}

int json_put_str(struct evbuffer *b, const char *s, size_t len)
{
	size_t run = 0;
	int rc = evbuffer_add(b, "\"", 1);

	for (size_t i = 0; i < len && rc == 0; i++) {
		unsigned char c = (unsigned char)s[i];
		char esc[8];

		if (c >= 0x20 && c != '"' && c != '\\')
			continue;
		rc = evbuffer_add(b, s + run, i - run);
		snprintf(esc, sizeof(esc), c == '"' ? "\\\"" : c == '\\' ? "\\\\" : c == '\n' ? "\\n" : "\\u%04x", c);
		if (rc == 0)
			rc = evbuffer_add(b, esc, strlen(esc));
		run = i + 1;
	}
	if (rc == 0)
		rc = evbuffer_add(b, s + run, len - run);
	if (rc == 0)
		rc = evbuffer_add(b, "\"", 1);
	return rc < 0 ? -ENOMEM : 0;
}

int json_put_cstr(struct evbuffer *b, const char *s)
{
	return json_put_str(b, s, strlen(s));
}

int json_put_key(struct evbuffer *b, const char *key)
{
	int rc = json_put_cstr(b, key);

	return rc ?: (evbuffer_add(b, ":", 1) < 0 ? -ENOMEM : 0);
}

int json_put_object(struct evbuffer *b, const msgpack_object *o)
{
	int rc = 0;

	switch (o->type) {
	case MSGPACK_OBJECT_NIL:
		return evbuffer_add_printf(b, "null") < 0 ? -ENOMEM : 0;
	case MSGPACK_OBJECT_BOOLEAN:
		return evbuffer_add_printf(b, o->via.boolean ? "true" : "false") < 0 ? -ENOMEM : 0;
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
		return evbuffer_add_printf(b, "%llu", (unsigned long long)o->via.u64) < 0 ? -ENOMEM : 0;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER:
		return evbuffer_add_printf(b, "%lld", (long long)o->via.i64) < 0 ? -ENOMEM : 0;
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64:
		if (!isfinite(o->via.f64))
			return evbuffer_add_printf(b, "null") < 0 ? -ENOMEM : 0;
		return evbuffer_add_printf(b, "%.17g", o->via.f64) < 0 ? -ENOMEM : 0;
	case MSGPACK_OBJECT_STR:
		return json_put_str(b, o->via.str.ptr, o->via.str.size);
	case MSGPACK_OBJECT_BIN: {
		char *enc = malloc(base64_encoded_len(o->via.bin.size) + 1);

		if (!enc)
			return -ENOMEM;
		rc = json_put_str(b, enc, base64_encode(o->via.bin.ptr, o->via.bin.size, enc));
		free(enc);
		return rc;
	}
	case MSGPACK_OBJECT_ARRAY:
		rc = evbuffer_add(b, "[", 1);
		for (uint32_t i = 0; rc == 0 && i < o->via.array.size; i++) {
			if (i)
				rc = evbuffer_add(b, ",", 1);
			if (rc == 0)
				rc = json_put_object(b, &o->via.array.ptr[i]);
		}
		return rc ?: (evbuffer_add(b, "]", 1) < 0 ? -ENOMEM : 0);
	case MSGPACK_OBJECT_MAP:
		rc = evbuffer_add(b, "{", 1);
		for (uint32_t i = 0; rc == 0 && i < o->via.map.size; i++) {
			const msgpack_object *k = &o->via.map.ptr[i].key;

			if (i)
				rc = evbuffer_add(b, ",", 1);
			if (rc == 0 && k->type != MSGPACK_OBJECT_STR)
				return -EINVAL;
			if (rc == 0)
				rc = json_put_str(b, k->via.str.ptr, k->via.str.size);
			if (rc == 0)
				rc = evbuffer_add(b, ":", 1);
			if (rc == 0)
				rc = json_put_object(b, &o->via.map.ptr[i].val);
		}
		return rc ?: (evbuffer_add(b, "}", 1) < 0 ? -ENOMEM : 0);
	default:
		return -EINVAL;
	}
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t base64_encoded_len(size_t n)
{
	return (n + 2) / 3 * 4;
}

size_t base64_encode(const void *in, size_t n, char *out)
{
	const unsigned char *s = in;
	size_t o = 0;

	for (size_t i = 0; i < n; i += 3) {
		unsigned v = (unsigned)s[i] << 16;

		if (i + 1 < n)
			v |= (unsigned)s[i + 1] << 8;
		if (i + 2 < n)
			v |= s[i + 2];
		out[o++] = b64[(v >> 18) & 63];
		out[o++] = b64[(v >> 12) & 63];
		out[o++] = i + 1 < n ? b64[(v >> 6) & 63] : '=';
		out[o++] = i + 2 < n ? b64[v & 63] : '=';
	}
	return o;
}

static int b64_value(char c)
{
	const char *p = c ? strchr(b64, c) : NULL;

	return p ? (int)(p - b64) : -1;
}

long base64_decode(const char *in, size_t len, void *out)
{
	unsigned char *d = out;
	unsigned acc = 0;
	int bits = 0;
	size_t o = 0, i;

	for (i = 0; i < len && in[i] != '='; i++) {
		int v = b64_value(in[i]);

		if (v < 0)
			return -EINVAL;
		acc = (acc << 6) | (unsigned)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			d[o++] = (unsigned char)(acc >> bits);
		}
	}
	/* Only padding may follow, and no more than the last group needs. */
	for (; i < len; i++)
		if (in[i] != '=')
			return -EINVAL;
	return (long)o;
}
