/*
 * Demand-driven warm targets (docs/POOL.md): Little's law says the warm
 * sandboxes a template needs are its lease arrival rate times the time it
 * takes to replace one. This module keeps both as moving averages and
 * derives the target, clamped to [min_warm, max_warm]; and it keeps
 * bounded samples for the latency percentiles pool.stats reports.
 */
#ifndef SANDPOOL_POOL_SIZING_H
#define SANDPOOL_POOL_SIZING_H

#include <stdbool.h>
#include <stdint.h>

#define SIZING_SAMPLES 1024

struct sample_ring {
	uint32_t v[SIZING_SAMPLES];
	unsigned n; /* valid samples, up to SIZING_SAMPLES */
	unsigned next;
};

void sample_add(struct sample_ring *r, uint64_t v);
/* The p-th percentile (0..100) of the samples, 0 when there are none. */
uint32_t sample_percentile(const struct sample_ring *r, unsigned p);

struct pool_sizing {
	double arrival_rate; /* leases per second, moving average */
	double replenish_s;  /* seconds to create a sandbox, moving average */
	unsigned arrivals;   /* since the last tick */
	unsigned target;
};

void sizing_init(struct pool_sizing *s, unsigned min_warm);
void sizing_note_arrival(struct pool_sizing *s);
void sizing_note_create(struct pool_sizing *s, uint64_t create_us);
/* Once a second: folds the last second in and returns the new target. */
unsigned sizing_tick(struct pool_sizing *s, unsigned min_warm, unsigned max_warm);

#endif
