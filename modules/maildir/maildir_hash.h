/*
 * FNV-1a with 128 bits, for unique ids of messages whose file name cannot
 * be a POP3 unique id as it is.
 *
 * Why this hash: a unique id must stay the same across sessions, popkit
 * versions and machines (a client that leaves mail on the server remembers
 * them for years), so the hash must be fixed and unseeded; a collision
 * would make a client skip a message, so it is 128 bits wide, which puts
 * the chance of any collision in a maildir of a million messages near
 * 1e-27. Nothing here defends against someone who crafts colliding names on
 * purpose: that needs write access to the maildir, which already allows
 * far worse.
 */
#ifndef POPKIT_MAILDIR_HASH_H
#define POPKIT_MAILDIR_HASH_H

#include <stddef.h>
#include <stdint.h>

/* Writes the FNV-1a-128 hash of data as 32 lowercase hex characters and a
 * NUL into hex (33 bytes). */
void maildir_fnv1a128_hex(const void *data, size_t len, char hex[33]);

#endif
