/*
 * Checking a plaintext password against one stored hash of a passwd-file.
 *
 * A stored hash is one of:
 *   - a crypt(3) string ("$y$...", "$2b$...", "$6$...", "$5$...", or anything
 *     else libxcrypt accepts), verified with crypt_rn;
 *   - "{CRYPT}" followed by a crypt(3) string, as Dovecot writes it (its
 *     aliases {SHA512-CRYPT}, {SHA256-CRYPT}, {BLF-CRYPT} and {MD5-CRYPT} are
 *     read the same way, since they only name the crypt flavour);
 *   - "{PLAIN}" followed by the password itself.
 * Scheme names in braces are case-insensitive, as in Dovecot. Anything else
 * in braces, and any crypt string libxcrypt rejects ("*", "!", "!$6$...",
 * an empty hash), is unusable: no password matches it.
 */
#ifndef POPKIT_PASSWORD_VERIFY_H
#define POPKIT_PASSWORD_VERIFY_H

enum password_check {
  PASSWORD_MATCH = 0,    /* the password is right */
  PASSWORD_MISMATCH = 1, /* the password is wrong */
  PASSWORD_UNUSABLE = 2  /* no password can match: locked or unknown scheme */
};

/* Checks password against stored, in time that does not depend on how much
 * of the password is right. Sets *check_r and returns 0, or returns -ENOMEM
 * when the crypt work area cannot be allocated. */
int password_verify(const char *stored, const char *password,
                    enum password_check *check_r);

/* The crypt(3) string inside stored ("$6$..." for "{CRYPT}$6$..." and for a
 * bare "$6$..."), or NULL when stored is {PLAIN} or an unknown scheme. It
 * says nothing about whether libxcrypt accepts the string. */
const char *password_crypt_string(const char *stored);

/* Builds the hash that stands in for a missing user, so that checking a
 * password for an unknown user costs what it costs for a known one. With a
 * model (a crypt string), the dummy is the crypt hash of a fixed password
 * with the model's algorithm, cost and salt; without one (NULL) it is a
 * {PLAIN} secret. Callers throw the outcome of checking against the dummy
 * away, so the dummy's password does not need to be secret. *dummy_r is
 * malloc'ed. Returns 0, -EINVAL when libxcrypt rejects the model (a locked
 * or malformed hash), or -ENOMEM. */
int password_make_dummy(const char *model, char **dummy_r);

#endif
