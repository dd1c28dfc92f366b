/*
 * Message sizes in CRLF form, and the cache that keeps them.
 *
 * A maildir written by an MTA stores LF line ends, but STAT and LIST report
 * the size of the CRLF form, which takes reading the whole file. Unless the
 * name carries ",W=<size>", the size is computed once and kept in
 * <maildir>/popkit-sizes, one line per message:
 *
 *     <base name> <raw file size> <crlf size>\n
 *
 * A line is trusted only while the file still has that raw size. The file
 * is rewritten (atomically) only when a line was added or removed.
 */
#ifndef POPKIT_MAILDIR_SIZES_H
#define POPKIT_MAILDIR_SIZES_H

#include <stddef.h>
#include <stdint.h>

#include "maildir.h"

#define MAILDIR_SIZE_CACHE "popkit-sizes"
#define MAILDIR_SIZE_CACHE_TMP "popkit-sizes.tmp"

struct maildir_size_entry {
  const char *name; /* points into the cache's text; not NUL-terminated */
  size_t name_len;
  uint64_t raw;
  uint64_t crlf;
  int used; /* a message of this listing matched the line */
};

struct maildir_size_cache {
  char *text;
  struct maildir_size_entry *entries; /* sorted by name */
  size_t count;
  int dirty; /* the file on disk differs from what the listing needs */
};

/* Loads <dir_fd>/popkit-sizes. A missing file is an empty cache; a bad line
 * is logged, skipped, and makes the cache dirty. Returns 0 or -ENOMEM. */
int maildir_size_cache_load(struct maildir_size_cache *cache, int dir_fd,
                            const struct maildir_instance *instance,
                            const struct popkit_request *req);

/* The line for a base name, or NULL. */
struct maildir_size_entry *maildir_size_cache_find(struct maildir_size_cache *cache,
                                                   const char *base, size_t base_len);

/* Whether a message's size belongs in the cache: not when the name carries
 * ",W=", and not when the base name holds a line break. */
int maildir_size_cacheable(const struct maildir_message *message);

/* Rewrites the cache with the sizes of messages[] when it is dirty or when
 * a line of it matched no message. A failure costs only a recomputation on
 * the next open, so it is returned for logging only. */
int maildir_size_cache_save(struct maildir_size_cache *cache, int dir_fd,
                            const struct maildir_message *messages, size_t count);

void maildir_size_cache_free(struct maildir_size_cache *cache);

/* Reads fd to its end in blocks of block_size bytes (never the whole
 * message at once) and gives its raw and CRLF-form sizes. */
int maildir_crlf_size_of(int fd, char *block, size_t block_size, uint64_t *raw_r,
                         uint64_t *crlf_r);

#endif
