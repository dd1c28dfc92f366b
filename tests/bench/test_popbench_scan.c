/* Tests for tests/bench/popbench_scan.c: popbench's reader of POP3 replies,
 * on which every check of a benchmark run rests. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "check_run.h"
#include "popbench_scan.h"

/* Feeds wire to s in two reads cut at `cut`, collecting events until the
 * first that is not SCAN_MORE or the bytes run out. Returns the event and
 * where it stopped (offset into wire). */
static enum scan_event feed_cut(struct scanner *s, const char *wire, size_t len,
                                size_t cut, size_t *stopped_at) {
  const char *p = wire;
  enum scan_event ev = scan_next(s, &p, wire + cut);
  if (ev == SCAN_MORE)
    ev = scan_next(s, &p, wire + len);
  *stopped_at = (size_t)(p - wire);
  return ev;
}

/* The wire form of a message given as lines without CRLF: stuffed, CRLF,
 * terminator, then `after` (the next reply). Built here, independently of
 * the scanner. */
static char *wire_of(const char *const *lines, size_t n, const char *after, size_t *len_r,
                     size_t *octets_r) {
  size_t room = strlen(after) + 4;
  for (size_t i = 0; i < n; i++)
    room += strlen(lines[i]) + 3;
  char *w = malloc(room);
  size_t len = 0, octets = 0;
  for (size_t i = 0; i < n; i++) {
    if (lines[i][0] == '.')
      w[len++] = '.';
    memcpy(w + len, lines[i], strlen(lines[i]));
    len += strlen(lines[i]);
    memcpy(w + len, "\r\n", 2);
    len += 2;
    octets += strlen(lines[i]) + 2;
  }
  memcpy(w + len, ".\r\n", 3);
  len += 3;
  memcpy(w + len, after, strlen(after));
  len += strlen(after);
  *len_r = len;
  *octets_r = octets;
  return w;
}

START_TEST(body_size_is_the_unstuffed_crlf_form_at_every_cut) {
  char long_line[5000];
  memset(long_line, 'x', sizeof long_line - 1);
  long_line[0] = '.';
  long_line[sizeof long_line - 1] = '\0';
  const char *lines[] = {"Subject: dots", "",   ".",       "..", ".x",
                         "...",           ". ", long_line, "end"};
  size_t n = sizeof lines / sizeof lines[0], len, octets;
  char *wire = wire_of(lines, n, "+OK next\r\n", &len, &octets);
  size_t terminator_end = len - strlen("+OK next\r\n");
  for (size_t cut = 0; cut <= len; cut++) {
    struct scanner s;
    scan_start(&s, SCAN_BODY);
    size_t at;
    enum scan_event ev = feed_cut(&s, wire, len, cut, &at);
    ck_assert_int_eq(ev, SCAN_END);
    ck_assert_uint_eq(s.body_bytes, octets);
    ck_assert_uint_eq(s.body_lines, n);
    /* The next reply is left for the next read of the status line. */
    ck_assert_uint_eq(at, terminator_end);
    scan_start(&s, SCAN_STATUS);
    const char *p = wire + at;
    ck_assert_int_eq(scan_next(&s, &p, wire + len), SCAN_LINE);
    ck_assert_str_eq(s.line, "+OK next");
  }
  free(wire);
}
END_TEST

START_TEST(byte_by_byte_reads_give_the_same_result) {
  const char *lines[] = {"a", "..", "", ".b"};
  size_t len, octets;
  char *wire = wire_of(lines, 4, "", &len, &octets);
  struct scanner s;
  scan_start(&s, SCAN_BODY);
  enum scan_event ev = SCAN_MORE;
  size_t i;
  for (i = 0; i < len && ev == SCAN_MORE; i++) {
    const char *p = wire + i;
    ev = scan_next(&s, &p, wire + i + 1);
    ck_assert_ptr_eq(p, wire + i + 1);
  }
  ck_assert_int_eq(ev, SCAN_END);
  ck_assert_uint_eq(i, len);
  ck_assert_uint_eq(s.body_bytes, octets);
  free(wire);
}
END_TEST

START_TEST(empty_message_is_just_the_terminator) {
  struct scanner s;
  scan_start(&s, SCAN_BODY);
  const char *wire = ".\r\n", *p = wire;
  ck_assert_int_eq(scan_next(&s, &p, wire + 3), SCAN_END);
  ck_assert_uint_eq(s.body_bytes, 0);
}
END_TEST

