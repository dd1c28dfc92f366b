/* Tests for core/base64.c: RFC 4648 base64, strict on input. */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base64.h"
#include "check_run.h"

/* RFC 4648 section 10. */
static const struct {
  const char *data;
  const char *text;
} rfc_vectors[] = {
    {"", ""},
    {"f", "Zg=="},
    {"fo", "Zm8="},
    {"foo", "Zm9v"},
    {"foob", "Zm9vYg=="},
    {"fooba", "Zm9vYmE="},
    {"foobar", "Zm9vYmFy"},
};

/* Decodes text of len characters into a buffer of exactly the documented
 * size, so ASan sees any write past it. Returns what base64_decode does. */
static long decode(const char *text, size_t len, unsigned char **out_r) {
  unsigned char *out = malloc(BASE64_DECODED_MAX(len) + 1);
  ck_assert_ptr_nonnull(out);
  long n = base64_decode(text, len, out);
  *out_r = out;
  return n;
}

static long decode_str(const char *text) {
  unsigned char *out;
  long n = decode(text, strlen(text), &out);
  free(out);
  return n;
}

START_TEST(encodes_rfc_vectors) {
  const char *data = rfc_vectors[_i].data;
  size_t len = strlen(data);
  char *out = malloc(BASE64_ENCODED_SIZE(len) + 1);
  ck_assert_uint_eq(base64_encode(data, len, out), strlen(rfc_vectors[_i].text));
  ck_assert_str_eq(out, rfc_vectors[_i].text);
  free(out);
}
END_TEST

START_TEST(decodes_rfc_vectors) {
  const char *text = rfc_vectors[_i].text;
  unsigned char *out;
  long n = decode(text, strlen(text), &out);
  ck_assert_int_eq(n, (long)strlen(rfc_vectors[_i].data));
  ck_assert_int_eq(memcmp(out, rfc_vectors[_i].data, (size_t)n), 0);
  free(out);
}
END_TEST

/* Every byte value, at every position modulo 3, survives the round trip,
 * and the last two alphabet characters are the standard ones. */
START_TEST(round_trips_all_bytes) {
  unsigned char data[258];
  for (size_t i = 0; i < sizeof data; i++)
    data[i] = (unsigned char)(i * 7 + 3);
  for (size_t len = 0; len <= sizeof data; len++) {
    char *text = malloc(BASE64_ENCODED_SIZE(len) + 1);
    size_t text_len = base64_encode(data, len, text);
    ck_assert_uint_eq(text_len, BASE64_ENCODED_SIZE(len));
    ck_assert_uint_eq(strlen(text), text_len);
    unsigned char *back;
    long n = decode(text, text_len, &back);
    ck_assert_int_eq(n, (long)len);
    ck_assert_int_eq(memcmp(back, data, len), 0);
    free(back);
    free(text);
  }
  const unsigned char high[] = {0xfb, 0xff, 0xbf};
  char text[5];
  base64_encode(high, sizeof high, text);
  ck_assert_str_eq(text, "+/+/");
}
END_TEST

/* Binary data with NULs decodes in full: the length is not strlen. */
START_TEST(decodes_nul_bytes) {
  unsigned char *out;
  long n = decode("AHVzZXIAcGFzcw==", 16, &out);
  ck_assert_int_eq(n, 10);
  ck_assert_int_eq(memcmp(out, "\0user\0pass", 10), 0);
  free(out);
}
END_TEST

/* Nothing here is strict base64; each names the rule it breaks. */
static const char *const rejected[] = {
    "Zg",         /* length not a multiple of 4 */
    "Zg=",        /* same, padded short */
    "Zm9vY",      /* same */
    "=",          /* padding alone */
    "====",       /* padding only */
    "Z===",       /* three padding characters */
    "Zg==Zm9v",   /* padding before the end */
    "Zm=v",       /* padding inside a block */
    "Zg=a",       /* padding inside the last block */
    "Zm9v ",      /* trailing space (length 5) */
    "Zm9vYmF ",   /* space inside a block */
    " Zm9vYmF",   /* leading space */
    "Zm9v\r\nZm", /* line break */
    "Zm9\n",      /* line feed as the last character */
    "Zm9\t",      /* tab */
    "Zm9-",       /* base64url's '-' */
    "Zm9_",       /* base64url's '_' */
    "Zm9\x80",    /* 8-bit byte */
    "Zm9.",       /* punctuation */
    "Zh==",       /* non-zero bits under the padding ("Zg==") */
    "Zm9=",       /* same ("Zm8=") */
    "Zm/=",       /* same */
};

START_TEST(rejects_non_canonical_text) {
  ck_assert_msg(decode_str(rejected[_i]) == -EINVAL, "accepted \"%s\"", rejected[_i]);
}
END_TEST

/* A NUL inside the text is a character outside the alphabet, not its end. */
START_TEST(rejects_embedded_nul) {
  unsigned char *out;
  ck_assert_int_eq(decode("Zm9v\0m9v", 8, &out), -EINVAL);
  free(out);
  ck_assert_int_eq(decode("Zm\0=", 4, &out), -EINVAL);
  free(out);
}
END_TEST

/* len is the end of the text: a good text cut short is not read past. */
START_TEST(decodes_only_len_characters) {
  unsigned char *out;
  ck_assert_int_eq(decode("Zm9vYg==", 6, &out), -EINVAL);
  free(out);
  ck_assert_int_eq(decode("Zm9vYmFy", 6, &out), -EINVAL);
  free(out);
  ck_assert_int_eq(decode("Zm9vYg==", 4, &out), 3);
  ck_assert_int_eq(memcmp(out, "foo", 3), 0);
  free(out);
}
END_TEST

START_TEST(empty_text_is_zero_bytes) {
  unsigned char out[1] = {0x55};
  ck_assert_int_eq(base64_decode("", 0, out), 0);
  ck_assert_uint_eq(out[0], 0x55);
}
END_TEST

int main(void) {
  Suite *s = suite_create("base64");
  TCase *tc = tcase_create("core");
  size_t vectors = sizeof rfc_vectors / sizeof rfc_vectors[0];
  tcase_add_loop_test(tc, encodes_rfc_vectors, 0, (int)vectors);
  tcase_add_loop_test(tc, decodes_rfc_vectors, 0, (int)vectors);
  tcase_add_test(tc, round_trips_all_bytes);
  tcase_add_test(tc, decodes_nul_bytes);
  tcase_add_loop_test(tc, rejects_non_canonical_text, 0,
                      (int)(sizeof rejected / sizeof rejected[0]));
  tcase_add_test(tc, rejects_embedded_nul);
  tcase_add_test(tc, decodes_only_len_characters);
  tcase_add_test(tc, empty_text_is_zero_bytes);
  suite_add_tcase(s, tc);
  return check_run(s) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
