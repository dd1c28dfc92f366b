/*
 * The command line parser: a resumable state machine over a bounded input
 * buffer, as nginx's mail parser is. It never allocates per byte and never
 * holds more than max_line bytes of one line. An idle session's buffer is
 * small (512 bytes); it grows for a long line and shrinks back after.
 *
 * Bytes arrive into the free space at the buffer's end (line_buffer_space /
 * line_buffer_received); line_parser_next() then returns one of:
 *   LINE_NEED_MORE  no complete line yet;
 *   LINE_READY      a line, without its CRLF or LF, NUL-terminated in place;
 *   LINE_TOO_LONG   a line passed max_line bytes: it is reported once, and
 *                   everything up to its LF is then discarded silently.
 */
#ifndef POPKIT_CORE_LINE_PARSER_H
#define POPKIT_CORE_LINE_PARSER_H

#include <stdbool.h>
#include <stddef.h>

enum line_result { LINE_NEED_MORE = 0, LINE_READY, LINE_TOO_LONG };

struct line_parser {
  char *data;      /* capacity bytes */
  size_t capacity; /* grows up to max_line for a long line, then shrinks */
  size_t max_line; /* a line with its LF must fit in this many bytes */
  size_t start;    /* first unconsumed byte */
  size_t end;      /* one past the last received byte */
  size_t scanned;  /* bytes from start already known to hold no LF */
  bool discarding; /* inside a too-long line, dropping until its LF */
};

/* max_line counts the line with its line end. Returns 0 or -ENOMEM. */
int line_parser_init(struct line_parser *p, size_t max_line);
void line_parser_free(struct line_parser *p);

/* Where the next received bytes go; *size_r is 0 when the buffer is full
 * of unconsumed complete lines (the caller then stops reading). */
char *line_buffer_space(struct line_parser *p, size_t *size_r);
void line_buffer_received(struct line_parser *p, size_t n);

enum line_result line_parser_next(struct line_parser *p, char **line_r, size_t *len_r);

/* True when unconsumed bytes remain (a partial or pipelined line). */
bool line_parser_has_input(const struct line_parser *p);

/* Drops everything buffered: after STLS, plaintext that a client pipelined
 * must never be executed (RFC 2595 section 3.1 and the STARTTLS injection
 * bugs). */
void line_parser_reset(struct line_parser *p);

#endif
