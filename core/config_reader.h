/*
 * Reading JSON values for the config loader: typed getters that check a
 * value and, when it is wrong, write one line naming the file, the JSON
 * path, what was found and what was expected. config.c uses them for the
 * core's keys and for the module keys a descriptor declares.
 */
#ifndef POPKIT_CORE_CONFIG_READER_H
#define POPKIT_CORE_CONFIG_READER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "config.h"

/* Longest excerpt of user text (a key, a value) quoted in a message. */
#define QUOTE_MAX_CHARS 80

/* Where messages go and what they name while one file is parsed. */
struct config_parser {
  const char *name; /* the file name as the user gave it */
  char *error;
  size_t error_size;
  struct config *config;
};

/* One listener's address in binary form, to find the same socket twice
 * whatever way each address was spelled ("::1" and "0:0::1"). */
struct binary_address {
  int family;
  unsigned char bytes[16];
};

/* Copies text for a message, escaping what would break a one-line message or
 * make it ambiguous (control characters, quotes and backslashes when quoted),
 * and cutting it at QUOTE_MAX_CHARS with "..." so a huge value cannot push
 * the useful part of the message out of the buffer. */
void config_escape_text(const char *text, bool quoted, char *out, size_t out_size);

/* Is the key an identifier that reads well as ".key" in a JSON path? */
bool config_is_plain_key(const char *key);

/* Writes "NAME: PATH.KEY: MESSAGE" into the caller's buffer. A key that is
 * not a plain identifier is shown in bracket notation, $["odd key"], so the
 * path stays unambiguous. Returns -EINVAL so callers can return it. */
__attribute__((format(printf, 4, 5))) int config_fail(struct config_parser *p,
                                                      const char *path, const char *key,
                                                      const char *fmt, ...);

/* The one message for an allocation failure; returns -ENOMEM. */
int config_fail_no_memory(struct config_parser *p);

/* "a string", "an integer"...: what the user wrote, for "got ..." parts. */
const char *config_type_phrase(const json_t *value);

/* Joins a NULL-terminated list of names as "a, b, c" for "known: ..." and
 * "one of ..." parts; quote puts each name in double quotes. */
void config_join_names(const char *const *names, bool quote, char *out, size_t out_size);

/* Is name one of the NULL-terminated names? */
bool config_name_in(const char *name, const char *const *names);

/* Fails on the first key of object that is not in known, listing them. */
int config_check_known_keys(struct config_parser *p, const json_t *object,
                            const char *path, const char *const *known);

/* Fails when object lacks key; `what` says what the key should hold. */
int config_require_key(struct config_parser *p, const json_t *object, const char *path,
                       const char *key, const char *what);

/* Fails unless value (at path.key) is a JSON object. */
int config_expect_object(struct config_parser *p, const json_t *value, const char *path,
                         const char *key);

/* A non-empty string; `what` describes it, e.g. "a path (a non-empty string)". */
int config_get_string(struct config_parser *p, const json_t *object, const char *path,
                      const char *key, const char *what, const char **out);

/* An integer in [min, max]. An absent key leaves *out as it was (the
 * default), as every getter does. */
int config_get_integer(struct config_parser *p, const json_t *object, const char *path,
                       const char *key, json_int_t min, json_int_t max, json_int_t *out);

/* true or false. */
int config_get_boolean(struct config_parser *p, const json_t *object, const char *path,
                       const char *key, bool *out);

/* A string among `names`; *out becomes its index. */
int config_get_enum(struct config_parser *p, const json_t *object, const char *path,
                    const char *key, const char *const *names, int *out);

/* A numeric IPv4 or IPv6 address. popkitd never resolves names: a listener
 * bound to whatever "localhost" resolved to at startup is a classic source
 * of servers that listen on the wrong family. */
int config_get_address(struct config_parser *p, const json_t *object, const char *path,
                       const char *key, const char **out, struct binary_address *binary);

/* Do two listeners name the same address and port? */
bool config_same_socket(const struct binary_address *a, int a_port,
                        const struct binary_address *b, int b_port);

#endif
