#include "config_reader.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Messages ------------------------------------------------------------ */

/* Copies text for a message, escaping what would break a one-line message or
 * make it ambiguous (control characters, quotes and backslashes when quoted),
 * and cutting it at QUOTE_MAX_CHARS with "..." so a huge value cannot push
 * the useful part of the message out of the buffer. */
void config_escape_text(const char *text, bool quoted, char *out, size_t out_size) {
  static const char hex[] = "0123456789abcdef";
  size_t used = 0;
  size_t shown = 0;
  for (const unsigned char *c = (const unsigned char *)text; *c; c++) {
    char piece[5];
    size_t piece_len;
    bool starts_character = (*c & 0xc0) != 0x80;
    if (starts_character && shown++ == QUOTE_MAX_CHARS) {
      if (used + 4 <= out_size) {
        memcpy(out + used, "...", 3);
        used += 3;
      }
      break;
    }
    if (*c < 0x20 || *c == 0x7f) {
      piece[0] = '\\';
      piece[1] = 'x';
      piece[2] = hex[*c >> 4];
      piece[3] = hex[*c & 15];
      piece_len = 4;
    } else if (quoted && (*c == '"' || *c == '\\')) {
      piece[0] = '\\';
      piece[1] = (char)*c;
      piece_len = 2;
    } else {
      piece[0] = (char)*c;
      piece_len = 1;
    }
    if (used + piece_len + 1 > out_size) {
      break;
    }
    memcpy(out + used, piece, piece_len);
    used += piece_len;
  }
  if (out_size > 0) {
    out[used] = '\0';
  }
}

/* Is the key an identifier that reads well as ".key" in a JSON path? */
bool config_is_plain_key(const char *key) {
  if (key[0] == '\0') {
    return false;
  }
  for (const char *c = key; *c; c++) {
    if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
          (*c >= '0' && *c <= '9') || *c == '_' || *c == '-')) {
      return false;
    }
  }
  return true;
}

/* Writes "NAME: PATH.KEY: MESSAGE" into the caller's buffer. A key that is
 * not a plain identifier is shown in bracket notation, $["odd key"], so the
 * path stays unambiguous. Returns -EINVAL so callers can return it. */
