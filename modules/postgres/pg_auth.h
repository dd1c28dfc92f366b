/*
 * The auth role: the site's password_query, run with the user name as $1,
 * returns a column "password" (the stored secret in any scheme popkitd
 * reads) and optionally "mailbox" (the mailbox identity; NULL or absent
 * means the user name). No row: the user is not here, and the auth chain
 * moves on. More than one row: a broken query, TEMPFAIL.
 */
#ifndef POPKIT_PG_AUTH_H
#define POPKIT_PG_AUTH_H

#include "pg_module.h"

/* Fits the users table of schema.sql. */
extern const char pg_auth_default_query[];

extern const struct popkit_auth_ops pg_auth_ops;

/* Frees what the auth part keeps in the instance. */
void pg_auth_forget(struct pg_module *m);

#endif
