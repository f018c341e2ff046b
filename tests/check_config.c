/*
 * Unit tests for daemon/config.c: the embedded default, the unit parsers,
 * strict error reporting (file, line, key), quoting, overrides, and the
 * dump -> parse round trip.
 */
#include "autoconfig.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/config.h"
#include "daemon/log.h"

#define MIB (1024ull * 1024)

static struct config *parse(const char *text, char *err, size_t errlen)
{
	return config_parse_string(text, "test.conf", NULL, err, errlen);
}

/* Parses text that must be valid; fails the test with the error otherwise. */
static struct config *parse_ok(const char *text)
{
	char err[512];
	struct config *cfg = parse(text, err, sizeof(err));

	ck_assert_msg(cfg != NULL, "unexpected error: %s", err);
	return cfg;
}

static void assert_parse_error(const char *text, const char *prefix)
{
	char err[512] = "";
	struct config *cfg = parse(text, err, sizeof(err));

	ck_assert_msg(cfg == NULL, "accepted:\n%s", text);
	ck_assert_msg(!strncmp(err, prefix, strlen(prefix)), "error '%s' does not start with '%s'",
		      err, prefix);
}

static char *dump_to_string(const struct config *cfg)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	ck_assert_ptr_nonnull(f);
	config_dump(cfg, f);
	ck_assert_int_eq(fclose(f), 0);
	return buf;
}

static void assert_templates_equal(const struct template_config *a, const struct template_config *b)
{
	ck_assert_str_eq(a->name, b->name);
	ck_assert_int_eq(a->enabled, b->enabled);
	ck_assert_int_eq(a->backend, b->backend);
	ck_assert_pstr_eq(a->language, b->language);
	ck_assert_uint_eq(a->min_warm, b->min_warm);
	ck_assert_uint_eq(a->max_total, b->max_total);
	ck_assert_uint_eq(a->timeout_ms, b->timeout_ms);
	ck_assert_uint_eq(a->lease_ttl_ms, b->lease_ttl_ms);
	ck_assert_uint_eq(a->max_output, b->max_output);
	ck_assert_uint_eq(a->workspace_size, b->workspace_size);
	ck_assert_int_eq(a->network, b->network);
	ck_assert_pstr_eq(a->rootfs, b->rootfs);
	ck_assert_uint_eq(a->n_binds, b->n_binds);
	for (unsigned i = 0; i < a->n_binds; i++) {
		ck_assert_str_eq(a->binds[i].source, b->binds[i].source);
		ck_assert_str_eq(a->binds[i].dest, b->binds[i].dest);
		ck_assert_int_eq(a->binds[i].writable, b->binds[i].writable);
	}
	ck_assert_uint_eq(a->n_env, b->n_env);
	for (unsigned i = 0; i < a->n_env; i++)
		ck_assert_str_eq(a->env[i], b->env[i]);
}

/* Field by field, so a field the key table forgot would show up here. */
static void assert_configs_equal(const struct config *a, const struct config *b)
{
	ck_assert_pstr_eq(a->socket_path, b->socket_path);
	ck_assert_uint_eq(a->socket_mode, b->socket_mode);
	ck_assert_pstr_eq(a->socket_group, b->socket_group);
	ck_assert_pstr_eq(a->state_dir, b->state_dir);
	ck_assert_int_eq(a->log_level, b->log_level);
	ck_assert_uint_eq(a->max_connections, b->max_connections);
	ck_assert_uint_eq(a->max_inflight, b->max_inflight);
	ck_assert_uint_eq(a->max_leases_per_conn, b->max_leases_per_conn);
	ck_assert_uint_eq(a->max_frame, b->max_frame);
	ck_assert_uint_eq(a->max_timeout_ms, b->max_timeout_ms);
	ck_assert_uint_eq(a->max_sandboxes, b->max_sandboxes);
	ck_assert_uint_eq(a->create_concurrency, b->create_concurrency);
	ck_assert_pstr_eq(a->agent_path, b->agent_path);
	ck_assert_uint_eq(a->sandbox_uid, b->sandbox_uid);
	ck_assert_uint_eq(a->sandbox_gid, b->sandbox_gid);
	ck_assert_uint_eq(a->n_templates, b->n_templates);
	for (unsigned i = 0; i < a->n_templates; i++)
		assert_templates_equal(a->templates[i], b->templates[i]);
}

