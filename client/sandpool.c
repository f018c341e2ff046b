/*
 * sandpool: the command-line client of sandpoold. Each command is one call
 * through libsandpool; results print as a table, a line, the command's own
 * output, or with --json the raw result. `report` alone reads the ledger
 * database instead (store/report.c), so it works with the daemon stopped.
 */
#include "autoconfig.h"

#include "ipc/sandpool.h"

#include "daemon/log.h"
#include "ipc/codec.h"
#include "store/ledger_path.h"
#include "store/report.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum {
	EXIT_FAILED = 1,     /* status, templates, lease, release: the call failed */
	EXIT_USAGE = 2,
	EXIT_TIMED_OUT = 124, /* run, exec: as timeout(1) */
	EXIT_SANDPOOL = 125, /* run, exec: sandpool failed, not the command (as timeout(1)) */
	EXIT_SIGNALED = 128, /* run, exec: plus the signal, as shells report it */
};

/* Returned by option handlers that let parsing go on. */
#define PARSE_ON (-1)

/* With no daemon default to learn from (an old daemon), PROTOCOL.md's. */
#define DEFAULT_MAX_FRAME (4u * 1024 * 1024)

static const char usage_text[] =
	"usage: sandpool [--socket PATH] [--json] COMMAND [ARGS]\n"
	"\n"
	"commands:\n"
	"  status [--watch]              pools per template, connection and lease totals;\n"
	"                                --watch redraws it every second\n"
	"  templates                     the daemon's templates\n"
	"  run [OPTIONS] [--] CMD ARGS   run CMD in a fresh sandbox, streaming its output\n"
	"  lease [-t NAME] [--wait S]    lease a sandbox that outlives this command; prints\n"
	"                                the lease id\n"
	"  exec LEASE [OPTIONS] [--] CMD ARGS\n"
	"                                run CMD in a leased sandbox\n"
	"  release LEASE                 end a lease; its sandbox is destroyed (unless it\n"
	"                                belongs to a session)\n"
	"  renew LEASE                   restart a lease's lease_ttl\n"
	"  end-session NAME              end a session and destroy its sandbox\n"
	"  code LEASE [OPTIONS] CODE     run CODE (- reads it from stdin) in a persistent\n"
	"                                interpreter of the leased sandbox; prints its\n"
	"                                output and the value of its last expression\n"
	"  cp SRC DST                    copy a file into or out of a leased sandbox: one\n"
	"                                of SRC and DST is LEASE:PATH (PATH relative to\n"
	"                                /workspace), the other a local file or -\n"
	"  report [OPTIONS]              usage and cost from the ledger (docs/LEDGER.md)\n"
	"\n"
	"run and exec options:\n"
	"  -t, --template NAME   template to lease from (run, lease; default shell)\n"
	"  -s, --session NAME    use session NAME's sandbox, created on first use and\n"
	"                        kept between leases (run, lease)\n"
	"      --wait SECONDS    how long to queue for a sandbox when the template is\n"
	"                        at max_total (run, lease; default 0: fail at once)\n"
	"      --timeout SECONDS kill CMD after this long (default: the template's)\n"
	"  -e, --env KEY=VALUE   add to CMD's environment; repeatable\n"
	"  -C, --cwd DIR         CMD's working directory (default /workspace)\n"
	"      --stdin           send this program's standard input to CMD\n"
	"\n"
	"code options:\n"
	"  -l, --language LANG   python, javascript or bash: that language's default\n"
	"                        context (default: the template's language)\n"
	"  -c, --context ID      a context made with code.context.create instead\n"
	"      --timeout SECONDS interrupt the cell after this long (default: the\n"
	"                        template's); one that will not stop restarts its context\n"
	"  -e, --env KEY=VALUE   set for this cell; repeatable\n"
	"\n"
	"report options (it reads the ledger directly; the daemon need not run):\n"
	"      --db PATH         the ledger; default: the daemon's default ledger_path,\n"
	"                        /var/lib/sandpool/ledger.db as root, else\n"
	"                        $XDG_STATE_HOME/sandpool/ledger.db or\n"
	"                        ~/.local/state/sandpool/ledger.db\n"
	"      --since WHEN      from WHEN: 24h, 7d, 2w (back from now), 2026-11-23 or\n"
	"                        2026-11-23T08:00:00Z (UTC); default: the beginning\n"
	"      --until WHEN      up to WHEN (excluded); default: now\n"
	"      --by WHAT         template (default), day, client, session or pool\n"
	"      --format FORMAT   table (default), json or csv; --json means json\n"
	"\n"
	"global options, also accepted after COMMAND:\n"
	"      --socket PATH     the daemon's socket; default $SANDPOOL_SOCKET, else\n"
	"                        /run/sandpool/sandpool.sock as root, else\n"
	"                        $XDG_RUNTIME_DIR/sandpool/sandpool.sock, else\n"
	"                        /tmp/sandpool-UID/sandpool.sock\n"
	"      --json            status, templates, lease: print the daemon's result\n"
	"                        as JSON; run, exec: print it instead of streaming.\n"
	"                        Byte strings such as stdout and stderr print as JSON\n"
	"                        strings; bytes that are not UTF-8 become U+FFFD, so\n"
	"                        use plain run for exact bytes\n"
	"  -h, --help            this text\n"
	"      --version         the version\n"
	"\n"
	"exit status: run and exec exit with CMD's status, 128+N when CMD was killed\n"
	"by signal N, 124 when it timed out and 125 when sandpool itself failed;\n"
	"code exits with 0, 1 when the cell failed, 124 when it timed out and 125\n"
	"when sandpool failed; the other commands with 0, or 1 on failure. Usage\n"
	"errors exit with 2.\n";

struct cli {
	const char *command;	 /* for messages */
	const char *socket_path; /* NULL: the library's default */
	bool json;
};

static int __attribute__((format(printf, 2, 3))) usage_error(const struct cli *cli, const char *fmt, ...)
{
	va_list ap;

	fputs("sandpool: ", stderr);
	if (cli->command)
		fprintf(stderr, "%s: ", cli->command);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs(" (see sandpool --help)\n", stderr);
	return EXIT_USAGE;
}

static void report(const struct sandpool_error *err)
{
	fprintf(stderr, "sandpool: %s: %s\n", sandpool_errcode_name(err->code), err->message);
}

/* --- options ----------------------------------------------------------------- */

enum {
	OPT_SOCKET = 256,
	OPT_JSON,
	OPT_VERSION,
	OPT_TIMEOUT,
	OPT_WAIT,
	OPT_STDIN,
	OPT_DB,
	OPT_SINCE,
	OPT_UNTIL,
	OPT_BY,
	OPT_FORMAT,
};

/* Leading '+': options end at the first operand (the command, or CMD), so
 * CMD's own options reach it; ':' reports a missing value apart. */
#define COMMON_SHORTOPTS "+:h"
#define COMMON_LONGOPTS                                                                            \
	{"socket", required_argument, NULL, OPT_SOCKET}, {"json", no_argument, NULL, OPT_JSON},        \
		{"help", no_argument, NULL, 'h'}

