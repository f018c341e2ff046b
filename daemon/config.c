#include "autoconfig.h"

#include "daemon/config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>
#include <unistd.h>

#include "daemon/log.h"
#include "store/ledger_path.h"

#ifndef SANDPOOL_AGENT_PATH
#error "SANDPOOL_AGENT_PATH (the installed sandpool-agent) comes from Makefile.am"
#endif

/* A longer line is a mistake (or not a config file at all). */
#define CONFIG_MAX_LINE 4096
/* Config files are a few KiB; the cap keeps a wrong --config cheap. */
#define CONFIG_MAX_FILE (1u << 20)
#define TEMPLATE_NAME_MAX 64
/* bind(2) takes at most this many bytes of path, NUL excluded. */
#define SOCKET_PATH_MAX (sizeof(((struct sockaddr_un *)0)->sun_path) - 1)

#define KIB 1024ull
#define MIB (1024 * KIB)
#define GIB (1024 * MIB)
#define SEC_MS 1000ull
#define MIN_MS (60 * SEC_MS)
#define HOUR_MS (60 * MIN_MS)
#define DAY_MS (24 * HOUR_MS)

/* The key names dump_binds() writes back. */
#define KEY_BIND_RO "bind_ro"
#define KEY_BIND_RW "bind_rw"

enum config_section {
	SECTION_NONE,	  /* before the first section line */
	SECTION_DAEMON,	  /* keys land in struct config */
	SECTION_TEMPLATE, /* keys land in the struct template_config being parsed */
};

enum config_type {
	TYPE_STRING,	/* char *; choices, when set, are the only values allowed */
	TYPE_PATH,	/* char *, absolute; choices are words allowed besides paths */
	TYPE_BOOL,	/* bool */
	TYPE_UINT,	/* unsigned (also uid_t, gid_t) */
	TYPE_SIZE,	/* uint64_t bytes */
	TYPE_DURATION,	/* uint64_t milliseconds */
	TYPE_MODE,	/* mode_t, octal */
	TYPE_MILLI,	/* uint64_t thousandths: "1.5" -> 1500 */
	TYPE_DOUBLE,	/* double, finite, >= 0, at most max; choices: words meaning "auto" (NAN) */
	TYPE_ENUM,	/* an enum, the index of its name in choices */
	TYPE_LOG_LEVEL, /* int LOG_ERR .. LOG_DEBUG; choices are the names */
	TYPE_BIND_RO,	/* list of struct bind_mount, shared with TYPE_BIND_RW */
	TYPE_BIND_RW,
	TYPE_ENV, /* list of "KEY=VALUE" */
};

struct config_key {
	enum config_section section;
	const char *name;
	enum config_type type;
	size_t offset;	     /* of the field in struct config or struct template_config */
	size_t count_offset; /* lists: of the unsigned item count */
	const char *def;     /* default, parsed like a value read from the file */
	int (*def_fn)(char *buf, size_t len); /* computes the default text instead */
	uint64_t min, max; /* numbers: range; strings: max length; lists: max items */
	const char *const *choices; /* NULL-terminated; see enum config_type */
	const char *help;
};

/* Everything a parse step needs to label its errors. */
struct parser {
	struct config *cfg;
	const char *name; /* file name in messages */
	unsigned line;	  /* 0 once the text is parsed */
	enum config_section section;
	struct template_config *tmpl; /* the [template] being parsed */
	uint64_t seen;		      /* bit per key index set in this section */
	bool daemon_seen;
	char *err;
	size_t errlen;
};

/* The type behind each key: numbers have scan/format, the rest parse/dump. */
struct type_ops {
	int (*scan)(const char *s, uint64_t *out);
	void (*format)(uint64_t v, char *buf, size_t len);
	size_t width; /* numbers: bytes of the field */
	const char *what; /* numbers: "a size (like ...)" for errors */
	int (*parse)(const struct config_key *k, void *base, const char *val, char *why,
		     size_t whylen);
	void (*dump)(const struct config_key *k, const void *base, FILE *out);
	void (*release)(const struct config_key *k, void *base);
	bool list; /* repeatable: each line appends */
};

_Static_assert(sizeof(uid_t) == sizeof(unsigned) && sizeof(gid_t) == sizeof(unsigned) &&
		       sizeof(mode_t) == sizeof(unsigned),
	       "TYPE_UINT and TYPE_MODE store through unsigned *");
_Static_assert(sizeof(enum backend_kind) == sizeof(int) &&
		       sizeof(enum sandbox_network) == sizeof(int),
	       "TYPE_ENUM stores through int *");

const char config_embedded_default[] = "# sandpoold's built-in configuration\n"
				       "[daemon]\n"
				       "\n"
				       "[template python]\n"
				       "language = python\n"
				       "min_warm = 2\n"
				       "\n"
				       "[template shell]\n"
				       "language = shell\n"
				       "min_warm = 2\n";

/* snprintf that reports truncation instead of hiding it. */
static int path_format(char *buf, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int path_format(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, len, fmt, ap);
	va_end(ap);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* Root gets the system location; others their session's runtime dir. */
static int default_runtime_dir(char *buf, size_t len)
{
	const char *xdg = getenv("XDG_RUNTIME_DIR");

	if (geteuid() == 0)
		return path_format(buf, len, "/run/sandpool");
	if (xdg && xdg[0] == '/')
		return path_format(buf, len, "%s/sandpool", xdg);
	return path_format(buf, len, "/tmp/sandpool-%u", (unsigned)geteuid());
}

static int default_socket(char *buf, size_t len)
{
	char dir[PATH_MAX];
	int rc = default_runtime_dir(dir, sizeof(dir));

	return rc < 0 ? rc : path_format(buf, len, "%s/sandpool.sock", dir);
}

int config_default_agent_path(char *buf, size_t len)
{
	char exe[PATH_MAX];
	ssize_t n;
	char *slash;

	if (access(SANDPOOL_AGENT_PATH, X_OK) == 0)
		return path_format(buf, len, "%s", SANDPOOL_AGENT_PATH);
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n > 0) {
		exe[n] = '\0';
		slash = strrchr(exe, '/');
		if (slash) {
			*slash = '\0';
			if (path_format(buf, len, "%s/sandpool-agent", exe) == 0 &&
			    access(buf, X_OK) == 0)
				return 0;
		}
	}
	return path_format(buf, len, "%s", SANDPOOL_AGENT_PATH);
}

static const char *const backend_names[] = { [BACKEND_LOCAL] = "local", [BACKEND_E2B] = "e2b",
					     NULL };
static const char *const network_names[] = { [NETWORK_NONE] = "none", [NETWORK_HOST] = "host",
					     NULL };
static const char *const log_level_names[] = { "error", "warn", "info", "debug", NULL };
static const char *const language_names[] = { "python", "javascript", "bash", "shell", NULL };
static const char *const rootfs_words[] = { "host", NULL };
static const char *const ledger_words[] = { LEDGER_PATH_OFF, NULL };
static const char *const auto_words[] = { "auto", NULL };

#define DAEMON(key, ty, field)                                                                     \
	.section = SECTION_DAEMON, .name = key, .type = ty, .offset = offsetof(struct config, field)
#define TEMPLATE(key, ty, field)                                                                   \
	.section = SECTION_TEMPLATE, .name = key, .type = ty,                                      \
	.offset = offsetof(struct template_config, field)

