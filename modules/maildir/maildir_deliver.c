#include "maildir_deliver.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "maildir_fs.h"
#include "popkit/crlf.h"

/* Room for "<seconds>.M<usec>P<pid>Q<counter>." and a hostname of up to
 * 128 bytes, then ",S=<n>,W=<n>": well below NAME_MAX. */
#define UNIQUE_NAME_SIZE 224
#define FINAL_NAME_SIZE (UNIQUE_NAME_SIZE + 64)

struct maildir_delivery {
  uint32_t magic;
  const struct maildir_instance *instance;
  char *path;
  int dir_fd;
  int tmp_fd;
  char tmp_path[UNIQUE_NAME_SIZE + 4]; /* "tmp/<unique>" */
  const char *unique;                  /* points into tmp_path */
  struct popkit_crlf_size crlf;
  int failed; /* a write failed: the message can only be thrown away */
};

/* Makes unique names unique within one process, across threads; time and
 * pid make them unique across processes and reboots. */
static atomic_ulong delivery_counter;

void maildir_deliver_init_hostname(struct maildir_instance *instance) {
  char name[256];
  if (gethostname(name, sizeof name) != 0 || name[0] == '\0')
    snprintf(name, sizeof name, "localhost");
  name[sizeof name - 1] = '\0';
  size_t used = 0;
  for (const char *p = name; *p != '\0'; p++) {
    const char *piece = *p == '/' ? "\\057" : *p == ':' ? "\\072" : NULL;
    size_t len = piece != NULL ? 4 : 1;
    if (used + len > MAILDIR_HOSTNAME_MAX)
      break;
    if (piece != NULL)
      memcpy(instance->hostname + used, piece, 4);
    else
      instance->hostname[used] = *p;
    used += len;
  }
  instance->hostname[used] = '\0';
}

int maildir_delivery_is_valid(const struct maildir_delivery *delivery) {
  return delivery != NULL && delivery->magic == MAILDIR_DELIVERY_MAGIC;
}

static void free_delivery(struct maildir_delivery *delivery) {
  if (delivery->tmp_fd >= 0)
    close(delivery->tmp_fd);
  if (delivery->dir_fd >= 0)
    close(delivery->dir_fd);
  free(delivery->path);
  delivery->magic = 0;
  free(delivery);
}

/* Creates tmp/<unique> with O_EXCL; a name taken already (a clock that
 * went back, a reused pid) just costs another counter value. */
static int create_tmp_file(struct maildir_delivery *delivery) {
  for (int attempt = 0; attempt < 100; attempt++) {
    struct timeval now;
    gettimeofday(&now, NULL);
    unsigned long counter = atomic_fetch_add(&delivery_counter, 1);
    snprintf(delivery->tmp_path, sizeof delivery->tmp_path, "tmp/%lld.M%ldP%ldQ%lu.%s",
             (long long)now.tv_sec, (long)now.tv_usec, (long)getpid(), counter,
             delivery->instance->hostname);
    delivery->unique = delivery->tmp_path + 4;
    int fd = openat(delivery->dir_fd, delivery->tmp_path,
                    O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd >= 0) {
      delivery->tmp_fd = fd;
      return 0;
    }
    if (errno != EEXIST)
      return -errno;
  }
  return -EEXIST;
}

enum popkit_result maildir_deliver_begin(const struct maildir_instance *instance,
                                         const char *identity,
                                         struct maildir_delivery **delivery_r, char *log,
                                         size_t log_size) {
  *delivery_r = NULL;
  struct maildir_delivery *delivery = calloc(1, sizeof *delivery);
  if (delivery == NULL) {
    snprintf(log, log_size, "out of memory");
    return POPKIT_TEMPFAIL;
  }
  delivery->magic = MAILDIR_DELIVERY_MAGIC;
  delivery->instance = instance;
  delivery->dir_fd = -1;
  delivery->tmp_fd = -1;
  int rc = maildir_template_expand(&instance->template, identity, &delivery->path, log,
                                   log_size);
  if (rc != 0) {
    free_delivery(delivery);
    /* No maildir can ever exist for this identity: retrying will not help. */
    return rc == -ENOMEM ? POPKIT_TEMPFAIL : POPKIT_PERMFAIL;
  }
  /* From here on every failure is TEMPFAIL: the MTA keeps the message and
   * retries, which is what a full disk or a wrong permission needs. */
  rc = maildir_ensure(&instance->template, delivery->path, &delivery->dir_fd, log,
                      log_size);
  if (rc == 0) {
    rc = create_tmp_file(delivery);
    if (rc != 0)
      snprintf(log, log_size, "cannot create a file in %s/tmp: %s", delivery->path,
               strerror(-rc));
  }
  if (rc != 0) {
    free_delivery(delivery);
    return POPKIT_TEMPFAIL;
  }
  *delivery_r = delivery;
  return POPKIT_OK;
}