/* The option getopt_long() just refused, as the user typed it. */
static const char *bad_option(char **argv)
{
	static char shortopt[3] = "-?";
	const char *arg = argv[optind - 1];

	if (strncmp(arg, "--", 2) == 0)
		return arg;
	shortopt[1] = (char)optopt;
	return shortopt;
}

/* Handles the options every command takes: PARSE_ON, or the exit status. */
static int common_option(struct cli *cli, int c, char **argv)
{
	switch (c) {
	case OPT_SOCKET:
		cli->socket_path = optarg;
		return PARSE_ON;
	case OPT_JSON:
		cli->json = true;
		return PARSE_ON;
	case 'h':
		fputs(usage_text, stdout);
		return EXIT_SUCCESS;
	case ':':
		return usage_error(cli, "option %s needs a value", bad_option(argv));
	default:
		return usage_error(cli, "unknown option %s", bad_option(argv));
	}
}

/* Options of a command that takes only the common ones, then one operand
 * named operand, or none when that is NULL. Returns PARSE_ON with optind at
 * the operand, or the exit status. */
static int parse_plain(struct cli *cli, int argc, char **argv, const char *operand)
{
	static const struct option longopts[] = {COMMON_LONGOPTS, {NULL, 0, NULL, 0}};
	int nargs = operand ? 1 : 0;
	int c, rc;

	optind = 0;
	while ((c = getopt_long(argc, argv, COMMON_SHORTOPTS, longopts, NULL)) != -1)
		if ((rc = common_option(cli, c, argv)) != PARSE_ON)
			return rc;
	if (argc - optind < nargs)
		return usage_error(cli, "missing %s", operand);
	if (argc - optind > nargs)
		return usage_error(cli, "unexpected argument %s", argv[optind + nargs]);
	return PARSE_ON;
}

/* Seconds, possibly fractional, as milliseconds rounded up so that a small
 * positive value never becomes 0 ("the default"). */
static int parse_seconds(const char *s, uint32_t *ms)
{
	char *end;
	double v, m;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !(v >= 0) || v * 1000 > UINT32_MAX)
		return -EINVAL;
	m = v * 1000;
	*ms = (uint32_t)m;
	if (*ms < m)
		(*ms)++;
	return 0;
}

/* What run, exec and lease were asked to do. */
struct job {
	const char *template_name;
	const char *session;
	uint32_t wait_ms;
	uint32_t timeout_ms;
	const char **env; /* NULL-terminated, pointing into argv */
	size_t n_env;
	const char *cwd;
	bool use_stdin;
};

enum job_kind {
	JOB_RUN,
	JOB_EXEC,
	JOB_LEASE,
};

/* Parses options into job from optind on (optind = 0 starts afresh). */
static int parse_job(struct cli *cli, enum job_kind kind, struct job *job, int argc, char **argv)
{
	static const struct option run_opts[] = {
		COMMON_LONGOPTS,
		{"template", required_argument, NULL, 't'},
		{"session", required_argument, NULL, 's'},
		{"wait", required_argument, NULL, OPT_WAIT},
		{"timeout", required_argument, NULL, OPT_TIMEOUT},
		{"env", required_argument, NULL, 'e'},
		{"cwd", required_argument, NULL, 'C'},
		{"stdin", no_argument, NULL, OPT_STDIN},
		{NULL, 0, NULL, 0},
	};
	static const struct option exec_opts[] = {
		COMMON_LONGOPTS,
		{"timeout", required_argument, NULL, OPT_TIMEOUT},
		{"env", required_argument, NULL, 'e'},
		{"cwd", required_argument, NULL, 'C'},
		{"stdin", no_argument, NULL, OPT_STDIN},
		{NULL, 0, NULL, 0},
	};
	static const struct option lease_opts[] = {
		COMMON_LONGOPTS,
		{"template", required_argument, NULL, 't'},
		{"session", required_argument, NULL, 's'},
		{"wait", required_argument, NULL, OPT_WAIT},
		{NULL, 0, NULL, 0},
	};
	static const struct {
		const char *shortopts;
		const struct option *longopts;
	} kinds[] = {
		[JOB_RUN] = {COMMON_SHORTOPTS "t:s:e:C:", run_opts},
		[JOB_EXEC] = {COMMON_SHORTOPTS "e:C:", exec_opts},
		[JOB_LEASE] = {COMMON_SHORTOPTS "t:s:", lease_opts},
	};
	int c, rc;

	while ((c = getopt_long(argc, argv, kinds[kind].shortopts, kinds[kind].longopts, NULL)) !=
	       -1) {
		switch (c) {
		case 't':
			job->template_name = optarg;
			break;
		case 's':
			job->session = optarg;
			break;
		case OPT_WAIT:
			if (parse_seconds(optarg, &job->wait_ms) < 0)
				return usage_error(cli, "--wait takes seconds, not %s", optarg);
			break;
		case OPT_TIMEOUT:
			if (parse_seconds(optarg, &job->timeout_ms) < 0 || job->timeout_ms == 0)
				return usage_error(cli, "--timeout takes positive seconds, not %s",
						   optarg);
			break;
		case 'e':
			if (!strchr(optarg, '=') || optarg[0] == '=')
				return usage_error(cli, "-e takes KEY=VALUE, not %s", optarg);
			/* job->env has room for every argument plus the NULL. */
			job->env[job->n_env++] = optarg;
			break;
		case 'C':
			job->cwd = optarg;
			break;
		case OPT_STDIN:
			job->use_stdin = true;
			break;
		default:
			if ((rc = common_option(cli, c, argv)) != PARSE_ON)
				return rc;
		}
	}
	return PARSE_ON;
}

/* --- JSON ------------------------------------------------------------------ */

/* Length of the well-formed UTF-8 sequence at s (RFC 3629: no overlong
 * forms, no surrogates), or 0. */
