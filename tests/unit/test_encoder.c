/* Tests for core/encoder.c: CRLF, dot-stuffing, TOP, the terminator, and
 * agreement with popkit/crlf.h's size rules. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "check_run.h"
#include "encoder.h"
#include "popkit/crlf.h"

/* Encodes `in` fed in chunks of `chunk` bytes, each encoded into pieces of
 * output room of at most `room` bytes, as RETR fills the tail of its
 * output blocks; returns a malloc'ed string. */
static char *encode_in_rooms(const char *in, size_t len, size_t chunk, size_t room,
                             bool top, uint64_t lines, size_t *out_len) {
  struct encoder e;
  encoder_init(&e, top, lines);
  char *out = malloc(ENCODER_BOUND(len) + ENCODER_FINISH_BOUND + 1);
  size_t o = 0;
  for (size_t off = 0; off < len; off += chunk) {
    size_t n = len - off < chunk ? len - off : chunk;
    /* Each chunk in a buffer of its own size, so that AddressSanitizer sees
     * a read past the chunk's end. */
    char *piece = malloc(n);
    memcpy(piece, in + off, n);
    for (size_t done = 0; done < n;) {
      size_t taken;
      o += encoder_feed(&e, piece + done, n - done, out + o, room, &taken);
      ck_assert_uint_gt(taken, 0);
      done += taken;
    }
    free(piece);
  }
  o += encoder_finish(&e, out + o);
  out[o] = '\0';
  *out_len = o;
  return out;
}

static char *encode(const char *in, size_t len, size_t chunk, bool top, uint64_t lines,
                    size_t *out_len) {
  return encode_in_rooms(in, len, chunk, ENCODER_BOUND(chunk), top, lines, out_len);
}

