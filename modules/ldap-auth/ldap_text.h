/*
 * The text ldap-auth sends to a directory: user names put into a search
 * filter or a DN, escaped so that they stay values.
 *
 * A user name is contained, never sanitized: `*`, `x*`, `o'hara` or
 * `a)(uid=*` each become the literal value of one attribute, so they match
 * exactly the entry of that name or nobody.
 */
#ifndef POPKIT_LDAP_TEXT_H
#define POPKIT_LDAP_TEXT_H

#include <stdbool.h>
#include <stddef.h>

/* How a value is written into the template it goes in. */
enum ldap_text_escape {
  LDAP_TEXT_FILTER, /* an assertion value of a search filter (RFC 4515) */
  LDAP_TEXT_DN      /* an attribute value of a DN (RFC 4514) */
};

/* Checks a filter or dn_template from the config: every % starts one of
 * %u (the user name), %n (its part before the last @, or all of it),
 * %d (its part after the last @, or nothing) or %% (a percent sign).
 * Returns 0, or -EINVAL with the problem in why (the key is the caller's
 * to name). */
int ldap_text_check_template(const char *template, char *why, size_t why_size);

/* Whether the template has a placeholder that tells users apart: %u or
 * %n (not a literal "%%u"). */
bool ldap_text_names_user(const char *template);

/* The template with its placeholders replaced by parts of user, each
 * escaped for where it goes. A malloc'd string, or NULL when out of
 * memory. The template must have passed ldap_text_check_template. */
char *ldap_text_expand(const char *template, const char *user,
                       enum ldap_text_escape escape);

/* Writes value into out (size bytes, NUL-terminated) escaped per RFC 4515
 * (filter) or RFC 4514 (DN). Returns the length the escaped value needs,
 * without the NUL, as snprintf does. */
size_t ldap_text_escape_value(char *out, size_t size, const char *value, size_t length,
                              enum ldap_text_escape escape);

/* Copies a libldap message into buf on one line, for the log. */
void ldap_text_one_line(char *buf, size_t size, const char *message);

#endif
