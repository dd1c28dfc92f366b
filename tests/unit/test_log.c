/* Tests for core/log.c: what a client controls cannot forge a log line. */
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check_run.h"
#include "log.h"

START_TEST(escape_contains_client_bytes) {
  char out[64];
  ck_assert_str_eq(log_escape(out, sizeof out, "o'brien"), "o'brien");
  ck_assert_str_eq(log_escape(out, sizeof out, "a\nb"), "a\\x0ab");
  ck_assert_str_eq(log_escape(out, sizeof out, "x\" ip=1.2.3.4"), "x\\x22 ip=1.2.3.4");
  ck_assert_str_eq(log_escape(out, sizeof out, "back\\slash"), "back\\x5cslash");
  ck_assert_str_eq(log_escape(out, sizeof out, "\xc3\xa9"), "\\xc3\\xa9");
  /* Truncation never splits an escape and always terminates. */
  char small[6];
  ck_assert_str_eq(log_escape(small, sizeof small, "ab\ncd"), "ab");
}
END_TEST

START_TEST(one_line_per_event_and_levels) {
  int fds[2];
  ck_assert_int_eq(pipe(fds), 0);
  int saved = dup(STDERR_FILENO);
  dup2(fds[1], STDERR_FILENO);
  log_set_level(POPKIT_LOG_WARNING);
  log_info("hidden");
  log_warning("shown %d", 1);
  char long_text[4000];
  memset(long_text, 'z', sizeof long_text - 1);
  long_text[sizeof long_text - 1] = '\0';
  log_error("%s", long_text);
  dup2(saved, STDERR_FILENO);
  close(fds[1]);
  char buf[8192];
  ssize_t n = read(fds[0], buf, sizeof buf - 1);
  ck_assert_int_gt(n, 0);
  buf[n] = '\0';
  ck_assert_ptr_null(strstr(buf, "hidden"));
  ck_assert_ptr_nonnull(strstr(buf, " warning shown 1\n"));
  /* Two events, two lines, the long one cut but still ended. */
  int lines = 0;
  for (ssize_t i = 0; i < n; i++)
    lines += buf[i] == '\n';
  ck_assert_int_eq(lines, 2);
  ck_assert_int_eq(buf[n - 1], '\n');
  close(fds[0]);
}
END_TEST

int main(void) {
  Suite *s = suite_create("log");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, escape_contains_client_bytes);
  tcase_add_test(tc, one_line_per_event_and_levels);
  suite_add_tcase(s, tc);
  int failed = check_run(s);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