static void expect(const char *in, bool top, uint64_t lines, const char *want) {
  size_t chunks[] = {1, 2, 3, 7, 8, 9, 4096};
  size_t rooms[] = {ENCODER_MIN_ROOM, 3, 8, 9, 17, 8192};
  for (size_t i = 0; i < sizeof chunks / sizeof chunks[0]; i++) {
    for (size_t r = 0; r < sizeof rooms / sizeof rooms[0]; r++) {
      size_t len;
      char *got = encode_in_rooms(in, strlen(in), chunks[i], rooms[r], top, lines, &len);
      ck_assert_msg(strcmp(got, want) == 0,
                    "chunk %zu room %zu: input \"%s\": got \"%s\"", chunks[i], rooms[r],
                    in, got);
      free(got);
    }
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

START_TEST(long_lines_across_words) {
  /* Line ends and dots at every offset within and across 8-byte words. */
  expect("0123456\n01234567\n012345678\n.123456789abcdef\n", false, 0,
         "0123456\r\n01234567\r\n012345678\r\n..123456789abcdef\r\n.\r\n");
  expect("0123456\r\n0123456789abcde\r\n.\r\nx", false, 0,
         "0123456\r\n0123456789abcde\r\n..\r\nx\r\n.\r\n");
  expect("a long line of forty bytes, no line end", false, 0,
         "a long line of forty bytes, no line end\r\n.\r\n");
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
  /* Long header and body lines: the blank line is still told apart. */
  expect("Subject: a subject longer than a word\r\n\r\nfirst body line\nsecond\n", true,
         1, "Subject: a subject longer than a word\r\n\r\nfirst body line\r\n.\r\n");
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

/* RFC 1939's rules a byte at a time, the plainest way: what encoder.c must
 * produce however it is fed. */
static size_t reference_encode(const char *in, size_t len, char *out) {
  size_t o = 0;
  bool line_start = true;
  for (size_t i = 0; i < len; i++) {
    if (line_start && in[i] == '.')
      out[o++] = '.';
    line_start = false;
    if (in[i] == '\n') {
      if (i == 0 || in[i - 1] != '\r')
        out[o++] = '\r';
      line_start = true;
    }
    out[o++] = in[i];
  }
  if (!line_start) {
    out[o++] = '\r';
    out[o++] = '\n';
  }
  memcpy(out + o, ".\r\n", 3);
  return o + 3;
}

START_TEST(random_long_lines_match_the_reference) {
  unsigned seed = 777;
  for (int round = 0; round < 3000; round++) {
    /* Lines of 0 to 40 bytes, so line ends fall at every offset of a word;
     * dots and CRs anywhere, CRLF and bare LF mixed. */
    size_t len = 0, cap = 4000;
    char *msg = malloc(cap);
    while (len < cap - 50 && rand_r(&seed) % 40 != 0) {
      size_t line = (size_t)(rand_r(&seed) % 41);
      for (size_t i = 0; i < line; i++) {
        unsigned pick = (unsigned)rand_r(&seed) % 20;
        msg[len++] = pick == 0 ? '.' : pick == 1 ? '\r' : (char)('a' + pick);
      }
      if (rand_r(&seed) % 2)
        msg[len++] = '\r';
      msg[len++] = '\n';
    }
    char *want = malloc(ENCODER_BOUND(len) + ENCODER_FINISH_BOUND);
    size_t want_len = reference_encode(msg, len, want);
    /* Small and large chunks, and rooms from the least to one that takes a
     * chunk whole (as a fresh output block does). */
    size_t chunk = 1 + (size_t)(rand_r(&seed) % 1200);
    size_t room = round % 2 ? ENCODER_MIN_ROOM + (size_t)(rand_r(&seed) % 300)
                            : ENCODER_BOUND(chunk);
    size_t got_len;
    char *got = encode_in_rooms(msg, len, chunk, room, false, 0, &got_len);
    ck_assert_uint_eq(got_len, want_len);
    ck_assert_msg(memcmp(got, want, want_len) == 0, "round %d: chunk %zu room %zu", round,
                  chunk, room);
    free(msg);
    free(want);
    free(got);
  }
}
END_TEST

/* Line ends, CRs and dots at every offset around the encoder's 64-byte
 * blocks, fed whole and in chunks and rooms near a block's needs. */
START_TEST(block_edges_match_the_reference) {
  const size_t chunks[] = {0 /* whole */, 64, 127, 128, 129, 1000};
  const size_t rooms[] = {0 /* ENCODER_BOUND(chunk) */, 191, 192, 193, 4096};
  char msg[1200];
  char want[2 * sizeof msg + ENCODER_FINISH_BOUND];
  for (size_t offset = 0; offset < 200; offset++) {
    size_t len = 0;
    memset(msg + len, 'a', offset), len += offset;
    memcpy(msg + len, "\r\n.", 3), len += 3;
    memset(msg + len, 'b', offset), len += offset;
    memcpy(msg + len, "\n\n..\r", 5), len += 5;
    memset(msg + len, 'c', 150), len += 150;
    memcpy(msg + len, "\n.\n", 3), len += 3;
    memset(msg + len, 'd', 200 - offset), len += 200 - offset;
    size_t want_len = reference_encode(msg, len, want);
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
      for (size_t r = 0; r < sizeof rooms / sizeof rooms[0]; r++) {
        size_t chunk = chunks[c] != 0 ? chunks[c] : len;
        size_t room = rooms[r] != 0 ? rooms[r] : ENCODER_BOUND(chunk);
        size_t got_len;
        char *got = encode_in_rooms(msg, len, chunk, room, false, 0, &got_len);
        ck_assert_msg(got_len == want_len && memcmp(got, want, want_len) == 0,
                      "offset %zu chunk %zu room %zu", offset, chunk, room);
        free(got);
      }
    }
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
  tcase_add_test(tc, long_lines_across_words);
  tcase_add_test(tc, top_cuts);
  tcase_add_test(tc, random_messages_agree_with_crlf_size);
  tcase_add_test(tc, random_long_lines_match_the_reference);
  tcase_add_test(tc, block_edges_match_the_reference);
  tcase_add_test(tc, output_bound_holds);
  suite_add_tcase(s, tc);
  int failed = check_run(s);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
