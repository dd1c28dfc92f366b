/* Tests for core/outbuf.c: the block queue between a session and its
 * socket. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "check_run.h"
#include "outbuf.h"

START_TEST(append_take_release_in_order) {
  struct outbuf b;
  outbuf_init(&b);
  /* Three blocks' worth, in pieces that straddle block boundaries. */
  size_t total = 3 * OUTBUF_BLOCK_SIZE + 123;
  char *data = malloc(total);
  for (size_t i = 0; i < total; i++)
    data[i] = (char)('a' + i % 26);
  for (size_t off = 0; off < total; off += 1000)
    outbuf_append(&b, data + off, total - off < 1000 ? total - off : 1000);
  ck_assert_uint_eq(outbuf_pending(&b), total);

  /* Take everything before releasing anything: spans handed out must stay
   * valid while the socket writes from them. */
  const char *spans[8];
  size_t lens[8], n = 0, seen = 0;
  size_t len;
  const char *p;
  while ((len = outbuf_take(&b, &p)) > 0) {
    ck_assert_uint_lt(n, 8);
    spans[n] = p;
    lens[n++] = len;
  }
  for (size_t i = 0; i < n; i++) {
    ck_assert_int_eq(memcmp(spans[i], data + seen, lens[i]), 0);
    seen += lens[i];
    outbuf_release(&b, lens[i]);
  }
  ck_assert_uint_eq(seen, total);
  ck_assert_uint_eq(outbuf_pending(&b), 0);
  ck_assert_ptr_null(b.head); /* idle: no memory held */
  free(data);
  outbuf_free(&b);
}
END_TEST

START_TEST(partial_release_keeps_the_rest) {
  struct outbuf b;
  outbuf_init(&b);
  outbuf_append_literal(&b, "+OK hello\r\n");
  const char *p;
  size_t len = outbuf_take(&b, &p);
  ck_assert_uint_eq(len, 11);
  outbuf_release(&b, 4); /* the socket took "+OK " only */
  outbuf_printf(&b, "%s %d\r\n", "+OK", 42);
  ck_assert_uint_eq(outbuf_pending(&b), 7 + 8);
  /* The written part is gone; the rest comes out once, in order. */
  outbuf_release(&b, 7);
  len = outbuf_take(&b, &p);
  ck_assert_uint_eq(len, 8);
  ck_assert_int_eq(memcmp(p, "+OK 42\r\n", 8), 0);
  outbuf_release(&b, 8);
  ck_assert_uint_eq(outbuf_pending(&b), 0);
  outbuf_free(&b);
}
END_TEST

START_TEST(reserve_and_commit) {
  struct outbuf b;
  outbuf_init(&b);
  outbuf_append_literal(&b, "x");
  /* A reservation that does not fit the tail starts a new block. */
  size_t size;
  char *room = outbuf_reserve(&b, OUTBUF_BLOCK_SIZE, &size);
  ck_assert_ptr_nonnull(room);
  ck_assert_uint_eq(size, OUTBUF_BLOCK_SIZE);
  memset(room, 'y', 10);
  outbuf_commit(&b, 10);
  ck_assert_uint_eq(outbuf_pending(&b), 11);
  /* One that fits reports all the room left in the tail. */
  ck_assert_ptr_eq(outbuf_reserve(&b, 1, &size), room + 10);
  ck_assert_uint_eq(size, OUTBUF_BLOCK_SIZE - 10);
  const char *p;
  ck_assert_uint_eq(outbuf_take(&b, &p), 1);
  ck_assert_uint_eq(outbuf_take(&b, &p), 10);
  ck_assert_int_eq(p[9], 'y');
  outbuf_free(&b);
}
END_TEST

int main(void) {
  Suite *s = suite_create("outbuf");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, append_take_release_in_order);
  tcase_add_test(tc, partial_release_keeps_the_rest);
  tcase_add_test(tc, reserve_and_commit);
  suite_add_tcase(s, tc);
  int failed = check_run(s);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
