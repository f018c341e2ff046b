/*
 * The ledger's schema: its tables, the migrations that build them, and
 * the views that turn rows into durations and costs. Operators query the
 * database with sqlite3 directly, so all of it is a public interface,
 * documented in docs/LEDGER.md.
 *
 * Tables change only through migrations: step N takes PRAGMA user_version
 * N to N+1, in its own transaction, and a step, once released, is never
 * edited. Views hold no data: the daemon (re)creates them from the text
 * below whenever it opens the ledger, and `sandpool report` runs the same
 * text over a time window, so the views and the report cannot disagree.
 */
#ifndef SANDPOOL_STORE_SCHEMA_H
#define SANDPOOL_STORE_SCHEMA_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

/* The user_version the migrations below end at. */
#define SCHEMA_VERSION 1

/*
 * Brings db from its user_version up to target (SCHEMA_VERSION in the
 * daemon; tests stop earlier). Returns 0, or -1 with err filled: a database
 * newer than this build, or an SQLite error (the failed step is rolled back).
 */
int schema_migrate(sqlite3 *db, int target, char *err, size_t errlen)
	__attribute__((warn_unused_result));
/* (Re)creates every view; skips those whose text is already current. */
int schema_install_views(sqlite3 *db, char *err, size_t errlen) __attribute__((warn_unused_result));
/* PRAGMA user_version, or -1. */
int schema_version(sqlite3 *db);

/* Ledger times: "2026-11-23T08:40:01.123456Z" (UTC), which sort as text. */
#define SCHEMA_TIME_LEN 28 /* with the NUL */
void schema_format_time(uint64_t realtime_us, char out[SCHEMA_TIME_LEN]);

struct schema_view {
	const char *name;
	const char *select; /* the view's SELECT */
};

extern const struct schema_view schema_views[];
extern const size_t schema_n_views;

const struct schema_view *schema_view_find(const char *name);

#endif