static void assert_template_defaults(const struct template_config *t, const char *language)
{
	ck_assert_ptr_nonnull(t);
	ck_assert(t->enabled);
	ck_assert_int_eq(t->backend, BACKEND_LOCAL);
	ck_assert_str_eq(t->language, language);
	ck_assert_uint_eq(t->min_warm, 2);
	ck_assert_uint_eq(t->max_total, 8);
	ck_assert_uint_eq(t->timeout_ms, 30000);
	ck_assert_uint_eq(t->lease_ttl_ms, 600000);
	ck_assert_uint_eq(t->max_output, MIB);
	ck_assert_uint_eq(t->workspace_size, 64 * MIB);
	ck_assert_int_eq(t->network, NETWORK_NONE);
	ck_assert_str_eq(t->rootfs, "host");
	ck_assert_uint_eq(t->n_binds, 0);
	ck_assert_uint_eq(t->n_env, 0);
}

START_TEST(test_embedded_default)
{
	char err[512];
	struct config *cfg = config_load(NULL, NULL, err, sizeof(err));

	ck_assert_msg(cfg != NULL, "%s", err);
	ck_assert_ptr_null(cfg->path);
	ck_assert_uint_eq(cfg->n_templates, 2);
	assert_template_defaults(config_template(cfg, "python"), "python");
	assert_template_defaults(config_template(cfg, "shell"), "shell");
	ck_assert_ptr_null(config_template(cfg, "ruby"));

	ck_assert_uint_eq(cfg->socket_mode, 0660);
	ck_assert_ptr_null(cfg->socket_group);
	ck_assert_int_eq(cfg->log_level, LOG_INFO);
	ck_assert_uint_eq(cfg->max_connections, 1024);
	ck_assert_uint_eq(cfg->max_inflight, 64);
	ck_assert_uint_eq(cfg->max_leases_per_conn, 256);
	ck_assert_uint_eq(cfg->max_frame, 4 * MIB);
	ck_assert_uint_eq(cfg->max_timeout_ms, 3600000);
	ck_assert_uint_eq(cfg->max_sandboxes, 64);
	ck_assert_uint_eq(cfg->create_concurrency, 4);
	ck_assert_uint_eq(cfg->sandbox_uid, 65534);
	ck_assert_uint_eq(cfg->sandbox_gid, 65534);
	ck_assert_ptr_nonnull(cfg->agent_path);
	ck_assert_int_eq(cfg->agent_path[0], '/');
	config_free(cfg);
}
END_TEST

START_TEST(test_default_runtime_paths)
{
	char expect[PATH_MAX];
	const char *saved = getenv("XDG_RUNTIME_DIR");
	char *saved_copy = saved ? strdup(saved) : NULL;
	struct config *cfg;

	setenv("XDG_RUNTIME_DIR", "/run/user/4242", 1);
	cfg = parse_ok("[template a]\n");
	if (geteuid() == 0) {
		ck_assert_str_eq(cfg->socket_path, "/run/sandpool/sandpool.sock");
		ck_assert_str_eq(cfg->state_dir, "/run/sandpool");
	} else {
		ck_assert_str_eq(cfg->socket_path, "/run/user/4242/sandpool/sandpool.sock");
		ck_assert_str_eq(cfg->state_dir, "/run/user/4242/sandpool");
	}
	config_free(cfg);

	unsetenv("XDG_RUNTIME_DIR");
	cfg = parse_ok("[template a]\n");
	if (geteuid() != 0) {
		snprintf(expect, sizeof(expect), "/tmp/sandpool-%u/sandpool.sock",
			 (unsigned)geteuid());
		ck_assert_str_eq(cfg->socket_path, expect);
	}
	config_free(cfg);

	if (saved_copy)
		setenv("XDG_RUNTIME_DIR", saved_copy, 1);
	free(saved_copy);
}
END_TEST

START_TEST(test_default_agent_path)
{
	char buf[PATH_MAX], exe[PATH_MAX], fake[PATH_MAX + 32];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	int fd;

	ck_assert_int_eq(config_default_agent_path(buf, sizeof(buf)), 0);
	ck_assert_int_eq(config_default_agent_path(buf, 4), -ENAMETOOLONG);
	if (access(SANDPOOL_AGENT_PATH, X_OK) == 0) {
		ck_assert_int_eq(config_default_agent_path(buf, sizeof(buf)), 0);
		ck_assert_str_eq(buf, SANDPOOL_AGENT_PATH);
		return;
	}
	/* Not installed: an agent next to the running binary wins. */
	ck_assert_int_gt(n, 0);
	exe[n] = '\0';
	*strrchr(exe, '/') = '\0';
	snprintf(fake, sizeof(fake), "%s/sandpool-agent", exe);
	fd = open(fake, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0755);
	if (fd < 0)
		return; /* someone else's file, or a read-only tree: leave it be */
	close(fd);
	ck_assert_int_eq(config_default_agent_path(buf, sizeof(buf)), 0);
	unlink(fake);
	ck_assert_str_eq(buf, fake);
	ck_assert_int_eq(config_default_agent_path(buf, sizeof(buf)), 0);
	ck_assert_str_eq(buf, SANDPOOL_AGENT_PATH);
}
END_TEST

