/*
 * The maildir path template of the config ("path": "/var/mail/%d/%n/Maildir")
 * and its expansion for one identity.
 *
 * An identity is whatever the auth chain settled on and may hold any byte
 * but NUL. Each expansion is written so that it stays inside one path
 * component and can never be "." or "..", so the expanded path always lies
 * under the template's static root, whatever the identity holds.
 */
#ifndef POPKIT_MAILDIR_PATH_H
#define POPKIT_MAILDIR_PATH_H

#include <stddef.h>

struct maildir_template {
  char *text; /* the template as configured */
  /* The static root: the template up to its first '%', cut at the last '/'
   * before it. Every expanded path lies strictly below it. */
  char *root;
  size_t root_len; /* 0 when the root is "/" itself */
};

/* Checks and copies a template. Escapes: %u (the identity), %n (the local
 * part: before the last '@', or the whole identity), %d (the domain: after
 * the last '@', or empty) and %% (a literal '%'). The template must be
 * absolute and hold %u or %n. Returns 0, -EINVAL with a message naming the
 * "path" key in error, or -ENOMEM. */
int maildir_template_parse(const char *text, struct maildir_template *template,
                           char *error, size_t error_size);

void maildir_template_free(struct maildir_template *template);

/* Expands the template for identity into a malloc'ed path. Returns 0,
 * -EINVAL (an empty identity, or one whose expansion leaves a path
 * component empty, "." or ".."), -ENAMETOOLONG or -ENOMEM, with a message
 * in error. */
int maildir_template_expand(const struct maildir_template *template, const char *identity,
                            char **path_r, char *error, size_t error_size);

#endif