static size_t utf8_seq_len(const unsigned char *s, size_t avail)
{
	uint32_t cp, min;
	size_t n;

	if (s[0] < 0x80)
		return 1;
	if ((s[0] & 0xe0) == 0xc0) {
		n = 2, cp = s[0] & 0x1f, min = 0x80;
	} else if ((s[0] & 0xf0) == 0xe0) {
		n = 3, cp = s[0] & 0x0f, min = 0x800;
	} else if ((s[0] & 0xf8) == 0xf0) {
		n = 4, cp = s[0] & 0x07, min = 0x10000;
	} else {
		return 0;
	}
	if (n > avail)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

static void json_string(FILE *f, const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;

	fputc('"', f);
	for (size_t i = 0; i < len;) {
		size_t n = utf8_seq_len(p + i, len - i);

		if (n == 0) {
			fputs("\\ufffd", f);
			i++;
			continue;
		}
		if (n > 1) {
			fwrite(p + i, 1, n, f);
			i += n;
			continue;
		}
		switch (p[i]) {
		case '"':
			fputs("\\\"", f);
			break;
		case '\\':
			fputs("\\\\", f);
			break;
		case '\n':
			fputs("\\n", f);
			break;
		case '\r':
			fputs("\\r", f);
			break;
		case '\t':
			fputs("\\t", f);
			break;
		case '\b':
			fputs("\\b", f);
			break;
		case '\f':
			fputs("\\f", f);
			break;
		default:
			if (p[i] < 0x20)
				fprintf(f, "\\u%04x", p[i]);
			else
				fputc(p[i], f);
		}
		i++;
	}
	fputc('"', f);
}

static void json_value(FILE *f, const msgpack_object *o, int depth);

/* The shortest of %.15g and %.17g that reads back as v: 0.3, not
 * 0.29999999999999999. */
static void format_double(double v, char *buf, size_t size)
{
	snprintf(buf, size, "%.15g", v);
	if (strtod(buf, NULL) != v)
		snprintf(buf, size, "%.17g", v);
}

/* JSON keys are strings; any other msgpack key is quoted as its JSON text. */
static void json_key(FILE *f, const msgpack_object *k)
{
	char *text = NULL;
	size_t len = 0;
	FILE *m;

	if (k->type == MSGPACK_OBJECT_STR) {
		json_string(f, k->via.str.ptr, k->via.str.size);
		return;
	}
	m = open_memstream(&text, &len);
	if (!m) {
		fputs("\"\"", f);
		return;
	}
	json_value(m, k, 0);
	fclose(m);
	json_string(f, text, len);
	free(text);
}

static void json_indent(FILE *f, int depth)
{
	fprintf(f, "\n%*s", depth * 2, "");
}

static void json_value(FILE *f, const msgpack_object *o, int depth)
{
	switch (o->type) {
	case MSGPACK_OBJECT_NIL:
		fputs("null", f);
		break;
	case MSGPACK_OBJECT_BOOLEAN:
		fputs(o->via.boolean ? "true" : "false", f);
		break;
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
		fprintf(f, "%" PRIu64, o->via.u64);
		break;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER:
		fprintf(f, "%" PRId64, o->via.i64);
		break;
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64:
		/* JSON has no NaN or infinity. */
		if (isfinite(o->via.f64)) {
			char num[32];

			format_double(o->via.f64, num, sizeof(num));
			fputs(num, f);
		} else {
			fputs("null", f);
		}
		break;
	case MSGPACK_OBJECT_STR:
		json_string(f, o->via.str.ptr, o->via.str.size);
		break;
	case MSGPACK_OBJECT_BIN:
		json_string(f, o->via.bin.ptr, o->via.bin.size);
		break;
	case MSGPACK_OBJECT_ARRAY:
		fputc('[', f);
		for (uint32_t i = 0; i < o->via.array.size; i++) {
			fputs(i ? "," : "", f);
			json_indent(f, depth + 1);
			json_value(f, &o->via.array.ptr[i], depth + 1);
		}
		if (o->via.array.size)
			json_indent(f, depth);
		fputc(']', f);
		break;
	case MSGPACK_OBJECT_MAP:
		fputc('{', f);
		for (uint32_t i = 0; i < o->via.map.size; i++) {
			fputs(i ? "," : "", f);
			json_indent(f, depth + 1);
			json_key(f, &o->via.map.ptr[i].key);
			fputs(": ", f);
			json_value(f, &o->via.map.ptr[i].val, depth + 1);
		}
		if (o->via.map.size)
			json_indent(f, depth);
		fputc('}', f);
		break;
	case MSGPACK_OBJECT_EXT:
		/* The protocol sends no ext values; null keeps the output JSON. */
		fputs("null", f);
		break;
	}
}

static void json_print(const msgpack_object *o)
{
	json_value(stdout, o, 0);
	fputc('\n', stdout);
}

/* --- tables ---------------------------------------------------------------- */

enum cell_kind {
	CELL_PLAIN,
	CELL_MS,    /* milliseconds, shown as seconds */
	CELL_BYTES, /* a size, shown in the largest unit that divides it */
	CELL_US,    /* microseconds, shown as ms */
};

struct column {
	const char *header;
	const char *key;
	enum cell_kind kind;
};

static const struct column status_columns[] = {
	{"TEMPLATE", "name", CELL_PLAIN},	{"WARM", "warm", CELL_PLAIN},
	{"TARGET", "target", CELL_PLAIN},	{"LEASED", "leased", CELL_PLAIN},
	{"HELD", "held", CELL_PLAIN},		{"SESSIONS", "sessions", CELL_PLAIN},
	{"CREATING", "creating", CELL_PLAIN},	{"WAIT_P99", "lease_wait_p99_us", CELL_US},
	{"CREATE_P50", "create_p50_us", CELL_US},
	{"WAITING", "waiting", CELL_PLAIN},	{"HITS", "hits", CELL_PLAIN},
	{"MISSES", "misses", CELL_PLAIN},	{"FAILURES", "create_failures", CELL_PLAIN},
	{"LAST ERROR", "last_error", CELL_PLAIN},
};

static const struct column template_columns[] = {
	{"NAME", "name", CELL_PLAIN},		{"BACKEND", "backend", CELL_PLAIN},
	{"LANGUAGE", "language", CELL_PLAIN},	{"MIN_WARM", "min_warm", CELL_PLAIN},
	{"MAX_TOTAL", "max_total", CELL_PLAIN}, {"TIMEOUT", "timeout_ms", CELL_MS},
	{"MAX_OUTPUT", "max_output", CELL_BYTES}, {"NETWORK", "network", CELL_PLAIN},
	{"WORKSPACE", "workspace_size", CELL_BYTES},
};

/* "30s", "1.5s", "0.25s". */
static void format_ms(uint64_t ms, char *buf, size_t size)
{
	int n = snprintf(buf, size, "%" PRIu64 ".%03u", ms / 1000, (unsigned)(ms % 1000));

	while (n > 0 && (size_t)n < size && (buf[n - 1] == '0' || buf[n - 1] == '.')) {
		bool dot = buf[n - 1] == '.';

		buf[--n] = '\0';
		if (dot)
			break;
	}
	snprintf(buf + n, size - (size_t)n, "s");
}

static void format_bytes(uint64_t v, char *buf, size_t size)
{
	static const char units[] = "\0KMGT";
	unsigned u = 0;

	while (v >= 1024 && v % 1024 == 0 && u + 1 < sizeof(units) - 1) {
		v /= 1024;
		u++;
	}
	snprintf(buf, size, "%" PRIu64 "%.1s", v, &units[u]);
}

/* A cell as text: "-" for absent or nil, control bytes blanked so that a
 * multi-line last_error keeps the table whole. */
static void cell_text(const msgpack_object *o, enum cell_kind kind, char *buf, size_t size)
{
	if (!o || o->type == MSGPACK_OBJECT_NIL) {
		snprintf(buf, size, "-");
		return;
	}
	switch (o->type) {
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
		if (kind == CELL_MS)
			format_ms(o->via.u64, buf, size);
		else if (kind == CELL_BYTES)
			format_bytes(o->via.u64, buf, size);
		else if (kind == CELL_US)
			snprintf(buf, size, "%.1fms", (double)o->via.u64 / 1000.0);
		else
			snprintf(buf, size, "%" PRIu64, o->via.u64);
		return;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER:
		snprintf(buf, size, "%" PRId64, o->via.i64);
		return;
	case MSGPACK_OBJECT_BOOLEAN:
		snprintf(buf, size, "%s", o->via.boolean ? "yes" : "no");
		return;
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64:
		/* Plain decimals for people (0.000014, not 1.4e-05): the figures
		 * shown are seconds and dollars to six places. */
		if (fabs(o->via.f64) < 1e12) {
			int n = snprintf(buf, size, "%.6f", o->via.f64);

			while (n > 1 && (size_t)n < size && buf[n - 1] == '0')
				buf[--n] = '\0';
			if (n > 1 && (size_t)n < size && buf[n - 1] == '.')
				buf[--n] = '\0';
		} else {
			format_double(o->via.f64, buf, size);
		}
		return;
	case MSGPACK_OBJECT_STR:
	case MSGPACK_OBJECT_BIN:
		snprintf(buf, size, "%.*s", (int)o->via.str.size, o->via.str.ptr);
		for (char *p = buf; *p; p++)
			if ((unsigned char)*p < 0x20)
				*p = ' ';
		return;
	default:
		snprintf(buf, size, "?");
		return;
	}
}

static void print_cell(const char *text, size_t width, bool last)
{
	if (last)
		printf("%s\n", text);
	else
		printf("%-*s  ", (int)width, text);
}

/* Prints rows (maps) under cols, each column as wide as its widest cell. */
static void print_table(const struct column *cols, size_t ncols, const msgpack_object_array *rows)
{
	size_t width[32] = {0};
	char cell[256];

	if (ncols > ARRAY_SIZE(width))
		ncols = ARRAY_SIZE(width);
	for (size_t c = 0; c < ncols; c++) {
		width[c] = strlen(cols[c].header);
		for (uint32_t r = 0; rows && r < rows->size; r++) {
			cell_text(ipc_map_get(&rows->ptr[r], cols[c].key), cols[c].kind, cell,
				  sizeof(cell));
			if (strlen(cell) > width[c])
				width[c] = strlen(cell);
		}
	}
	for (size_t c = 0; c < ncols; c++)
		print_cell(cols[c].header, width[c], c + 1 == ncols);
	for (uint32_t r = 0; rows && r < rows->size; r++) {
		for (size_t c = 0; c < ncols; c++) {
			cell_text(ipc_map_get(&rows->ptr[r], cols[c].key), cols[c].kind, cell,
				  sizeof(cell));
			print_cell(cell, width[c], c + 1 == ncols);
		}
	}
}

/* --- commands -------------------------------------------------------------- */

static struct sandpool *cli_connect(const struct cli *cli)
{
	struct sandpool_error err;
	struct sandpool *sp = sandpool_connect(cli->socket_path, &err);

	if (!sp)
		report(&err);
	return sp;
}

/* One parameterless call: the reply, or NULL once the failure is reported. */
static struct sandpool_reply *call_simple(const struct cli *cli, const char *method)
{
	struct sandpool_reply *reply = NULL;
	struct sandpool_error err;
	struct sandpool *sp = cli_connect(cli);

	if (!sp)
		return NULL;
	if (sandpool_call(sp, method, NULL, 0, NULL, NULL, &reply, &err) < 0) {
		report(&err);
		reply = NULL;
	}
	sandpool_close(sp);
	return reply;
}

/* "ledger: backlog 0, written 1234, dropped 0, ...", from pool.stats. */
static void print_ledger_line(const msgpack_object *ledger)
{
	bool enabled = false, first = true;
	uint64_t v;

	if (ipc_get_bool(ledger, "enabled", &enabled) < 0)
		return; /* an older daemon */
	if (!enabled) {
		puts("ledger: off");
		return;
	}
	fputs("ledger:", stdout);
	for (uint32_t i = 0; i < ledger->via.map.size; i++) {
		const msgpack_object_kv *kv = &ledger->via.map.ptr[i];

		if (kv->key.type != MSGPACK_OBJECT_STR || kv->val.type != MSGPACK_OBJECT_POSITIVE_INTEGER)
			continue;
		printf("%s %.*s %" PRIu64, first ? "" : ",", (int)kv->key.via.str.size,
		       kv->key.via.str.ptr, kv->val.via.u64);
		first = false;
	}
	if (ipc_get_uint(ledger, "backlog", &v) == 0 && v && ipc_get_bool(ledger, "open", &enabled) == 0 &&
	    !enabled)
		fputs(" (not open: see the daemon's log)", stdout);
	putchar('\n');
}

/* "limits NOT ENFORCED ...: python (memory, cpus); shell (memory, cpus)",
 * from pool.stats; nothing when every limit is. */
static void print_unenforced(const msgpack_object_array *rows)
{
	bool first = true;

	for (uint32_t r = 0; rows && r < rows->size; r++) {
		const msgpack_object_array *lim = NULL;
		const char *name;
		uint32_t len;

		if (ipc_get_array(&rows->ptr[r], "limits_unenforced", &lim) < 0 || lim->size == 0 ||
		    ipc_get_str(&rows->ptr[r], "name", &name, &len) < 0)
			continue;
		printf("%s%.*s (", first ? "limits NOT ENFORCED (the daemon's log says why): " : "; ", (int)len,
		       name);
		for (uint32_t i = 0; i < lim->size; i++)
			if (lim->ptr[i].type == MSGPACK_OBJECT_STR)
				printf("%s%.*s", i ? ", " : "", (int)lim->ptr[i].via.str.size, lim->ptr[i].via.str.ptr);
		putchar(')');
		first = false;
	}
	if (!first)
		putchar('\n');
}

static int show_status(struct cli *cli)
{
	const msgpack_object_array *rows = NULL;
	struct sandpool_reply *reply;
	uint64_t connections = 0, leases = 0, sessions = 0;

	reply = call_simple(cli, "pool.stats");
	if (!reply)
		return EXIT_FAILED;
	if (cli->json) {
		json_print(reply->result);
	} else {
		(void)ipc_get_array(reply->result, "templates", &rows);
		(void)ipc_get_uint(reply->result, "connections", &connections);
		(void)ipc_get_uint(reply->result, "leases", &leases);
		(void)ipc_get_uint(reply->result, "sessions", &sessions);
		print_table(status_columns, ARRAY_SIZE(status_columns), rows);
		printf("\nconnections: %" PRIu64 "  leases: %" PRIu64 "  sessions: %" PRIu64 "\n",
		       connections, leases, sessions);
		print_unenforced(rows);
		print_ledger_line(ipc_map_get(reply->result, "ledger"));
	}
	sandpool_reply_free(reply);
	return EXIT_SUCCESS;
}

static int cmd_status(struct cli *cli, int argc, char **argv)
{
	bool watch = argc > 1 && (!strcmp(argv[1], "--watch") || !strcmp(argv[1], "-w"));
	int rc;

	/* --watch: the same table, redrawn every second until interrupted. */
	if (watch) {
		argv[1] = argv[0];
		argc--;
		argv++;
	}
	rc = parse_plain(cli, argc, argv, NULL);
	if (rc != PARSE_ON)
		return rc;
	for (;;) {
		if (watch)
			fputs("\033[H\033[2J", stdout);
		rc = show_status(cli);
		if (!watch || rc != EXIT_SUCCESS)
			return rc;
		fflush(stdout);
		sleep(1);
	}
}

static int cmd_templates(struct cli *cli, int argc, char **argv)
{
	const msgpack_object_array *rows = NULL;
	struct sandpool_reply *reply;
	int rc = parse_plain(cli, argc, argv, NULL);

	if (rc != PARSE_ON)
		return rc;
	reply = call_simple(cli, "templates.list");
	if (!reply)
		return EXIT_FAILED;
	if (cli->json) {
		json_print(reply->result);
	} else {
		(void)ipc_get_array(reply->result, "templates", &rows);
		print_table(template_columns, ARRAY_SIZE(template_columns), rows);
	}
	sandpool_reply_free(reply);
	return EXIT_SUCCESS;
}

static int cmd_lease(struct cli *cli, int argc, char **argv)
{
	struct job job = {.template_name = "shell"};
	struct sandpool_lease lease = {0};
	struct sandpool_lease_opts opts;
	struct sandpool_error err;
	struct sandpool *sp;
	int rc;

	optind = 0;
	rc = parse_job(cli, JOB_LEASE, &job, argc, argv);
	if (rc != PARSE_ON)
		return rc;
	if (optind < argc)
		return usage_error(cli, "unexpected argument %s", argv[optind]);
	sp = cli_connect(cli);
	if (!sp)
		return EXIT_FAILED;
	opts = (struct sandpool_lease_opts){
		.template_name = job.template_name,
		.wait_ms = job.wait_ms,
		/* The lease must outlive this process's connection. */
		.detached = true,
		.session = job.session,
	};
	rc = sandpool_lease(sp, &opts, &lease, &err);
	sandpool_close(sp);
	if (rc < 0) {
		report(&err);
		return EXIT_FAILED;
	}
	if (cli->json)
		json_print(lease.reply->result);
	else
		printf("%s\n", lease.lease_id);
	sandpool_lease_free(&lease);
	return EXIT_SUCCESS;
}

/* release, renew, end-session: one name in, nothing out. */
static int one_name_command(struct cli *cli, int argc, char **argv, const char *what,
			    int (*call)(struct sandpool *, const char *, struct sandpool_error *))
{
	struct sandpool_error err;
	struct sandpool *sp;
	int rc = parse_plain(cli, argc, argv, what);

	if (rc != PARSE_ON)
		return rc;
	sp = cli_connect(cli);
	if (!sp)
		return EXIT_FAILED;
	rc = call(sp, argv[optind], &err);
	sandpool_close(sp);
	if (rc < 0) {
		report(&err);
		return EXIT_FAILED;
	}
	return EXIT_SUCCESS;
}

static int cmd_release(struct cli *cli, int argc, char **argv)
{
	return one_name_command(cli, argc, argv, "LEASE", sandpool_release);
}

static int cmd_renew(struct cli *cli, int argc, char **argv)
{
	return one_name_command(cli, argc, argv, "LEASE", sandpool_renew);
}

static int cmd_end_session(struct cli *cli, int argc, char **argv)
{
	return one_name_command(cli, argc, argv, "NAME", sandpool_session_end);
}

static void write_all(int fd, const char *p, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		/* A reader that went away ends us by SIGPIPE, as any filter. */
		if (n < 0)
			return;
		p += n;
		len -= (size_t)n;
	}
}

