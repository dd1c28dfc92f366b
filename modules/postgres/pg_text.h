/*
 * Small conversions between popkit's values and PostgreSQL's wire forms.
 */
#ifndef POPKIT_PG_TEXT_H
#define POPKIT_PG_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The value of a binary-format int8 column (8 bytes, network order). */
int64_t pg_text_int8(const char *binary);

/* Parses a decimal int64 from a text-format column; -EINVAL unless the
 * whole string is one. */
int pg_text_parse_int64(const char *s, int64_t *value_r);

/* Writes "{1,2,3}", the text form of a bigint[] parameter, for count ids.
 * Returns a malloc'd string or NULL. */
char *pg_text_int64_array(const int64_t *ids, size_t count);

/* Copies a libpq error message into buf on one line: libpq ends its
 * messages with a newline and may break them over several. */
void pg_text_one_line(char *buf, size_t size, const char *message);

#endif
