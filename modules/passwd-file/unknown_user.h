/*
 * Making an unknown user cost what a known one costs.
 *
 * Checking a password against a yescrypt or bcrypt hash takes tens of
 * milliseconds; answering "no such user" at once would tell a client which
 * user names exist. So the password of an unknown user (and of a user whose
 * secret is locked) is checked too, against a stand-in secret, and the
 * outcome is thrown away.
 *
 * The stand-in is the secret of the first user in the file whose secret is
 * usable: the check then runs the same scheme with the same cost and salt
 * length as a real login does, whatever scheme that is (crypt, SCRAM,
 * PLAIN), without this module knowing anything about schemes. Using a real
 * secret gives nothing away: the outcome of the check is never looked at,
 * and the check takes the same time whether the password is right or not.
 */
#ifndef POPKIT_PASSWD_UNKNOWN_USER_H
#define POPKIT_PASSWD_UNKNOWN_USER_H

#include "passwd_table.h"
#include "popkit/module.h"

/* Picks the stand-in secret of table: the first one host->password_verify
 * does not call unusable, or a {PLAIN} one when there is none (then every
 * known user costs a plain comparison or nothing, too). This costs one
 * check of a usable secret. *secret_r points into the table or to a
 * constant. Returns 0 or -ENOMEM. */
int unknown_user_secret(const struct passwd_table *table, const struct popkit_host *host,
                        const char **secret_r);

/* Checks password against secret and forgets the outcome. Returns 0 or
 * -ENOMEM. */
int unknown_user_spend(const struct popkit_host *host, const char *secret,
                       const char *password);

#endif
