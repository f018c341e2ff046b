/* Clock helpers: microsecond timestamps for durations and for the ledger. */
#ifndef SANDPOOL_CLOCK_H
#define SANDPOOL_CLOCK_H

#include <stdint.h>
#include <sys/time.h>
#include <time.h>

static inline uint64_t clock_us(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static inline uint64_t monotonic_us(void)
{
	return clock_us(CLOCK_MONOTONIC);
}

static inline uint64_t realtime_us(void)
{
	return clock_us(CLOCK_REALTIME);
}

/* A libevent timeout of ms milliseconds. */
static inline struct timeval ms_timeval(uint64_t ms)
{
	return (struct timeval){ .tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000 };
}

#endif