static const struct config_key config_keys[] = {
	{ DAEMON("socket", TYPE_PATH, socket_path), .def_fn = default_socket,
	  .max = SOCKET_PATH_MAX, .help = "Unix socket clients connect to" },
	{ DAEMON("socket_mode", TYPE_MODE, socket_mode), .def = "0660", .max = 0777,
	  .help = "permission bits of the socket" },
	{ DAEMON("socket_group", TYPE_STRING, socket_group), .max = 255,
	  .help = "group owning the socket; empty: the daemon's group" },
	{ DAEMON("state_dir", TYPE_PATH, state_dir), .def_fn = default_runtime_dir,
	  .max = PATH_MAX - 1, .help = "directory for the daemon's lock and runtime state" },
	{ DAEMON("log_level", TYPE_LOG_LEVEL, log_level), .def = "info", .choices = log_level_names,
	  .help = "least severe level logged" },
	{ DAEMON("max_connections", TYPE_UINT, max_connections), .def = "1024", .min = 1,
	  .max = 65536, .help = "client connections open at once" },
	{ DAEMON("max_inflight", TYPE_UINT, max_inflight), .def = "64", .min = 1, .max = 4096,
	  .help = "requests in flight per connection" },
	{ DAEMON("max_leases_per_conn", TYPE_UINT, max_leases_per_conn), .def = "256", .min = 1,
	  .max = 65536, .help = "leases one connection may hold" },
	{ DAEMON("max_frame", TYPE_SIZE, max_frame), .def = "4M", .min = KIB, .max = 64 * MIB,
	  .help = "largest message, in either direction" },
	{ DAEMON("max_timeout", TYPE_DURATION, max_timeout_ms), .def = "1h", .min = SEC_MS,
	  .max = 7 * DAY_MS, .help = "ceiling for any timeout_ms or wait_ms" },
	{ DAEMON("drain_timeout", TYPE_DURATION, drain_timeout_ms), .def = "30s", .max = DAY_MS,
	  .help = "at SIGTERM, how long leases in use may run before they are ended" },
	{ DAEMON("health_interval", TYPE_DURATION, health_interval_ms), .def = "10s", .min = 100,
	  .max = HOUR_MS, .help = "each sandbox must answer a health check this often, or is replaced" },
	{ DAEMON("max_sandboxes", TYPE_UINT, max_sandboxes), .def = "64", .min = 1, .max = 4096,
	  .help = "sandboxes alive at once, all templates together" },
	{ DAEMON("create_concurrency", TYPE_UINT, create_concurrency), .def = "4", .min = 1,
	  .max = 256, .help = "sandbox creations in flight, all templates together" },
	{ DAEMON("agent_path", TYPE_PATH, agent_path), .def_fn = config_default_agent_path,
	  .max = PATH_MAX - 1, .help = "the sandpool-agent binary run as PID 1 of each sandbox" },
	{ DAEMON("sandbox_uid", TYPE_UINT, sandbox_uid), .def = "65534", .min = 1,
	  .max = UINT32_MAX - 1, .help = "uid user code runs as inside sandboxes (not 0)" },
	{ DAEMON("sandbox_gid", TYPE_UINT, sandbox_gid), .def = "65534", .min = 1,
	  .max = UINT32_MAX - 1, .help = "gid user code runs as inside sandboxes (not 0)" },
	{ DAEMON("host_uid_base", TYPE_UINT, host_uid_base), .def = "1000000000", .min = 65536,
	  .max = 4000000000u,
	  .help = "first host uid/gid for sandboxes; each takes two (its root and its user)" },
	{ DAEMON("cgroup_root", TYPE_STRING, cgroup_root), .max = 1024,
	  .help = "cgroup for sandboxes, relative to the hierarchy root; empty: automatic" },
	{ DAEMON("ledger_path", TYPE_PATH, ledger_path), .def_fn = ledger_default_path,
	  .max = PATH_MAX - 1, .choices = ledger_words,
	  .help = "the usage and cost ledger (SQLite, docs/LEDGER.md); off: keep none" },
	{ DAEMON("ledger_flush", TYPE_DURATION, ledger_flush_ms), .def = "200ms", .min = 10,
	  .max = MIN_MS, .help = "ledger records are committed this often; a crash loses at most this much" },
	{ DAEMON("ledger_retention", TYPE_DURATION, ledger_retention_ms), .def = "400d",
	  .max = 100 * 365 * DAY_MS, .help = "ledger rows older than this are deleted; 0: never" },
	{ DAEMON("ledger_backlog", TYPE_UINT, ledger_backlog), .def = "100000", .min = 100,
	  .max = 10000000, .help = "ledger records held while the database cannot take them; more are dropped" },

	{ TEMPLATE("enabled", TYPE_BOOL, enabled), .def = "yes",
	  .help = "no: skip this template without deleting its section" },
	{ TEMPLATE("backend", TYPE_ENUM, backend), .def = "local", .choices = backend_names,
	  .help = "what runs the sandboxes" },
	{ TEMPLATE("language", TYPE_STRING, language), .def = "shell", .max = 64,
	  .choices = language_names, .help = "the language this template runs; code.run's default" },
	{ TEMPLATE("min_warm", TYPE_UINT, min_warm), .def = "2", .max = 1024,
	  .help = "sandboxes kept ready to lease" },
	{ TEMPLATE("max_creating", TYPE_UINT, max_creating), .def = "4", .min = 1, .max = 256,
	  .help = "creations in flight for this template (create_concurrency caps all)" },
	{ TEMPLATE("max_warm", TYPE_UINT, max_warm), .def = "8", .max = 4096,
	  .help = "most sandboxes kept warm when demand is high (capped at max_total)" },
	{ TEMPLATE("max_total", TYPE_UINT, max_total), .def = "8", .min = 1, .max = 4096,
	  .help = "sandboxes alive at once: warm, starting and leased" },
	{ TEMPLATE("timeout", TYPE_DURATION, timeout_ms), .def = "30s", .min = 1, .max = 7 * DAY_MS,
	  .help = "exec timeout when a request gives none; at most max_timeout" },
	{ TEMPLATE("lease_ttl", TYPE_DURATION, lease_ttl_ms), .def = "10m", .min = SEC_MS,
	  .max = 30 * DAY_MS, .help = "a lease not released by then is ended" },
	{ TEMPLATE("max_warm_age", TYPE_DURATION, max_warm_age_ms), .def = "30m", .min = SEC_MS,
	  .max = 30 * DAY_MS, .help = "a warm sandbox older than this is replaced by a fresh one" },
	{ TEMPLATE("session_idle_ttl", TYPE_DURATION, session_idle_ttl_ms), .def = "10m", .min = 1,
	  .max = 30 * DAY_MS, .help = "a session's sandbox unleased this long is destroyed" },
	{ TEMPLATE("session_max_age", TYPE_DURATION, session_max_age_ms), .def = "24h", .min = 1,
	  .max = 365 * DAY_MS, .help = "a session ends this long after it began, leased or not" },
	{ TEMPLATE("max_output", TYPE_SIZE, max_output), .def = "1M", .min = KIB, .max = GIB,
	  .help = "stdout plus stderr kept per exec; more kills the process" },
	{ TEMPLATE("workspace_size", TYPE_SIZE, workspace_size), .def = "64M", .min = MIB,
	  .max = 64 * GIB, .help = "size of the /workspace tmpfs" },
	{ TEMPLATE("memory", TYPE_SIZE, memory), .def = "512M", .min = 16 * MIB, .max = 1024 * GIB,
	  .help = "memory limit of the whole sandbox (cgroup), and its size for costing" },
	{ TEMPLATE("pids", TYPE_UINT, pids), .def = "256", .min = 8, .max = 65536,
	  .help = "processes and threads alive at once in the sandbox (cgroup)" },
	{ TEMPLATE("cpus", TYPE_MILLI, cpu_milli), .def = "1", .min = 10, .max = 1024 * 1000,
	  .help = "CPU time the sandbox may use, in CPUs (cgroup quota), and vCPUs for costing" },
	{ TEMPLATE("cost_per_vcpu_second", TYPE_DOUBLE, cost_per_vcpu_second), .def = "auto",
	  .max = 1, .choices = auto_words,
	  .help = "dollars per vCPU (cpus) per second a sandbox lives; auto: e2b's rate, else 0" },
	{ TEMPLATE("cost_per_gib_second", TYPE_DOUBLE, cost_per_gib_second), .def = "auto",
	  .max = 1, .choices = auto_words,
	  .help = "dollars per GiB of memory per second a sandbox lives; auto: e2b's rate, else 0" },
	{ TEMPLATE("network", TYPE_ENUM, network), .def = "none", .choices = network_names,
	  .help = "none: only loopback; host: the host's network" },
	{ TEMPLATE("rootfs", TYPE_PATH, rootfs), .def = "host", .max = PATH_MAX - 1,
	  .choices = rootfs_words,
	  .help = "host: the host's /usr and friends, read-only; or a directory" },
	{ TEMPLATE(KEY_BIND_RO, TYPE_BIND_RO, binds),
	  .count_offset = offsetof(struct template_config, n_binds), .max = CONFIG_MAX_BINDS,
	  .help = "read-only bind SOURCE:DEST; bind_rw: read-write; both repeat, in mount order" },
	{ TEMPLATE(KEY_BIND_RW, TYPE_BIND_RW, binds),
	  .count_offset = offsetof(struct template_config, n_binds), .max = CONFIG_MAX_BINDS,
	  .help = "read-write bind mount SOURCE:DEST; repeat the key for more" },
	{ TEMPLATE("env", TYPE_ENV, env), .count_offset = offsetof(struct template_config, n_env),
	  .max = CONFIG_MAX_ENV, .help = "KEY=VALUE added to every exec; repeat the key for more" },
	{ TEMPLATE("preload", TYPE_STRING, preload), .max = CONFIG_MAX_LINE,
	  .help = "code run in the language's default context before a sandbox is warm; empty: none" },
	{ TEMPLATE("max_file_size", TYPE_SIZE, max_file_size), .def = "16M", .min = KIB, .max = GIB,
	  .help = "data in one files.write or files.read (max_frame bounds it as well)" },
	{ TEMPLATE("e2b_template", TYPE_STRING, e2b_template), .def = "code-interpreter-v1", .max = 128,
	  .help = "e2b: the E2B template sandboxes are created from" },
	{ TEMPLATE("e2b_api_url", TYPE_STRING, e2b_api_url), .max = 1024,
	  .help = "e2b: the control-plane API; empty: https://api.<e2b_domain>" },
	{ TEMPLATE("e2b_domain", TYPE_STRING, e2b_domain), .def = "e2b.app", .max = 253,
	  .help = "e2b: the domain of E2B's API and sandbox hosts" },
	{ TEMPLATE("e2b_sandbox_url", TYPE_STRING, e2b_sandbox_url), .max = 1024,
	  .help = "e2b: send every in-sandbox request here, routed by E2b-Sandbox-Id/-Port headers" },
	{ TEMPLATE("api_key_env", TYPE_STRING, api_key_env), .def = "E2B_API_KEY", .max = 128,
	  .help = "e2b: the environment variable holding the API key (never logged or stored)" },
	{ TEMPLATE("e2b_timeout", TYPE_DURATION, e2b_timeout_ms), .def = "5m", .min = 2 * SEC_MS,
	  .max = DAY_MS, .help = "e2b: E2B's TTL for a sandbox, renewed every third of it while kept" },
};