static const struct unit_case {
	const char *text;
	int rc;
	uint64_t value;
} size_cases[] = {
	{ "0", 0, 0 },
	{ "100", 0, 100 },
	{ "100B", 0, 100 },
	{ "64k", 0, 64 * 1024 },
	{ "64K", 0, 64 * 1024 },
	{ "64KiB", 0, 64 * 1024 },
	{ "512M", 0, 512 * MIB },
	{ "512mb", 0, 512 * MIB },
	{ "1G", 0, 1024 * MIB },
	{ "1gib", 0, 1024 * MIB },
	{ "2T", 0, 2ull << 40 },
	{ "16777215T", 0, 16777215ull << 40 },
	{ "18446744073709551615", 0, UINT64_MAX },
	{ "1.5G", -EINVAL, 0 },
	{ "12Q", -EINVAL, 0 },
	{ "", -EINVAL, 0 },
	{ "K", -EINVAL, 0 },
	{ "-1", -EINVAL, 0 },
	{ " 1", -EINVAL, 0 },
	{ "1 K", -EINVAL, 0 },
	{ "1KK", -EINVAL, 0 },
	{ "1iB", -EINVAL, 0 },
	{ "0x10", -EINVAL, 0 },
	{ "16777216T", -ERANGE, 0 },
	{ "18446744073709551616", -ERANGE, 0 },
};

static const struct unit_case duration_cases[] = {
	{ "30s", 0, 30000 },
	{ "500ms", 0, 500 },
	{ "5m", 0, 300000 },
	{ "1h", 0, 3600000 },
	{ "2d", 0, 172800000 },
	{ "10", 0, 10000 },
	{ "0", 0, 0 },
	{ "", -EINVAL, 0 },
	{ "s", -EINVAL, 0 },
	{ "1.5s", -EINVAL, 0 },
	{ "5M", -EINVAL, 0 },
	{ "1w", -EINVAL, 0 },
	{ "30 s", -EINVAL, 0 },
	{ "-1s", -EINVAL, 0 },
	{ "1e3", -EINVAL, 0 },
	{ "soon", -EINVAL, 0 },
	{ "18446744073709551615s", -ERANGE, 0 },
	{ "99999999999999999999", -ERANGE, 0 },
};

START_TEST(test_sizes)
{
	const struct unit_case *c = &size_cases[_i];
	uint64_t v = 12345;

	ck_assert_msg(config_parse_size(c->text, &v) == c->rc, "'%s'", c->text);
	if (c->rc == 0)
		ck_assert_uint_eq(v, c->value);
}
END_TEST

START_TEST(test_durations)
{
	const struct unit_case *c = &duration_cases[_i];
	uint64_t v = 12345;

	ck_assert_msg(config_parse_duration_ms(c->text, &v) == c->rc, "'%s'", c->text);
	if (c->rc == 0)
		ck_assert_uint_eq(v, c->value);
}
END_TEST

