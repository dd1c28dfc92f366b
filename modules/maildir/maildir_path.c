#include "maildir_path.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "maildir_quote.h"

int maildir_template_parse(const char *text, struct maildir_template *template,
                           char *error, size_t error_size) {
  memset(template, 0, sizeof *template);
  if (text == NULL || text[0] == '\0') {
    snprintf(error, error_size, "path: missing (a template such as \"/var/mail/%%u\")");
    return -EINVAL;
  }
  if (text[0] != '/') {
    snprintf(error, error_size, "path: the template \"%s\" must be an absolute path",
             text);
    return -EINVAL;
  }
  const char *first_percent = NULL;
  int names_user = 0;
  for (const char *p = text; *p != '\0'; p++) {
    if (*p != '%')
      continue;
    if (first_percent == NULL)
      first_percent = p;
    unsigned char escape = (unsigned char)p[1];
    if (escape == 'u' || escape == 'n') {
      names_user = 1;
    } else if (escape == '\0') {
      snprintf(error, error_size,
               "path: a lone %% at the end of \"%s\" (write %%%% for a literal %%)",
               text);
      return -EINVAL;
    } else if (escape != 'd' && escape != '%') {
      char shown[8];
      maildir_quote((const char *)&escape, 1, shown, sizeof shown);
      snprintf(error, error_size,
               "path: unknown escape %%%s in \"%s\" (known: %%u, %%n, %%d, %%%%)", shown,
               text);
      return -EINVAL;
    }
    p++;
  }
  if (!names_user) {
    snprintf(error, error_size,
             "path: the template \"%s\" holds neither %%u nor %%n, so every user would "
             "share one maildir",
             text);
    return -EINVAL;
  }
  /* The root ends at the last '/' before the first escape: "/var/mail/u-%n"
   * has the root "/var/mail". text[0] is '/', so there always is one. */
  size_t root_len = 0;
  for (const char *p = text; p < first_percent; p++) {
    if (*p == '/')
      root_len = (size_t)(p - text);
  }
  template->text = strdup(text);
  template->root = root_len == 0 ? strdup("/") : strndup(text, root_len);
  template->root_len = root_len;
  if (template->text == NULL || template->root == NULL) {
    maildir_template_free(template);
    snprintf(error, error_size, "path: out of memory");
    return -ENOMEM;
  }
  return 0;
}

void maildir_template_free(struct maildir_template *template) {
  free(template->text);
  free(template->root);
  memset(template, 0, sizeof *template);
}

/* Appends one expansion so that it is exactly one safe path component: the
 * bytes that could end or fake a component ('/', '\\'), that the encoding
 * itself uses ('%'), and control bytes become %XX, and a leading '.' does
 * too, so that no expansion is ".", ".." or a hidden name. Because '%' is
 * encoded, the mapping is one-to-one: the users "/" and "%2F" get
 * different directories. */
static size_t encode_expansion(const char *in, size_t len, char *out) {
  static const char hex[] = "0123456789ABCDEF";
  size_t used = 0;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)in[i];
    if ((i == 0 && c == '.') || c == '/' || c == '%' || c == '\\' || c < 0x20 ||
        c == 0x7f) {
      out[used++] = '%';
      out[used++] = hex[c >> 4];
      out[used++] = hex[c & 0xf];
    } else {
      out[used++] = (char)c;
    }
  }
  return used;
}

/* A component that holds an expansion must not come out as "", "." or "..":
 * an empty %d or %n would otherwise fold "/var/mail/%d/%n" for "bob" into
 * "/var/mail/bob", the directory of the domain "bob", and "%n.%d" for "@"
 * into "." (the root itself). */
static int component_is_unsafe(const char *start, size_t len) {
  return len == 0 || (len == 1 && start[0] == '.') ||
         (len == 2 && start[0] == '.' && start[1] == '.');
}

int maildir_template_expand(const struct maildir_template *template, const char *identity,
                            char **path_r, char *error, size_t error_size) {
  char quoted[256];
  *path_r = NULL;
  if (identity == NULL || identity[0] == '\0') {
    snprintf(error, error_size, "empty identity: no maildir for it");
    return -EINVAL;
  }
  size_t identity_len = strlen(identity);
  const char *at = strrchr(identity, '@');
  size_t local_len = at != NULL ? (size_t)(at - identity) : identity_len;
  const char *domain = at != NULL ? at + 1 : "";
  size_t domain_len = strlen(domain);

  size_t escapes = 0;
  for (const char *p = template->text; *p != '\0'; p++)
    escapes += *p == '%';
  /* Every escape expands to at most three bytes per identity byte. */
  if (identity_len > (SIZE_MAX / 4) / (escapes + 1)) {
    snprintf(error, error_size, "identity too long");
    return -ENAMETOOLONG;
  }
  size_t capacity = strlen(template->text) + escapes * 3 * identity_len + 1;
  char *path = malloc(capacity);
  if (path == NULL) {
    snprintf(error, error_size, "out of memory");
    return -ENOMEM;
  }

  size_t used = 0;
  size_t component_start = 0;
  int component_expanded = 0;
  for (const char *p = template->text;; p++) {
    if (*p == '/' || *p == '\0') {
      if (component_expanded &&
          component_is_unsafe(path + component_start, used - component_start)) {
        snprintf(error, error_size,
                 "identity \"%s\" leaves an empty, \".\" or \"..\" path component in "
                 "\"%s\"",
                 maildir_quote(identity, identity_len, quoted, sizeof quoted),
                 template->text);
        free(path);
        return -EINVAL;
      }
      if (*p == '\0')
        break;
      path[used++] = '/';
      component_start = used;
      component_expanded = 0;
      continue;
    }
    if (*p != '%') {
      path[used++] = *p;
      continue;
    }
    p++;
    switch (*p) {
    case 'u':
      used += encode_expansion(identity, identity_len, path + used);
      component_expanded = 1;
      break;
    case 'n':
      used += encode_expansion(identity, local_len, path + used);
      component_expanded = 1;
      break;
    case 'd':
      used += encode_expansion(domain, domain_len, path + used);
      component_expanded = 1;
      break;
    default: /* "%%": parse() let no other escape through */
      path[used++] = '%';
      break;
    }
  }
  path[used] = '\0';

  if (used >= PATH_MAX) {
    snprintf(error, error_size, "the maildir path for identity \"%s\" is too long",
             maildir_quote(identity, identity_len, quoted, sizeof quoted));
    free(path);
    return -ENAMETOOLONG;
  }
  /* The encoding above already guarantees this; the check stays so that a
   * future change to it cannot silently let a user out of the root. */
  size_t root_len = template->root_len;
  if (memcmp(path, template->text, root_len) != 0 || path[root_len] != '/' ||
      path[root_len + 1 + strspn(path + root_len + 1, "/")] == '\0') {
    snprintf(error, error_size, "the maildir path for identity \"%s\" is not below %s",
             maildir_quote(identity, identity_len, quoted, sizeof quoted),
             template->root);
    free(path);
    return -EINVAL;
  }
  *path_r = path;
  return 0;
}
