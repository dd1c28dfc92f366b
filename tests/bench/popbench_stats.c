#include "popbench_stats.h"

#include <stdio.h>
#include <string.h>

static unsigned bucket_of(uint64_t us) {
  if (us < (1u << HISTOGRAM_SUB_BITS))
    return (unsigned)us;
  unsigned msb = 63u - (unsigned)__builtin_clzll(us);
  unsigned shift = msb - HISTOGRAM_SUB_BITS + 1;
  /* us >> shift lies in [2^(SUB_BITS-1), 2^SUB_BITS): the buckets of one
   * power of two follow those of the one below without a gap. */
  unsigned index = (shift << (HISTOGRAM_SUB_BITS - 1)) + (unsigned)(us >> shift);
  return index < HISTOGRAM_BUCKETS ? index : HISTOGRAM_BUCKETS - 1;
}

/* The middle of bucket index, in microseconds. */
static double bucket_middle(unsigned index) {
  const unsigned half = 1u << (HISTOGRAM_SUB_BITS - 1);
  if (index < 2 * half)
    return index;
  unsigned shift = index / half - 1;
  uint64_t low = (uint64_t)(index - shift * half) << shift;
  return (double)low + (double)((uint64_t)1 << shift) / 2.0;
}

void histogram_add(struct histogram *h, uint64_t us) {
  h->counts[bucket_of(us)]++;
  h->total++;
}

double histogram_percentile_ms(const struct histogram *h, double p) {
  if (h->total == 0)
    return 0.0;
  /* The rank of the sample asked for, 1-based, rounded up. */
  uint64_t rank = (uint64_t)(p * (double)h->total);
  if ((double)rank < p * (double)h->total)
    rank++;
  if (rank == 0)
    rank = 1;
  uint64_t seen = 0;
  for (unsigned i = 0; i < HISTOGRAM_BUCKETS; i++) {
    seen += h->counts[i];
    if (seen >= rank)
      return bucket_middle(i) / 1000.0;
  }
  return bucket_middle(HISTOGRAM_BUCKETS - 1) / 1000.0;
}

void stats_error(struct stats *s, const char *kind, const char *detail) {
  s->errors++;
  /* Kinds are told apart by what the table keeps of them. */
  char key[sizeof s->kinds[0].kind];
  snprintf(key, sizeof key, "%s", kind);
  for (unsigned i = 0; i < s->n_kinds; i++) {
    if (strcmp(s->kinds[i].kind, key) == 0) {
      s->kinds[i].count++;
      return;
    }
  }
  if (s->n_kinds == STATS_ERROR_KINDS) {
    s->other_kinds++;
    return;
  }
  memcpy(s->kinds[s->n_kinds].kind, key, sizeof key);
  s->kinds[s->n_kinds].count = 1;
  s->n_kinds++;
  fprintf(stderr, "popbench: error (the first of its kind): %s%s%s\n", kind,
          detail != NULL && detail[0] != '\0' ? ": " : "", detail != NULL ? detail : "");
}

void stats_print_error_tally(const struct stats *s) {
  for (unsigned i = 0; i < s->n_kinds; i++)
    fprintf(stderr, "popbench: %llu x %s\n", (unsigned long long)s->kinds[i].count,
            s->kinds[i].kind);
  if (s->other_kinds > 0)
    fprintf(stderr, "popbench: %llu x errors of other kinds\n",
            (unsigned long long)s->other_kinds);
}

void stats_print_json(const struct stats *s, const struct report *r, FILE *out) {
  double elapsed = r->elapsed_s > 0 ? r->elapsed_s : 0;
  double rate = r->rate_window_s > 0 ? (double)s->count / r->rate_window_s : 0;
  double mb = elapsed > 0 ? (double)s->bytes / 1048576.0 / elapsed : 0;
  fprintf(out,
          "{\"mode\":\"%s\",\"tls\":\"%s\",\"concurrency\":%ld,\"elapsed_s\":%.3f,"
          "\"count\":%llu,\"errors\":%llu,\"rate_per_s\":%.1f,\"bytes\":%llu,"
          "\"mb_per_s\":%.1f,\"latency_ms_p50\":%.3f,\"latency_ms_p99\":%.3f",
          r->mode, r->tls, r->concurrency, elapsed, (unsigned long long)s->count,
          (unsigned long long)s->errors, rate, (unsigned long long)s->bytes, mb,
          histogram_percentile_ms(&s->latency, 0.50),
          histogram_percentile_ms(&s->latency, 0.99));
  if (r->ready_s >= 0)
    fprintf(out, ",\"ready_s\":%.3f", r->ready_s);
  fputs("}\n", out);
  fflush(out);
}
