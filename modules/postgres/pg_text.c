#include "pg_text.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool pg_text_is_utf8(const char *s) {
  const unsigned char *p = (const unsigned char *)s;
  while (*p != '\0') {
    unsigned char c = *p;
    size_t extra;
    uint32_t cp;
    if (c < 0x80) {
      p++;
      continue;
    } else if (c >= 0xc2 && c <= 0xdf) {
      extra = 1;
      cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
      extra = 2;
      cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      extra = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    for (size_t i = 1; i <= extra; i++) {
      if ((p[i] & 0xc0) != 0x80)
        return false; /* also stops at the NUL */
      cp = (cp << 6) | (p[i] & 0x3f);
    }
    if ((extra == 2 && cp < 0x800) || (extra == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
      return false;
    p += extra + 1;
  }
  return true;
}

int64_t pg_text_int8(const char *binary) {
  const unsigned char *b = (const unsigned char *)binary;
  uint64_t v = 0;
  for (int i = 0; i < 8; i++)
    v = (v << 8) | b[i];
  return (int64_t)v;
}

int pg_text_parse_int64(const char *s, int64_t *value_r) {
  if (s == NULL || *s == '\0')
    return -EINVAL;
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno != 0 || *end != '\0')
    return -EINVAL;
  *value_r = v;
  return 0;
}

char *pg_text_int64_array(const int64_t *ids, size_t count) {
  /* 20 digits and a sign or separator per id, braces and the NUL. */
  size_t size = count * 21 + 3;
  char *out = malloc(size);
  if (out == NULL)
    return NULL;
  size_t n = 0;
  out[n++] = '{';
  for (size_t i = 0; i < count; i++)
    n += (size_t)snprintf(out + n, size - n, "%s%" PRId64, i > 0 ? "," : "", ids[i]);
  out[n++] = '}';
  out[n] = '\0';
  return out;
}

void pg_text_one_line(char *buf, size_t size, const char *message) {
  if (size == 0)
    return;
  size_t n = 0;
  bool space = false;
  for (const char *p = message != NULL ? message : ""; *p != '\0' && n + 1 < size; p++) {
    if (*p == '\n' || *p == '\r' || *p == '\t') {
      space = n > 0;
      continue;
    }
    if (space && n + 2 < size)
      buf[n++] = ' ';
    space = false;
    buf[n++] = *p;
  }
  buf[n] = '\0';
}