static const struct bad_case {
	const char *text;
	const char *prefix;
} bad_cases[] = {
	{ "[daemon]\nsockte = /x.sock\n", "test.conf:2: key 'sockte': unknown key in [daemon]" },
	{ "[template a]\nsocket = /x.sock\n", "test.conf:2: key 'socket': belongs in [daemon]" },
	{ "[daemon]\n[deamon]\n", "test.conf:2: unknown section [deamon]" },
	{ "[daemon x]\n", "test.conf:1: unknown section [daemon x]" },
	{ "[daemon\n", "test.conf:1: section line does not end with ']'" },
	{ "[template a]\nenabled = maybe\n",
	  "test.conf:2: key 'enabled': 'maybe' is not a boolean" },
	{ "[daemon]\nmax_inflight = 0\n",
	  "test.conf:2: key 'max_inflight': 0 is out of range 1..4096" },
	{ "[daemon]\nmax_frame = 128M\n",
	  "test.conf:2: key 'max_frame': 128M is out of range 1K..64M" },
	{ "[daemon]\nmax_timeout = 500ms\n",
	  "test.conf:2: key 'max_timeout': 500ms is out of range 1s..7d" },
	{ "[daemon]\nsandbox_uid = 0\n",
	  "test.conf:2: key 'sandbox_uid': 0 is out of range 1..4294967294" },
	{ "[daemon]\nsocket_mode = 0999\n",
	  "test.conf:2: key 'socket_mode': '0999' is not an octal mode" },
	{ "[daemon]\nsocket_mode = 1777\n",
	  "test.conf:2: key 'socket_mode': 1777 is out of range 0000..0777" },
	{ "[daemon]\nlog_level = verbose\n",
	  "test.conf:2: key 'log_level': 'verbose' is not one of: error, warn, info, debug" },
	{ "[daemon]\nsocket = run/sandpool.sock\n",
	  "test.conf:2: key 'socket': 'run/sandpool.sock' is not an absolute path" },
	{ "[template a]\nrootfs = images/py\n",
	  "test.conf:2: key 'rootfs': 'images/py' is neither 'host' nor an absolute path" },
	{ "[template a]\nbind_ro = /usr\n",
	  "test.conf:2: key 'bind_ro': '/usr' is not SOURCE:DEST" },
	{ "[template a]\nbind_ro = usr:/usr\n",
	  "test.conf:2: key 'bind_ro': source 'usr' is not an absolute path" },
	{ "[template a]\nbind_rw = /srv/../etc:/data\n",
	  "test.conf:2: key 'bind_rw': source '/srv/../etc' has a '..' component" },
	{ "[template a]\nbind_rw = /srv:/data/..\n",
	  "test.conf:2: key 'bind_rw': dest '/data/..' has a '..' component" },
	{ "[template a]\nbind_ro = /usr://\n", "test.conf:2: key 'bind_ro': dest may not be /" },
	{ "[template a]\n\n[template a]\n", "test.conf:3: duplicate section [template a]" },
	{ "[daemon]\n[daemon]\n", "test.conf:2: duplicate section [daemon]" },
	{ "[template a b]\n", "test.conf:1: template name 'a b'" },
	{ "[template a/b]\n", "test.conf:1: template name 'a/b'" },
	{ "[template]\n", "test.conf:1: [template] needs a name" },
	{ "socket = /x.sock\n[daemon]\n", "test.conf:1: key 'socket': outside any section" },
	{ "[template a]\nmin_warm = 1\nmin_warm = 2\n", "test.conf:3: key 'min_warm': set twice" },
	{ "[template a]\nmin_warm\n", "test.conf:2: expected key = value" },
	{ "[template a]\n= 3\n", "test.conf:2: no key before '='" },
	{ "[template a]\nmin_warm =\n", "test.conf:2: key 'min_warm': empty value" },
	{ "[template a]\nmin_warm = # none\n", "test.conf:2: key 'min_warm': empty value" },
	{ "[template a]\nmax_output = 99999999999999999999\n",
	  "test.conf:2: key 'max_output': '99999999999999999999' is too large" },
	{ "[template a]\nworkspace_size = 1.5G\n",
	  "test.conf:2: key 'workspace_size': '1.5G' is not a size" },
	{ "[template a]\ntimeout = 0\n", "test.conf:2: key 'timeout': 0 is out of range 1ms..7d" },
	{ "[template a]\nlanguage = cobol\n",
	  "test.conf:2: key 'language': 'cobol' is not one of: python, javascript, bash, shell" },
	{ "[template a]\nbackend = docker\n",
	  "test.conf:2: key 'backend': 'docker' is not one of: local, e2b" },
	{ "[template a]\nnetwork = bridge\n",
	  "test.conf:2: key 'network': 'bridge' is not one of: none, host" },
	{ "[template a]\nenv = NOVALUE\n", "test.conf:2: key 'env': 'NOVALUE' is not KEY=VALUE" },
	{ "[template a]\nenv = 1X=y\n", "test.conf:2: key 'env': '1X' is not a variable name" },
	{ "[template a]\nenv = A-B=y\n", "test.conf:2: key 'env': 'A-B' is not a variable name" },
	{ "[template a]\nenv = A=1\nenv = A=2\n", "test.conf:3: key 'env': 'A' is set twice" },
	{ "[template a]\nenv = \"A=1\n", "test.conf:2: key 'env': unterminated quote" },
	{ "[template a]\nenv = \"A=1\" x\n",
	  "test.conf:2: key 'env': text after the closing quote" },
	{ "[template python]\nmin_warm = 5\nmax_total = 4\n",
	  "test.conf: template 'python': key 'min_warm': 5 exceeds max_total 4" },
	{ "[template a]\ntimeout = 2h\n",
	  "test.conf: template 'a': key 'timeout': 2h exceeds max_timeout 1h" },
	{ "[daemon]\nmax_sandboxes = 3\n[template a]\n[template b]\n",
	  "test.conf: key 'max_sandboxes': 3 is less than the 4 sandboxes" },
	{ "[daemon]\n", "test.conf: no enabled [template NAME] section" },
	{ "", "test.conf: no enabled [template NAME] section" },
	{ "[template a]\nenabled = no\n", "test.conf: no enabled [template NAME] section" },
};

START_TEST(test_bad_config)
{
	assert_parse_error(bad_cases[_i].text, bad_cases[_i].prefix);
}
END_TEST

