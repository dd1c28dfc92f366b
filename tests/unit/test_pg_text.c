/* Tests for modules/postgres/pg_text.c: the conversions between popkit's
 * values and PostgreSQL's wire forms. */
#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check_run.h"
#include "pg_text.h"
#include "popkit/utf8.h"

START_TEST(utf8_accepts_what_postgresql_stores) {
  ck_assert(popkit_is_utf8(""));
  ck_assert(popkit_is_utf8("o'brien"));
  ck_assert(popkit_is_utf8("m\xc3\xbcller"));         /* ü */
  ck_assert(popkit_is_utf8("\xe2\x82\xac"));          /* € */
  ck_assert(popkit_is_utf8("\xf0\x9f\x93\xac mail")); /* U+1F4EC */
  ck_assert(popkit_is_utf8("\xf4\x8f\xbf\xbf"));      /* U+10FFFF, the last */
}
END_TEST

START_TEST(utf8_refuses_what_it_cannot_be) {
  ck_assert(!popkit_is_utf8("\xff\xfe"));
  ck_assert(!popkit_is_utf8("abc\x80"));          /* a lone continuation byte */
  ck_assert(!popkit_is_utf8("\xc3"));             /* cut short by the end */
  ck_assert(!popkit_is_utf8("\xc3(x"));           /* cut short by ASCII */
  ck_assert(!popkit_is_utf8("\xc0\xaf"));         /* overlong '/' */
  ck_assert(!popkit_is_utf8("\xe0\x80\xaf"));     /* overlong, three bytes */
  ck_assert(!popkit_is_utf8("\xf0\x80\x80\xaf")); /* overlong, four bytes */
  ck_assert(!popkit_is_utf8("\xed\xa0\x80"));     /* a UTF-16 surrogate */
  ck_assert(!popkit_is_utf8("\xf4\x90\x80\x80")); /* past U+10FFFF */
  ck_assert(!popkit_is_utf8("\xf5\x80\x80\x80"));
}
END_TEST

START_TEST(int8_reads_network_order) {
  ck_assert_int_eq(pg_text_int8("\x00\x00\x00\x00\x00\x00\x00\x00"), 0);
  ck_assert_int_eq(pg_text_int8("\x00\x00\x00\x00\x00\x01\x00\x00"), 65536);
  ck_assert_int_eq(pg_text_int8("\x00\x00\x00\x01\x00\x00\x00\x02"), (int64_t)4294967298);
  ck_assert_int_eq(pg_text_int8("\x7f\xff\xff\xff\xff\xff\xff\xff"), INT64_MAX);
  ck_assert_int_eq(pg_text_int8("\xff\xff\xff\xff\xff\xff\xff\xff"), -1);
}
END_TEST

START_TEST(parse_int64_takes_whole_numbers_only) {
  int64_t v = 7;
  ck_assert_int_eq(pg_text_parse_int64("123", &v), 0);
  ck_assert_int_eq(v, 123);
  ck_assert_int_eq(pg_text_parse_int64("-5", &v), 0);
  ck_assert_int_eq(v, -5);
  ck_assert_int_eq(pg_text_parse_int64("9223372036854775807", &v), 0);
  ck_assert_int_eq(v, INT64_MAX);
  v = 7;
  ck_assert_int_eq(pg_text_parse_int64("", &v), -EINVAL);
  ck_assert_int_eq(pg_text_parse_int64("12x", &v), -EINVAL);
  ck_assert_int_eq(pg_text_parse_int64("9223372036854775808", &v), -EINVAL);
  ck_assert_int_eq(pg_text_parse_int64(NULL, &v), -EINVAL);
  ck_assert_int_eq(v, 7);
}
END_TEST

START_TEST(int64_array_is_a_bigint_array_literal) {
  int64_t ids[] = {1, -2, INT64_MAX, INT64_MIN};
  char *text = pg_text_int64_array(ids, 4);
  ck_assert_str_eq(text, "{1,-2,9223372036854775807,-9223372036854775808}");
  free(text);
  text = pg_text_int64_array(ids, 1);
  ck_assert_str_eq(text, "{1}");
  free(text);
  text = pg_text_int64_array(ids, 0);
  ck_assert_str_eq(text, "{}");
  free(text);
}
END_TEST

START_TEST(one_line_joins_libpq_messages) {
  char buf[128];
  pg_text_one_line(buf, sizeof buf,
                   "connection to server failed: Connection refused\n\tIs the server "
                   "running?\n");
  ck_assert_str_eq(
      buf, "connection to server failed: Connection refused Is the server running?");
  pg_text_one_line(buf, sizeof buf, NULL);
  ck_assert_str_eq(buf, "");
  char small[8];
  pg_text_one_line(small, sizeof small, "abcdefghijkl");
  ck_assert_str_eq(small, "abcdefg");
}
END_TEST

int main(void) {
  Suite *s = suite_create("pg_text");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, utf8_accepts_what_postgresql_stores);
  tcase_add_test(tc, utf8_refuses_what_it_cannot_be);
  tcase_add_test(tc, int8_reads_network_order);
  tcase_add_test(tc, parse_int64_takes_whole_numbers_only);
  tcase_add_test(tc, int64_array_is_a_bigint_array_literal);
  tcase_add_test(tc, one_line_joins_libpq_messages);
  suite_add_tcase(s, tc);
  return check_run(s) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