/* Each broken reply, cut everywhere, is an error, never a message. */
static void assert_error_at_every_cut(const char *wire, const char *why) {
  size_t len = strlen(wire);
  for (size_t cut = 0; cut <= len; cut++) {
    struct scanner s;
    scan_start(&s, SCAN_BODY);
    size_t at;
    ck_assert_int_eq(feed_cut(&s, wire, len, cut, &at), SCAN_ERROR);
    ck_assert_ptr_nonnull(strstr(s.error, why));
  }
}

START_TEST(bare_line_ends_and_unstuffed_dots_are_errors) {
  assert_error_at_every_cut("line\nmore\r\n.\r\n", "bare LF");
  assert_error_at_every_cut("line\r\n\n.\r\n", "bare LF");
  assert_error_at_every_cut("li\rne\r\n.\r\n", "bare CR");
  assert_error_at_every_cut("line\r\rmore\r\n.\r\n", "bare CR");
  assert_error_at_every_cut("line\r\n.x\r\n.\r\n", "not dot-stuffed");
  assert_error_at_every_cut("line\r\n. \r\n.\r\n", "not dot-stuffed");
}
END_TEST

START_TEST(status_line_then_body_in_one_read) {
  const char *wire = "+OK 8 octets\r\nab\r\n..c\r\n.\r\n";
  const char *p = wire, *end = wire + strlen(wire);
  struct scanner s;
  scan_start(&s, SCAN_STATUS);
  ck_assert_int_eq(scan_next(&s, &p, end), SCAN_LINE);
  ck_assert_str_eq(s.line, "+OK 8 octets");
  scan_start(&s, SCAN_BODY);
  ck_assert_int_eq(scan_next(&s, &p, end), SCAN_END);
  ck_assert_uint_eq(s.body_bytes, 8); /* "ab\r\n.c\r\n" */
  ck_assert_ptr_eq(p, end);
}
END_TEST

START_TEST(kept_lines_are_unstuffed) {
  const char *wire = "1 120\r\n..hidden\r\n\r\n.\r\n";
  const char *p = wire, *end = wire + strlen(wire);
  struct scanner s;
  scan_start(&s, SCAN_LINES);
  ck_assert_int_eq(scan_next(&s, &p, end), SCAN_LINE);
  ck_assert_str_eq(s.line, "1 120");
  ck_assert_int_eq(scan_next(&s, &p, end), SCAN_LINE);
  ck_assert_str_eq(s.line, ".hidden");
  ck_assert_uint_eq(s.line_len, 7);
  ck_assert_int_eq(scan_next(&s, &p, end), SCAN_LINE);
  ck_assert_uint_eq(s.line_len, 0);
  ck_assert_int_eq(scan_next(&s, &p, end), SCAN_END);
}
END_TEST

START_TEST(kept_lines_are_bounded) {
  size_t len = SCAN_LINE_MAX + 10;
  char *wire = malloc(len + 2);
  memset(wire, '+', len);
  memcpy(wire + len, "\r\n", 2);
  for (size_t cut = 0; cut <= len + 2; cut += 97) {
    struct scanner s;
    scan_start(&s, SCAN_STATUS);
    size_t at;
    ck_assert_int_eq(feed_cut(&s, wire, len + 2, cut, &at), SCAN_ERROR);
    ck_assert_ptr_nonnull(strstr(s.error, "longer"));
  }
  /* The longest allowed line still comes through whole. */
  memcpy(wire + SCAN_LINE_MAX, "\r\n", 2);
  struct scanner s;
  scan_start(&s, SCAN_STATUS);
  const char *p = wire;
  ck_assert_int_eq(scan_next(&s, &p, wire + SCAN_LINE_MAX + 2), SCAN_LINE);
  ck_assert_uint_eq(s.line_len, SCAN_LINE_MAX);
  free(wire);
}
END_TEST

int main(void) {
  Suite *suite = suite_create("popbench_scan");
  TCase *tc = tcase_create("scan");
  tcase_add_test(tc, body_size_is_the_unstuffed_crlf_form_at_every_cut);
  tcase_add_test(tc, byte_by_byte_reads_give_the_same_result);
  tcase_add_test(tc, empty_message_is_just_the_terminator);
  tcase_add_test(tc, bare_line_ends_and_unstuffed_dots_are_errors);
  tcase_add_test(tc, status_line_then_body_in_one_read);
  tcase_add_test(tc, kept_lines_are_unstuffed);
  tcase_add_test(tc, kept_lines_are_bounded);
  suite_add_tcase(suite, tc);
  return check_run(suite) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
