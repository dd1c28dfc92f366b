/*
 * A session's pending output: a queue of fixed-size blocks. The session
 * appends replies (or reserves room and encodes a message straight into
 * it); the connection hands filled blocks to the socket and frees them when
 * written. Memory is bounded by the caller, who stops producing once
 * outbuf_pending() passes its high-water mark.
 */
#ifndef POPKIT_CORE_OUTBUF_H
#define POPKIT_CORE_OUTBUF_H

#include <stdbool.h>
#include <stddef.h>

#define OUTBUF_BLOCK_SIZE 16384

struct outbuf_block {
  struct outbuf_block *next;
  size_t used;     /* bytes filled */
  size_t sent;     /* bytes handed out by outbuf_take() so far */
  size_t released; /* bytes written to the socket */
  char data[OUTBUF_BLOCK_SIZE];
};

struct outbuf {
  struct outbuf_block *head; /* oldest */
  struct outbuf_block *tail; /* being filled */
  size_t pending;            /* appended but not yet released */
  bool failed;               /* an allocation failed: close the session */
};

void outbuf_init(struct outbuf *b);
void outbuf_free(struct outbuf *b);

/* Appends bytes; on allocation failure sets b->failed and drops them. */
void outbuf_append(struct outbuf *b, const void *data, size_t len);
/* Appends a string literal without counting it by hand. The "" pasted in
 * front makes anything but a literal a compile error (sizeof of a pointer
 * would silently send 7 bytes). */
#define outbuf_append_literal(b, literal)                                                \
  outbuf_append((b), "" literal, sizeof(literal) - 1)

void outbuf_printf(struct outbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Returns room for at least `need` bytes (need <= OUTBUF_BLOCK_SIZE) at the
 * tail and sets *room to all the room there, or returns NULL on allocation
 * failure; outbuf_commit() then counts what was written there. */
char *outbuf_reserve(struct outbuf *b, size_t need, size_t *room);
void outbuf_commit(struct outbuf *b, size_t len);

/* Next span not yet handed out for writing, or 0 when there is none. */
size_t outbuf_take(struct outbuf *b, const char **data_r);

/* The first len bytes handed out have been written: free what is done. */
void outbuf_release(struct outbuf *b, size_t len);

static inline size_t outbuf_pending(const struct outbuf *b) {
  return b->pending;
}

#endif
