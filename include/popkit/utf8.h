/*
 * Whether a string is well-formed UTF-8, for modules whose backend speaks
 * UTF-8 only (PostgreSQL with client_encoding UTF8, LDAP): a user or
 * mailbox name that is not cannot be stored there, so it is nobody, and a
 * module answers NOT_FOUND without sending it.
 */
#ifndef POPKIT_UTF8_H
#define POPKIT_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* No overlong forms, no UTF-16 surrogates, nothing past U+10FFFF. */
static inline bool popkit_is_utf8(const char *s) {
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

#endif /* POPKIT_UTF8_H */
