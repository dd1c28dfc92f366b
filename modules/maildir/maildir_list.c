#include "maildir_list.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "maildir_fs.h"
#include "maildir_index.h"
#include "maildir_name.h"
#include "maildir_quote.h"
#include "maildir_sizes.h"

#define SIZE_BLOCK (64 * 1024)

struct listing {
  struct maildir_message *messages;
  size_t count;
  size_t capacity;
  /* A file vanished or could not be read while listing. */
  int unsettled;
};

static int compare_base(const struct maildir_message *a,
                        const struct maildir_message *b) {
  size_t len = a->base_len < b->base_len ? a->base_len : b->base_len;
  int c = memcmp(a->name, b->name, len);
  if (c != 0)
    return c;
  return a->base_len < b->base_len ? -1 : a->base_len > b->base_len;
}

/* Listing order: the delivery time the name starts with, then the base name
 * (not the whole name, so a flag change does not move a message). */
int maildir_listing_compare(const struct maildir_message *a,
                            const struct maildir_message *b) {
  if (a->timestamp != b->timestamp)
    return a->timestamp < b->timestamp ? -1 : 1;
  return compare_base(a, b);
}

/* Then the directory, for qsort: a listing holds one file per base name,
 * so this only keeps the order total. */
static int compare_listing(const void *pa, const void *pb) {
  const struct maildir_message *a = pa, *b = pb;
  int c = maildir_listing_compare(a, b);
  if (c != 0)
    return c;
  return (int)a->subdir - (int)b->subdir;
}

/* Groups equal uids, the copy in cur/ first: it is the newer state of a
 * message an agent was moving from new/. */
static int compare_uid(const void *pa, const void *pb) {
  const struct maildir_message *a = pa, *b = pb;
  int c = strcmp(a->uid, b->uid);
  if (c != 0)
    return c;
  if (a->subdir != b->subdir)
    return a->subdir == MAILDIR_CUR ? -1 : 1;
  return strcmp(a->name, b->name);
}

static int add_message(struct listing *listing, const char *name,
                       enum maildir_subdir subdir, uint64_t raw_size) {
  if (listing->count == listing->capacity) {
    size_t capacity = listing->capacity ? listing->capacity * 2 : 64;
    struct maildir_message *bigger =
        realloc(listing->messages, capacity * sizeof *bigger);
    if (bigger == NULL)
      return -ENOMEM;
    listing->messages = bigger;
    listing->capacity = capacity;
  }
  struct maildir_message *m = &listing->messages[listing->count];
  memset(m, 0, sizeof *m);
  m->name = strdup(name);
  if (m->name == NULL)
    return -ENOMEM;
  m->base_len = maildir_base_len(name);
  m->subdir = subdir;
  m->timestamp = maildir_name_timestamp(name);
  m->raw_size = raw_size;
  maildir_uid_from_base(name, m->base_len, m->uid);
  listing->count++;
  return 0;
}