static void stream_output(void *arg, int stream, const void *data, size_t len)
{
	write_all(stream == SANDPOOL_STDERR ? STDERR_FILENO : STDOUT_FILENO, data, len);
}

/* Reads fd to its end into a malloc'd buffer; -EMSGSIZE past max bytes. */
static int read_all(int fd, size_t max, char **buf, size_t *len)
{
	size_t cap = 64 * 1024;

	*len = 0;
	*buf = malloc(cap);
	if (!*buf)
		return -ENOMEM;
	for (;;) {
		ssize_t n;

		if (*len == cap) {
			char *nbuf = realloc(*buf, cap * 2);

			if (!nbuf)
				return -ENOMEM;
			*buf = nbuf;
			cap *= 2;
		}
		n = read(fd, *buf + *len, cap - *len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return 0;
		*len += (size_t)n;
		if (*len > max)
			return -EMSGSIZE;
	}
}

/* Stdin travels in one message, so the daemon's max_frame bounds it: reading
 * stops there rather than sending a request the daemon must refuse. */
static int read_stdin(struct sandpool *sp, char **buf, size_t *len, struct sandpool_error *err)
{
	struct sandpool_hello hello = {0};
	size_t max;
	int rc = sandpool_hello(sp, "sandpool", &hello, err);

	if (rc < 0)
		return rc;
	max = hello.max_frame ? (size_t)hello.max_frame : DEFAULT_MAX_FRAME;
	sandpool_hello_free(&hello);
	rc = read_all(STDIN_FILENO, max, buf, len);
	if (rc == -EMSGSIZE) {
		err->code = SANDPOOL_E_LIMIT_EXCEEDED;
		snprintf(err->message, sizeof(err->message),
			 "stdin is larger than the daemon's max_frame (%zu bytes)", max);
	} else if (rc < 0) {
		err->code = SANDPOOL_E_INTERNAL;
		snprintf(err->message, sizeof(err->message), "reading stdin: %s", strerror(-rc));
	}
	return rc;
}

/* The exit status that reports how CMD ended. */
static int exec_status(const struct sandpool_exec_result *r, uint32_t timeout_ms)
{
	char when[32];

	if (r->limit && strcmp(r->limit, "timeout") == 0) {
		/* Without --timeout the template's applied; the run's length,
		 * to the second, is the best estimate of it. */
		uint64_t ms = timeout_ms ? timeout_ms : (r->duration_us / 1000 + 500) / 1000 * 1000;

		format_ms(ms, when, sizeof(when));
		fprintf(stderr, "sandpool: timed out after %s\n", when);
		return EXIT_TIMED_OUT;
	}
	if (r->limit && strcmp(r->limit, "output_limit") == 0)
		fprintf(stderr, "sandpool: output exceeded the template's max_output; killed\n");
	if (r->has_exit_code)
		return r->exit_code;
	if (r->signal > 0)
		return EXIT_SIGNALED + r->signal;
	fprintf(stderr, "sandpool: the daemon reported neither exit status nor signal\n");
	return EXIT_SANDPOOL;
}

/* run and exec: lease_id NULL runs in a fresh sandbox of job->template_name. */
static int run_job(const struct cli *cli, const struct job *job, const char *lease_id,
		   char **cmd)
{
	struct sandpool_exec_result result = {0};
	struct sandpool_exec_opts opts = {
		.argv = (const char *const *)cmd,
		.env = job->n_env ? job->env : NULL,
		.cwd = job->cwd,
		.timeout_ms = job->timeout_ms,
		/* --json prints the whole result, output included. */
		.on_output = cli->json ? NULL : stream_output,
		.session = job->session,
	};
	struct sandpool_error err;
	struct sandpool *sp;
	char *input = NULL;
	int rc;

	sp = cli_connect(cli);
	if (!sp)
		return EXIT_SANDPOOL;
	rc = job->use_stdin ? read_stdin(sp, &input, &opts.stdin_len, &err) : 0;
	if (rc == 0) {
		opts.stdin_data = input;
		rc = lease_id ? sandpool_exec(sp, lease_id, &opts, &result, &err)
			      : sandpool_run(sp, job->template_name, job->wait_ms, &opts, &result,
					     &err);
	}
	sandpool_close(sp);
	free(input);
	if (rc < 0) {
		report(&err);
		return EXIT_SANDPOOL;
	}
	if (cli->json)
		json_print(result.reply->result);
	rc = exec_status(&result, job->timeout_ms);
	sandpool_exec_result_free(&result);
	return rc;
}

static int cmd_run_or_exec(struct cli *cli, int argc, char **argv, bool run)
{
	struct job job = {.template_name = "shell"};
	const char *lease_id = NULL;
	int rc;

	/* Every argument could be an -e: room for all plus the NULL. */
	job.env = calloc((size_t)argc + 1, sizeof(*job.env));
	if (!job.env) {
		fprintf(stderr, "sandpool: out of memory\n");
		return EXIT_SANDPOOL;
	}
	optind = 0;
	rc = parse_job(cli, run ? JOB_RUN : JOB_EXEC, &job, argc, argv);
	if (rc == PARSE_ON && !run) {
		/* exec LEASE takes options on either side of LEASE: parse the rest
		 * with LEASE in the program-name slot. */
		if (optind == argc) {
			rc = usage_error(cli, "missing LEASE");
		} else {
			lease_id = argv[optind];
			argc -= optind;
			argv += optind;
			optind = 0;
			rc = parse_job(cli, JOB_EXEC, &job, argc, argv);
		}
	}
	if (rc == PARSE_ON && optind == argc)
		rc = usage_error(cli, "missing command");
	if (rc == PARSE_ON)
		rc = run_job(cli, &job, lease_id, argv + optind);
	free(job.env);
	return rc;
}

static int cmd_run(struct cli *cli, int argc, char **argv)
{
	return cmd_run_or_exec(cli, argc, argv, true);
}

static int cmd_exec(struct cli *cli, int argc, char **argv)
{
	return cmd_run_or_exec(cli, argc, argv, false);
}

/* --- code and cp --------------------------------------------------------------- */

/* The daemon's max_frame, which bounds code from stdin and cp's pieces. */
static size_t daemon_max_frame(struct sandpool *sp)
{
	struct sandpool_hello hello = {0};
	size_t max = DEFAULT_MAX_FRAME;

	if (sandpool_hello(sp, "sandpool", &hello, NULL) == 0 && hello.max_frame)
		max = (size_t)hello.max_frame;
	sandpool_hello_free(&hello);
	return max;
}

/* Each result's text as it arrives: display()ed values, then the cell's. */
static void print_result(void *arg, const msgpack_object *result)
{
	const char *text;
	uint32_t len;

	if (ipc_get_str(result, "text", &text, &len) == 0) {
		write_all(STDOUT_FILENO, text, len);
		write_all(STDOUT_FILENO, "\n", 1);
	}
}

struct code_job {
	struct sandpool_code_opts opts;
	const char **env; /* NULL-terminated, pointing into argv */
	size_t n_env;
};

static int parse_code_options(struct cli *cli, struct code_job *job, int argc, char **argv)
{
	static const struct option longopts[] = {
		COMMON_LONGOPTS,
		{"language", required_argument, NULL, 'l'},
		{"context", required_argument, NULL, 'c'},
		{"timeout", required_argument, NULL, OPT_TIMEOUT},
		{"env", required_argument, NULL, 'e'},
		{NULL, 0, NULL, 0},
	};
	int c, rc;

	while ((c = getopt_long(argc, argv, COMMON_SHORTOPTS "l:c:e:", longopts, NULL)) != -1) {
		switch (c) {
		case 'l':
			job->opts.language = optarg;
			break;
		case 'c':
			job->opts.context_id = optarg;
			break;
		case OPT_TIMEOUT:
			if (parse_seconds(optarg, &job->opts.timeout_ms) < 0 || job->opts.timeout_ms == 0)
				return usage_error(cli, "--timeout takes positive seconds, not %s", optarg);
			break;
		case 'e':
			if (!strchr(optarg, '=') || optarg[0] == '=')
				return usage_error(cli, "-e takes KEY=VALUE, not %s", optarg);
			job->env[job->n_env++] = optarg;
			break;
		default:
			if ((rc = common_option(cli, c, argv)) != PARSE_ON)
				return rc;
		}
	}
	return PARSE_ON;
}

static int report_execution(const struct cli *cli, const struct sandpool_execution *ex)
{
	if (cli->json) {
		json_print(ex->reply->result);
	} else {
		/* Streamed already; only what went wrong is left to say. */
		if (ex->truncated)
			fprintf(stderr, "sandpool: output past the template's max_output was dropped\n");
		if (ex->error_traceback && *ex->error_traceback)
			fprintf(stderr, "%s%s", ex->error_traceback,
				ex->error_traceback[strlen(ex->error_traceback) - 1] == '\n' ? "" : "\n");
		else if (ex->error_name)
			fprintf(stderr, "%s: %s\n", ex->error_name, ex->error_value ? ex->error_value : "");
		if (ex->restarted)
			fprintf(stderr, "sandpool: context %s was restarted: its state is lost\n", ex->context_id);
	}
	if (ex->limit && !strcmp(ex->limit, "timeout"))
		return EXIT_TIMED_OUT;
	return ex->error_name ? EXIT_FAILED : EXIT_SUCCESS;
}

static int cmd_code(struct cli *cli, int argc, char **argv)
{
	struct sandpool_execution ex = {0};
	struct code_job job = {0};
	struct sandpool_error err;
	const char *lease_id = NULL;
	struct sandpool *sp = NULL;
	char *input = NULL;
	size_t input_len;
	int rc;

	job.env = calloc((size_t)argc + 1, sizeof(*job.env));
	if (!job.env) {
		fprintf(stderr, "sandpool: out of memory\n");
		return EXIT_SANDPOOL;
	}
	/* Options on either side of LEASE, as with exec. */
	optind = 0;
	rc = parse_code_options(cli, &job, argc, argv);
	if (rc == PARSE_ON && optind == argc)
		rc = usage_error(cli, "missing LEASE");
	if (rc == PARSE_ON) {
		lease_id = argv[optind];
		argc -= optind;
		argv += optind;
		optind = 0;
		rc = parse_code_options(cli, &job, argc, argv);
	}
	if (rc == PARSE_ON && argc - optind != 1)
		rc = usage_error(cli, argc == optind ? "missing CODE" : "CODE must be one argument (quote it)");
	if (rc == PARSE_ON && job.opts.language && job.opts.context_id)
		rc = usage_error(cli, "-l and -c exclude each other");
	if (rc != PARSE_ON)
		goto out;
	sp = cli_connect(cli);
	rc = EXIT_SANDPOOL;
	if (!sp)
		goto out;
	job.opts.code = argv[optind];
	if (!strcmp(job.opts.code, "-")) {
		size_t max = daemon_max_frame(sp);

		if (read_all(STDIN_FILENO, max, &input, &input_len) < 0 || memchr(input, '\0', input_len)) {
			fprintf(stderr, "sandpool: code on stdin must be text of less than %zu bytes\n", max);
			goto out;
		}
		input[input_len] = '\0';
		job.opts.code = input;
	}
	job.opts.env = job.n_env ? job.env : NULL;
	if (!cli->json) {
		job.opts.on_output = stream_output;
		job.opts.on_result = print_result;
	}
	if (sandpool_code_run(sp, lease_id, &job.opts, &ex, &err) < 0) {
		report(&err);
		goto out;
	}
	rc = report_execution(cli, &ex);
	sandpool_execution_free(&ex);
out:
	sandpool_close(sp);
	free(input);
	free(job.env);
	return rc;
}

/* "LEASE:PATH" (a colon before any slash) names a file in a sandbox. */
static bool split_remote(char *arg, char **lease_id, char **path)
{
	char *colon = strchr(arg, ':');

	if (!colon || colon == arg || memchr(arg, '/', (size_t)(colon - arg)))
		return false;
	*colon = '\0';
	*lease_id = arg;
	*path = colon + 1;
	return true;
}

/* Pieces start at the largest a message holds and halve while the template's
 * max_file_size, which the CLI cannot know beforehand, refuses them. */
#define CP_MIN_PIECE 1024

static bool cp_shrink(size_t *piece, const struct sandpool_error *err)
{
	if (err->code != SANDPOOL_E_LIMIT_EXCEEDED || *piece / 2 < CP_MIN_PIECE)
		return false;
	*piece /= 2;
	return true;
}

static int cp_in(struct sandpool *sp, const char *src, const char *lease_id, const char *path, size_t piece)
{
	int fd = strcmp(src, "-") ? open(src, O_RDONLY | O_CLOEXEC) : STDIN_FILENO;
	struct sandpool_error err;
	size_t len = 0, sent = 0;
	char *buf = malloc(piece);
	bool first = true, eof = false;
	int rc = EXIT_SUCCESS;

	if (fd < 0 || !buf) {
		fprintf(stderr, "sandpool: %s: %s\n", src, strerror(fd < 0 ? errno : ENOMEM));
		rc = EXIT_FAILED;
	}
	/* Each piece is appended to the last: one message each. */
	while (rc == EXIT_SUCCESS) {
		size_t n;

		if (sent == len) {
			ssize_t got;

			sent = len = 0;
			while (!eof && len < piece) {
				got = read(fd, buf + len, piece - len);
				if (got < 0 && errno == EINTR)
					continue;
				if (got < 0) {
					fprintf(stderr, "sandpool: %s: %s\n", src, strerror(errno));
					rc = EXIT_FAILED;
				}
				if (got <= 0)
					eof = true;
				else
					len += (size_t)got;
			}
			if (rc != EXIT_SUCCESS || (len == 0 && !first))
				break;
		}
		n = len - sent < piece ? len - sent : piece;
		if (sandpool_file_write(sp, lease_id, path, buf + sent, n, 0, !first, &err) < 0) {
			if (cp_shrink(&piece, &err))
				continue;
			report(&err);
			rc = EXIT_FAILED;
			break;
		}
		sent += n;
		first = false;
		if (eof && sent == len)
			break;
	}
	if (fd > STDIN_FILENO)
		close(fd);
	free(buf);
	return rc;
}

static int cp_out(struct sandpool *sp, const char *lease_id, const char *path, const char *dst, size_t piece)
{
	int fd = strcmp(dst, "-") ? open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644) : STDOUT_FILENO;
	struct sandpool_file_data d = {0};
	struct sandpool_error err;
	uint64_t offset = 0;
	bool done = false;
	int rc = EXIT_SUCCESS;

	if (fd < 0) {
		fprintf(stderr, "sandpool: %s: %s\n", dst, strerror(errno));
		return EXIT_FAILED;
	}
	while (!done) {
		if (sandpool_file_read(sp, lease_id, path, offset, piece, &d, &err) < 0) {
			if (cp_shrink(&piece, &err))
				continue;
			report(&err);
			rc = EXIT_FAILED;
			break;
		}
		write_all(fd, d.data, d.len);
		offset += d.len;
		done = d.eof || d.len == 0;
		sandpool_file_data_free(&d);
	}
	if (fd > STDOUT_FILENO && close(fd) < 0) {
		fprintf(stderr, "sandpool: %s: %s\n", dst, strerror(errno));
		rc = EXIT_FAILED;
	}
	return rc;
}

