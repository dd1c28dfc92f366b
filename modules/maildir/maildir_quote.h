/*
 * Quoting of untrusted bytes (identities, file names found in a maildir)
 * for log lines, so that a hostile name cannot forge or break a log line.
 */
#ifndef POPKIT_MAILDIR_QUOTE_H
#define POPKIT_MAILDIR_QUOTE_H

#include <stddef.h>

/* Writes the first len bytes of in into out (NUL-terminated, truncated to
 * out_size) with printable ASCII kept, '"' and '\\' escaped with a
 * backslash and every other byte written as \xHH. Returns out. */
const char *maildir_quote(const char *in, size_t len, char *out, size_t out_size);

#endif
