#include "popbench_scan.h"

#include <stdint.h>
#include <string.h>

#ifdef __SSE2__
#include <emmintrin.h>
#endif

void scan_start(struct scanner *s, enum scan_mode mode) {
  s->mode = mode;
  s->len = 0;
  s->cr_pending = false;
  s->line_len = 0;
  s->line[0] = '\0';
  s->body_bytes = 0;
  s->body_lines = 0;
  s->error = NULL;
}

static enum scan_event fail(struct scanner *s, const char *why) {
  s->error = why;
  return SCAN_ERROR;
}

/* Finds the CR and LF bytes of a span in order, from a bit mask of 64
 * bytes at a time: one pass for both (a memchr for each cost two calls a
 * line, and with mail's short lines the calls, not the bytes, were
 * popbench's main cost), and one branch per block rather than per byte. */
struct ctl_finder {
  const char *base; /* the block whose control bytes are in mask */
  const char *next; /* the block after it */
  const char *end;
  uint64_t mask; /* bit i: base[i] is CR or LF, not yet returned */
};

#ifdef __SSE2__
static inline uint64_t ctl_bits16(const char *p) {
  __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
  __m128i hits = _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('\r')),
                              _mm_cmpeq_epi8(v, _mm_set1_epi8('\n')));
  return (uint64_t)(unsigned)_mm_movemask_epi8(hits);
}
#endif

static inline uint64_t ctl_mask(const char *p, const char *end) {
  uint64_t mask = 0;
  size_t n = (size_t)(end - p);
#ifdef __SSE2__
  if (n >= 64) {
    return ctl_bits16(p) | ctl_bits16(p + 16) << 16 | ctl_bits16(p + 32) << 32 |
           ctl_bits16(p + 48) << 48;
  }
#endif
  if (n > 64)
    n = 64;
  for (size_t i = 0; i < n; i++)
    if (p[i] == '\r' || p[i] == '\n')
      mask |= (uint64_t)1 << i;
  return mask;
}

static inline void finder_init(struct ctl_finder *f, const char *p, const char *end) {
  size_t n = (size_t)(end - p);
  f->base = p;
  f->next = p + (n < 64 ? n : 64);
  f->end = end;
  f->mask = ctl_mask(p, end);
}

/* The next CR or LF, or NULL at the end of the span. */
static inline const char *finder_next(struct ctl_finder *f) {
  while (f->mask == 0) {
    if (f->next == f->end)
      return NULL;
    size_t n = (size_t)(f->end - f->next);
    f->base = f->next;
    f->next += n < 64 ? n : 64;
    f->mask = ctl_mask(f->base, f->end);
  }
  const char *at = f->base + __builtin_ctzll(f->mask);
  f->mask &= f->mask - 1;
  return at;
}

/* A whole line of `content` bytes (CRLF not counted) has been read. */
static inline enum scan_event line_done(struct scanner *s, size_t content) {
  if (s->mode == SCAN_STATUS) {
    s->line[content] = '\0';
    s->line_len = content;
    return SCAN_LINE;
  }
  if (content == 1 && s->head[0] == '.')
    return SCAN_END;
  size_t stuffed = 0;
  if (content > 0 && s->head[0] == '.') {
    /* A server stuffs every line that starts with a dot, so a lone dot in
     * front of anything else is a line it forgot to stuff. */
    if (content < 2 || s->head[1] != '.')
      return fail(s, "a line starting with '.' is not dot-stuffed");
    stuffed = 1;
  }
  s->body_bytes += content - stuffed + 2;
  s->body_lines++;
  if (s->mode == SCAN_BODY)
    return SCAN_MORE;
  memmove(s->line, s->line + stuffed, content - stuffed);
  s->line_len = content - stuffed;
  s->line[s->line_len] = '\0';
  return SCAN_LINE;
}

/* Adds the line bytes [p, stop) to the line being read. */
static inline bool take(struct scanner *s, const char *p, const char *stop) {
  size_t n = (size_t)(stop - p);
  if (n == 0)
    return true;
  for (size_t i = 0; s->len + i < 2 && i < n; i++)
    s->head[s->len + i] = p[i];
  if (s->mode != SCAN_BODY) {
    if (s->len + n > SCAN_LINE_MAX)
      return false;
    memcpy(s->line + s->len, p, n);
  }
  s->len += n;
  return true;
}

static inline enum scan_event end_line(struct scanner *s) {
  size_t content = s->len;
  s->len = 0;
  return line_done(s, content);
}

static const char too_long[] = "a line longer than 1024 bytes where a short one belongs";
static const char bare_cr[] = "bare CR (a CR not followed by LF)";
static const char bare_lf[] = "bare LF (a line ending without CR)";

enum scan_event scan_next(struct scanner *s, const char **pos, const char *end) {
  const char *p = *pos;
  if (p == end)
    return SCAN_MORE;
  if (s->cr_pending) {
    /* The last read ended with a CR: this one must start with its LF. */
    s->cr_pending = false;
    if (*p != '\n')
      return fail(s, bare_cr);
    *pos = ++p;
    enum scan_event ev = end_line(s);
    if (ev != SCAN_MORE)
      return ev;
  }
  struct ctl_finder f;
  finder_init(&f, p, end);
  const char *cr;
  while ((cr = finder_next(&f)) != NULL) {
    if (!take(s, p, cr))
      return fail(s, too_long);
    if (*cr == '\n')
      return fail(s, bare_lf);
    /* A CR is allowed only right before LF: the next control byte must be
     * that LF, or the CR must end this read. */
    const char *lf = finder_next(&f);
    if (lf == NULL && cr + 1 == end) {
      s->cr_pending = true;
      *pos = end;
      return SCAN_MORE;
    }
    if (lf != cr + 1 || *lf != '\n')
      return fail(s, bare_cr);
    p = lf + 1;
    enum scan_event ev = end_line(s);
    if (ev != SCAN_MORE) {
      *pos = p;
      return ev;
    }
  }
  if (!take(s, p, end))
    return fail(s, too_long);
  *pos = end;
  return SCAN_MORE;
}
