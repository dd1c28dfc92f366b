#include "maildir_name.h"

#include <errno.h>
#include <string.h>

#include "maildir.h"
#include "maildir_hash.h"

size_t maildir_base_len(const char *name) {
  return strcspn(name, ":");
}

int maildir_parse_decimal(const char *p, const char *end, uint64_t *value_r) {
  uint64_t value = 0;
  if (p == end)
    return -EINVAL;
  for (; p < end; p++) {
    if (*p < '0' || *p > '9')
      return -EINVAL;
    unsigned digit = (unsigned)(*p - '0');
    if (value > (UINT64_MAX - digit) / 10)
      return -ERANGE;
    value = value * 10 + digit;
  }
  *value_r = value;
  return 0;
}

int maildir_name_field(const char *base, size_t base_len, char key, uint64_t *value_r) {
  const char *end = base + base_len;
  for (const char *p = base; p + 3 <= end; p++) {
    if (p[0] != ',' || p[1] != key || p[2] != '=')
      continue;
    const char *value_end = memchr(p + 3, ',', (size_t)(end - (p + 3)));
    if (value_end == NULL)
      value_end = end;
    if (maildir_parse_decimal(p + 3, value_end, value_r) == 0)
      return 0;
  }
  return -ENOENT;
}

uint64_t maildir_name_timestamp(const char *name) {
  uint64_t value = 0;
  for (const char *p = name; *p >= '0' && *p <= '9'; p++) {
    unsigned digit = (unsigned)(*p - '0');
    if (value > (UINT64_MAX - digit) / 10)
      return UINT64_MAX;
    value = value * 10 + digit;
  }
  return value;
}

void maildir_uid_from_base(const char *base, size_t base_len, char *uid) {
  int usable = base_len >= 1 && base_len <= MAILDIR_UID_MAX;
  for (size_t i = 0; usable && i < base_len; i++) {
    unsigned char c = (unsigned char)base[i];
    usable = c >= 0x21 && c <= 0x7e;
  }
  if (usable) {
    memcpy(uid, base, base_len);
    uid[base_len] = '\0';
    return;
  }
  uid[0] = 'H';
  maildir_fnv1a128_hex(base, base_len, uid + 1);
}
