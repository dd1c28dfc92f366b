#include "unknown_user.h"

#include <errno.h>
#include <stddef.h>

/* The stand-in when no user has a usable secret. Its password is no secret:
 * nobody can log in with it, since the outcome of a check against the
 * stand-in is thrown away. */
static const char plain_stand_in[] = "{PLAIN}popkit passwd-file stand-in";

int unknown_user_secret(const struct passwd_table *table, const struct popkit_host *host,
                        const char **secret_r) {
  size_t count = passwd_table_count(table);
  for (size_t i = 0; i < count; i++) {
    const char *hash = passwd_table_entry(table, i)->hash;
    /* Any password will do to probe: only usable or not matters. Locked
     * and unknown secrets are refused without any hashing, so skipping
     * them is cheap. */
    int rc = host->password_verify(hash, "");
    if (rc < 0)
      return rc;
    if (rc != POPKIT_PASSWORD_UNUSABLE) {
      *secret_r = hash;
      return 0;
    }
  }
  *secret_r = plain_stand_in;
  return 0;
}

int unknown_user_spend(const struct popkit_host *host, const char *secret,
                       const char *password) {
  int rc = host->password_verify(secret, password);
  return rc < 0 ? rc : 0;
}