#undef DAEMON
#undef TEMPLATE

#define KEYS_END (config_keys + ARRAY_SIZE(config_keys))

_Static_assert(ARRAY_SIZE(config_keys) <= 64, "struct parser's seen mask has 64 bits");

static void *key_field(const struct config_key *k, const void *base)
{
	return (char *)base + k->offset;
}

static unsigned *key_count(const struct config_key *k, const void *base)
{
	return (unsigned *)((char *)base + k->count_offset);
}

/* bind_ro and bind_rw fill one array: free and dump it once, by the first. */
static bool key_shares_field(const struct config_key *k)
{
	return k > config_keys && k[-1].section == k->section && k[-1].offset == k->offset;
}

/* Keys without a default may be left unset, or set to "" to unset them. */
static bool key_optional(const struct config_key *k)
{
	return !k->def && !k->def_fn;
}

static const struct config_key *key_find(enum config_section section, const char *name)
{
	for (const struct config_key *k = config_keys; k < KEYS_END; k++)
		if (k->section == section && !strcmp(k->name, name))
			return k;
	return NULL;
}

static int choice_find(const char *const *choices, const char *s)
{
	for (int i = 0; choices[i]; i++)
		if (!strcmp(choices[i], s))
			return i;
	return -1;
}

static int why_not_choice(const struct config_key *k, const char *val, char *why, size_t whylen)
{
	size_t off = (size_t)snprintf(why, whylen, "'%s' is not one of:", val);

	for (int i = 0; k->choices[i] && off < whylen; i++)
		off += (size_t)snprintf(why + off, whylen - off, "%s %s", i ? "," : "",
					k->choices[i]);
	return -EINVAL;
}

/* Leading digits of s in base (at most 10); *end is left past them. */
static int scan_digits(const char *s, unsigned base, uint64_t *out, const char **end)
{
	const char *c;
	uint64_t v = 0;

	for (c = s; *c >= '0' && *c < '0' + (int)base; c++)
		if (__builtin_mul_overflow(v, base, &v) ||
		    __builtin_add_overflow(v, (uint64_t)(*c - '0'), &v))
			return -ERANGE;
	if (c == s)
		return -EINVAL;
	*out = v;
	*end = c;
	return 0;
}

static int scan_whole(const char *s, unsigned base, uint64_t *out)
{
	const char *end;
	int rc = scan_digits(s, base, out, &end);

	if (rc == 0 && *end)
		rc = -EINVAL;
	return rc;
}

static int scan_uint(const char *s, uint64_t *out)
{
	return scan_whole(s, 10, out);
}

static int scan_mode(const char *s, uint64_t *out)
{
	return scan_whole(s, 8, out);
}

/* A decimal with at most three fractional digits, in thousandths. */
static int scan_milli(const char *s, uint64_t *out)
{
	const char *end;
	uint64_t whole, frac = 0;
	int rc = scan_digits(s, 10, &whole, &end);
	unsigned digits = 0;

	if (rc < 0)
		return rc;
	if (*end == '.') {
		for (end++; *end >= '0' && *end <= '9' && digits < 3; end++, digits++)
			frac = frac * 10 + (uint64_t)(*end - '0');
		if (digits == 0 || *end)
			return -EINVAL;
		for (; digits < 3; digits++)
			frac *= 10;
	} else if (*end) {
		return -EINVAL;
	}
	if (__builtin_mul_overflow(whole, 1000, out) || __builtin_add_overflow(*out, frac, out))
		return -ERANGE;
	return 0;
}

/* Binary multiples, K = 1 << 10 through T = 1 << 40. */
static const char size_units[] = "KMGT";

