/*
 * The size of a message in its CRLF form, as STAT and LIST report it.
 *
 * popkitd's RETR encoder turns a stored message into what the client
 * receives (before dot-stuffing and the terminator) by these rules, and a
 * store must report sizes by the same rules, so both live here:
 *
 *   - every LF not preceded by CR becomes CRLF;
 *   - a CR not followed by LF is kept as it is;
 *   - a non-empty message that does not end with LF gets a final CRLF.
 *
 * Usage: zero a struct popkit_crlf_size, feed it every chunk of the raw
 * message in order, then read popkit_crlf_size_finish().
 */
#ifndef POPKIT_CRLF_H
#define POPKIT_CRLF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct popkit_crlf_size {
  uint64_t octets;    /* CRLF-form octets counted so far */
  uint64_t raw;       /* raw octets fed so far */
  unsigned char last; /* the last raw byte fed, 0 before any */
};

static inline void popkit_crlf_size_feed(struct popkit_crlf_size *s, const void *data,
                                         size_t len) {
  const unsigned char *p = (const unsigned char *)data;
  const unsigned char *end = p + len;
  if (len == 0)
    return;
  s->octets += len;
  s->raw += len;
  while (p < end) {
    const unsigned char *lf = (const unsigned char *)memchr(p, '\n', (size_t)(end - p));
    if (lf == NULL)
      break;
    unsigned char before = lf > (const unsigned char *)data ? lf[-1] : s->last;
    if (before != '\r')
      s->octets++;
    p = lf + 1;
  }
  s->last = end[-1];
}

static inline uint64_t popkit_crlf_size_finish(const struct popkit_crlf_size *s) {
  if (s->raw > 0 && s->last != '\n')
    return s->octets + 2;
  return s->octets;
}

#endif /* POPKIT_CRLF_H */
