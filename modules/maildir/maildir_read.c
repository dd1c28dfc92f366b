#define _GNU_SOURCE /* preadv2 and RWF_NOWAIT */
#include "maildir_read.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "maildir_fs.h"
#include "maildir_quote.h"

static int open_in_subdir(int dir_fd, const struct maildir_message *m) {
  int subdir_fd =
      openat(dir_fd, maildir_subdir_name(m->subdir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (subdir_fd < 0)
    return -errno;
  /* O_NOFOLLOW: a symbolic link put in place of a message could point at
   * any file the server may read. O_NONBLOCK: a FIFO must not hang the
   * worker; it is refused below. */
  int fd = openat(subdir_fd, m->name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  int rc = fd < 0 ? -errno : fd;
  close(subdir_fd);
  if (rc < 0)
    return rc;
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return -EINVAL;
  }
  return fd;
}

/* Opens a message; one that another agent renamed since the listing
 * (new->cur, a flag change) is found again by its base name. */
static int open_message(struct maildir_mailbox *mailbox, struct maildir_message *m) {
  int fd = open_in_subdir(mailbox->dir_fd, m);
  if (fd != -ENOENT)
    return fd;
  enum maildir_subdir subdir;
  char *name;
  int rc = maildir_find_base(mailbox->dir_fd, m->name, m->base_len, &subdir, &name);
  if (rc != 0)
    return rc;
  free(m->name);
  m->name = name;
  m->subdir = subdir;
  return open_in_subdir(mailbox->dir_fd, m);
}

enum popkit_result maildir_read(struct maildir_mailbox *mailbox,
                                struct popkit_store_request *req, char *log,
                                size_t log_size) {
  char shown[160];
  req->length = 0;
  if (req->index >= mailbox->count || mailbox->messages[req->index].deleted) {
    snprintf(log, log_size, "read of message %llu, which is not in the listing",
             (unsigned long long)req->index);
    return POPKIT_PERMFAIL;
  }
  if (req->offset > (uint64_t)INT64_MAX) {
    snprintf(log, log_size, "read at offset %llu", (unsigned long long)req->offset);
    return POPKIT_PERMFAIL;
  }
  struct maildir_message *m = &mailbox->messages[req->index];
  if (mailbox->read_fd < 0 || mailbox->read_index != req->index) {
    if (mailbox->read_fd >= 0)
      close(mailbox->read_fd);
    mailbox->read_fd = -1;
    int fd = open_message(mailbox, m);
    if (fd < 0) {
      snprintf(log, log_size, "cannot open %s/%s/%s: %s", mailbox->path,
               maildir_subdir_name(m->subdir),
               maildir_quote(m->name, strlen(m->name), shown, sizeof shown),
               fd == -ENOENT ? "the message is gone" : strerror(-fd));
      return fd == -ENOENT ? POPKIT_PERMFAIL : maildir_result_for_errno(fd);
    }
    mailbox->read_fd = fd;
    mailbox->read_index = req->index;
  }
  for (;;) {
    ssize_t n =
        pread(mailbox->read_fd, req->buffer, req->buffer_size, (off_t)req->offset);
    if (n >= 0) {
      req->length = (size_t)n;
      return POPKIT_OK;
    }
    if (errno != EINTR)
      break;
  }
  int rc = -errno;
  snprintf(log, log_size, "cannot read %s/%s/%s: %s", mailbox->path,
           maildir_subdir_name(m->subdir),
           maildir_quote(m->name, strlen(m->name), shown, sizeof shown), strerror(-rc));
  return maildir_result_for_errno(rc);
}

bool maildir_read_cached(struct maildir_mailbox *mailbox,
                         struct popkit_store_request *req) {
  /* Opening a message may wait for the disk (a directory lookup, an inode
   * read), so only a message READ has opened before is served here. */
  if (mailbox->nowait_unsupported || mailbox->read_fd < 0 ||
      mailbox->read_index != req->index || req->index >= mailbox->count ||
      mailbox->messages[req->index].deleted || req->offset > (uint64_t)INT64_MAX)
    return false;
  struct iovec iov = {.iov_base = req->buffer, .iov_len = req->buffer_size};
  ssize_t n = preadv2(mailbox->read_fd, &iov, 1, (off_t)req->offset, RWF_NOWAIT);
  if (n < 0) {
    /* EAGAIN: not cached. EOPNOTSUPP: a file system (or kernel) without
     * RWF_NOWAIT for reads; ENOSYS: a kernel without preadv2. Neither
     * changes for this mailbox. */
    if (errno == EOPNOTSUPP || errno == ENOSYS)
      mailbox->nowait_unsupported = true;
    return false;
  }
  req->length = (size_t)n;
  return true;
}
