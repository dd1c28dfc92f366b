/* A crypt(3) hash made by the system's libxcrypt with a random salt,
 * independently of popkit's own password code, for tests that need real
 * hashes to check against. */
#ifndef POPKIT_TEST_SYSTEM_CRYPT_H
#define POPKIT_TEST_SYSTEM_CRYPT_H

#include <check.h>
#include <crypt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static inline void system_crypt(const char *setting_prefix, unsigned long count,
                                const char *password, char *out, size_t out_size) {
  char setting[CRYPT_GENSALT_OUTPUT_SIZE];
  ck_assert_ptr_nonnull(
      crypt_gensalt_rn(setting_prefix, count, NULL, 0, setting, (int)sizeof setting));
  struct crypt_data *data = calloc(1, sizeof *data);
  ck_assert_ptr_nonnull(data);
  const char *hash = crypt_rn(password, setting, data, (int)sizeof *data);
  ck_assert_ptr_nonnull(hash);
  ck_assert_uint_lt(strlen(hash), out_size);
  snprintf(out, out_size, "%s", hash);
  free(data);
}

#endif
