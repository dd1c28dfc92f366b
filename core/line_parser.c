#include "line_parser.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int line_parser_init(struct line_parser *p, size_t max_line) {
  memset(p, 0, sizeof *p);
  p->data = malloc(max_line);
  if (p->data == NULL)
    return -ENOMEM;
  p->capacity = max_line;
  return 0;
}

void line_parser_free(struct line_parser *p) {
  free(p->data);
  p->data = NULL;
}

/* Moves unconsumed bytes to the front so the free space is contiguous. */
static void compact(struct line_parser *p) {
  if (p->start == 0)
    return;
  size_t pending = p->end - p->start;
  memmove(p->data, p->data + p->start, pending);
  p->scanned -= p->start;
  p->start = 0;
  p->end = pending;
}

char *line_buffer_space(struct line_parser *p, size_t *size_r) {
  if (p->end == p->capacity)
    compact(p);
  *size_r = p->capacity - p->end;
  return p->data + p->end;
}

void line_buffer_received(struct line_parser *p, size_t n) {
  p->end += n;
}

void line_parser_reset(struct line_parser *p) {
  p->start = p->end = p->scanned = 0;
  p->discarding = false;
}

bool line_parser_has_input(const struct line_parser *p) {
  return p->end > p->start;
}

enum line_result line_parser_next(struct line_parser *p, char **line_r, size_t *len_r) {
  for (;;) {
    size_t from = p->scanned > p->start ? p->scanned : p->start;
    char *lf = memchr(p->data + from, '\n', p->end - from);
    if (lf == NULL) {
      p->scanned = p->end;
      if (p->discarding) {
        /* Still inside the long line: nothing of it is worth keeping. */
        p->start = p->end = p->scanned = 0;
        return LINE_NEED_MORE;
      }
      if (p->end - p->start >= p->capacity) {
        p->start = p->end = p->scanned = 0;
        p->discarding = true;
        return LINE_TOO_LONG;
      }
      return LINE_NEED_MORE;
    }
    size_t line_start = p->start;
    size_t lf_at = (size_t)(lf - p->data);
    p->start = lf_at + 1;
    p->scanned = p->start;
    if (p->discarding) {
      p->discarding = false;
      continue;
    }
    size_t len = lf_at - line_start;
    if (len > 0 && p->data[line_start + len - 1] == '\r')
      len--;
    p->data[line_start + len] = '\0';
    *line_r = p->data + line_start;
    *len_r = len;
    return LINE_READY;
  }
}
