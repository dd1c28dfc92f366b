#include "base64.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>

static const char alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t base64_encode(const void *data, size_t len, char *out) {
  const unsigned char *in = data;
  char *p = out;
  size_t i = 0;
  for (; i + 3 <= len; i += 3) {
    uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
    *p++ = alphabet[v >> 18];
    *p++ = alphabet[(v >> 12) & 63];
    *p++ = alphabet[(v >> 6) & 63];
    *p++ = alphabet[v & 63];
  }
  if (len - i == 1) {
    uint32_t v = (uint32_t)in[i] << 16;
    *p++ = alphabet[v >> 18];
    *p++ = alphabet[(v >> 12) & 63];
    *p++ = '=';
    *p++ = '=';
  } else if (len - i == 2) {
    uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
    *p++ = alphabet[v >> 18];
    *p++ = alphabet[(v >> 12) & 63];
    *p++ = alphabet[(v >> 6) & 63];
    *p++ = '=';
  }
  *p = '\0';
  return (size_t)(p - out);
}

/* The value of one alphabet character, or -1 for anything else (padding
 * included: the caller places it). */
static int value_of(char c) {
  if (c >= 'A' && c <= 'Z')
    return c - 'A';
  if (c >= 'a' && c <= 'z')
    return c - 'a' + 26;
  if (c >= '0' && c <= '9')
    return c - '0' + 52;
  if (c == '+')
    return 62;
  if (c == '/')
    return 63;
  return -1;
}

long base64_decode(const char *text, size_t len, unsigned char *out) {
  if (len % 4 != 0)
    return -EINVAL;
  size_t n = 0;
  for (size_t i = 0; i < len; i += 4) {
    bool last = i + 4 == len;
    /* Padding is allowed only as the last one or two characters of the
     * whole text; "=" anywhere else, "x===" and "====" are not base64. */
    size_t pad = 0;
    if (last && text[i + 3] == '=')
      pad = text[i + 2] == '=' ? 2 : 1;
    int v[4] = {0, 0, 0, 0};
    for (size_t k = 0; k < 4 - pad; k++) {
      v[k] = value_of(text[i + k]);
      if (v[k] < 0)
        return -EINVAL;
    }
    uint32_t bits = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 |
                    (uint32_t)v[3];
    /* The bits a padded block does not carry must be zero, or two
     * different texts would decode to the same bytes. */
    if ((pad == 1 && (bits & 0xff) != 0) || (pad == 2 && (bits & 0xffff) != 0))
      return -EINVAL;
    out[n++] = (unsigned char)(bits >> 16);
    if (pad < 2)
      out[n++] = (unsigned char)(bits >> 8);
    if (pad < 1)
      out[n++] = (unsigned char)bits;
  }
  return (long)n;
}
