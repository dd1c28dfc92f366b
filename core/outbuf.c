#include "outbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void outbuf_init(struct outbuf *b) {
  memset(b, 0, sizeof *b);
}

void outbuf_free(struct outbuf *b) {
  struct outbuf_block *blk = b->head;
  while (blk != NULL) {
    struct outbuf_block *next = blk->next;
    free(blk);
    blk = next;
  }
  b->head = b->tail = NULL;
  b->pending = 0;
}

static struct outbuf_block *add_block(struct outbuf *b) {
  struct outbuf_block *blk = malloc(sizeof *blk);
  if (blk == NULL) {
    b->failed = true;
    return NULL;
  }
  blk->next = NULL;
  blk->used = 0;
  blk->sent = 0;
  blk->released = 0;
  if (b->tail != NULL)
    b->tail->next = blk;
  else
    b->head = blk;
  b->tail = blk;
  return blk;
}

char *outbuf_reserve(struct outbuf *b, size_t need, size_t *room) {
  struct outbuf_block *blk = b->tail;
  if (blk == NULL || OUTBUF_BLOCK_SIZE - blk->used < need)
    blk = add_block(b);
  if (blk == NULL)
    return NULL;
  *room = OUTBUF_BLOCK_SIZE - blk->used;
  return blk->data + blk->used;
}

void outbuf_commit(struct outbuf *b, size_t len) {
  b->tail->used += len;
  b->pending += len;
}

void outbuf_append(struct outbuf *b, const void *data, size_t len) {
  const char *p = data;
  while (len > 0) {
    struct outbuf_block *blk = b->tail;
    if (blk == NULL || blk->used == OUTBUF_BLOCK_SIZE)
      blk = add_block(b);
    if (blk == NULL)
      return;
    size_t room = OUTBUF_BLOCK_SIZE - blk->used;
    size_t n = len < room ? len : room;
    memcpy(blk->data + blk->used, p, n);
    blk->used += n;
    b->pending += n;
    p += n;
    len -= n;
  }
}

void outbuf_printf(struct outbuf *b, const char *fmt, ...) {
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (n < 0)
    return;
  outbuf_append(b, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

size_t outbuf_take(struct outbuf *b, const char **data_r) {
  for (struct outbuf_block *blk = b->head; blk != NULL; blk = blk->next) {
    if (blk->sent < blk->used) {
      *data_r = blk->data + blk->sent;
      size_t n = blk->used - blk->sent;
      blk->sent = blk->used;
      return n;
    }
  }
  return 0;
}

void outbuf_release(struct outbuf *b, size_t len) {
  b->pending -= len;
  while (len > 0 && b->head != NULL) {
    struct outbuf_block *blk = b->head;
    size_t in_flight = blk->sent - blk->released;
    size_t n = len < in_flight ? len : in_flight;
    blk->released += n;
    len -= n;
    if (blk->released < blk->used) {
      if (n == 0)
        break; /* more released than was handed out: a caller bug */
      continue;
    }
    /* Written in full. Spans of a block stay where they are until the whole
     * block is done, because the socket may still be writing from them. An
     * idle session keeps no output memory at all. */
    b->head = blk->next;
    if (b->tail == blk)
      b->tail = NULL;
    free(blk);
  }
}
