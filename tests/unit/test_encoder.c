/* Tests for core/encoder.c: CRLF, dot-stuffing, TOP, the terminator, and
 * agreement with popkit/crlf.h's size rules. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "check_run.h"
#include "encoder.h"
#include "popkit/crlf.h"

/* Encodes `in` fed in chunks of `chunk` bytes; returns a malloc'ed string. */
static char *encode(const char *in, size_t len, size_t chunk, bool top, uint64_t lines,
                    size_t *out_len) {
  struct encoder e;
  encoder_init(&e, top, lines);
  char *out = malloc(ENCODER_BOUND(len) + ENCODER_FINISH_BOUND + 1);
  size_t o = 0;
  for (size_t off = 0; off < len; off += chunk) {
    size_t n = len - off < chunk ? len - off : chunk;
    o += encoder_feed(&e, in + off, n, out + o);
  }
  o += encoder_finish(&e, out + o);
  out[o] = '\0';
  *out_len = o;
  return out;
}

static void expect(const char *in, bool top, uint64_t lines, const char *want) {
  size_t chunks[] = {1, 2, 3, 7, 4096};
  for (size_t i = 0; i < sizeof chunks / sizeof chunks[0]; i++) {
    size_t len;
    char *got = encode(in, strlen(in), chunks[i], top, lines, &len);
    ck_assert_msg(strcmp(got, want) == 0, "chunk %zu: input \"%s\": got \"%s\"",
                  chunks[i], in, got);
    free(got);
  }
}

START_TEST(line_ends) {
  expect("a\nb\n", false, 0, "a\r\nb\r\n.\r\n");
  expect("a\r\nb\r\n", false, 0, "a\r\nb\r\n.\r\n");
  expect("a\r\nb\n", false, 0, "a\r\nb\r\n.\r\n");
  expect("no final newline", false, 0, "no final newline\r\n.\r\n");
  expect("lone\rcr\n", false, 0, "lone\rcr\r\n.\r\n");
  expect("ends with cr\r", false, 0, "ends with cr\r\r\n.\r\n");
  expect("", false, 0, ".\r\n");
}
END_TEST

START_TEST(dot_stuffing) {
  expect(".\n", false, 0, "..\r\n.\r\n");
  expect("..\n", false, 0, "...\r\n.\r\n");
  expect(".x\n", false, 0, "..x\r\n.\r\n");
  expect("a.b\n.\n", false, 0, "a.b\r\n..\r\n.\r\n");
  expect("x\n.", false, 0, "x\r\n..\r\n.\r\n");
  expect(".\r\n.\r\n", false, 0, "..\r\n..\r\n.\r\n");
}
END_TEST

START_TEST(top_cuts) {
  const char *msg = "Subject: s\nFrom: f\n\nline1\nline2\n.line3\n";
  expect(msg, true, 0, "Subject: s\r\nFrom: f\r\n\r\n.\r\n");
  expect(msg, true, 1, "Subject: s\r\nFrom: f\r\n\r\nline1\r\n.\r\n");
  expect(msg, true, 3, "Subject: s\r\nFrom: f\r\n\r\nline1\r\nline2\r\n..line3\r\n.\r\n");
  expect(msg, true, 99,
         "Subject: s\r\nFrom: f\r\n\r\nline1\r\nline2\r\n..line3\r\n.\r\n");
  /* CRLF blank line ends the header too. */
  expect("A: b\r\n\r\nbody\r\n", true, 0, "A: b\r\n\r\n.\r\n");
  /* No blank line: all of it is header. */
  expect("A: b\nC: d", true, 0, "A: b\r\nC: d\r\n.\r\n");
  /* An unterminated last body line still counts. */
  expect("A: b\n\nbody", true, 5, "A: b\r\n\r\nbody\r\n.\r\n");
}
END_TEST

/* Removes dot-stuffing and the terminator: what a client stores. */
static size_t unstuff(const char *wire, size_t len, char *out) {
  size_t o = 0;
  bool line_start = true;
  ck_assert(len >= 3 && memcmp(wire + len - 3, ".\r\n", 3) == 0);
  len -= 3;
  for (size_t i = 0; i < len; i++) {
    if (line_start && wire[i] == '.') {
      line_start = false;
      continue;
    }
    out[o++] = wire[i];
    line_start = wire[i] == '\n';
  }
  return o;
}

START_TEST(random_messages_agree_with_crlf_size) {
  unsigned seed = 12345;
  const char alphabet[] = "ab.\r\n\n..\xc3\xa9";
  for (int round = 0; round < 2000; round++) {
    size_t len = (size_t)(rand_r(&seed) % 300);
    char *msg = malloc(len + 1);
    for (size_t i = 0; i < len; i++)
      msg[i] = alphabet[rand_r(&seed) % (sizeof alphabet - 1)];
    size_t chunk = 1 + (size_t)(rand_r(&seed) % 17);
    size_t wire_len;
    char *wire = encode(msg, len, chunk, false, 0, &wire_len);
    char *plain = malloc(wire_len + 1);
    size_t plain_len = unstuff(wire, wire_len, plain);

    struct popkit_crlf_size cs = {0};
    for (size_t off = 0; off < len; off += chunk)
      popkit_crlf_size_feed(&cs, msg + off, len - off < chunk ? len - off : chunk);
    ck_assert_uint_eq(popkit_crlf_size_finish(&cs), plain_len);

    /* Every line end on the wire is CRLF, and no line starts with a single
     * dot except the terminator. */
    for (size_t i = 0; i < wire_len; i++)
      if (wire[i] == '\n')
        ck_assert(i > 0 && wire[i - 1] == '\r');
    free(msg);
    free(wire);
    free(plain);
  }
}
END_TEST

START_TEST(output_bound_holds) {
  /* The worst case: every byte doubles. */
  const char *worst = "\n\n\n\n";
  size_t len;
  char *out = encode(worst, 4, 4, false, 0, &len);
  ck_assert_uint_le(len - 3, ENCODER_BOUND(4));
  free(out);
  out = encode(".\n.\n", 4, 4, false, 0, &len);
  ck_assert_str_eq(out, "..\r\n..\r\n.\r\n");
  ck_assert_uint_le(len - 3, ENCODER_BOUND(4));
  free(out);
}
END_TEST

int main(void) {
  Suite *s = suite_create("encoder");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, line_ends);
  tcase_add_test(tc, dot_stuffing);
  tcase_add_test(tc, top_cuts);
  tcase_add_test(tc, random_messages_agree_with_crlf_size);
  tcase_add_test(tc, output_bound_holds);
  suite_add_tcase(s, tc);
  int failed = check_run(s);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
