#include "autoconfig.h"

#include "daemon/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *log_ident = "sandpool";
static int log_level = LOG_INFO;
static bool log_journal;

static const char *const level_names[] = {
	[LOG_EMERG] = "emerg", [LOG_ALERT] = "alert", [LOG_CRIT] = "crit",  [LOG_ERR] = "error",
	[LOG_WARNING] = "warn", [LOG_NOTICE] = "notice", [LOG_INFO] = "info", [LOG_DEBUG] = "debug",
};

/* journald sets JOURNAL_STREAM to "dev:inode" of the stream it reads; only
 * when stderr is that very stream do we switch to priority prefixes. */
static bool stderr_is_journal(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	if (!js || sscanf(js, "%llu:%llu", &dev, &ino) != 2)
		return false;
	if (fstat(STDERR_FILENO, &st) < 0)
		return false;
	return st.st_dev == dev && st.st_ino == ino;
}

void log_init(const char *ident)
{
	log_ident = ident;
	log_journal = stderr_is_journal();
}

void log_set_level(int level)
{
	log_level = level;
}

int log_get_level(void)
{
	return log_level;
}

int log_level_from_name(const char *name)
{
	if (!strcmp(name, "error"))
		return LOG_ERR;
	if (!strcmp(name, "warn") || !strcmp(name, "warning"))
		return LOG_WARNING;
	if (!strcmp(name, "info"))
		return LOG_INFO;
	if (!strcmp(name, "debug"))
		return LOG_DEBUG;
	return -1;
}

static void log_vmsg(int level, const char *fmt, va_list ap)
{
	char line[2048];
	int off;
	int saved = errno;

	if (level > log_level)
		return;
	if (log_journal) {
		off = snprintf(line, sizeof(line), "<%d>", level);
	} else {
		struct timespec ts;
		struct tm tm;

		clock_gettime(CLOCK_REALTIME, &ts);
		gmtime_r(&ts.tv_sec, &tm);
		off = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ %s[%d] %s: ",
			       tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
			       tm.tm_sec, ts.tv_nsec / 1000, log_ident, (int)getpid(), level_names[level & 7]);
	}
	if (off < 0)
		off = 0;
	if ((size_t)off < sizeof(line) - 2)
		off += vsnprintf(line + off, sizeof(line) - 2 - off, fmt, ap);
	if ((size_t)off > sizeof(line) - 2)
		off = sizeof(line) - 2;
	line[off++] = '\n';
	/* One write per line keeps lines whole when several processes share stderr. */
	(void)!write(STDERR_FILENO, line, off);
	errno = saved;
}

void log_msg(int level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(level, fmt, ap);
	va_end(ap);
}

void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(LOG_ERR, fmt, ap);
	va_end(ap);
	_exit(1);
}
