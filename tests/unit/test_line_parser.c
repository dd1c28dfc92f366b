/* Tests for core/line_parser.c: lines, pipelining, bounds, discarding. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "check_run.h"
#include "line_parser.h"

static void feed(struct line_parser *p, const char *data, size_t len) {
  while (len > 0) {
    size_t space;
    char *dst = line_buffer_space(p, &space);
    ck_assert_uint_gt(space, 0);
    size_t n = len < space ? len : space;
    memcpy(dst, data, n);
    line_buffer_received(p, n);
    data += n;
    len -= n;
  }
}

static void feed_str(struct line_parser *p, const char *s) {
  feed(p, s, strlen(s));
}

static enum line_result next(struct line_parser *p, char **line, size_t *len) {
  return line_parser_next(p, line, len);
}

START_TEST(crlf_and_lf_lines) {
  struct line_parser p;
  char *line;
  size_t len;
  ck_assert_int_eq(line_parser_init(&p, 64), 0);
  feed_str(&p, "USER ana\r\nPASS x y\nNOOP");
  ck_assert_int_eq(next(&p, &line, &len), LINE_READY);
  ck_assert_str_eq(line, "USER ana");
  ck_assert_uint_eq(len, 8);
  ck_assert_int_eq(next(&p, &line, &len), LINE_READY);
  ck_assert_str_eq(line, "PASS x y");
  ck_assert_int_eq(next(&p, &line, &len), LINE_NEED_MORE);
  ck_assert(line_parser_has_input(&p));
  feed_str(&p, "\r\n");
  ck_assert_int_eq(next(&p, &line, &len), LINE_READY);
  ck_assert_str_eq(line, "NOOP");
  ck_assert(!line_parser_has_input(&p));
  line_parser_free(&p);
}
END_TEST

START_TEST(byte_by_byte_resumes) {
  struct line_parser p;
  char *line;
  size_t len;
  const char *input = "RETR 1\r\nQUIT\r\n";
  ck_assert_int_eq(line_parser_init(&p, 16), 0);
  int lines = 0;
  for (const char *c = input; *c != '\0'; c++) {
    feed(&p, c, 1);
    while (next(&p, &line, &len) == LINE_READY) {
      ck_assert_str_eq(line, lines == 0 ? "RETR 1" : "QUIT");
      lines++;
    }
  }
  ck_assert_int_eq(lines, 2);
  line_parser_free(&p);
}
END_TEST

START_TEST(empty_line_and_nul) {
  struct line_parser p;
  char *line;
  size_t len;
  ck_assert_int_eq(line_parser_init(&p, 32), 0);
  feed(&p, "\r\nA\0B\r\n", 7);
  ck_assert_int_eq(next(&p, &line, &len), LINE_READY);
  ck_assert_uint_eq(len, 0);
  ck_assert_int_eq(next(&p, &line, &len), LINE_READY);
  ck_assert_uint_eq(len, 3); /* the NUL is kept for the dispatcher to refuse */
  ck_assert_int_eq(memcmp(line, "A\0B", 3), 0);
  line_parser_free(&p);
}
END_TEST

START_TEST(too_long_reported_once_and_discarded) {
  struct line_parser p;
  char *line;
  size_t len;
  ck_assert_int_eq(line_parser_init(&p, 16), 0);
  char big[100];
  memset(big, 'x', sizeof big);
  /* 100 bytes arrive in buffer-sized pieces; only one TOO_LONG comes out. */
  int too_long = 0;
  size_t off = 0;
  while (off < sizeof big) {
    size_t space;
    char *dst = line_buffer_space(&p, &space);
    size_t n = sizeof big - off < space ? sizeof big - off : space;
    memcpy(dst, big + off, n);
    line_buffer_received(&p, n);
    off += n;
    enum line_result r;
    while ((r = next(&p, &line, &len)) != LINE_NEED_MORE) {
      ck_assert_int_eq(r, LINE_TOO_LONG);
      too_long++;
    }
  }
  ck_assert_int_eq(too_long, 1);
  feed_str(&p, "xxxx\r\nNOOP\r\n");
  ck_assert_int_eq(next(&p, &line, &len), LINE_READY);
  ck_assert_str_eq(line, "NOOP");
  line_parser_free(&p);
}
END_TEST

