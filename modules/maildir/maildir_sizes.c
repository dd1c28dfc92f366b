#include "maildir_sizes.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "maildir_fs.h"
#include "maildir_name.h"
#include "maildir_quote.h"
#include "popkit/crlf.h"

static int compare_names(const char *a, size_t a_len, const char *b, size_t b_len) {
  int c = memcmp(a, b, a_len < b_len ? a_len : b_len);
  if (c != 0)
    return c;
  return a_len < b_len ? -1 : a_len > b_len;
}

static int compare_entries(const void *a, const void *b) {
  const struct maildir_size_entry *x = a, *y = b;
  return compare_names(x->name, x->name_len, y->name, y->name_len);
}

/* Splits "<name> <raw> <crlf>" at its last two spaces, so that a name may
 * hold spaces. */
static int parse_line(const char *line, size_t len, struct maildir_size_entry *entry) {
  const char *end = line + len;
  const char *second = NULL, *first = NULL;
  for (const char *p = end; p > line; p--) {
    if (p[-1] != ' ')
      continue;
    if (second == NULL) {
      second = p - 1;
    } else {
      first = p - 1;
      break;
    }
  }
  if (first == NULL || first == line)
    return -EINVAL;
  entry->name = line;
  entry->name_len = (size_t)(first - line);
  entry->used = 0;
  if (maildir_parse_decimal(first + 1, second, &entry->raw) != 0 ||
      maildir_parse_decimal(second + 1, end, &entry->crlf) != 0)
    return -EINVAL;
  return 0;
}

int maildir_size_cache_load(struct maildir_size_cache *cache, int dir_fd,
                            const struct maildir_instance *instance,
                            const struct popkit_request *req) {
  memset(cache, 0, sizeof *cache);
  size_t size;
  int rc = maildir_read_small_file(dir_fd, MAILDIR_SIZE_CACHE, &cache->text, &size);
  if (rc == -ENOMEM)
    return rc;
  if (rc != 0) {
    if (rc != -ENOENT) {
      maildir_log(instance, req, POPKIT_LOG_WARNING,
                  "cannot read the size cache %s: %s; sizes will be recomputed",
                  MAILDIR_SIZE_CACHE, strerror(-rc));
      cache->dirty = 1;
    }
    return 0;
  }
  size_t lines = 0;
  for (size_t i = 0; i < size; i++)
    lines += cache->text[i] == '\n';
  cache->entries = calloc(lines + 1, sizeof *cache->entries);
  if (cache->entries == NULL)
    return -ENOMEM;
  const char *p = cache->text, *end = cache->text + size;
  for (size_t number = 1; p < end; number++) {
    const char *newline = memchr(p, '\n', (size_t)(end - p));
    /* A last line without '\n' is a torn write from some other tool; the
     * file is only ever replaced whole by this module. */
    size_t len = newline != NULL ? (size_t)(newline - p) : (size_t)(end - p);
    if (newline == NULL || parse_line(p, len, &cache->entries[cache->count]) != 0) {
      char shown[128];
      maildir_log(instance, req, POPKIT_LOG_WARNING,
                  "%s line %zu is not \"<name> <raw size> <crlf size>\": \"%s\"; "
                  "ignored",
                  MAILDIR_SIZE_CACHE, number, maildir_quote(p, len, shown, sizeof shown));
      cache->dirty = 1;
    } else {
      cache->count++;
    }
    p += len + (newline != NULL);
  }
  qsort(cache->entries, cache->count, sizeof *cache->entries, compare_entries);
  return 0;
}

struct maildir_size_entry *maildir_size_cache_find(struct maildir_size_cache *cache,
                                                   const char *base, size_t base_len) {
  struct maildir_size_entry key = {.name = base, .name_len = base_len};
  if (cache->count == 0)
    return NULL;
  return bsearch(&key, cache->entries, cache->count, sizeof key, compare_entries);
}

int maildir_size_cacheable(const struct maildir_message *message) {
  return !message->has_crlf_size && !message->deleted &&
         memchr(message->name, '\n', message->base_len) == NULL;
}

int maildir_size_cache_save(struct maildir_size_cache *cache, int dir_fd,
                            const struct maildir_message *messages, size_t count) {
  for (size_t i = 0; i < cache->count && !cache->dirty; i++)
    cache->dirty = !cache->entries[i].used;
  if (!cache->dirty)
    return 0;
  size_t capacity = 1;
  for (size_t i = 0; i < count; i++)
    capacity += messages[i].base_len + 2 * 21 + 1;
  char *text = malloc(capacity);
  if (text == NULL)
    return -ENOMEM;
  size_t used = 0;
  for (size_t i = 0; i < count; i++) {
    const struct maildir_message *m = &messages[i];
    if (!maildir_size_cacheable(m))
      continue;
    memcpy(text + used, m->name, m->base_len);
    used += m->base_len;
    used +=
        (size_t)snprintf(text + used, capacity - used, " %llu %llu\n",
                         (unsigned long long)m->raw_size, (unsigned long long)m->size);
  }
  /* The cache is only a shortcut: losing the rename in a crash costs a
   * recomputation, so the directory is not fsynced. */
  int rc = maildir_replace_file(dir_fd, MAILDIR_SIZE_CACHE, MAILDIR_SIZE_CACHE_TMP, text,
                                used, 0);
  free(text);
  if (rc == 0)
    cache->dirty = 0;
  return rc;
}

void maildir_size_cache_free(struct maildir_size_cache *cache) {
  free(cache->entries);
  free(cache->text);
  memset(cache, 0, sizeof *cache);
}

int maildir_crlf_size_of(int fd, char *block, size_t block_size, uint64_t *raw_r,
                         uint64_t *crlf_r) {
  struct popkit_crlf_size counter;
  memset(&counter, 0, sizeof counter);
  for (;;) {
    ssize_t n = read(fd, block, block_size);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return -errno;
    if (n == 0)
      break;
    popkit_crlf_size_feed(&counter, block, (size_t)n);
  }
  *raw_r = counter.raw;
  *crlf_r = popkit_crlf_size_finish(&counter);
  return 0;
}
