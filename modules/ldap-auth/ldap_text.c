#include "ldap_text.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int ldap_text_check_template(const char *template, char *why, size_t why_size) {
  for (const char *p = template; *p != '\0'; p++) {
    if (*p != '%')
      continue;
    p++;
    if (*p == 'u' || *p == 'n' || *p == 'd' || *p == '%')
      continue;
    if (*p == '\0')
      snprintf(why, why_size, "ends with a lone %%; write %%%% for a percent sign");
    else
      snprintf(why, why_size,
               "%%%c is not a placeholder (%%u user, %%n local part, %%d domain, %%%% a "
               "percent sign)",
               *p);
    return -EINVAL;
  }
  return 0;
}

bool ldap_text_names_user(const char *template) {
  for (const char *p = template; *p != '\0'; p++) {
    if (*p != '%' || p[1] == '\0')
      continue;
    p++;
    if (*p == 'u' || *p == 'n')
      return true;
  }
  return false;
}

/* RFC 4515 section 3: the characters a filter's assertion value must
 * escape as \XX; UTF-8 (checked by the caller) may stay as it is. */
static bool filter_special(unsigned char c) {
  return c == '*' || c == '(' || c == ')' || c == '\\' || c == '\0';
}

/* RFC 4514 section 2.4: the characters a DN's attribute value escapes
 * anywhere, plus '=', which it allows escaping and which old parsers
 * misread. */
static bool dn_special(unsigned char c) {
  return c == '"' || c == '+' || c == ',' || c == ';' || c == '<' || c == '>' ||
         c == '\\' || c == '=';
}

size_t ldap_text_escape_value(char *out, size_t size, const char *value, size_t length,
                              enum ldap_text_escape escape) {
  static const char hex[] = "0123456789abcdef";
  size_t n = 0;
#define PUT(ch)                                                                          \
  do {                                                                                   \
    if (n + 1 < size)                                                                    \
      out[n] = (ch);                                                                     \
    n++;                                                                                 \
  } while (0)
  for (size_t i = 0; i < length; i++) {
    unsigned char c = (unsigned char)value[i];
    if (escape == LDAP_TEXT_FILTER ? filter_special(c) : c == '\0') {
      PUT('\\');
      PUT(hex[c >> 4]);
      PUT(hex[c & 0xf]);
    } else if (escape == LDAP_TEXT_DN &&
               (dn_special(c) || ((c == ' ' || c == '#') && i == 0) ||
                (c == ' ' && i == length - 1))) {
      PUT('\\');
      PUT((char)c);
    } else {
      PUT((char)c);
    }
  }
#undef PUT
  if (size > 0)
    out[n < size ? n : size - 1] = '\0';
  return n;
}

/* The part of user a placeholder stands for. */
static void placeholder_value(char placeholder, const char *user, const char **value_r,
                              size_t *length_r) {
  size_t length = strlen(user);
  const char *at = strrchr(user, '@');
  switch (placeholder) {
  case 'n':
    *value_r = user;
    *length_r = at != NULL ? (size_t)(at - user) : length;
    return;
  case 'd':
    *value_r = at != NULL ? at + 1 : user + length;
    *length_r = at != NULL ? length - (size_t)(at + 1 - user) : 0;
    return;
  default:
    *value_r = user;
    *length_r = length;
    return;
  }
}

char *ldap_text_expand(const char *template, const char *user,
                       enum ldap_text_escape escape) {
  /* Two passes: the size, then the text. */
  char *out = NULL;
  size_t size = 0;
  for (int pass = 0; pass < 2; pass++) {
    size_t n = 0;
    for (const char *p = template; *p != '\0'; p++) {
      if (*p != '%' || p[1] == '%') {
        if (out != NULL)
          out[n] = *p;
        n++;
        p += *p == '%'; /* "%%" is one '%' */
        continue;
      }
      p++;
      const char *value;
      size_t length;
      placeholder_value(*p, user, &value, &length);
      n += ldap_text_escape_value(out != NULL ? out + n : NULL,
                                  out != NULL ? size - n : 0, value, length, escape);
    }
    if (out != NULL) {
      out[n] = '\0';
      return out;
    }
    size = n + 1;
    out = malloc(size);
    if (out == NULL)
      return NULL;
  }
  return out;
}

void ldap_text_one_line(char *buf, size_t size, const char *message) {
  if (size == 0)
    return;
  size_t n = 0;
  for (const char *p = message; *p != '\0' && n + 1 < size; p++)
    buf[n++] = (*p == '\n' || *p == '\r') ? ' ' : *p;
  while (n > 0 && buf[n - 1] == ' ')
    n--;
  buf[n] = '\0';
}
