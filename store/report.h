/*
 * `sandpool report`: the ledger's views over a time window, read straight
 * from the database (read-only; the daemon may be running or not). The
 * query is the view's own text from store/schema.c with its inputs
 * narrowed to the window, so a report without a window equals the view.
 * Results come back as a msgpack object for the CLI's table, JSON and CSV
 * printers. Owns nothing beyond one struct report.
 */
#ifndef SANDPOOL_STORE_REPORT_H
#define SANDPOOL_STORE_REPORT_H

#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

#include "store/schema.h"

struct report_query {
	const char *db_path;
	const char *by;	   /* "template" (default), "day", "client", "session", "pool" */
	const char *since; /* NULL, or what report_parse_time() takes */
	const char *until;
};

struct report {
	/* {by, view, since, until, columns: [names], rows: [{column: value}]};
	 * since and until are ledger times or nil. */
	const msgpack_object *result;
	msgpack_unpacked unpacked; /* private */
	char *packed;		   /* private: the objects' strings point into it */
};

/* The names `by` takes, for usage messages: "template|day|...". */
extern const char report_by_names[];

/*
 * Runs q. Returns 0 with out filled (free with report_free()), or -1 with
 * err: a bad argument, a missing or foreign database, a schema other than
 * this build's.
 */
int report_run(const struct report_query *q, struct report *out, char *err, size_t errlen)
	__attribute__((warn_unused_result));
void report_free(struct report *r);

/*
 * A window bound as a ledger time: "90s", "30m", "24h", "7d", "2w" back
 * from now_us (CLOCK_REALTIME), or a UTC date "2026-11-23" (its midnight)
 * or time "2026-11-23T08:40[:01[.123456]][Z]". 0, or -EINVAL.
 */
int report_parse_time(const char *s, uint64_t now_us, char out[SCHEMA_TIME_LEN])
	__attribute__((warn_unused_result));

#endif