static int cmd_cp(struct cli *cli, int argc, char **argv)
{
	static const struct option longopts[] = {COMMON_LONGOPTS, {NULL, 0, NULL, 0}};
	char *src_lease, *src_path, *dst_lease, *dst_path;
	struct sandpool *sp;
	bool src_remote, dst_remote;
	size_t piece;
	int c, rc;

	optind = 0;
	while ((c = getopt_long(argc, argv, COMMON_SHORTOPTS, longopts, NULL)) != -1)
		if ((rc = common_option(cli, c, argv)) != PARSE_ON)
			return rc;
	if (argc - optind != 2)
		return usage_error(cli, "takes SRC and DST");
	src_remote = split_remote(argv[optind], &src_lease, &src_path);
	dst_remote = split_remote(argv[optind + 1], &dst_lease, &dst_path);
	if (src_remote == dst_remote)
		return usage_error(cli, "exactly one of SRC and DST must be LEASE:PATH");
	sp = cli_connect(cli);
	if (!sp)
		return EXIT_FAILED;
	/* Well inside one message, and within any sane max_file_size. */
	piece = daemon_max_frame(sp) / 2;
	if (piece > 1024 * 1024)
		piece = 1024 * 1024;
	rc = src_remote ? cp_out(sp, src_lease, src_path, argv[optind + 1], piece)
			: cp_in(sp, argv[optind], dst_lease, dst_path, piece);
	sandpool_close(sp);
	return rc;
}