int config_fail(struct config_parser *p, const char *path, const char *key,
                const char *fmt, ...) {
  char key_text[QUOTE_MAX_CHARS * 4 + 16] = "";
  if (key != NULL) {
    bool plain = config_is_plain_key(key);
    char escaped[QUOTE_MAX_CHARS * 4 + 8];
    config_escape_text(key, !plain, escaped, sizeof escaped);
    snprintf(key_text, sizeof key_text, plain ? ".%s" : "[\"%s\"]", escaped);
  }
  char message[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(message, sizeof message, fmt, ap);
  va_end(ap);
  snprintf(p->error, p->error_size, "%s: %s%s: %s", p->name, path, key_text, message);
  return -EINVAL;
}

int config_fail_no_memory(struct config_parser *p) {
  snprintf(p->error, p->error_size, "%s: out of memory while reading the config",
           p->name);
  return -ENOMEM;
}

/* "a string", "an integer"...: what the user wrote, for "got ..." parts. */
const char *config_type_phrase(const json_t *value) {
  switch (json_typeof(value)) {
  case JSON_OBJECT:
    return "an object";
  case JSON_ARRAY:
    return "an array";
  case JSON_STRING:
    return "a string";
  case JSON_INTEGER:
    return "an integer";
  case JSON_REAL:
    return "a number with a fraction or exponent";
  case JSON_TRUE:
    return "true";
  case JSON_FALSE:
    return "false";
  case JSON_NULL:
    return "null";
  }
  return "an unknown JSON value";
}

/* Joins a NULL-terminated list of names as "a, b, c" for "known: ..." and
 * "one of ..." parts; quote puts each name in double quotes. */
void config_join_names(const char *const *names, bool quote, char *out, size_t out_size) {
  size_t used = 0;
  out[0] = '\0';
  for (size_t i = 0; names[i] != NULL && used < out_size; i++) {
    int n = snprintf(out + used, out_size - used, "%s%s%s%s", i ? ", " : "",
                     quote ? "\"" : "", names[i], quote ? "\"" : "");
    if (n < 0) {
      break;
    }
    used += (size_t)n;
  }
}

/* ---- Typed getters ------------------------------------------------------- */

/* Each getter leaves *out untouched when the key is absent (so the caller's
 * default stands) and returns 0, or -EINVAL with the message written. */

bool config_name_in(const char *name, const char *const *names) {
  for (size_t i = 0; names[i] != NULL; i++) {
    if (strcmp(name, names[i]) == 0) {
      return true;
    }
  }
  return false;
}

int config_check_known_keys(struct config_parser *p, const json_t *object,
                            const char *path, const char *const *known) {
  const char *key;
  json_t *value;
  json_object_foreach((json_t *)object, key, value) {
    if (!config_name_in(key, known)) {
      char list[512];
      config_join_names(known, false, list, sizeof list);
      return config_fail(p, path, key, "unknown key (known: %s)", list);
    }
  }
  return 0;
}

int config_require_key(struct config_parser *p, const json_t *object, const char *path,
                       const char *key, const char *what) {
  if (json_object_get(object, key) == NULL) {
    return config_fail(p, path, NULL, "missing the required key \"%s\" (%s)", key, what);
  }
  return 0;
}

int config_expect_object(struct config_parser *p, const json_t *value, const char *path,
                         const char *key) {
  if (!json_is_object(value)) {
    return config_fail(p, path, key, "expected an object, got %s",
                       config_type_phrase(value));
  }
  return 0;
}

/* A non-empty string; `what` describes it, e.g. "a path (a non-empty string)". */
int config_get_string(struct config_parser *p, const json_t *object, const char *path,
                      const char *key, const char *what, const char **out) {
  const json_t *value = json_object_get(object, key);
  if (value == NULL) {
    return 0;
  }
  if (!json_is_string(value)) {
    return config_fail(p, path, key, "expected %s, got %s", what,
                       config_type_phrase(value));
  }
  if (json_string_length(value) == 0) {
    return config_fail(p, path, key, "expected %s, got an empty string", what);
  }
  *out = json_string_value(value);
  return 0;
}

int config_get_integer(struct config_parser *p, const json_t *object, const char *path,
                       const char *key, json_int_t min, json_int_t max, json_int_t *out) {
  const json_t *value = json_object_get(object, key);
  if (value == NULL) {
    return 0;
  }
  if (!json_is_integer(value)) {
    return config_fail(p, path, key, "expected an integer from %lld to %lld, got %s",
                       (long long)min, (long long)max, config_type_phrase(value));
  }
  json_int_t number = json_integer_value(value);
  if (number < min || number > max) {
    return config_fail(p, path, key, "expected an integer from %lld to %lld, got %lld",
                       (long long)min, (long long)max, (long long)number);
  }
  *out = number;
  return 0;
}

int config_get_boolean(struct config_parser *p, const json_t *object, const char *path,
                       const char *key, bool *out) {
  const json_t *value = json_object_get(object, key);
  if (value == NULL) {
    return 0;
  }
  if (!json_is_boolean(value)) {
    return config_fail(p, path, key, "expected true or false, got %s",
                       config_type_phrase(value));
  }
  *out = json_is_true(value);
  return 0;
}

/* A string among `names`; *out becomes its index. */
int config_get_enum(struct config_parser *p, const json_t *object, const char *path,
                    const char *key, const char *const *names, int *out) {
  const json_t *value = json_object_get(object, key);
  if (value == NULL) {
    return 0;
  }
  char allowed[256];
  config_join_names(names, true, allowed, sizeof allowed);
  if (!json_is_string(value)) {
    return config_fail(p, path, key, "expected one of %s, got %s", allowed,
                       config_type_phrase(value));
  }
  for (int i = 0; names[i] != NULL; i++) {
    if (strcmp(json_string_value(value), names[i]) == 0) {
      *out = i;
      return 0;
    }
  }
  char got[QUOTE_MAX_CHARS * 4 + 8];
  config_escape_text(json_string_value(value), true, got, sizeof got);
  return config_fail(p, path, key, "expected one of %s, got \"%s\"", allowed, got);
}

/* A numeric IPv4 or IPv6 address. popkitd never resolves names: a listener
 * bound to whatever "localhost" resolved to at startup is a classic source
 * of servers that listen on the wrong family. */
int config_get_address(struct config_parser *p, const json_t *object, const char *path,
                       const char *key, const char **out, struct binary_address *binary) {
  const json_t *value = json_object_get(object, key);
  if (value == NULL) {
    return 0;
  }
  if (!json_is_string(value)) {
    return config_fail(
        p, path, key,
        "expected a numeric IPv4 or IPv6 address such as 127.0.0.1 or ::1, got %s",
        config_type_phrase(value));
  }
  const char *text = json_string_value(value);
  memset(binary, 0, sizeof *binary);
  if (inet_pton(AF_INET, text, binary->bytes) == 1) {
    binary->family = AF_INET;
  } else if (inet_pton(AF_INET6, text, binary->bytes) == 1) {
    binary->family = AF_INET6;
  } else if (strcasecmp(text, "localhost") == 0) {
    return config_fail(
        p, path, key,
        "expected a numeric IP address, got \"localhost\": write 127.0.0.1 or ::1 "
        "(popkitd does not resolve host names)");
  } else {
    char got[QUOTE_MAX_CHARS * 4 + 8];
    config_escape_text(text, true, got, sizeof got);
    return config_fail(
        p, path, key,
        "expected a numeric IPv4 or IPv6 address such as 127.0.0.1 or ::1, got "
        "\"%s\" (popkitd does not resolve host names)",
        got);
  }
  *out = text;
  return 0;
}

bool config_same_socket(const struct binary_address *a, int a_port,
                        const struct binary_address *b, int b_port) {
  return a->family == b->family && a_port == b_port &&
         memcmp(a->bytes, b->bytes, sizeof a->bytes) == 0;
}