/* Appends n lines "<before><i><after>\n" to text, a malloc'd string. */
static char *repeat_lines(char *text, const char *before, const char *after, unsigned n)
{
	size_t len = strlen(text);

	for (unsigned i = 0; i < n; i++) {
		char line[128];
		int l = snprintf(line, sizeof(line), "%s%u%s", before, i, after);

		text = realloc(text, len + (size_t)l + 2);
		ck_assert_ptr_nonnull(text);
		memcpy(text + len, line, (size_t)l);
		len += (size_t)l;
		text[len++] = '\n';
		text[len] = '\0';
	}
	return text;
}

START_TEST(test_limits)
{
	char line[4200], text[4300];
	char *many;
	struct config *cfg;

	/* 4096 bytes is the longest line, comment or not. */
	memset(line, 'x', 4095);
	line[0] = '#';
	line[4095] = '\0';
	snprintf(text, sizeof(text), "[template a]\n%s\n", line);
	cfg = parse_ok(text);
	config_free(cfg);
	snprintf(text, sizeof(text), "[template a]\n%sx\n", line);
	cfg = parse_ok(text);
	config_free(cfg);
	snprintf(text, sizeof(text), "[template a]\n%sxx\n", line);
	assert_parse_error(text, "test.conf:2: line longer than 4096 bytes");

	/* The socket path must fit a sockaddr_un. */
	memset(line, 'a', 200);
	line[200] = '\0';
	snprintf(text, sizeof(text), "[daemon]\nsocket = /%s\n[template a]\n", line);
	assert_parse_error(text, "test.conf:2: key 'socket': longer than 107 bytes");

	many = repeat_lines(strdup("[template a]\n"), "bind_ro = /src", ":/dst", CONFIG_MAX_BINDS);
	cfg = parse_ok(many);
	ck_assert_uint_eq(cfg->templates[0]->n_binds, CONFIG_MAX_BINDS);
	config_free(cfg);
	many = repeat_lines(many, "bind_rw = /extra", ":/x", 1);
	assert_parse_error(many, "test.conf:34: key 'bind_rw': more than 32 bind mounts");
	free(many);

	many = repeat_lines(strdup("[template a]\n"), "env = V", "=x", CONFIG_MAX_ENV + 1);
	assert_parse_error(many, "test.conf:66: key 'env': more than 64 variables");
	free(many);

	many = repeat_lines(strdup("[daemon]\nmax_sandboxes = 4096\n"), "[template t", "]",
			    CONFIG_MAX_TEMPLATES);
	cfg = parse_ok(many);
	ck_assert_uint_eq(cfg->n_templates, CONFIG_MAX_TEMPLATES);
	config_free(cfg);
	many = repeat_lines(many, "[template extra", "]", 1);
	assert_parse_error(many, "test.conf:67: more than 64 templates");
	free(many);
}
END_TEST

START_TEST(test_quoting)
{
	const struct template_config *t;
	struct config *cfg = parse_ok("# a comment\n"
				      "; another comment\n"
				      "\n"
				      "   [daemon]   # trailing comment\n"
				      "\tsocket_group = \"  spaced  \"   # kept inside the quotes\n"
				      "state_dir = /var/lib/sp#1\n"
				      "[ template  q ]\n"
				      "env = \"GREETING=hello # not a comment\"\n"
				      "env = \"Q=say \\\"hi\\\" \\\\ bye \\n\"\n"
				      "env = EMPTY=\n"
				      "env = C=\"bare quotes\"\n"
				      "env = TAB=a\tb   \r\n"
				      "language=python\n"
				      "min_warm = 1 # one\n"
				      "rootfs = /srv/root # a directory\n");

	ck_assert_str_eq(cfg->socket_group, "  spaced  ");
	ck_assert_str_eq(cfg->state_dir, "/var/lib/sp#1");
	t = config_template(cfg, "q");
	ck_assert_ptr_nonnull(t);
	ck_assert_uint_eq(t->n_env, 5);
	ck_assert_str_eq(t->env[0], "GREETING=hello # not a comment");
	ck_assert_str_eq(t->env[1], "Q=say \"hi\" \\ bye \\n");
	ck_assert_str_eq(t->env[2], "EMPTY=");
	ck_assert_str_eq(t->env[3], "C=\"bare quotes\"");
	ck_assert_str_eq(t->env[4], "TAB=a\tb");
	ck_assert_str_eq(t->language, "python");
	ck_assert_uint_eq(t->min_warm, 1);
	ck_assert_str_eq(t->rootfs, "/srv/root");
	config_free(cfg);

	/* An empty value unsets a key that has no default. */
	cfg = parse_ok("[daemon]\nsocket_group = \"\"\n[template a]\n");
	ck_assert_ptr_null(cfg->socket_group);
	config_free(cfg);
	cfg = parse_ok("[daemon]\nsocket_group = # unset\n[template a]\n");
	ck_assert_ptr_null(cfg->socket_group);
	config_free(cfg);
	/* '#' only starts a comment after whitespace. */
	assert_parse_error("[daemon]\nmax_inflight = 7#x\n[template a]\n",
			   "test.conf:2: key 'max_inflight': '7#x' is not a number");
}
END_TEST

