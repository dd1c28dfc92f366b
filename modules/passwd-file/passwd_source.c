#include "passwd_source.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "unknown_user.h"

/* What tells one version of the file from another. An editor that rewrites
 * the file in place changes size or mtime; `mv users.new users` changes the
 * inode; ctime catches a rewrite that kept size and mtime (touch -r). */
struct file_signature {
  int err; /* -errno of stat(); the other fields are zero when it failed */
  dev_t dev;
  ino_t ino;
  off_t size;
  struct timespec mtime;
  struct timespec ctime;
};

struct passwd_source {
  const struct popkit_host *host;
  struct popkit_module_handle *self;
  char *path;
  pthread_mutex_t lock;
  /* Everything below is guarded by lock. */
  struct passwd_snapshot *current; /* holds one reference of its own */
  struct file_signature loaded;    /* the version current was read from */
  struct file_signature failed;    /* the version that last failed to load */
  int has_failed;
  int reloading; /* one thread is reading a new version */
};

static void signature_from_stat(const struct stat *st, struct file_signature *sig) {
  memset(sig, 0, sizeof *sig);
  sig->dev = st->st_dev;
  sig->ino = st->st_ino;
  sig->size = st->st_size;
  sig->mtime = st->st_mtim;
  sig->ctime = st->st_ctim;
}

static void signature_of_path(const char *path, struct file_signature *sig) {
  struct stat st;
  if (stat(path, &st) < 0) {
    memset(sig, 0, sizeof *sig);
    sig->err = -errno;
    return;
  }
  signature_from_stat(&st, sig);
}

static int same_signature(const struct file_signature *a,
                          const struct file_signature *b) {
  return a->err == b->err && a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
         a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec &&
         a->ctime.tv_sec == b->ctime.tv_sec && a->ctime.tv_nsec == b->ctime.tv_nsec;
}

/* Reads the whole file into a malloc'ed buffer with one spare byte for the
 * parser's NUL. The signature comes from fstat() of the descriptor read, so
 * it describes this very version even if the path was replaced meanwhile;
 * a change during the read shows up as a new signature on the next
 * operation, which then reads the file again. */
static int read_file(const char *path, char **buffer_r, size_t *size_r,
                     struct file_signature *sig_r) {
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0)
    return -errno;
  struct stat st;
  if (fstat(fd, &st) < 0) {
    int rc = -errno;
    close(fd);
    return rc;
  }
  if (S_ISDIR(st.st_mode)) {
    close(fd);
    return -EISDIR;
  }
  signature_from_stat(&st, sig_r);
  /* The size is a hint only: the file may grow while it is read. */
  size_t capacity = st.st_size > 0 && (uintmax_t)st.st_size < SIZE_MAX / 2
                        ? (size_t)st.st_size + 2
                        : 4096;
  size_t size = 0;
  char *buffer = malloc(capacity);
  if (buffer == NULL) {
    close(fd);
    return -ENOMEM;
  }
  for (;;) {
    if (capacity - size < 2) {
      char *bigger = capacity < SIZE_MAX / 2 ? realloc(buffer, capacity * 2) : NULL;
      if (bigger == NULL) {
        free(buffer);
        close(fd);
        return -ENOMEM;
      }
      buffer = bigger;
      capacity *= 2;
    }
    ssize_t n = read(fd, buffer + size, capacity - size - 1);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      int rc = -errno;
      free(buffer);
      close(fd);
      return rc;
    }
    if (n == 0)
      break;
    size += (size_t)n;
  }
  close(fd);
  *buffer_r = buffer;
  *size_r = size;
  return 0;
}

struct warn_context {
  struct passwd_source *source;
  const struct popkit_request *req;
};

static void log_warning(void *context, const char *text) {
  struct warn_context *w = context;
  w->source->host->log(w->source->self, w->req, POPKIT_LOG_WARNING, "%s", text);
}

/* Reads and parses the file into a new snapshot that holds one reference.
 * *stage_r says which step failed, for the error text. */
static int load_version(struct passwd_source *source, const struct popkit_request *req,
                        struct passwd_snapshot **snapshot_r, struct file_signature *sig_r,
                        const char **stage_r) {
  char *buffer = NULL; /* set by read_file; the compiler cannot see it */
  size_t size = 0;
  *stage_r = "read";
  int rc = read_file(source->path, &buffer, &size, sig_r);
  if (rc < 0)
    return rc;
  *stage_r = "load";
  struct passwd_snapshot *snapshot = calloc(1, sizeof *snapshot);
  if (snapshot == NULL) {
    free(buffer);
    return -ENOMEM;
  }
  struct warn_context context = {.source = source, .req = req};
  struct passwd_table *table;
  rc = passwd_table_parse(source->path, buffer, size, log_warning, &context, &table);
  if (rc == 0) {
    rc = unknown_user_secret(table, source->host, &snapshot->unknown_user_secret);
    if (rc < 0)
      passwd_table_free(table);
  }
  if (rc < 0) {
    free(snapshot);
    return rc;
  }
  snapshot->table = table;
  snapshot->refs = 1;
  *snapshot_r = snapshot;
  return 0;
}