/* --- report ------------------------------------------------------------------ */

enum report_format {
	FORMAT_TABLE,
	FORMAT_JSON,
	FORMAT_CSV,
};

/* RFC 4180: quoted when it holds a comma, quote or line break. */
static void csv_field(const msgpack_object *o)
{
	char buf[256];

	if (!o || o->type == MSGPACK_OBJECT_NIL)
		return;
	if (o->type != MSGPACK_OBJECT_STR) {
		cell_text(o, CELL_PLAIN, buf, sizeof(buf));
		fputs(buf, stdout);
		return;
	}
	if (!memchr(o->via.str.ptr, ',', o->via.str.size) &&
	    !memchr(o->via.str.ptr, '"', o->via.str.size) &&
	    !memchr(o->via.str.ptr, '\n', o->via.str.size) &&
	    !memchr(o->via.str.ptr, '\r', o->via.str.size)) {
		fwrite(o->via.str.ptr, 1, o->via.str.size, stdout);
		return;
	}
	putchar('"');
	for (uint32_t i = 0; i < o->via.str.size; i++) {
		if (o->via.str.ptr[i] == '"')
			putchar('"');
		putchar(o->via.str.ptr[i]);
	}
	putchar('"');
}

static void print_csv(const msgpack_object_array *cols, const msgpack_object_array *rows)
{
	for (uint32_t c = 0; c < cols->size; c++) {
		fputs(c ? "," : "", stdout);
		csv_field(&cols->ptr[c]);
	}
	putchar('\n');
	for (uint32_t r = 0; r < rows->size; r++) {
		for (uint32_t c = 0; c < cols->size; c++) {
			char name[128];

			cell_text(&cols->ptr[c], CELL_PLAIN, name, sizeof(name));
			fputs(c ? "," : "", stdout);
			csv_field(ipc_map_get(&rows->ptr[r], name));
		}
		putchar('\n');
	}
}