START_TEST(test_values)
{
	struct config *cfg = parse_ok("[daemon]\n"
				      "log_level = warning\n"
				      "socket_mode = 600\n"
				      "[template a]\n"
				      "enabled = TRUE\n"
				      "network = host\n"
				      "backend = e2b\n"
				      "timeout = 1ms\n"
				      "bind_ro = /usr/share/dict:/dict\n"
				      "bind_rw = /srv/cache:/cache\n"
				      "bind_ro = /srv/cache/ro:/cache/ro\n");
	const struct template_config *t = cfg->templates[0];

	ck_assert_int_eq(cfg->log_level, LOG_WARNING);
	ck_assert_uint_eq(cfg->socket_mode, 0600);
	ck_assert(t->enabled);
	ck_assert_int_eq(t->network, NETWORK_HOST);
	ck_assert_int_eq(t->backend, BACKEND_E2B);
	ck_assert_uint_eq(t->timeout_ms, 1);
	ck_assert_uint_eq(t->n_binds, 3);
	ck_assert_str_eq(t->binds[1].source, "/srv/cache");
	ck_assert_str_eq(t->binds[1].dest, "/cache");
	ck_assert(!t->binds[0].writable && t->binds[1].writable && !t->binds[2].writable);
	config_free(cfg);
}
END_TEST

/* Costs: "auto" is the backend's published rate (0 for local), known only
 * once the section is read; the dump prints the number. */
START_TEST(test_costs_and_ledger)
{
	struct config *cfg = parse_ok("[daemon]\n"
				      "ledger_path = off\n"
				      "ledger_flush = 1s\n"
				      "ledger_retention = 0\n"
				      "[template local]\n"
				      "[template cloud]\n"
				      "cost_per_gib_second = 0.00001\n"
				      "backend = e2b\n"
				      "[template mine]\n"
				      "cost_per_vcpu_second = 1.5e-5\n"
				      "cost_per_gib_second = auto\n");
	char *dump;

	ck_assert_str_eq(cfg->ledger_path, "off");
	ck_assert_uint_eq(cfg->ledger_flush_ms, 1000);
	ck_assert_uint_eq(cfg->ledger_retention_ms, 0);
	ck_assert_uint_eq(cfg->ledger_backlog, 100000);
	ck_assert_double_eq(cfg->templates[0]->cost_per_vcpu_second, 0);
	ck_assert_double_eq(cfg->templates[0]->cost_per_gib_second, 0);
	ck_assert_double_eq(cfg->templates[1]->cost_per_vcpu_second, 0.000014);
	ck_assert_double_eq(cfg->templates[1]->cost_per_gib_second, 0.00001);
	ck_assert_double_eq(cfg->templates[2]->cost_per_vcpu_second, 0.000015);
	ck_assert_double_eq(cfg->templates[2]->cost_per_gib_second, 0);
	dump = dump_to_string(cfg);
	ck_assert_ptr_nonnull(strstr(dump, "\ncost_per_vcpu_second = 0.000014\n"));
	ck_assert_ptr_nonnull(strstr(dump, "\ncost_per_gib_second = 0.00001\n"));
	free(dump);
	config_free(cfg);

	cfg = parse_ok("[template e]\nbackend = e2b\n");
	ck_assert_double_eq(cfg->templates[0]->cost_per_gib_second, 0.0000045);
	/* Not under /run (tmpfs): the ledger outlives a reboot. */
	if (geteuid() == 0)
		ck_assert_str_eq(cfg->ledger_path, "/var/lib/sandpool/ledger.db");
	ck_assert_uint_eq(cfg->ledger_flush_ms, 200);
	config_free(cfg);
	assert_parse_error("[template a]\ncost_per_vcpu_second = -1\n",
			   "test.conf:2: key 'cost_per_vcpu_second': '-1' is not a decimal number");
	assert_parse_error("[template a]\ncost_per_vcpu_second = nan\n",
			   "test.conf:2: key 'cost_per_vcpu_second': 'nan' is not a decimal number");
	assert_parse_error("[template a]\ncost_per_vcpu_second = 0x1p-3\n",
			   "test.conf:2: key 'cost_per_vcpu_second': '0x1p-3' is not a decimal number");
	assert_parse_error("[template a]\ncost_per_gib_second = 2\n",
			   "test.conf:2: key 'cost_per_gib_second': 2 is out of range 0..1");
	assert_parse_error("[daemon]\nledger_path = ledger.db\n[template a]\n",
			   "test.conf:2: key 'ledger_path': 'ledger.db' is neither 'off' nor an absolute path");
	assert_parse_error("[daemon]\nledger_backlog = 10\n[template a]\n",
			   "test.conf:2: key 'ledger_backlog': 10 is out of range 100..10000000");
}
END_TEST