enum popkit_result maildir_deliver_write(struct maildir_delivery *delivery,
                                         const char *data, size_t size, char *log,
                                         size_t log_size) {
  if (delivery->failed) {
    snprintf(log, log_size, "an earlier write to %s/%s failed", delivery->path,
             delivery->tmp_path);
    return POPKIT_TEMPFAIL;
  }
  int rc = maildir_write_all(delivery->tmp_fd, data, size);
  if (rc != 0) {
    delivery->failed = 1;
    snprintf(log, log_size, "cannot write %s/%s: %s", delivery->path, delivery->tmp_path,
             strerror(-rc));
    return POPKIT_TEMPFAIL;
  }
  popkit_crlf_size_feed(&delivery->crlf, data, size);
  return POPKIT_OK;
}

/* Moves tmp/<unique> to new/<final>. link() refuses to replace an existing
 * file, which rename() would do silently; file systems without hard links
 * get rename(). */
static int publish(struct maildir_delivery *delivery, const char *final_path) {
  if (linkat(delivery->dir_fd, delivery->tmp_path, delivery->dir_fd, final_path, 0) ==
      0) {
    unlinkat(delivery->dir_fd, delivery->tmp_path, 0);
    return 0;
  }
  if (errno != EPERM && errno != ENOTSUP && errno != EXDEV && errno != ENOSYS)
    return -errno;
  if (renameat(delivery->dir_fd, delivery->tmp_path, delivery->dir_fd, final_path) != 0)
    return -errno;
  return 0;
}

static int commit_delivery(struct maildir_delivery *delivery, char *log,
                           size_t log_size) {
  char final_path[FINAL_NAME_SIZE];
  int rc = fsync(delivery->tmp_fd) == 0 ? 0 : -errno;
  if (close(delivery->tmp_fd) != 0 && rc == 0)
    rc = -errno;
  delivery->tmp_fd = -1;
  if (rc != 0) {
    snprintf(log, log_size, "cannot write %s/%s: %s", delivery->path, delivery->tmp_path,
             strerror(-rc));
    return rc;
  }
  snprintf(final_path, sizeof final_path, "new/%s,S=%llu,W=%llu", delivery->unique,
           (unsigned long long)delivery->crlf.raw,
           (unsigned long long)popkit_crlf_size_finish(&delivery->crlf));
  rc = publish(delivery, final_path);
  if (rc != 0) {
    snprintf(log, log_size, "cannot move %s/%s to new/: %s", delivery->path,
             delivery->tmp_path, strerror(-rc));
    return rc;
  }
  rc = maildir_fsync_dir_at(delivery->dir_fd, "new");
  if (rc != 0) {
    /* Not known to be durable: take it back so that the MTA's retry does
     * not deliver it twice. */
    unlinkat(delivery->dir_fd, final_path, 0);
    snprintf(log, log_size, "cannot fsync %s/new: %s", delivery->path, strerror(-rc));
    return rc;
  }
  return 0;
}

enum popkit_result maildir_deliver_finish(struct maildir_delivery *delivery, int commit,
                                          char *log, size_t log_size) {
  enum popkit_result result = POPKIT_OK;
  if (commit && delivery->failed) {
    snprintf(log, log_size, "commit of %s/%s after a failed write", delivery->path,
             delivery->tmp_path);
    result = POPKIT_TEMPFAIL;
  } else if (commit) {
    if (commit_delivery(delivery, log, log_size) != 0)
      result = POPKIT_TEMPFAIL;
  }
  if (!commit || result != POPKIT_OK)
    unlinkat(delivery->dir_fd, delivery->tmp_path, 0);
  free_delivery(delivery);
  return result;
}