/* The table's columns are the view's, named as in SQL. */
static void print_report_table(const msgpack_object *result, const msgpack_object_array *cols,
			       const msgpack_object_array *rows)
{
	struct column table[32];
	char names[32][128];
	const char *view = "", *since, *until;
	uint32_t len, slen = 0, ulen = 0, n = cols->size < 32 ? cols->size : 32;

	(void)ipc_get_str(result, "view", &view, &len);
	if (ipc_get_str(result, "since", &since, &slen) < 0)
		since = "the beginning", slen = (uint32_t)strlen(since);
	if (ipc_get_str(result, "until", &until, &ulen) < 0)
		until = "now", ulen = (uint32_t)strlen(until);
	printf("%.*s, from %.*s to %.*s\n\n", (int)len, view, (int)slen, since, (int)ulen, until);
	for (uint32_t c = 0; c < n; c++) {
		cell_text(&cols->ptr[c], CELL_PLAIN, names[c], sizeof(names[c]));
		table[c] = (struct column){names[c], names[c], CELL_PLAIN};
	}
	print_table(table, n, rows);
}

static int cmd_report(struct cli *cli, int argc, char **argv)
{
	static const struct option longopts[] = {
		COMMON_LONGOPTS,
		{"db", required_argument, NULL, OPT_DB},
		{"since", required_argument, NULL, OPT_SINCE},
		{"until", required_argument, NULL, OPT_UNTIL},
		{"by", required_argument, NULL, OPT_BY},
		{"format", required_argument, NULL, OPT_FORMAT},
		{NULL, 0, NULL, 0},
	};
	static const char *const formats[] = {[FORMAT_TABLE] = "table", [FORMAT_JSON] = "json",
					      [FORMAT_CSV] = "csv"};
	struct report_query q = {0};
	const msgpack_object_array *cols = NULL, *rows = NULL;
	enum report_format format = FORMAT_TABLE;
	char db[PATH_MAX], err[1024];
	struct report r;
	bool format_given = false;
	int c, rc;

	optind = 0;
	while ((c = getopt_long(argc, argv, COMMON_SHORTOPTS, longopts, NULL)) != -1) {
		switch (c) {
		case OPT_DB:
			q.db_path = optarg;
			break;
		case OPT_SINCE:
			q.since = optarg;
			break;
		case OPT_UNTIL:
			q.until = optarg;
			break;
		case OPT_BY:
			q.by = optarg;
			break;
		case OPT_FORMAT:
			for (format = 0; format < ARRAY_SIZE(formats); format++)
				if (!strcmp(optarg, formats[format]))
					break;
			if (format == ARRAY_SIZE(formats))
				return usage_error(cli, "--format takes table, json or csv, not %s",
						   optarg);
			format_given = true;
			break;
		default:
			if ((rc = common_option(cli, c, argv)) != PARSE_ON)
				return rc;
		}
	}
	if (optind < argc)
		return usage_error(cli, "unexpected argument %s", argv[optind]);
	if (cli->json && !format_given)
		format = FORMAT_JSON;
	if (!q.db_path) {
		if (ledger_default_path(db, sizeof(db)) < 0)
			return usage_error(cli, "no default ledger path: give --db");
		q.db_path = db;
	}
	if (report_run(&q, &r, err, sizeof(err)) < 0) {
		fprintf(stderr, "sandpool: report: %s%s\n", err,
			q.db_path == db ? " (the default ledger_path; --db names another)" : "");
		return EXIT_FAILED;
	}
	(void)ipc_get_array(r.result, "columns", &cols);
	(void)ipc_get_array(r.result, "rows", &rows);
	if (format == FORMAT_JSON)
		json_print(r.result);
	else if (format == FORMAT_CSV)
		print_csv(cols, rows);
	else
		print_report_table(r.result, cols, rows);
	report_free(&r);
	return EXIT_SUCCESS;
}