static const struct {
	const char *suffix;
	uint64_t ms;
} duration_units[] = {
	{ "d", DAY_MS }, { "h", HOUR_MS }, { "m", MIN_MS }, { "s", SEC_MS }, { "ms", 1 },
};

int config_parse_size(const char *s, uint64_t *out)
{
	const char *end, *unit;
	unsigned shift = 0;
	uint64_t v;
	int rc = scan_digits(s, 10, &v, &end);

	if (rc < 0)
		return rc;
	if (*end && (unit = strchr(size_units, toupper((unsigned char)*end)))) {
		shift = 10 * (unsigned)(unit - size_units + 1);
		end++;
		if (!strcasecmp(end, "ib"))
			end += 2;
	}
	if (!strcasecmp(end, "b"))
		end++;
	if (*end)
		return -EINVAL;
	if (shift && v > UINT64_MAX >> shift)
		return -ERANGE;
	*out = v << shift;
	return 0;
}

int config_parse_duration_ms(const char *s, uint64_t *out)
{
	const char *end, *suffix;
	uint64_t v, ms;
	int rc = scan_digits(s, 10, &v, &end);

	if (rc < 0)
		return rc;
	/* A bare number is seconds, as in most daemons' config files. */
	suffix = *end ? end : "s";
	for (size_t i = 0; i < ARRAY_SIZE(duration_units); i++) {
		if (!strcmp(suffix, duration_units[i].suffix)) {
			if (__builtin_mul_overflow(v, duration_units[i].ms, &ms))
				return -ERANGE;
			*out = ms;
			return 0;
		}
	}
	return -EINVAL;
}

static void format_uint(uint64_t v, char *buf, size_t len)
{
	snprintf(buf, len, "%" PRIu64, v);
}

static void format_mode(uint64_t v, char *buf, size_t len)
{
	snprintf(buf, len, "%04" PRIo64, v);
}

static void format_milli(uint64_t v, char *buf, size_t len)
{
	if (v % 1000 == 0)
		snprintf(buf, len, "%" PRIu64, v / 1000);
	else
		snprintf(buf, len, "%" PRIu64 ".%03" PRIu64, v / 1000, v % 1000);
}

/* The largest unit that divides v exactly, so that parsing it back is lossless. */
static void format_size(uint64_t v, char *buf, size_t len)
{
	for (unsigned i = sizeof(size_units) - 1; v && i-- > 0;) {
		unsigned shift = 10 * (i + 1);

		if (v % (1ull << shift) == 0) {
			snprintf(buf, len, "%" PRIu64 "%c", v >> shift, size_units[i]);
			return;
		}
	}
	format_uint(v, buf, len);
}

static void format_duration(uint64_t ms, char *buf, size_t len)
{
	size_t i = 0;

	while (ms && ms % duration_units[i].ms)
		i++;
	if (ms)
		snprintf(buf, len, "%" PRIu64 "%s", ms / duration_units[i].ms,
			 duration_units[i].suffix);
	else
		format_uint(ms, buf, len);
}

static int string_set(const struct config_key *k, void *base, const char *val, char *why,
		      size_t whylen)
{
	char **field = key_field(k, base);
	char *copy = NULL;

	if (strlen(val) > k->max) {
		snprintf(why, whylen, "longer than %" PRIu64 " bytes", k->max);
		return -EINVAL;
	}
	if (*val && !(copy = strdup(val)))
		return -ENOMEM;
	free(*field);
	*field = copy;
	return 0;
}

static int parse_string(const struct config_key *k, void *base, const char *val, char *why,
			size_t whylen)
{
	if (*val && k->choices && choice_find(k->choices, val) < 0)
		return why_not_choice(k, val, why, whylen);
	return string_set(k, base, val, why, whylen);
}

static int parse_path(const struct config_key *k, void *base, const char *val, char *why,
		      size_t whylen)
{
	if (val[0] == '/' || (k->choices && choice_find(k->choices, val) >= 0))
		return string_set(k, base, val, why, whylen);
	if (k->choices) /* one word per key: rootfs's "host", ledger_path's "off" */
		snprintf(why, whylen, "'%s' is neither '%s' nor an absolute path", val,
			 k->choices[0]);
	else
		snprintf(why, whylen, "'%s' is not an absolute path", val);
	return -EINVAL;
}

static void free_string(const struct config_key *k, void *base)
{
	free(*(char **)key_field(k, base));
}

/* A plain decimal ("0.000014", "1.4e-5"): no sign, hex, inf or nan. */
static int parse_double(const struct config_key *k, void *base, const char *val, char *why,
			size_t whylen)
{
	double *field = key_field(k, base), v;
	char *end;

	if (k->choices && choice_find(k->choices, val) >= 0) {
		*field = NAN;
		return 0;
	}
	errno = 0;
	v = strtod(val, &end);
	if (!isdigit((unsigned char)val[0]) || *end || errno || strpbrk(val, "xX")) {
		snprintf(why, whylen, "'%s' is not a decimal number (like 0.000014 or 1.4e-5)%s%s",
			 val, k->choices ? " nor " : "", k->choices ? k->choices[0] : "");
		return -EINVAL;
	}
	if (v > (double)k->max) {
		snprintf(why, whylen, "%s is out of range 0..%" PRIu64, val, k->max);
		return -ERANGE;
	}
	*field = v;
	return 0;
}

static int parse_bool(const struct config_key *k, void *base, const char *val, char *why,
		      size_t whylen)
{
	static const char *const yes[] = { "yes", "true", "on", "1" };
	static const char *const no[] = { "no", "false", "off", "0" };

	for (size_t i = 0; i < ARRAY_SIZE(yes); i++) {
		if (!strcasecmp(val, yes[i]) || !strcasecmp(val, no[i])) {
			*(bool *)key_field(k, base) = !strcasecmp(val, yes[i]);
			return 0;
		}
	}
	snprintf(why, whylen, "'%s' is not a boolean (yes/no, true/false, on/off, 1/0)", val);
	return -EINVAL;
}

static int parse_enum(const struct config_key *k, void *base, const char *val, char *why,
		      size_t whylen)
{
	int i = choice_find(k->choices, val);

	if (i < 0)
		return why_not_choice(k, val, why, whylen);
	*(int *)key_field(k, base) = i;
	return 0;
}

static int parse_log_level(const struct config_key *k, void *base, const char *val, char *why,
			   size_t whylen)
{
	int level = log_level_from_name(val);

	if (level < 0)
		return why_not_choice(k, val, why, whylen);
	*(int *)key_field(k, base) = level;
	return 0;
}

/* The name of a level the log_level key accepts, or NULL. */
static const char *log_level_name(int level)
{
	for (int i = 0; log_level_names[i]; i++)
		if (log_level_from_name(log_level_names[i]) == level)
			return log_level_names[i];
	return NULL;
}

/* Absolute and free of ".." so that a bind cannot climb out of where it points. */
static int check_bind_path(const char *what, const char *path, char *why, size_t whylen)
{
	const char *c = path;

	if (path[0] != '/') {
		snprintf(why, whylen, "%s '%s' is not an absolute path", what, path);
		return -EINVAL;
	}
	if (strlen(path) >= PATH_MAX) {
		snprintf(why, whylen, "%s is longer than %d bytes", what, PATH_MAX - 1);
		return -EINVAL;
	}
	while (*c) {
		size_t n = strcspn(c, "/");

		if (n == 2 && !strncmp(c, "..", 2)) {
			snprintf(why, whylen, "%s '%s' has a '..' component", what, path);
			return -EINVAL;
		}
		c += n + strspn(c + n, "/");
	}
	return 0;
}