static void snapshot_free(struct passwd_snapshot *snapshot) {
  passwd_table_free((struct passwd_table *)snapshot->table);
  free(snapshot);
}

static void error_text(int err, char *buffer, size_t size) {
  /* The XSI strerror_r: strerror() may share a buffer between threads. */
  if (strerror_r(-err, buffer, size) != 0)
    snprintf(buffer, size, "error %d", -err);
}

int passwd_source_open(const char *path, const struct popkit_host *host,
                       struct popkit_module_handle *self, struct passwd_source **source_r,
                       char *error, size_t error_size) {
  struct passwd_source *source = calloc(1, sizeof *source);
  if (source == NULL || (source->path = strdup(path)) == NULL) {
    free(source);
    snprintf(error, error_size, "path: out of memory");
    return -ENOMEM;
  }
  source->host = host;
  source->self = self;
  const char *stage;
  int rc = load_version(source, NULL, &source->current, &source->loaded, &stage);
  if (rc < 0) {
    char reason[128];
    error_text(rc, reason, sizeof reason);
    snprintf(error, error_size, "path: cannot %s %s: %s", stage, path, reason);
    free(source->path);
    free(source);
    return rc;
  }
  pthread_mutex_init(&source->lock, NULL);
  size_t users = passwd_table_count(source->current->table);
  host->log(self, NULL, POPKIT_LOG_INFO, "loaded %s: %zu %s", path, users,
            users == 1 ? "user" : "users");
  *source_r = source;
  return 0;
}

void passwd_source_close(struct passwd_source *source) {
  if (source == NULL)
    return;
  snapshot_free(source->current);
  pthread_mutex_destroy(&source->lock);
  free(source->path);
  free(source);
}

const char *passwd_source_path(const struct passwd_source *source) {
  return source->path;
}

/* Loads the new version seen as `now` and swaps it in, or records the
 * failure. The caller has set source->reloading, so this thread is the only
 * one reading the file; other operations go on with the old table
 * meanwhile. The lock is held only to swap, never to read or log. */
static void reload(struct passwd_source *source, const struct popkit_request *req,
                   const struct file_signature *now) {
  struct passwd_snapshot *fresh = NULL;
  struct file_signature read_sig;
  const char *stage = "read";
  int rc = now->err;
  if (rc == 0)
    rc = load_version(source, req, &fresh, &read_sig, &stage);

  struct passwd_snapshot *unused = NULL;
  pthread_mutex_lock(&source->lock);
  source->reloading = 0;
  if (rc == 0) {
    struct passwd_snapshot *old = source->current;
    source->current = fresh;
    source->loaded = read_sig;
    source->has_failed = 0;
    if (--old->refs == 0)
      unused = old;
  } else {
    source->failed = *now;
    source->has_failed = 1;
  }
  /* Counted under the lock: once it is released, another reload may free
   * the table that is current now. */
  size_t users = passwd_table_count(source->current->table);
  pthread_mutex_unlock(&source->lock);

  if (unused != NULL)
    snapshot_free(unused);
  if (rc == 0) {
    source->host->log(source->self, req, POPKIT_LOG_INFO, "reloaded %s: %zu %s",
                      source->path, users, users == 1 ? "user" : "users");
    return;
  }
  char reason[128];
  error_text(rc, reason, sizeof reason);
  source->host->log(source->self, req, POPKIT_LOG_WARNING,
                    "cannot %s %s: %s; keeping the %zu %s loaded before", stage,
                    source->path, reason, users, users == 1 ? "user" : "users");
}

struct passwd_snapshot *passwd_source_acquire(struct passwd_source *source,
                                              const struct popkit_request *req) {
  struct file_signature now;
  signature_of_path(source->path, &now);
  pthread_mutex_lock(&source->lock);
  /* While one thread reads a new version the others keep using the old
   * one rather than wait or read the same file again. */
  int changed = !source->reloading && !same_signature(&now, &source->loaded) &&
                !(source->has_failed && same_signature(&now, &source->failed));
  if (changed)
    source->reloading = 1;
  pthread_mutex_unlock(&source->lock);
  if (changed)
    reload(source, req, &now);

  pthread_mutex_lock(&source->lock);
  struct passwd_snapshot *snapshot = source->current;
  snapshot->refs++;
  pthread_mutex_unlock(&source->lock);
  return snapshot;
}

void passwd_source_release(struct passwd_source *source,
                           struct passwd_snapshot *snapshot) {
  pthread_mutex_lock(&source->lock);
  int last = --snapshot->refs == 0;
  pthread_mutex_unlock(&source->lock);
  /* Only a snapshot that was swapped out can lose its last reference here,
   * and nobody can acquire it any more, so it is freed outside the lock. */
  if (last)
    snapshot_free(snapshot);
}
