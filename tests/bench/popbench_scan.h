/*
 * popbench's reader of POP3 replies: cuts the byte stream from a server
 * into lines and checks what RFC 1939 promises a client.
 *
 * Every line must end in CRLF, with no CR or LF anywhere else. In a
 * multi-line reply a line that starts with '.' is either the terminator
 * ".\r\n" or dot-stuffed (starts with ".."); the stuffing is undone. The
 * scanner never copies a message body and finds CR and LF in one pass, 16
 * bytes at a time, so a client checking every byte still reads several
 * GB/s.
 *
 * The scanner is pulled, one event at a time, so its owner can switch
 * mode between events (the "+OK" of RETR is a status line, the bytes right
 * behind it in the same read are the message).
 */
#ifndef POPBENCH_SCAN_H
#define POPBENCH_SCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The longest line whose text is kept (status lines, CAPA and LIST lines).
 * RFC 2449 bounds responses to 512 octets; this leaves room for servers
 * that write longer ones without letting a broken one grow memory. */
#define SCAN_LINE_MAX 1024

enum scan_mode {
  SCAN_STATUS, /* one status line ("+OK ..." / "-ERR ..."), kept */
  SCAN_LINES,  /* a multi-line reply whose lines are kept (CAPA, LIST) */
  SCAN_BODY,   /* a multi-line reply counted, not kept (RETR) */
};

enum scan_event {
  SCAN_MORE,  /* every byte given was consumed: read more */
  SCAN_LINE,  /* a kept line is in line/line_len (unstuffed, no CRLF) */
  SCAN_END,   /* the terminator of a multi-line reply was read */
  SCAN_ERROR, /* the server broke the protocol; error says how */
};

struct scanner {
  enum scan_mode mode;
  /* The line being read: its bytes so far (neither CR nor LF), its first
   * two bytes, and whether a CR was read (the line ends at the LF). */
  size_t len;
  char head[2];
  bool cr_pending;
  /* The last kept line, NUL-terminated. */
  char line[SCAN_LINE_MAX + 2];
  size_t line_len;
  /* SCAN_LINES and SCAN_BODY: the size of the reply so far as the
   * message's own octets (CRLF line ends, stuffing undone, terminator not
   * counted), which is what LIST reports; and its complete lines. */
  uint64_t body_bytes;
  uint64_t body_lines;
  const char *error; /* a static string, set with SCAN_ERROR */
};

/* Starts reading a reply of the given kind; forgets any line in progress
 * (call it only between replies). */
void scan_start(struct scanner *s, enum scan_mode mode);

/* Consumes bytes from *pos up to end and returns at the first event, with
 * *pos just after the bytes it consumed. After SCAN_ERROR the scanner is
 * spent: the connection is broken. */
enum scan_event scan_next(struct scanner *s, const char **pos, const char *end);

#endif
