#include "maildir_mailbox.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "maildir_expunge.h"
#include "maildir_fs.h"
#include "maildir_list.h"

/* The lock is a flock() on <maildir>/popkit.lock. flock locks belong to the
 * open file description, so two sessions of one worker, of two workers
 * (threads) and of two popkitd processes on this host all exclude each
 * other, and the kernel drops the lock when the process dies. */
static int take_lock(int dir_fd, int *lock_fd_r) {
  int fd = openat(dir_fd, MAILDIR_LOCK, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0)
    return -errno;
  for (;;) {
    if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
      *lock_fd_r = fd;
      return 0;
    }
    if (errno != EINTR)
      break;
  }
  int rc = errno == EWOULDBLOCK ? -EWOULDBLOCK : -errno;
  close(fd);
  return rc;
}

enum popkit_result maildir_mailbox_open(const struct maildir_instance *instance,
                                        const struct popkit_request *req,
                                        const char *identity,
                                        struct maildir_mailbox **mailbox_r, char *log,
                                        size_t log_size) {
  *mailbox_r = NULL;
  struct maildir_mailbox *mailbox = calloc(1, sizeof *mailbox);
  if (mailbox == NULL) {
    snprintf(log, log_size, "out of memory");
    return POPKIT_TEMPFAIL;
  }
  mailbox->magic = MAILDIR_MAILBOX_MAGIC;
  mailbox->instance = instance;
  mailbox->dir_fd = -1;
  mailbox->lock_fd = -1;
  mailbox->read_fd = -1;

  enum popkit_result result = POPKIT_OK;
  int rc = maildir_template_expand(&instance->template, identity, &mailbox->path, log,
                                   log_size);
  if (rc != 0)
    result = rc == -ENOMEM ? POPKIT_TEMPFAIL : POPKIT_PERMFAIL;
  if (result == POPKIT_OK) {
    rc = maildir_ensure(&instance->template, mailbox->path, &mailbox->dir_fd, log,
                        log_size);
    if (rc != 0)
      result = maildir_result_for_errno(rc);
  }
  if (result == POPKIT_OK) {
    rc = take_lock(mailbox->dir_fd, &mailbox->lock_fd);
    if (rc == -EWOULDBLOCK) {
      snprintf(log, log_size, "%s is in use by another session", mailbox->path);
      result = POPKIT_IN_USE;
    } else if (rc != 0) {
      snprintf(log, log_size, "cannot lock %s/%s: %s", mailbox->path, MAILDIR_LOCK,
               strerror(-rc));
      result = maildir_result_for_errno(rc);
    }
  }
  if (result == POPKIT_OK) {
    rc = maildir_journal_recover(mailbox, req, log, log_size);
    if (rc != 0)
      result = maildir_result_for_errno(rc);
  }
  if (result == POPKIT_OK) {
    rc = maildir_list(mailbox, req, log, log_size);
    if (rc != 0)
      result = maildir_result_for_errno(rc);
  }
  if (result != POPKIT_OK) {
    maildir_mailbox_close(mailbox);
    return result;
  }
  *mailbox_r = mailbox;
  return POPKIT_OK;
}

void maildir_mailbox_close(struct maildir_mailbox *mailbox) {
  if (mailbox == NULL)
    return;
  maildir_list_free(mailbox);
  if (mailbox->read_fd >= 0)
    close(mailbox->read_fd);
  /* Closing the last descriptor of the lock file releases the lock. */
  if (mailbox->lock_fd >= 0)
    close(mailbox->lock_fd);
  if (mailbox->dir_fd >= 0)
    close(mailbox->dir_fd);
  free(mailbox->path);
  mailbox->magic = 0;
  free(mailbox);
}
