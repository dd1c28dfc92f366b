/*
 * redis-cache in front of an auth module.
 *
 * VERIFY_PLAIN outcomes are cached under a key that is an HMAC-SHA256 of
 * user and password, keyed with the instance's secret: Redis holds
 * neither a password nor a hash of one that could be attacked without the
 * secret, and a key says nothing of whose it is. The value is the outcome
 * and when it was learnt ("ok TIME IDENTITY", "fail TIME", "nf TIME"),
 * where IDENTITY is hidden by a keystream that only the secret, the user
 * name and the password give, so no value names its user either:
 *   - a success is used for ttl_s, and kept up to stale_ttl_s: when next
 *     answers TEMPFAIL (its backend is away), a success learnt within
 *     stale_ttl_s still lets the user in, as Dovecot's auth cache does;
 *   - a wrong password or an unknown user is used for negative_ttl_s;
 *   - TEMPFAIL is never cached.
 * LOOKUP and GET_CREDENTIAL go to next uncached: a credential is a secret
 * and never goes to Redis.
 */
#ifndef POPKIT_RC_AUTH_H
#define POPKIT_RC_AUTH_H

#include "popkit/module.h"

extern const struct popkit_auth_ops rc_auth_ops;

#endif
