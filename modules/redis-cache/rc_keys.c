#include "rc_keys.h"

#include <gnutls/crypto.h>
#include <stdio.h>
#include <string.h>

int rc_mailbox_hash(const char *identity, char hash[RC_MAILBOX_HASH_SIZE]) {
  unsigned char digest[32];
  if (gnutls_hash_fast(GNUTLS_DIG_SHA256, identity, strlen(identity), digest) < 0)
    return -1;
  for (size_t i = 0; i < sizeof digest; i++)
    snprintf(hash + 2 * i, 3, "%02x", digest[i]);
  return 0;
}

int rc_key(char *key, size_t size, const char *prefix, const char *kind, const char *hash,
           const char *uid) {
  int n = uid != NULL ? snprintf(key, size, "%s%s:%s:%s", prefix, kind, hash, uid)
                      : snprintf(key, size, "%s%s:%s", prefix, kind, hash);
  return n < 0 || (size_t)n >= size ? -1 : n;
}
