/*
 * Names of the Redis keys of a mailbox. A mailbox is named by the hex
 * SHA-256 of its identity, not by a keyed hash: popkit-deliver is another
 * process, without popkitd's random secret, and must reach the same keys
 * to invalidate them. The identity itself stays out of the key, which
 * keeps keys short and says nothing readable about whose they are.
 */
#ifndef POPKIT_RC_KEYS_H
#define POPKIT_RC_KEYS_H

#include <stddef.h>

#define RC_MAILBOX_HASH_SIZE 65 /* 64 hex digits and the NUL */

/* Returns 0, or -1 when hashing failed. */
int rc_mailbox_hash(const char *identity, char hash[RC_MAILBOX_HASH_SIZE]);

/* prefix + kind + ":" + hash (+ ":" + uid when uid is not NULL), into key.
 * Returns the length, or -1 when it does not fit. */
int rc_key(char *key, size_t size, const char *prefix, const char *kind, const char *hash,
           const char *uid);

#endif
