/*
 * One version of a passwd-file, parsed into a table of users.
 *
 * The format: one user per line, `user:hash`. The user is everything before
 * the first ':', the hash everything after it up to the next ':' or the end
 * of the line. Further ':'-separated fields are ignored, so a Dovecot
 * passwd-file that carries `user:hash:uid:gid:gecos:home:...` reads as it
 * is. (The other side of that rule: a {PLAIN} secret cannot hold a ':'.)
 * Nothing else is trimmed from a user or a hash: a space is part of it.
 *
 * A line whose first non-blank character is '#' is a comment; blank lines
 * are ignored; a CR before the LF is dropped. A line without ':', with an
 * empty user, with a NUL byte, or longer than PASSWD_MAX_LINE_BYTES is
 * skipped with a warning that names file:line; so is a second line for a
 * user already seen (the first one wins). A bad line is never fatal: one
 * typo must not lock every user out.
 */
#ifndef POPKIT_PASSWD_TABLE_H
#define POPKIT_PASSWD_TABLE_H

#include <stddef.h>

#define PASSWD_MAX_LINE_BYTES 65536

/* Warnings past this many per load are only counted, so that a binary file
 * given by mistake does not flood the log. */
#define PASSWD_MAX_WARNINGS 20

struct passwd_entry {
  const char *user; /* NUL-terminated; never contains NUL or ':' */
  const char *hash; /* NUL-terminated, exactly as in the file; may be "" */
  size_t user_len;
  size_t line; /* 1-based line number in the file */
};

struct passwd_table;

/* Receives one warning text (it already names the file and line). */
typedef void passwd_warn_fn(void *context, const char *text);

/* Parses size bytes of buffer, a file's content read from name (used in
 * warnings only). The table takes buffer over: it must be malloc'ed with
 * room for size + 1 bytes, and the table frees it, also on failure. Returns
 * 0 with *table_r, or -ENOMEM, or -EFBIG when the file has more lines than
 * the index can hold. */
int passwd_table_parse(const char *name, char *buffer, size_t size, passwd_warn_fn *warn,
                       void *context, struct passwd_table **table_r);

void passwd_table_free(struct passwd_table *table);

/* The entry of user (compared byte for byte), or NULL. */
const struct passwd_entry *passwd_table_find(const struct passwd_table *table,
                                             const char *user);

size_t passwd_table_count(const struct passwd_table *table);

/* The entries in file order: index is 0 to passwd_table_count() - 1. */
const struct passwd_entry *passwd_table_entry(const struct passwd_table *table,
                                              size_t index);

#endif
