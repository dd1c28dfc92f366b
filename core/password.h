/*
 * Password schemes: the one place that knows how a stored secret is
 * checked and how one is made. popkitd offers the check to modules as
 * host->password_verify (ABI 1.1), so passwd-file, postgres or a
 * third-party module read every scheme the same way; popkit-passwd uses
 * the other half to print secrets.
 *
 * A stored secret is one of:
 *   - a crypt(3) string ("$y$...", "$2b$...", "$6$...", "$5$...", or anything
 *     else libxcrypt accepts), verified with crypt_rn;
 *   - "{CRYPT}" followed by a crypt(3) string, as Dovecot writes it (its
 *     aliases {SHA512-CRYPT}, {SHA256-CRYPT}, {BLF-CRYPT}, {MD5-CRYPT} and
 *     {YESCRYPT} are read the same way, since they only name the flavour);
 *   - "{PLAIN}" followed by the password itself;
 *   - "{SCRAM-SHA-256}" keys (see scram.h), checked by deriving them.
 * Scheme names in braces are case-insensitive, as in Dovecot. Anything else
 * in braces, and any crypt string libxcrypt rejects ("*", "!", "!$6$...",
 * an empty hash), is unusable: no password matches it.
 */
#ifndef POPKIT_CORE_PASSWORD_H
#define POPKIT_CORE_PASSWORD_H

#include "popkit/module.h" /* enum popkit_password_check */

/* Checks password against stored, in time that does not depend on how much
 * of the password is right. Returns a POPKIT_PASSWORD_* value, or -ENOMEM. */
int password_verify(const char *stored, const char *password);

/* The password itself when stored is "{PLAIN}password" (any case of the
 * name), else NULL: what APOP and SCRAM need from a kept password. */
const char *password_plain_secret(const char *stored);

/* The schemes popkit-passwd can produce, by Dovecot's names. */
enum password_scheme {
  PASSWORD_SCRAM_SHA_256, /* the default: serves every mechanism popkit offers */
  PASSWORD_YESCRYPT,      /* {CRYPT}$y$... */
  PASSWORD_BLF_CRYPT,     /* {BLF-CRYPT}$2b$... */
  PASSWORD_SHA512_CRYPT,  /* {SHA512-CRYPT}$6$... */
  PASSWORD_SHA256_CRYPT,  /* {SHA256-CRYPT}$5$... */
  PASSWORD_PLAIN          /* {PLAIN}password: what APOP needs */
};

/* Case-insensitive scheme name ("SCRAM-SHA-256", "CRYPT", "YESCRYPT",
 * "BLF-CRYPT", "SHA512-CRYPT", "SHA256-CRYPT", "PLAIN"). Returns 0 or
 * -EINVAL. */
int password_scheme_lookup(const char *name, enum password_scheme *scheme_r);

/* Makes a stored secret for password with a fresh random salt. cost is the
 * scheme's work factor (SCRAM iterations, crypt rounds or cost), 0 for the
 * default. *stored_r is malloc'ed. Returns 0, -EINVAL (bad cost, or a
 * {PLAIN} password that holds ':' or a line break, which a passwd-file
 * line cannot carry), or -ENOMEM. */
int password_make(enum password_scheme scheme, const char *password, unsigned long cost,
                  char **stored_r);

#endif
