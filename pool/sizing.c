#include "autoconfig.h"

#include "pool/sizing.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Weight of the newest second: demand seen 3 s ago counts about a third
 * as much, so a burst raises the target within a second or two and the
 * target decays over ~5 s once it passes. */
#define RATE_ALPHA 0.3
/* Creation times move slower than demand. */
#define REPLENISH_ALPHA 0.1

void sample_add(struct sample_ring *r, uint64_t v)
{
	r->v[r->next] = v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
	r->next = (r->next + 1) % SIZING_SAMPLES;
	if (r->n < SIZING_SAMPLES)
		r->n++;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return (x > y) - (x < y);
}

uint32_t sample_percentile(const struct sample_ring *r, unsigned p)
{
	uint32_t sorted[SIZING_SAMPLES];
	unsigned idx;

	if (r->n == 0)
		return 0;
	memcpy(sorted, r->v, r->n * sizeof(sorted[0]));
	qsort(sorted, r->n, sizeof(sorted[0]), cmp_u32);
	idx = (unsigned)((uint64_t)p * (r->n - 1) / 100);
	return sorted[idx];
}

void sizing_init(struct pool_sizing *s, unsigned min_warm)
{
	memset(s, 0, sizeof(*s));
	s->target = min_warm;
}

void sizing_note_arrival(struct pool_sizing *s)
{
	s->arrivals++;
}

void sizing_note_create(struct pool_sizing *s, uint64_t create_us)
{
	double sec = (double)create_us / 1e6;

	s->replenish_s = s->replenish_s > 0 ? s->replenish_s + REPLENISH_ALPHA * (sec - s->replenish_s) : sec;
}

unsigned sizing_tick(struct pool_sizing *s, unsigned min_warm, unsigned max_warm)
{
	double need;
	unsigned t;

	s->arrival_rate += RATE_ALPHA * ((double)s->arrivals - s->arrival_rate);
	s->arrivals = 0;
	if (s->arrival_rate < 0.01)
		s->arrival_rate = 0;
	need = ceil(s->arrival_rate * s->replenish_s);
	t = need > (double)max_warm ? max_warm : (unsigned)need;
	if (t < min_warm)
		t = min_warm;
	if (t > max_warm && max_warm >= min_warm)
		t = max_warm;
	s->target = t;
	return t;
}