static int bind_check(const struct bind_mount *b, char *why, size_t whylen)
{
	int rc = check_bind_path("source", b->source, why, whylen);

	if (rc == 0)
		rc = check_bind_path("dest", b->dest, why, whylen);
	if (rc == 0 && b->dest[strspn(b->dest, "/")] == '\0') {
		snprintf(why, whylen, "dest may not be /");
		rc = -EINVAL;
	}
	return rc;
}

static int parse_bind(const struct config_key *k, void *base, const char *val, bool writable,
		      char *why, size_t whylen)
{
	struct bind_mount *binds = key_field(k, base);
	unsigned *n = key_count(k, base);
	const char *colon = strchr(val, ':');
	struct bind_mount b = { .writable = writable };
	int rc;

	if (*n >= k->max) {
		snprintf(why, whylen, "more than %" PRIu64 " bind mounts", k->max);
		return -EINVAL;
	}
	if (!colon) {
		snprintf(why, whylen, "'%s' is not SOURCE:DEST", val);
		return -EINVAL;
	}
	b.source = strndup(val, (size_t)(colon - val));
	b.dest = strdup(colon + 1);
	rc = b.source && b.dest ? bind_check(&b, why, whylen) : -ENOMEM;
	if (rc < 0) {
		free(b.source);
		free(b.dest);
		return rc;
	}
	binds[(*n)++] = b;
	return 0;
}

static int parse_bind_ro(const struct config_key *k, void *base, const char *val, char *why,
			 size_t whylen)
{
	return parse_bind(k, base, val, false, why, whylen);
}

static int parse_bind_rw(const struct config_key *k, void *base, const char *val, char *why,
			 size_t whylen)
{
	return parse_bind(k, base, val, true, why, whylen);
}

static void free_binds(const struct config_key *k, void *base)
{
	struct bind_mount *binds = key_field(k, base);
	unsigned n = *key_count(k, base);

	for (unsigned i = 0; i < n; i++) {
		free(binds[i].source);
		free(binds[i].dest);
	}
}

static bool env_name_valid(const char *s, size_t len)
{
	if (!len || !(isalpha((unsigned char)s[0]) || s[0] == '_'))
		return false;
	for (size_t i = 1; i < len; i++)
		if (!(isalnum((unsigned char)s[i]) || s[i] == '_'))
			return false;
	return true;
}

static int parse_env(const struct config_key *k, void *base, const char *val, char *why,
		     size_t whylen)
{
	char **env = key_field(k, base);
	unsigned *n = key_count(k, base);
	size_t len = strcspn(val, "=");

	if (*n >= k->max) {
		snprintf(why, whylen, "more than %" PRIu64 " variables", k->max);
		return -EINVAL;
	}
	if (!val[len]) {
		snprintf(why, whylen, "'%s' is not KEY=VALUE", val);
		return -EINVAL;
	}
	if (!env_name_valid(val, len)) {
		snprintf(why, whylen, "'%.*s' is not a variable name", (int)len, val);
		return -EINVAL;
	}
	for (unsigned i = 0; i < *n; i++) {
		if (!strncmp(env[i], val, len + 1)) {
			snprintf(why, whylen, "'%.*s' is set twice", (int)len, val);
			return -EINVAL;
		}
	}
	env[*n] = strdup(val);
	if (!env[*n])
		return -ENOMEM;
	(*n)++;
	return 0;
}

static void free_env(const struct config_key *k, void *base)
{
	char **env = key_field(k, base);
	unsigned n = *key_count(k, base);

	for (unsigned i = 0; i < n; i++)
		free(env[i]);
}

/* Quotes what would otherwise lose its edges or read as a comment. */
static bool value_needs_quotes(const char *v)
{
	size_t len = strlen(v);

	return !len || isspace((unsigned char)v[0]) || isspace((unsigned char)v[len - 1]) ||
	       v[0] == '"' || strchr(v, '#');
}

static void dump_line(FILE *out, const char *name, const char *val)
{
	if (!value_needs_quotes(val)) {
		fprintf(out, "%s = %s\n", name, val);
		return;
	}
	fprintf(out, "%s = \"", name);
	/* Only what unquote() would misread is escaped: a lone backslash
	 * reads back as itself, and the line stays no longer than the one it
	 * was read from (a doubled one could pass the line limit). */
	for (const char *c = val; *c; c++) {
		if (*c == '"' || (*c == '\\' && (c[1] == '"' || c[1] == '\\' || c[1] == '\0')))
			fputc('\\', out);
		fputc(*c, out);
	}
	fputs("\"\n", out);
}

static void dump_string(const struct config_key *k, const void *base, FILE *out)
{
	const char *s = *(char **)key_field(k, base);

	dump_line(out, k->name, s ? s : "");
}

static void dump_bool(const struct config_key *k, const void *base, FILE *out)
{
	dump_line(out, k->name, *(bool *)key_field(k, base) ? "yes" : "no");
}

static void dump_enum(const struct config_key *k, const void *base, FILE *out)
{
	dump_line(out, k->name, k->choices[*(int *)key_field(k, base)]);
}

static void dump_log_level(const struct config_key *k, const void *base, FILE *out)
{
	dump_line(out, k->name, log_level_name(*(int *)key_field(k, base)));
}

/* Plain decimals (0.0000045, not 4.5e-06), as short as reads back exactly. */
static void dump_double(const struct config_key *k, const void *base, FILE *out)
{
	double v = *(const double *)key_field(k, base);
	char buf[64];

	snprintf(buf, sizeof(buf), "%.17g", v);
	for (int decimals = 0; decimals <= 20; decimals++) {
		char shorter[64];

		snprintf(shorter, sizeof(shorter), "%.*f", decimals, v);
		if (strtod(shorter, NULL) == v) {
			memcpy(buf, shorter, sizeof(buf));
			break;
		}
	}
	dump_line(out, k->name, isnan(v) ? k->choices[0] : buf);
}

/* One pass over both kinds: the order of bind mounts is the mount order. */
static void dump_binds(const struct config_key *k, const void *base, FILE *out)
{
	const struct bind_mount *binds = key_field(k, base);
	unsigned n = *key_count(k, base);
	char buf[2 * PATH_MAX + 2];

	if (!n)
		fputs("# (no " KEY_BIND_RO " or " KEY_BIND_RW " entries)\n", out);
	for (unsigned i = 0; i < n; i++) {
		snprintf(buf, sizeof(buf), "%s:%s", binds[i].source, binds[i].dest);
		dump_line(out, binds[i].writable ? KEY_BIND_RW : KEY_BIND_RO, buf);
	}
}

static void dump_env(const struct config_key *k, const void *base, FILE *out)
{
	char *const *env = key_field(k, base);
	unsigned n = *key_count(k, base);

	if (!n)
		fprintf(out, "# (no %s entries)\n", k->name);
	for (unsigned i = 0; i < n; i++)
		dump_line(out, k->name, env[i]);
}

