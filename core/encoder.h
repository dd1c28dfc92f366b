/*
 * The RETR/TOP encoder: turns the raw bytes a store hands over into what
 * goes on the wire. LF becomes CRLF (CRLF stays), a line starting with '.'
 * gets a second '.', TOP stops after the header, its blank line and n body
 * lines, and the end adds a final CRLF when the message lacks one, then the
 * ".\r\n" terminator. The octets before the terminator, unstuffed, are
 * exactly what popkit/crlf.h counts for LIST and STAT.
 *
 * The encoder keeps a few flags between calls and never buffers: it takes
 * as much input as the output room it is given can hold, and the caller
 * feeds the rest with the next room.
 */
#ifndef POPKIT_CORE_ENCODER_H
#define POPKIT_CORE_ENCODER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Every input byte yields at most two output bytes (LF -> CRLF, or a '.'
 * that starts a line -> ".."), so this much room takes n bytes whole. */
#define ENCODER_BOUND(n) (2 * (n))
/* The least room encoder_feed() accepts; with it, it always takes at least
 * one byte of input. */
#define ENCODER_MIN_ROOM 2
/* What encoder_finish() may add: CRLF and ".\r\n". */
#define ENCODER_FINISH_BOUND 5

struct encoder {
  bool top;            /* TOP: cut after the header and top_lines lines */
  bool in_body;        /* the blank line that ends the header was seen */
  bool done;           /* TOP has everything it needs; ignore the rest */
  bool at_line_start;  /* the next byte starts a line */
  bool prev_cr;        /* the last byte taken was CR */
  uint64_t line_bytes; /* bytes of the current line so far (TOP only) */
  uint64_t top_lines;  /* body lines TOP still wants */
};

void encoder_init(struct encoder *e, bool top, uint64_t top_lines);

/* Encodes from in (len bytes) into out, which has room bytes, room >=
 * ENCODER_MIN_ROOM. Sets *taken to the input bytes encoded, all of them
 * when room >= ENCODER_BOUND(len) or once e->done is set (TOP has what it
 * wants; the rest is ignored). Returns the bytes written. */
size_t encoder_feed(struct encoder *e, const char *in, size_t len, char *out, size_t room,
                    size_t *taken);

/* Ends the reply into out (room for ENCODER_FINISH_BOUND). */
size_t encoder_finish(struct encoder *e, char *out);

#endif
