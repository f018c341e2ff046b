/*
 * Logging for every sandpool program: one function, levels taken from
 * syslog(3) so that under systemd each line carries the "<N>" priority
 * prefix journald understands. Owns nothing but the process-wide level.
 */
#ifndef SANDPOOL_LOG_H
#define SANDPOOL_LOG_H

#include <syslog.h>

/* ident prefixes plain-text lines; the string must outlive the process. */
void log_init(const char *ident);
void log_set_level(int level);
int log_get_level(void);
/* "error", "warn", "info", "debug" -> LOG_ERR ... LOG_DEBUG, or -1. */
int log_level_from_name(const char *name);

void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_ERR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

/* Program-ending failure: only at start-up or in a pre-exec child. */
void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* A broken invariant: logs and aborts. */
#define fatal(...)                                                                                 \
	do {                                                                                           \
		log_msg(LOG_CRIT, __VA_ARGS__);                                                            \
		abort();                                                                                   \
	} while (0)

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#endif
