#include "encoder.h"

#include <string.h>

void encoder_init(struct encoder *e, bool top, uint64_t top_lines) {
  memset(e, 0, sizeof *e);
  e->top = top;
  e->top_lines = top_lines;
  e->at_line_start = true;
}

/* Called at each line end: decides whether TOP has all it wants. */
static void end_of_line(struct encoder *e) {
  bool blank = e->line_bytes == 0 || (e->line_bytes == 1 && e->prev_cr);
  e->at_line_start = true;
  e->prev_cr = false;
  e->line_bytes = 0;
  if (!e->top)
    return;
  if (!e->in_body) {
    if (blank) {
      e->in_body = true;
      if (e->top_lines == 0)
        e->done = true;
    }
  } else if (--e->top_lines == 0) {
    e->done = true;
  }
}

size_t encoder_feed(struct encoder *e, const char *in, size_t len, char *out) {
  const char *p = in;
  const char *end = in + len;
  char *o = out;
  while (p < end && !e->done) {
    if (e->at_line_start) {
      if (*p == '.')
        *o++ = '.';
      e->at_line_start = false;
    }
    /* Copy the run up to the next LF in one go: per-line work, not per
     * byte. */
    const char *lf = memchr(p, '\n', (size_t)(end - p));
    const char *stop = lf != NULL ? lf : end;
    size_t run = (size_t)(stop - p);
    if (run > 0) {
      memcpy(o, p, run);
      o += run;
      e->line_bytes += run;
      e->prev_cr = stop[-1] == '\r';
    }
    p = stop;
    if (lf == NULL)
      break;
    if (!e->prev_cr)
      *o++ = '\r';
    *o++ = '\n';
    p++;
    end_of_line(e);
  }
  return (size_t)(o - out);
}

size_t encoder_finish(struct encoder *e, char *out) {
  char *o = out;
  if (!e->at_line_start) {
    /* The message did not end with a line end: close the last line. */
    *o++ = '\r';
    *o++ = '\n';
  }
  memcpy(o, ".\r\n", 3);
  o += 3;
  return (size_t)(o - out);
}
