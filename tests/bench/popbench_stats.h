/*
 * What a popbench run counts: completions, bytes, latencies and errors,
 * and the one JSON object it prints at the end.
 */
#ifndef POPBENCH_STATS_H
#define POPBENCH_STATS_H

#include <stdint.h>
#include <stdio.h>

/* Latencies in microseconds, in buckets 1/32 of a power of two wide
 * (HDR-style): within 1.6% at any scale, in fixed memory however long the
 * run. Exact below 64 us, then 32 buckets for each power of two up to
 * 2^40 us. */
#define HISTOGRAM_SUB_BITS 6
#define HISTOGRAM_BUCKETS ((40 - HISTOGRAM_SUB_BITS + 3) << (HISTOGRAM_SUB_BITS - 1))

struct histogram {
  uint64_t counts[HISTOGRAM_BUCKETS];
  uint64_t total;
};

void histogram_add(struct histogram *h, uint64_t us);
/* The value below which a fraction p (0..1) of the samples fall, in
 * milliseconds (the middle of its bucket); 0 without samples. */
double histogram_percentile_ms(const struct histogram *h, double p);

#define STATS_ERROR_KINDS 64

struct stats {
  uint64_t count;  /* sessions, messages or held sessions, as counted */
  uint64_t bytes;  /* message bytes (retr) */
  uint64_t errors; /* every error, counted or not */
  struct histogram latency;
  /* Errors by kind: the first of each kind is printed with what the server
   * said, the rest counted; the tally is printed at the end. */
  struct {
    char kind[160];
    uint64_t count;
  } kinds[STATS_ERROR_KINDS];
  unsigned n_kinds;
  uint64_t other_kinds; /* errors of kinds beyond the table */
};

/* Counts an error of a kind ("PASS: -ERR") and prints it on stderr the
 * first time that kind is seen, with detail (what the server sent). */
void stats_error(struct stats *s, const char *kind, const char *detail);
/* One line per kind of error on stderr, when there were errors. */
void stats_print_error_tally(const struct stats *s);

struct report {
  const char *mode, *tls;
  long concurrency;
  double elapsed_s;     /* the counted part of the run */
  double rate_window_s; /* what count is divided by for rate_per_s */
  double ready_s;       /* < 0: not printed */
};

/* The one JSON object on stdout. */
void stats_print_json(const struct stats *s, const struct report *r, FILE *out);

#endif