static int scan_subdir(struct maildir_mailbox *mailbox, const struct popkit_request *req,
                       enum maildir_subdir subdir, struct listing *listing) {
  const char *subdir_name = maildir_subdir_name(subdir);
  DIR *dir;
  int rc = maildir_open_subdir(mailbox->dir_fd, subdir, &dir);
  if (rc < 0)
    return rc;
  while (rc == 0) {
    errno = 0;
    struct dirent *entry = readdir(dir);
    if (entry == NULL) {
      rc = -errno;
      break;
    }
    const char *name = entry->d_name;
    /* ".", ".." and the hidden files some tools leave are no messages. */
    if (name[0] == '.')
      continue;
    struct stat st;
    char shown[160];
    if (fstatat(dirfd(dir), name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
      listing->unsettled = 1;
      maildir_log(mailbox->instance, req, POPKIT_LOG_WARNING,
                  "%s/%s vanished while listing (%s); skipped", subdir_name,
                  maildir_quote(name, strlen(name), shown, sizeof shown),
                  strerror(errno));
      continue;
    }
    /* A symbolic link could point anywhere on the host: only regular files
     * are messages. */
    if (!S_ISREG(st.st_mode)) {
      maildir_log(mailbox->instance, req, POPKIT_LOG_WARNING,
                  "%s/%s is not a regular file; skipped", subdir_name,
                  maildir_quote(name, strlen(name), shown, sizeof shown));
      continue;
    }
    rc = add_message(listing, name, subdir, (uint64_t)st.st_size);
  }
  closedir(dir);
  return rc;
}

/* Moves message i down to slot *kept while an array is compacted. */
static void keep_message(struct listing *listing, size_t *kept, size_t i) {
  if (*kept != i)
    listing->messages[*kept] = listing->messages[i];
  (*kept)++;
}

static void drop_message(struct maildir_message *m) {
  free(m->name);
  m->name = NULL;
}

/* Keeps one message per uid. A second file with the same base name is the
 * same message (an interrupted rename left two links), remembered as a
 * duplicate so that deleting the message deletes both. */
static int remove_duplicates(struct maildir_mailbox *mailbox,
                             const struct popkit_request *req, struct listing *listing) {
  if (listing->count == 0)
    return 0;
  qsort(listing->messages, listing->count, sizeof *listing->messages, compare_uid);
  size_t kept = 0;
  for (size_t i = 0; i < listing->count; i++) {
    struct maildir_message *m = &listing->messages[i];
    if (kept == 0 || strcmp(listing->messages[kept - 1].uid, m->uid) != 0) {
      keep_message(listing, &kept, i);
      continue;
    }
    const struct maildir_message *first = &listing->messages[kept - 1];
    char shown[160], shown_first[160];
    maildir_log(
        mailbox->instance, req, POPKIT_LOG_WARNING,
        "%s/%s has the same unique id as %s/%s; only the latter is listed",
        maildir_subdir_name(m->subdir),
        maildir_quote(m->name, strlen(m->name), shown, sizeof shown),
        maildir_subdir_name(first->subdir),
        maildir_quote(first->name, strlen(first->name), shown_first, sizeof shown_first));
    if (compare_base(first, m) != 0) {
      drop_message(m);
      continue;
    }
    struct maildir_duplicate *bigger =
        realloc(mailbox->duplicates,
                (mailbox->duplicate_count + 1) * sizeof *mailbox->duplicates);
    if (bigger == NULL) {
      drop_message(m);
      /* Keep the messages array consistent for the caller's cleanup. */
      for (size_t j = i + 1; j < listing->count; j++)
        keep_message(listing, &kept, j);
      listing->count = kept;
      return -ENOMEM;
    }
    mailbox->duplicates = bigger;
    struct maildir_duplicate *d = &mailbox->duplicates[mailbox->duplicate_count++];
    d->name = m->name;
    d->subdir = m->subdir;
    memcpy(d->uid, first->uid, sizeof d->uid);
  }
  listing->count = kept;
  return 0;
}

/* Errors that say the host, not this one file, is in trouble: the open
 * fails rather than hiding messages. */
static int is_host_trouble(int err) {
  return err == -EMFILE || err == -ENFILE || err == -ENOMEM || err == -EIO;
}

/* Computes a message's CRLF size by reading it. A message renamed since the
 * scan is looked up again by its base name. Returns 0, 1 when the message
 * is gone or unreadable (logged; the caller drops it), or an error. */
static int compute_size(struct maildir_mailbox *mailbox, const struct popkit_request *req,
                        struct maildir_message *m, char *block) {
  char shown[160];
  for (int attempt = 0;; attempt++) {
    int subdir_fd = openat(mailbox->dir_fd, maildir_subdir_name(m->subdir),
                           O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (subdir_fd < 0)
      return -errno;
    int fd = openat(subdir_fd, m->name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    int rc = fd < 0 ? -errno : 0;
    close(subdir_fd);
    if (rc == -ENOENT && attempt == 0) {
      enum maildir_subdir subdir;
      char *name;
      rc = maildir_find_base(mailbox->dir_fd, m->name, m->base_len, &subdir, &name);
      if (rc == 0) {
        free(m->name);
        m->name = name;
        m->subdir = subdir;
        continue;
      }
      if (rc != -ENOENT)
        return rc;
      rc = -ENOENT;
    }
    if (rc == 0) {
      struct stat st;
      if (fstat(fd, &st) != 0)
        rc = -errno;
      else if (!S_ISREG(st.st_mode))
        rc = -EINVAL;
      else
        rc = maildir_crlf_size_of(fd, block, SIZE_BLOCK, &m->raw_size, &m->size);
      close(fd);
    }
    if (rc == 0 || is_host_trouble(rc))
      return rc;
    maildir_log(
        mailbox->instance, req, POPKIT_LOG_WARNING,
        "cannot read %s/%s to size it (%s); skipped", maildir_subdir_name(m->subdir),
        maildir_quote(m->name, strlen(m->name), shown, sizeof shown), strerror(-rc));
    return 1;
  }
}

/* Gives every message its CRLF size: ",W=" in the name, else the cache,
 * else reading the file. Messages that cannot be sized are dropped. */
static int fill_sizes(struct maildir_mailbox *mailbox, const struct popkit_request *req,
                      struct listing *listing) {
  struct maildir_size_cache cache;
  int rc = maildir_size_cache_load(&cache, mailbox->dir_fd, mailbox->instance, req);
  char *block = rc == 0 ? malloc(SIZE_BLOCK) : NULL;
  if (rc == 0 && block == NULL)
    rc = -ENOMEM;
  size_t kept = 0;
  for (size_t i = 0; i < listing->count; i++) {
    struct maildir_message *m = &listing->messages[i];
    uint64_t value;
    if (rc != 0) {
      drop_message(m);
      continue;
    }
    if (maildir_name_field(m->name, m->base_len, 'W', &value) == 0) {
      m->size = value;
      m->has_crlf_size = 1;
      keep_message(listing, &kept, i);
      continue;
    }
    /* ",S=" is the raw size the deliverer wrote; a file that no longer has
     * it was changed after delivery, which is worth a line in the log. */
    if (maildir_name_field(m->name, m->base_len, 'S', &value) == 0 &&
        value != m->raw_size) {
      char shown[160];
      maildir_log(mailbox->instance, req, POPKIT_LOG_WARNING,
                  "%s/%s has %llu bytes, its name says S=%llu",
                  maildir_subdir_name(m->subdir),
                  maildir_quote(m->name, strlen(m->name), shown, sizeof shown),
                  (unsigned long long)m->raw_size, (unsigned long long)value);
    }
    struct maildir_size_entry *entry =
        maildir_size_cache_find(&cache, m->name, m->base_len);
    if (entry != NULL && entry->raw == m->raw_size) {
      entry->used = 1;
      m->size = entry->crlf;
      keep_message(listing, &kept, i);
      continue;
    }
    int computed = compute_size(mailbox, req, m, block);
    if (computed < 0)
      rc = computed;
    if (computed != 0) {
      listing->unsettled = 1;
      drop_message(m);
      continue;
    }
    if (maildir_size_cacheable(m))
      cache.dirty = 1;
    keep_message(listing, &kept, i);
  }
  listing->count = kept;
  free(block);
  if (rc == 0) {
    int saved = maildir_size_cache_save(&cache, mailbox->dir_fd, listing->messages,
                                        listing->count);
    if (saved != 0)
      maildir_log(mailbox->instance, req, POPKIT_LOG_WARNING,
                  "cannot write the size cache %s: %s", MAILDIR_SIZE_CACHE,
                  strerror(-saved));
  }
  maildir_size_cache_free(&cache);
  return rc;
}

int maildir_list(struct maildir_mailbox *mailbox, const struct popkit_request *req,
                 char *error, size_t error_size) {
  /* The directories are stamped before they are read, so that a change
   * made while the scan runs leaves the index stale, never wrong. */
  struct maildir_index_stamp stamp;
  int stamped = maildir_index_stamp_take(mailbox->dir_fd, &stamp) == 0;
  if (stamped) {
    int loaded = maildir_index_load(mailbox, req, &stamp);
    if (loaded == 0)
      return 0;
    if (loaded < 0) {
      snprintf(error, error_size, "out of memory");
      return loaded;
    }
  }
  struct listing listing = {0};
  int rc = 0;
  for (int subdir = MAILDIR_NEW; subdir <= MAILDIR_CUR && rc == 0; subdir++) {
    rc = scan_subdir(mailbox, req, (enum maildir_subdir)subdir, &listing);
    if (rc != 0)
      snprintf(error, error_size, "cannot list %s/%s: %s", mailbox->path,
               maildir_subdir_name((enum maildir_subdir)subdir), strerror(-rc));
  }
  if (rc == 0) {
    rc = remove_duplicates(mailbox, req, &listing);
    if (rc != 0)
      snprintf(error, error_size, "out of memory");
  }
  if (rc == 0) {
    rc = fill_sizes(mailbox, req, &listing);
    if (rc != 0)
      snprintf(error, error_size, "cannot size the messages of %s: %s", mailbox->path,
               strerror(-rc));
  }
  if (rc == 0 && listing.count > 0)
    qsort(listing.messages, listing.count, sizeof *listing.messages, compare_listing);
  mailbox->messages = listing.messages;
  mailbox->count = listing.count;
  if (rc == 0 && stamped) {
    /* A listing that skipped a file it could not read may change while
     * new/ and cur/ do not (the file is made readable again): like the
     * listing of a directory that changed too recently, it gets no index. */
    if (listing.unsettled)
      stamp.trusted[MAILDIR_NEW] = stamp.trusted[MAILDIR_CUR] = 0;
    maildir_index_save(mailbox, req, &stamp);
  }
  return rc;
}

void maildir_list_free(struct maildir_mailbox *mailbox) {
  for (size_t i = 0; i < mailbox->count; i++)
    free(mailbox->messages[i].name);
  free(mailbox->messages);
  mailbox->messages = NULL;
  mailbox->count = 0;
  for (size_t i = 0; i < mailbox->duplicate_count; i++)
    free(mailbox->duplicates[i].name);
  free(mailbox->duplicates);
  mailbox->duplicates = NULL;
  mailbox->duplicate_count = 0;
}