START_TEST(test_disabled_template)
{
	struct config *cfg = parse_ok("[template a]\nenabled = off\nmin_warm = 3\n[template b]\n");

	ck_assert_uint_eq(cfg->n_templates, 1);
	ck_assert_str_eq(cfg->templates[0]->name, "b");
	ck_assert_ptr_null(config_template(cfg, "a"));
	config_free(cfg);
	/* Disabled sections are still checked. */
	assert_parse_error("[template a]\nenabled = no\nmin_warm = lots\n[template b]\n",
			   "test.conf:3: key 'min_warm': 'lots' is not a number");
}
END_TEST

START_TEST(test_overrides)
{
	static const char file[] = "[daemon]\nsocket = /file.sock\nlog_level = error\n"
				   "[template a]\n";
	char err[512];
	struct config_overrides ov = { .socket_path = "/tmp/o.sock", .state_dir = "/tmp/ostate",
				       .log_level = LOG_DEBUG };
	struct config_overrides none = { .log_level = -1 };
	struct config *cfg;

	cfg = config_parse_string(file, "test.conf", &ov, err, sizeof(err));
	ck_assert_msg(cfg != NULL, "%s", err);
	ck_assert_str_eq(cfg->socket_path, "/tmp/o.sock");
	ck_assert_str_eq(cfg->state_dir, "/tmp/ostate");
	ck_assert_int_eq(cfg->log_level, LOG_DEBUG);
	config_free(cfg);

	cfg = config_parse_string(file, "test.conf", &none, err, sizeof(err));
	ck_assert_msg(cfg != NULL, "%s", err);
	ck_assert_str_eq(cfg->socket_path, "/file.sock");
	ck_assert_int_eq(cfg->log_level, LOG_ERR);
	config_free(cfg);

	ov.socket_path = "relative.sock";
	cfg = config_load(NULL, &ov, err, sizeof(err));
	ck_assert_ptr_null(cfg);
	ck_assert_str_eq(err,
			 "command line: key 'socket': 'relative.sock' is not an absolute path");

	ov.socket_path = NULL;
	ov.log_level = LOG_NOTICE;
	cfg = config_load(NULL, &ov, err, sizeof(err));
	ck_assert_ptr_null(cfg);
	ck_assert_str_eq(err, "command line: key 'log_level': 5 is not a log level");
}
END_TEST

static const char roundtrip_text[] = "[daemon]\n"
				     "socket = /tmp/sp test/s.sock\n"
				     "socket_mode = 0600\n"
				     "socket_group = sandpool\n"
				     "state_dir = /var/lib/sandpool\n"
				     "log_level = debug\n"
				     "max_connections = 10\n"
				     "max_inflight = 7\n"
				     "max_leases_per_conn = 3\n"
				     "max_frame = 1536K\n"
				     "max_timeout = 90m\n"
				     "max_sandboxes = 100\n"
				     "create_concurrency = 2\n"
				     "agent_path = /opt/sp/agent\n"
				     "sandbox_uid = 1000\n"
				     "sandbox_gid = 1001\n"
				     "\n"
				     "[template py]\n"
				     "backend = e2b\n"
				     "language = python\n"
				     "min_warm = 0\n"
				     "max_total = 3\n"
				     "timeout = 1500ms\n"
				     "lease_ttl = 36h\n"
				     "max_output = 3000\n"
				     "workspace_size = 1G\n"
				     "network = host\n"
				     "rootfs = /srv/rootfs/py\n"
				     "bind_ro = /usr/share/dict:/dict\n"
				     "bind_rw = /srv/cache:/cache\n"
				     "bind_ro = /srv/cache/ro:/cache/ro\n"
				     "env = A=1\n"
				     "env = \"B=  spaced # value  \"\n"
				     "env = C=\"quoted\"\n"
				     "env = D=back\\slash\n"
				     "env = \"E=\\\"\"\n"
				     "\n"
				     "[template off]\n"
				     "enabled = no\n"
				     "\n"
				     "[template sh]\n";

static void assert_roundtrip(const char *text)
{
	struct config *a = parse_ok(text), *b;
	char *dump_a = dump_to_string(a), *dump_b;

	b = parse_ok(dump_a);
	assert_configs_equal(a, b);
	dump_b = dump_to_string(b);
	ck_assert_str_eq(dump_a, dump_b);
	free(dump_a);
	free(dump_b);
	config_free(a);
	config_free(b);
}

