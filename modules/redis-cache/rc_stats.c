#include "rc_stats.h"

#include <stdlib.h>

void rc_stats_init(struct rc_stats *s, unsigned interval_s,
                   const struct popkit_host *host, struct popkit_module_handle *self) {
  s->interval_s = interval_s;
  s->host = host;
  s->self = self;
}

static uint64_t total(const struct rc_stats *s) {
  return s->hits + s->misses + s->fall_throughs + s->stale_hits;
}

static void write_line(struct rc_stats *s) {
  if (total(s) == s->logged_total)
    return;
  s->logged_total = total(s);
  s->host->log(s->self, NULL, POPKIT_LOG_INFO,
               "cache: hits=%llu misses=%llu fall_throughs=%llu stale_hits=%llu",
               (unsigned long long)s->hits, (unsigned long long)s->misses,
               (unsigned long long)s->fall_throughs, (unsigned long long)s->stale_hits);
}

static void on_interval(uv_timer_t *timer) {
  write_line(timer->data);
}

void rc_stats_count(struct rc_stats *s, uv_loop_t *loop, uint64_t *counter) {
  (*counter)++;
  if (s->timer == NULL && s->interval_s > 0) {
    s->timer = malloc(sizeof *s->timer);
    if (s->timer == NULL)
      return;
    uv_timer_init(loop, s->timer);
    s->timer->data = s;
    uint64_t period = (uint64_t)s->interval_s * 1000;
    uv_timer_start(s->timer, on_interval, period, period);
    /* The counters are no reason to keep a loop running. */
    uv_unref((uv_handle_t *)s->timer);
  }
}

static void free_timer(uv_handle_t *handle) {
  free(handle);
}

void rc_stats_close(struct rc_stats *s) {
  write_line(s);
  if (s->timer != NULL)
    uv_close((uv_handle_t *)s->timer, free_timer);
  s->timer = NULL;
}
