/*
 * sandpoold configuration: one key table drives parsing, defaults,
 * validation and the config dump. The file is INI-style:
 *
 *   [daemon]
 *   socket = /run/sandpool/sandpool.sock
 *   [template python]
 *   language = python
 *   min_warm = 2
 *
 * Owns struct config and everything hanging off it (template configs,
 * strings); config_free() releases it all.
 */
#ifndef SANDPOOL_DAEMON_CONFIG_H
#define SANDPOOL_DAEMON_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#define CONFIG_MAX_TEMPLATES 64
#define CONFIG_MAX_BINDS 32
#define CONFIG_MAX_ENV 64

enum backend_kind {
	BACKEND_LOCAL,
	BACKEND_E2B,
};

enum sandbox_network {
	NETWORK_NONE, /* a fresh network namespace holding only lo */
	NETWORK_HOST, /* the host's network namespace */
};

struct bind_mount {
	char *source; /* host path */
	char *dest;   /* path inside the sandbox */
	bool writable;
};

struct template_config {
	char *name;
	bool enabled;		/* always true: config_load() drops "enabled = no" templates */
	enum backend_kind backend;
	char *language;		/* "python", "javascript", "bash", "shell", ... informational + code.run default */
	unsigned min_warm;	/* sandboxes kept warm */
	unsigned max_warm;	/* the demand-driven target's ceiling */
	unsigned max_total;	/* warm + creating + leased */
	unsigned max_creating;	/* creations in flight for this template */
	uint64_t timeout_ms;	/* default exec timeout */
	uint64_t lease_ttl_ms;	/* longest a lease lives without release */
	uint64_t max_warm_age_ms; /* warm sandboxes older than this are replaced */
	uint64_t session_idle_ttl_ms; /* a session's sandbox without a lease dies after this */
	uint64_t session_max_age_ms;  /* a session ends this long after it began */
	uint64_t max_output;	/* bytes of stdout+stderr kept per exec */
	uint64_t workspace_size; /* bytes of the /workspace tmpfs */
	uint64_t memory;	/* bytes, cgroup memory limit */
	unsigned pids;		/* cgroup pids limit */
	uint64_t cpu_milli;	/* thousandths of a CPU, cgroup CPU quota */
	double cost_per_vcpu_second; /* ledger: dollars per vCPU-second alive */
	double cost_per_gib_second;  /* ledger: dollars per GiB of memory per second alive */
	enum sandbox_network network;
	char *rootfs;		/* "host" or a directory */
	struct bind_mount binds[CONFIG_MAX_BINDS];
	unsigned n_binds;
	char *env[CONFIG_MAX_ENV]; /* "KEY=VALUE" added to every exec */
	unsigned n_env;
	char *preload;		/* code run in the default context before a sandbox is warm; NULL: none */
	uint64_t max_file_size;	/* bytes of data in one files.write or files.read (max_frame bounds it too) */
	/* backend = e2b (docs/E2B.md) */
	char *e2b_template;	/* E2B's templateID */
	char *e2b_api_url;	/* control plane; NULL: https://api.<e2b_domain> */
	char *e2b_domain;
	char *e2b_sandbox_url;	/* NULL: https://<port>-<sandboxID>.<domain>; else every in-sandbox request goes here */
	char *api_key_env;	/* environment variable holding the API key */
	uint64_t e2b_timeout_ms; /* E2B's TTL for our sandboxes, renewed while we keep them */
};

struct config {
	char *path;		/* file read, or NULL for the embedded default */
	char *socket_path;
	mode_t socket_mode;
	char *socket_group;	/* NULL: leave the group alone */
	char *state_dir;
	int log_level;		/* LOG_ERR .. LOG_DEBUG */
	unsigned max_connections;
	unsigned max_inflight;	/* requests per connection */
	unsigned max_leases_per_conn;
	uint64_t max_frame;	/* bytes per message */
	uint64_t max_timeout_ms; /* ceiling for timeout_ms and wait_ms */
	uint64_t drain_timeout_ms; /* at SIGTERM, how long leases may finish */
	uint64_t health_interval_ms; /* how often each sandbox's agent must answer a ping */
	unsigned max_sandboxes;	/* across all templates */
	unsigned create_concurrency; /* sandbox creations in flight, all templates */
	char *agent_path;	/* sandpool-agent binary */
	uid_t sandbox_uid;	/* uid/gid user code runs as inside sandboxes */
	gid_t sandbox_gid;
	uid_t host_uid_base;	/* sandbox N owns host ids base+2N (its root) and base+2N+1 */
	char *cgroup_root;	/* "" (auto) or a path inside the cgroup hierarchy */
	char *ledger_path;	/* the usage ledger (SQLite), or "off" */
	uint64_t ledger_flush_ms; /* how often queued ledger records are committed */
	uint64_t ledger_retention_ms; /* rows older than this are pruned; 0: kept */
	unsigned ledger_backlog; /* ledger records queued at most */

	struct template_config *templates[CONFIG_MAX_TEMPLATES];
	unsigned n_templates;
};

/*
 * Overrides taken from the command line; applied after the file so that
 * --socket beats the file's socket key. NULL fields are left alone.
 */
struct config_overrides {
	const char *socket_path;
	const char *state_dir;
	int log_level; /* -1: not given */
};

/*
 * Loads path, or the embedded default when path is NULL. On error returns
 * NULL and writes "FILE:LINE: key 'K': what is wrong" into err.
 */
struct config *config_load(const char *path, const struct config_overrides *ov, char *err,
			   size_t errlen);
/* Same, from a string (tests, and the embedded default); name labels errors. */
struct config *config_parse_string(const char *text, const char *name,
				   const struct config_overrides *ov, char *err, size_t errlen);
void config_free(struct config *cfg);

const struct template_config *config_template(const struct config *cfg, const char *name);

/* Whether two templates, or two [daemon] sections, have the same settings. */
bool config_template_equal(const struct template_config *a, const struct template_config *b);
bool config_daemon_equal(const struct config *a, const struct config *b);

/* Writes the effective configuration, every key, in file syntax. */
void config_dump(const struct config *cfg, FILE *out);

/* The embedded default configuration, as text. */
extern const char config_embedded_default[];

/*
 * Unit parsers, exposed for tests: "512M" -> bytes, "30s" -> ms. Return 0,
 * -EINVAL for text that is not a size/duration, -ERANGE on overflow.
 */
int config_parse_size(const char *s, uint64_t *out) __attribute__((warn_unused_result));
int config_parse_duration_ms(const char *s, uint64_t *out) __attribute__((warn_unused_result));

/*
 * The agent_path default: SANDPOOL_AGENT_PATH (the install location) when
 * it is executable, else sandpool-agent next to /proc/self/exe when that
 * one is, so that a build tree runs without installing. Falls back to
 * SANDPOOL_AGENT_PATH so the exec error names the install location.
 * Returns 0, or -ENAMETOOLONG when buf is too small.
 */
int config_default_agent_path(char *buf, size_t len) __attribute__((warn_unused_result));

#endif
