#include "pg_text.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