static const struct type_ops type_ops[] = {
	[TYPE_STRING] = { .parse = parse_string, .dump = dump_string, .release = free_string },
	[TYPE_PATH] = { .parse = parse_path, .dump = dump_string, .release = free_string },
	[TYPE_BOOL] = { .parse = parse_bool, .dump = dump_bool },
	[TYPE_UINT] = { .scan = scan_uint, .format = format_uint, .width = sizeof(unsigned),
			.what = "a number" },
	[TYPE_SIZE] = { .scan = config_parse_size, .format = format_size,
			.width = sizeof(uint64_t), .what = "a size (like 64K, 512M, 1G)" },
	[TYPE_DURATION] = { .scan = config_parse_duration_ms, .format = format_duration,
			    .width = sizeof(uint64_t),
			    .what = "a duration (like 500ms, 30s, 5m, 1h, 2d)" },
	[TYPE_MODE] = { .scan = scan_mode, .format = format_mode, .width = sizeof(unsigned),
			.what = "an octal mode (like 0660)" },
	[TYPE_MILLI] = { .scan = scan_milli, .format = format_milli, .width = sizeof(uint64_t),
			 .what = "a decimal number (like 0.5 or 2)" },
	[TYPE_DOUBLE] = { .parse = parse_double, .dump = dump_double },
	[TYPE_ENUM] = { .parse = parse_enum, .dump = dump_enum },
	[TYPE_LOG_LEVEL] = { .parse = parse_log_level, .dump = dump_log_level },
	[TYPE_BIND_RO] = { .parse = parse_bind_ro, .dump = dump_binds, .release = free_binds,
			   .list = true },
	[TYPE_BIND_RW] = { .parse = parse_bind_rw, .dump = dump_binds, .release = free_binds,
			   .list = true },
	[TYPE_ENV] = { .parse = parse_env, .dump = dump_env, .release = free_env, .list = true },
};

static uint64_t number_get(const struct config_key *k, const void *base)
{
	const void *f = key_field(k, base);

	return type_ops[k->type].width == sizeof(uint64_t) ? *(const uint64_t *)f :
							     *(const unsigned *)f;
}

static int number_set(const struct config_key *k, void *base, const char *val, char *why,
		      size_t whylen)
{
	const struct type_ops *t = &type_ops[k->type];
	char lo[32], hi[32];
	uint64_t v;
	int rc = t->scan(val, &v);

	if (rc == -ERANGE)
		snprintf(why, whylen, "'%s' is too large", val);
	else if (rc < 0)
		snprintf(why, whylen, "'%s' is not %s", val, t->what);
	if (rc < 0)
		return rc;
	if (v < k->min || v > k->max) {
		t->format(k->min, lo, sizeof(lo));
		t->format(k->max, hi, sizeof(hi));
		snprintf(why, whylen, "%s is out of range %s..%s", val, lo, hi);
		return -ERANGE;
	}
	if (t->width == sizeof(uint64_t))
		*(uint64_t *)key_field(k, base) = v;
	else
		*(unsigned *)key_field(k, base) = (unsigned)v;
	return 0;
}

static void number_dump(const struct config_key *k, const void *base, FILE *out)
{
	char buf[32];

	type_ops[k->type].format(number_get(k, base), buf, sizeof(buf));
	dump_line(out, k->name, buf);
}

/* Parses val into k's field of base (a struct config or template_config). */
static int key_set(const struct config_key *k, void *base, const char *val, char *why,
		   size_t whylen)
{
	const struct type_ops *t = &type_ops[k->type];
	int rc;

	why[0] = '\0';
	if (!*val && !key_optional(k)) {
		snprintf(why, whylen, "empty value");
		return -EINVAL;
	}
	rc = t->scan ? number_set(k, base, val, why, whylen) : t->parse(k, base, val, why, whylen);
	if (rc < 0 && !why[0])
		snprintf(why, whylen, "%s", strerror(-rc));
	return rc;
}

