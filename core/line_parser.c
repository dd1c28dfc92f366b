#include "line_parser.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* What a session holds while idle: room for any command a client sends in
 * practice. The buffer grows, doubling, up to max_line for a longer line,
 * and shrinks back once it is empty again. */
#define LINE_BUFFER_START 512

static size_t start_capacity(size_t max_line) {
  return max_line < LINE_BUFFER_START ? max_line : LINE_BUFFER_START;
}

int line_parser_init(struct line_parser *p, size_t max_line) {
  memset(p, 0, sizeof *p);
  p->capacity = start_capacity(max_line);
  p->max_line = max_line;
  p->data = malloc(p->capacity);
  if (p->data == NULL)
    return -ENOMEM;
  return 0;
}

/* Room for a line longer than the buffer, up to max_line. Out of memory,
 * the buffer stays full, the session stops reading and its idle timer
 * ends it. */
static void grow(struct line_parser *p) {
  size_t capacity = p->capacity * 2 < p->max_line ? p->capacity * 2 : p->max_line;
  char *data = realloc(p->data, capacity);
  if (data == NULL)
    return;
  p->data = data;
  p->capacity = capacity;
}

/* Gives back what a long line took, once everything is consumed. */
static void shrink(struct line_parser *p) {
  size_t capacity = start_capacity(p->max_line);
  if (p->capacity <= capacity)
    return;
  char *data = realloc(p->data, capacity);
  if (data == NULL)
    return; /* the bigger buffer will do */
  p->data = data;
  p->capacity = capacity;
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
  if (p->end == p->capacity && p->capacity < p->max_line)
    grow(p);
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
        shrink(p);
        return LINE_NEED_MORE;
      }
      if (p->end - p->start >= p->max_line) {
        p->start = p->end = p->scanned = 0;
        p->discarding = true;
        shrink(p);
        return LINE_TOO_LONG;
      }
      if (p->start == p->end) {
        /* Every line consumed: the previous one has been handled, since
         * the caller asks for the next only then. */
        p->start = p->end = p->scanned = 0;
        shrink(p);
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