static const struct command {
	const char *name;
	int (*run)(struct cli *cli, int argc, char **argv);
} commands[] = {
	{"status", cmd_status},
	{"templates", cmd_templates},
	{"run", cmd_run},
	{"lease", cmd_lease},
	{"exec", cmd_exec},
	{"release", cmd_release},
	{"renew", cmd_renew},
	{"end-session", cmd_end_session},
	{"code", cmd_code},
	{"cp", cmd_cp},
	{"report", cmd_report},
};

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		COMMON_LONGOPTS,
		{"version", no_argument, NULL, OPT_VERSION},
		{NULL, 0, NULL, 0},
	};
	struct cli cli = {0};
	int c, rc;

	opterr = 0;
	while ((c = getopt_long(argc, argv, COMMON_SHORTOPTS, longopts, NULL)) != -1) {
		if (c == OPT_VERSION) {
			printf("sandpool %s\n", PACKAGE_VERSION);
			return EXIT_SUCCESS;
		}
		if ((rc = common_option(&cli, c, argv)) != PARSE_ON)
			return rc;
	}
	if (optind == argc)
		return usage_error(&cli, "no command given");
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++) {
		if (strcmp(argv[optind], commands[i].name) == 0) {
			cli.command = commands[i].name;
			return commands[i].run(&cli, argc - optind, argv + optind);
		}
	}
	return usage_error(&cli, "unknown command %s", argv[optind]);
}
