/*
 * What a maildir file name tells: "<base>[:2,<flags>]", where the base is
 * the unique name the delivering agent chose, e.g.
 * "1700000000.M20P1234Q1.host,S=1024,W=1050:2,S". The base never changes
 * once the message is delivered; flags after ':' do.
 */
#ifndef POPKIT_MAILDIR_NAME_H
#define POPKIT_MAILDIR_NAME_H

#include <stddef.h>
#include <stdint.h>

/* Parses the decimal digits in [p, end): 0, -EINVAL for anything but
 * digits (or nothing), -ERANGE past 64 bits. */
int maildir_parse_decimal(const char *p, const char *end, uint64_t *value_r);

/* Bytes of name before the first ':' (the maildir info separator). */
size_t maildir_base_len(const char *name);

/* Finds ",<key>=<decimal>" in the base (ended by ',' or the end of the
 * base). Returns 0 with *value_r, or -ENOENT when there is none that
 * parses. */
int maildir_name_field(const char *base, size_t base_len, char key, uint64_t *value_r);

/* The leading decimal number of a name (the delivery time by convention),
 * 0 when there is none, UINT64_MAX when it overflows. */
uint64_t maildir_name_timestamp(const char *name);

/* The POP3 unique id of a base name: the base itself when it is 1 to 70
 * characters in 0x21..0x7e, else "H" and 32 hex characters of its
 * FNV-1a-128 hash (see maildir_hash.h). uid holds 71 bytes. */
void maildir_uid_from_base(const char *base, size_t base_len, char *uid);

#endif