/* "NAME[:LINE]: [template 'T': ][key 'K': ]what"; returns -EINVAL. */
static int parser_fail(struct parser *p, const char *tmpl, const char *key, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int parser_fail(struct parser *p, const char *tmpl, const char *key, const char *fmt, ...)
{
	size_t off;
	va_list ap;

	if (!p->err || !p->errlen)
		return -EINVAL;
	off = (size_t)snprintf(p->err, p->errlen, "%s", p->name);
	if (p->line && off < p->errlen)
		off += (size_t)snprintf(p->err + off, p->errlen - off, ":%u", p->line);
	if (tmpl && off < p->errlen)
		off += (size_t)snprintf(p->err + off, p->errlen - off, ": template '%s'", tmpl);
	if (key && off < p->errlen)
		off += (size_t)snprintf(p->err + off, p->errlen - off, ": key '%s'", key);
	if (off < p->errlen)
		off += (size_t)snprintf(p->err + off, p->errlen - off, ": ");
	if (off < p->errlen) {
		va_start(ap, fmt);
		vsnprintf(p->err + off, p->errlen - off, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

static int apply_defaults(struct parser *p, enum config_section section, void *base)
{
	char buf[PATH_MAX], why[256];
	const char *text;
	int rc;

	for (const struct config_key *k = config_keys; k < KEYS_END; k++) {
		if (k->section != section || key_optional(k))
			continue;
		text = k->def;
		if (k->def_fn) {
			if ((rc = k->def_fn(buf, sizeof(buf))) < 0)
				return parser_fail(p, NULL, k->name, "no default: %s",
						   strerror(-rc));
			text = buf;
		}
		if (key_set(k, base, text, why, sizeof(why)) < 0)
			return parser_fail(p, NULL, k->name, "default '%s': %s", text, why);
	}
	return 0;
}

static char *trim(char *s)
{
	char *end;

	while (isspace((unsigned char)*s))
		s++;
	end = s + strlen(s);
	while (end > s && isspace((unsigned char)end[-1]))
		end--;
	*end = '\0';
	return s;
}

/* A '#' opening the text or following whitespace starts a comment. */
static void strip_comment(char *s)
{
	for (char *c = s; *c; c++) {
		if (*c == '#' && (c == s || isblank((unsigned char)c[-1]))) {
			*c = '\0';
			return;
		}
	}
}

/* Unquotes "..." in place (\" and \\ are escapes); a comment may follow. */
static int unquote(struct parser *p, const char *key, char *s)
{
	char *src = s + 1, *dst = s;

	while (*src && *src != '"') {
		if (*src == '\\' && (src[1] == '"' || src[1] == '\\'))
			src++;
		*dst++ = *src++;
	}
	if (!*src)
		return parser_fail(p, NULL, key, "unterminated quote");
	src++;
	src += strspn(src, " \t");
	if (*src && *src != '#')
		return parser_fail(p, NULL, key, "text after the closing quote");
	*dst = '\0';
	return 0;
}

/* Turns the text after '=' into the value, in place. */
static int value_text(struct parser *p, const char *key, char *s, char **out)
{
	int rc = 0;

	s = trim(s);
	if (*s == '"') {
		rc = unquote(p, key, s);
	} else {
		strip_comment(s);
		s = trim(s);
	}
	*out = s;
	return rc;
}

static int section_daemon(struct parser *p)
{
	if (p->daemon_seen)
		return parser_fail(p, NULL, NULL, "duplicate section [daemon]");
	p->daemon_seen = true;
	p->section = SECTION_DAEMON;
	p->tmpl = NULL;
	p->seen = 0;
	return 0;
}

static bool template_name_valid(const char *s)
{
	size_t len = strlen(s);

	if (!len || len > TEMPLATE_NAME_MAX)
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && !strchr("_.-", *s))
			return false;
	return true;
}

static void section_release(enum config_section section, void *base)
{
	for (const struct config_key *k = config_keys; k < KEYS_END; k++)
		if (k->section == section && !key_shares_field(k) && type_ops[k->type].release)
			type_ops[k->type].release(k, base);
}

static void template_free(struct template_config *t)
{
	section_release(SECTION_TEMPLATE, t);
	free(t->name);
	free(t);
}

static int section_template(struct parser *p, const char *name)
{
	struct config *cfg = p->cfg;
	struct template_config *t;

	if (!*name)
		return parser_fail(p, NULL, NULL, "[template] needs a name: [template NAME]");
	if (!template_name_valid(name))
		return parser_fail(p, NULL, NULL,
				   "template name '%s': use 1 to %d of A-Z a-z 0-9 _ . -", name,
				   TEMPLATE_NAME_MAX);
	if (config_template(cfg, name))
		return parser_fail(p, NULL, NULL, "duplicate section [template %s]", name);
	if (cfg->n_templates >= CONFIG_MAX_TEMPLATES)
		return parser_fail(p, NULL, NULL, "more than %d templates", CONFIG_MAX_TEMPLATES);
	t = calloc(1, sizeof(*t));
	if (!t || !(t->name = strdup(name))) {
		free(t);
		return parser_fail(p, NULL, NULL, "out of memory");
	}
	cfg->templates[cfg->n_templates++] = t;
	p->section = SECTION_TEMPLATE;
	p->tmpl = t;
	p->seen = 0;
	return apply_defaults(p, SECTION_TEMPLATE, t);
}

/* s is "[...]", trimmed. */
static int parse_section(struct parser *p, char *s)
{
	char *word, *rest;
	size_t len;

	strip_comment(s);
	s = trim(s);
	len = strlen(s);
	if (s[len - 1] != ']')
		return parser_fail(p, NULL, NULL, "section line does not end with ']'");
	s[len - 1] = '\0';
	word = trim(s + 1);
	rest = word + strcspn(word, " \t");
	if (*rest)
		*rest++ = '\0';
	rest = trim(rest);
	if (!strcmp(word, "daemon") && !*rest)
		return section_daemon(p);
	if (!strcmp(word, "template"))
		return section_template(p, rest);
	return parser_fail(p, NULL, NULL,
			   "unknown section [%s%s%s]; expected [daemon] or [template NAME]", word,
			   *rest ? " " : "", rest);
}

static int fail_unknown_key(struct parser *p, const char *key)
{
	enum config_section other =
		p->section == SECTION_DAEMON ? SECTION_TEMPLATE : SECTION_DAEMON;

	if (key_find(other, key))
		return parser_fail(p, NULL, key, "belongs in %s, not here",
				   other == SECTION_DAEMON ? "[daemon]" : "a [template NAME]");
	return parser_fail(p, NULL, key, "unknown key in %s",
			   p->section == SECTION_DAEMON ? "[daemon]" : "[template]");
}

/* s is "key = value", trimmed. */
static int parse_assignment(struct parser *p, char *s)
{
	char *eq = strchr(s, '='), *key, *val, why[256];
	const struct config_key *k;
	uint64_t bit;
	int rc;

	if (!eq)
		return parser_fail(p, NULL, NULL,
				   "expected key = value, [daemon] or [template NAME]");
	*eq = '\0';
	key = trim(s);
	if (!*key)
		return parser_fail(p, NULL, NULL, "no key before '='");
	if (p->section == SECTION_NONE)
		return parser_fail(p, NULL, key,
				   "outside any section; begin with [daemon] or [template NAME]");
	k = key_find(p->section, key);
	if (!k)
		return fail_unknown_key(p, key);
	if ((rc = value_text(p, k->name, eq + 1, &val)) < 0)
		return rc;
	bit = 1ull << (k - config_keys);
	if (!type_ops[k->type].list && (p->seen & bit))
		return parser_fail(p, NULL, k->name, "set twice in this section");
	p->seen |= bit;
	if (key_set(k, p->section == SECTION_DAEMON ? (void *)p->cfg : (void *)p->tmpl, val, why,
		    sizeof(why)) < 0)
		return parser_fail(p, NULL, k->name, "%s", why);
	return 0;
}

static int parse_line(struct parser *p, char *line)
{
	char *s = trim(line);

	if (!*s || *s == '#' || *s == ';')
		return 0;
	if (*s == '[')
		return parse_section(p, s);
	return parse_assignment(p, s);
}

static int parse_text(struct parser *p, const char *text)
{
	char line[CONFIG_MAX_LINE + 1];
	int rc;

	while (*text) {
		size_t len = strcspn(text, "\n");

		p->line++;
		if (len > CONFIG_MAX_LINE)
			return parser_fail(p, NULL, NULL, "line longer than %d bytes",
					   CONFIG_MAX_LINE);
		memcpy(line, text, len);
		line[len] = '\0';
		if ((rc = parse_line(p, line)) < 0)
			return rc;
		text += len + (text[len] == '\n');
	}
	p->line = 0;
	return 0;
}

/* Disabled sections were parsed (and so checked); the daemon never sees them. */
static void drop_disabled(struct config *cfg)
{
	unsigned n = 0;

	for (unsigned i = 0; i < cfg->n_templates; i++) {
		if (cfg->templates[i]->enabled)
			cfg->templates[n++] = cfg->templates[i];
		else
			template_free(cfg->templates[i]);
	}
	cfg->n_templates = n;
}

static int override(struct parser *p, const char *key, const char *val)
{
	const struct config_key *k = key_find(SECTION_DAEMON, key);
	char why[256];

	if (key_set(k, p->cfg, val, why, sizeof(why)) < 0)
		return parser_fail(p, NULL, key, "%s", why);
	return 0;
}

static int apply_overrides(struct parser *p, const struct config_overrides *ov)
{
	/* Errors here are the command line's, not the file's. */
	struct parser cl = { .cfg = p->cfg, .name = "command line", .err = p->err,
			     .errlen = p->errlen };
	int rc;

	if (ov->socket_path && (rc = override(&cl, "socket", ov->socket_path)) < 0)
		return rc;
	if (ov->state_dir && (rc = override(&cl, "state_dir", ov->state_dir)) < 0)
		return rc;
	if (ov->log_level >= 0) {
		if (!log_level_name(ov->log_level))
			return parser_fail(&cl, NULL, "log_level", "%d is not a log level",
					   ov->log_level);
		p->cfg->log_level = ov->log_level;
	}
	return 0;
}

/*
 * E2B's published prices (shared/e2b/CODE-INTERPRETER.md): $0.000014 per
 * vCPU-second, and "8 vCPU + 4 GB = $0.468/h". The vCPU part of that
 * example is 8 * 0.000014 * 3600 = $0.4032/h, leaving $0.0648/h for 4 GiB:
 * $0.0162 per GiB-hour, $0.0000045 per GiB-second. docs/LEDGER.md says so.
 */
#define E2B_COST_PER_VCPU_SECOND 0.000014
#define E2B_COST_PER_GIB_SECOND 0.0000045

/* "auto" costs: what the backend bills, known only once the section is read. */
static void resolve_costs(struct template_config *t)
{
	bool e2b = t->backend == BACKEND_E2B;

	if (isnan(t->cost_per_vcpu_second))
		t->cost_per_vcpu_second = e2b ? E2B_COST_PER_VCPU_SECOND : 0;
	if (isnan(t->cost_per_gib_second))
		t->cost_per_gib_second = e2b ? E2B_COST_PER_GIB_SECOND : 0;
}

static int validate_template(struct parser *p, const struct template_config *t)
{
	char a[32], b[32];

	if (t->min_warm > t->max_total)
		return parser_fail(p, t->name, "min_warm", "%u exceeds max_total %u", t->min_warm,
				   t->max_total);
	if (t->backend == BACKEND_E2B) {
		const char *k = t->api_key_env;

		if (!*k || strspn(k, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") != strlen(k) ||
		    (*k >= '0' && *k <= '9'))
			return parser_fail(p, t->name, "api_key_env", "'%s' is not an environment variable name", k);
		if (t->e2b_api_url && *t->e2b_api_url && strncmp(t->e2b_api_url, "http://", 7) &&
		    strncmp(t->e2b_api_url, "https://", 8))
			return parser_fail(p, t->name, "e2b_api_url", "must start with http:// or https://");
		if (t->e2b_sandbox_url && *t->e2b_sandbox_url && strncmp(t->e2b_sandbox_url, "http://", 7) &&
		    strncmp(t->e2b_sandbox_url, "https://", 8))
			return parser_fail(p, t->name, "e2b_sandbox_url", "must start with http:// or https://");
	}
	if (t->timeout_ms > p->cfg->max_timeout_ms) {
		format_duration(t->timeout_ms, a, sizeof(a));
		format_duration(p->cfg->max_timeout_ms, b, sizeof(b));
		return parser_fail(p, t->name, "timeout", "%s exceeds max_timeout %s", a, b);
	}
	return 0;
}

static int validate(struct parser *p)
{
	const struct config *cfg = p->cfg;
	unsigned warm = 0;
	int rc;

	if (!cfg->n_templates)
		return parser_fail(p, NULL, NULL, "no enabled [template NAME] section");
	for (unsigned i = 0; i < cfg->n_templates; i++) {
		if ((rc = validate_template(p, cfg->templates[i])) < 0)
			return rc;
		warm += cfg->templates[i]->min_warm;
	}
	/* Otherwise some pool could never reach its min_warm. */
	if (warm > cfg->max_sandboxes)
		return parser_fail(p, NULL, "max_sandboxes",
				   "%u is less than the %u sandboxes the templates keep warm",
				   cfg->max_sandboxes, warm);
	return 0;
}

struct config *config_parse_string(const char *text, const char *name,
				   const struct config_overrides *ov, char *err, size_t errlen)
{
	struct parser p = { .name = name, .err = err, .errlen = errlen };

	if (err && errlen)
		err[0] = '\0';
	p.cfg = calloc(1, sizeof(*p.cfg));
	if (!p.cfg) {
		parser_fail(&p, NULL, NULL, "out of memory");
		return NULL;
	}
	if (apply_defaults(&p, SECTION_DAEMON, p.cfg) < 0 || parse_text(&p, text) < 0)
		goto fail;
	drop_disabled(p.cfg);
	for (unsigned i = 0; i < p.cfg->n_templates; i++)
		resolve_costs(p.cfg->templates[i]);
	if ((ov && apply_overrides(&p, ov) < 0) || validate(&p) < 0)
		goto fail;
	return p.cfg;
fail:
	config_free(p.cfg);
	return NULL;
}

/* Reads fd to its end into a NUL-terminated *out; 0 or -errno. */
static int read_all(int fd, char **out)
{
	size_t len = 0, cap = 0;
	char *buf = NULL, *bigger;
	ssize_t n;
	int rc = 0;

	while (rc == 0) {
		if (len + 1 >= cap) {
			cap = cap ? 2 * cap : 4096;
			if (!(bigger = realloc(buf, cap))) {
				rc = -ENOMEM;
				break;
			}
			buf = bigger;
		}
		n = read(fd, buf + len, cap - len - 1);
		if (n == 0)
			break;
		if (n < 0)
			rc = errno == EINTR ? 0 : -errno;
		else if ((len += (size_t)n) > CONFIG_MAX_FILE)
			rc = -EFBIG;
	}
	if (rc == 0) {
		buf[len] = '\0';
		if (memchr(buf, '\0', len))
			rc = -EILSEQ;
	}
	if (rc < 0)
		free(buf);
	else
		*out = buf;
	return rc;
}

static int read_file(const char *path, char **out)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	int rc;

	if (fd < 0)
		return -errno;
	rc = read_all(fd, out);
	close(fd);
	return rc;
}

static void read_file_error(const char *path, int rc, char *err, size_t errlen)
{
	if (rc == -EFBIG)
		snprintf(err, errlen, "%s: larger than %u bytes", path, CONFIG_MAX_FILE);
	else if (rc == -EILSEQ)
		snprintf(err, errlen, "%s: holds a NUL byte, not a text file", path);
	else
		snprintf(err, errlen, "%s: %s", path, strerror(-rc));
}

struct config *config_load(const char *path, const struct config_overrides *ov, char *err,
			   size_t errlen)
{
	struct config *cfg;
	char *text = NULL;
	int rc;

	if (!path)
		return config_parse_string(config_embedded_default, "<embedded>", ov, err, errlen);
	if ((rc = read_file(path, &text)) < 0) {
		read_file_error(path, rc, err, errlen);
		return NULL;
	}
	cfg = config_parse_string(text, path, ov, err, errlen);
	free(text);
	if (cfg && !(cfg->path = strdup(path))) {
		snprintf(err, errlen, "%s: %s", path, strerror(ENOMEM));
		config_free(cfg);
		return NULL;
	}
	return cfg;
}

void config_free(struct config *cfg)
{
	if (!cfg)
		return;
	for (unsigned i = 0; i < cfg->n_templates; i++)
		template_free(cfg->templates[i]);
	section_release(SECTION_DAEMON, cfg);
	free(cfg->path);
	free(cfg);
}

const struct template_config *config_template(const struct config *cfg, const char *name)
{
	for (unsigned i = 0; i < cfg->n_templates; i++)
		if (!strcmp(cfg->templates[i]->name, name))
			return cfg->templates[i];
	return NULL;
}

static void dump_section(enum config_section section, const void *base, FILE *out)
{
	for (const struct config_key *k = config_keys; k < KEYS_END; k++) {
		if (k->section != section || key_shares_field(k))
			continue;
		fprintf(out, "# %s\n", k->help);
		if (type_ops[k->type].format)
			number_dump(k, base, out);
		else
			type_ops[k->type].dump(k, base, out);
	}
}

/* Writes f's settings (comment-free); NULL on allocation failure. */
static char *section_text(enum config_section section, const void *base)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	if (!f)
		return NULL;
	dump_section(section, base, f);
	if (fclose(f) != 0) {
		free(text);
		return NULL;
	}
	return text;
}

static bool sections_equal(enum config_section section, const void *a, const void *b)
{
	char *ta = section_text(section, a), *tb = section_text(section, b);
	bool eq = ta && tb && strcmp(ta, tb) == 0;

	free(ta);
	free(tb);
	return eq;
}

bool config_template_equal(const struct template_config *a, const struct template_config *b)
{
	return sections_equal(SECTION_TEMPLATE, a, b);
}

bool config_daemon_equal(const struct config *a, const struct config *b)
{
	return sections_equal(SECTION_DAEMON, a, b);
}

void config_dump(const struct config *cfg, FILE *out)
{
	if (cfg->path)
		fprintf(out, "# effective configuration, read from %s\n", cfg->path);
	fputs("[daemon]\n", out);
	dump_section(SECTION_DAEMON, cfg, out);
	for (unsigned i = 0; i < cfg->n_templates; i++) {
		fprintf(out, "\n[template %s]\n", cfg->templates[i]->name);
		dump_section(SECTION_TEMPLATE, cfg->templates[i], out);
	}
}
