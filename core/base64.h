/*
 * Strict base64 (RFC 4648 section 4, with padding) for SASL and stored
 * SCRAM credentials. Decoding rejects anything that is not canonical base64:
 * characters outside the alphabet, missing or misplaced padding, whitespace,
 * and non-zero bits in the last character. A client that sends garbage in
 * an AUTH exchange gets -ERR, not a guess at what it meant.
 */
#ifndef POPKIT_CORE_BASE64_H
#define POPKIT_CORE_BASE64_H

#include <stddef.h>

/* Encoded size of n bytes, without the terminating NUL. */
#define BASE64_ENCODED_SIZE(n) ((((n) + 2) / 3) * 4)
/* Decoded size of an encoded text of n characters, at most. */
#define BASE64_DECODED_MAX(n) (((n) / 4) * 3)

/* Writes BASE64_ENCODED_SIZE(len) characters and a NUL to out. Returns the
 * number of characters written (not counting the NUL). */
size_t base64_encode(const void *data, size_t len, char *out);

/* Decodes len characters of text into out (room for BASE64_DECODED_MAX(len)
 * bytes). Returns the number of bytes, or -EINVAL when text is not strict
 * base64. An empty text decodes to zero bytes. */
long base64_decode(const char *text, size_t len, unsigned char *out);

#endif