START_TEST(longest_allowed_line_fits) {
  struct line_parser p;
  char *line;
  size_t len;
  ck_assert_int_eq(line_parser_init(&p, 16), 0);
  /* 14 characters + CRLF = 16: exactly the limit. */
  feed_str(&p, "ABCDEFGHIJKLMN\r\n");
  ck_assert_int_eq(next(&p, &line, &len), LINE_READY);
  ck_assert_str_eq(line, "ABCDEFGHIJKLMN");
  /* 16 characters without a line end: over. */
  feed_str(&p, "ABCDEFGHIJKLMNOP");
  ck_assert_int_eq(next(&p, &line, &len), LINE_TOO_LONG);
  line_parser_free(&p);
}
END_TEST

START_TEST(full_buffer_of_pipelined_lines) {
  struct line_parser p;
  char *line;
  size_t len;
  ck_assert_int_eq(line_parser_init(&p, 16), 0);
  feed_str(&p, "NOOP\r\nNOOP\r\nSTAT");
  size_t space;
  line_buffer_space(&p, &space);
  ck_assert_uint_eq(space, 0); /* the caller must stop reading */
  ck_assert_int_eq(next(&p, &line, &len), LINE_READY);
  line_buffer_space(&p, &space);
  ck_assert_uint_eq(space, 6); /* consumed bytes are reclaimed */
  feed_str(&p, "\r\n");
  ck_assert_int_eq(next(&p, &line, &len), LINE_READY);
  ck_assert_int_eq(next(&p, &line, &len), LINE_READY);
  ck_assert_str_eq(line, "STAT");
  line_parser_reset(&p);
  ck_assert(!line_parser_has_input(&p));
  line_parser_free(&p);
}
END_TEST

START_TEST(buffer_grows_for_a_long_line_and_shrinks_after) {
  struct line_parser p;
  char *line;
  size_t len;
  ck_assert_int_eq(line_parser_init(&p, 8192), 0);
  /* An idle session holds a small buffer, not max_line bytes. */
  ck_assert_uint_le(p.capacity, 512);
  size_t idle_capacity = p.capacity;
  char *big = malloc(8192 + 16);
  memset(big, 'a', 5000);
  memcpy(big + 5000, "\r\n", 2);
  feed(&p, big, 5002);
  ck_assert_int_eq(next(&p, &line, &len), LINE_READY);
  ck_assert_uint_eq(len, 5000);
  ck_assert_uint_ge(p.capacity, 5002);
  ck_assert_int_eq(next(&p, &line, &len), LINE_NEED_MORE);
  ck_assert_uint_eq(p.capacity, idle_capacity);
  /* Longer than max_line: reported, discarded, and the memory given back. */
  memset(big, 'b', 8192);
  feed(&p, big, 8192);
  ck_assert_int_eq(next(&p, &line, &len), LINE_TOO_LONG);
  ck_assert_uint_eq(p.capacity, idle_capacity);
  feed_str(&p, "bbbb tail\r\nNOOP\r\n");
  ck_assert_int_eq(next(&p, &line, &len), LINE_READY);
  ck_assert_str_eq(line, "NOOP");
  free(big);
  line_parser_free(&p);
}
END_TEST

int main(void) {
  Suite *s = suite_create("line_parser");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, crlf_and_lf_lines);
  tcase_add_test(tc, byte_by_byte_resumes);
  tcase_add_test(tc, empty_line_and_nul);
  tcase_add_test(tc, too_long_reported_once_and_discarded);
  tcase_add_test(tc, longest_allowed_line_fits);
  tcase_add_test(tc, full_buffer_of_pipelined_lines);
  tcase_add_test(tc, buffer_grows_for_a_long_line_and_shrinks_after);
  suite_add_tcase(s, tc);
  int failed = check_run(s);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
