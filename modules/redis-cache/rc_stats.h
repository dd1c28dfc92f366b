/*
 * Counters of what the cache did, written to the log every interval in
 * which they moved (and, once popkitd has one, read by the metrics
 * endpoint).
 */
#ifndef POPKIT_RC_STATS_H
#define POPKIT_RC_STATS_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "popkit/module.h"

struct rc_stats {
  uint64_t hits;          /* answered from Redis */
  uint64_t misses;        /* not in Redis: asked next, then stored */
  uint64_t fall_throughs; /* Redis away or too slow: asked next */
  uint64_t stale_hits;    /* next away, a stale success let the user in */
  uint64_t logged_total;  /* all four at the last log line */
  unsigned interval_s;
  uv_timer_t *timer; /* made on the loop thread at the first count */
  const struct popkit_host *host;
  struct popkit_module_handle *self;
};

void rc_stats_init(struct rc_stats *s, unsigned interval_s,
                   const struct popkit_host *host, struct popkit_module_handle *self);

/* Counts one event; *counter is one of s's fields. */
void rc_stats_count(struct rc_stats *s, uv_loop_t *loop, uint64_t *counter);

/* Writes the line now if anything moved; stops the timer. */
void rc_stats_close(struct rc_stats *s);

#endif