START_TEST(test_dump_roundtrip)
{
	struct config *cfg = parse_ok(roundtrip_text);
	char *dump = dump_to_string(cfg);

	/* Spot checks of the output format. */
	ck_assert_ptr_nonnull(strstr(dump, "\nmax_frame = 1536K\n"));
	ck_assert_ptr_nonnull(strstr(dump, "\nmax_timeout = 90m\n"));
	ck_assert_ptr_nonnull(strstr(dump, "\nsocket_mode = 0600\n"));
	ck_assert_ptr_nonnull(strstr(dump, "\ntimeout = 1500ms\n"));
	ck_assert_ptr_nonnull(strstr(dump, "\nlease_ttl = 36h\n"));
	ck_assert_ptr_nonnull(strstr(dump, "\nenv = \"B=  spaced # value  \"\n"));
	ck_assert_ptr_nonnull(
		strstr(dump, "\nbind_rw = /srv/cache:/cache\nbind_ro = /srv/cache/ro:/cache/ro\n"));
	ck_assert_ptr_null(strstr(dump, "[template off]"));
	free(dump);
	config_free(cfg);

	assert_roundtrip(roundtrip_text);
	assert_roundtrip(config_embedded_default);
}
END_TEST

/* Writes text to a fresh temp file; the caller unlinks path. */
static void write_temp(char *path, const char *text, size_t len)
{
	int fd = mkstemp(path);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, text, len), (ssize_t)len);
	close(fd);
}

START_TEST(test_load_file)
{
	static const char good[] = "[daemon]\nmax_inflight = 9\n[template py]\nlanguage = python\n";
	static const char bad[] = "[daemon]\n\nmax_inflight = nine\n[template py]\n";
	char path[] = "/tmp/check_config.XXXXXX", prefix[512], err[512];
	struct config *cfg;

	write_temp(path, good, sizeof(good) - 1);
	cfg = config_load(path, NULL, err, sizeof(err));
	ck_assert_msg(cfg != NULL, "%s", err);
	ck_assert_str_eq(cfg->path, path);
	ck_assert_uint_eq(cfg->max_inflight, 9);
	ck_assert_str_eq(config_template(cfg, "py")->language, "python");
	config_free(cfg);
	unlink(path);

	strcpy(path, "/tmp/check_config.XXXXXX");
	write_temp(path, bad, sizeof(bad) - 1);
	ck_assert_ptr_null(config_load(path, NULL, err, sizeof(err)));
	snprintf(prefix, sizeof(prefix), "%s:3: key 'max_inflight': 'nine' is not a number", path);
	ck_assert_str_eq(err, prefix);
	unlink(path);

	strcpy(path, "/tmp/check_config.XXXXXX");
	write_temp(path, "[template a]\n\0", 14);
	ck_assert_ptr_null(config_load(path, NULL, err, sizeof(err)));
	snprintf(prefix, sizeof(prefix), "%s: holds a NUL byte, not a text file", path);
	ck_assert_str_eq(err, prefix);
	unlink(path);
}
END_TEST

START_TEST(test_missing_file)
{
	char err[512];

	ck_assert_ptr_null(config_load("/nonexistent/sandpool.conf", NULL, err, sizeof(err)));
	ck_assert_str_eq(err, "/nonexistent/sandpool.conf: No such file or directory");
	ck_assert_ptr_null(config_load("/", NULL, err, sizeof(err)));
	ck_assert_str_eq(err, "/: Is a directory");
}
END_TEST

static Suite *config_suite(void)
{
	Suite *s = suite_create("config");
	TCase *tc = tcase_create("config");

	tcase_add_test(tc, test_embedded_default);
	tcase_add_test(tc, test_default_runtime_paths);
	tcase_add_test(tc, test_default_agent_path);
	tcase_add_loop_test(tc, test_sizes, 0, (int)ARRAY_SIZE(size_cases));
	tcase_add_loop_test(tc, test_durations, 0, (int)ARRAY_SIZE(duration_cases));
	tcase_add_loop_test(tc, test_bad_config, 0, (int)ARRAY_SIZE(bad_cases));
	tcase_add_test(tc, test_limits);
	tcase_add_test(tc, test_quoting);
	tcase_add_test(tc, test_values);
	tcase_add_test(tc, test_costs_and_ledger);
	tcase_add_test(tc, test_disabled_template);
	tcase_add_test(tc, test_overrides);
	tcase_add_test(tc, test_dump_roundtrip);
	tcase_add_test(tc, test_load_file);
	tcase_add_test(tc, test_missing_file);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(config_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
