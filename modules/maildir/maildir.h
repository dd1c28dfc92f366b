/*
 * Types shared by the files of the maildir store module.
 *
 * The instance is built once by create() and never written again: the
 * module is POPKIT_MODULE_BLOCKING, so operations of different sessions run
 * at the same time on libuv's thread pool. Everything that changes during a
 * session lives in its mailbox handle, which only that session touches, one
 * operation at a time.
 */
#ifndef POPKIT_MAILDIR_H
#define POPKIT_MAILDIR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "maildir_path.h"
#include "popkit/module.h"

#define MAILDIR_INSTANCE_MAGIC 0x4d444952u /* "MDIR" */
#define MAILDIR_MAILBOX_MAGIC 0x4d44424fu  /* "MDBO" */
#define MAILDIR_DELIVERY_MAGIC 0x4d44444cu /* "MDDL" */

/* RFC 1939 caps a unique id at 70 characters. */
#define MAILDIR_UID_MAX 70

/* Longest hostname, once encoded, that goes into a unique file name. */
#define MAILDIR_HOSTNAME_MAX 128

struct maildir_instance {
  uint32_t magic;
  const struct popkit_host *host;
  struct popkit_module_handle *self;
  struct maildir_template template;
  /* This host's name as the maildir spec wants it in a unique file name:
   * '/' written as "\057" and ':' as "\072". */
  char hostname[MAILDIR_HOSTNAME_MAX + 1];
};

/* The two directories a maildir keeps finished messages in. */
enum maildir_subdir {
  MAILDIR_NEW = 0, /* delivered, not yet seen by a mail reader */
  MAILDIR_CUR = 1  /* seen; the name may carry flags after ":2," */
};

/* "new" or "cur". */
const char *maildir_subdir_name(enum maildir_subdir subdir);

/* One message of a listing. */
struct maildir_message {
  char *name;      /* the file name in its subdir, flags included */
  size_t base_len; /* bytes of name before the first ':' (the base name) */
  enum maildir_subdir subdir;
  uint64_t timestamp; /* leading decimal digits of the name, for ordering */
  uint64_t raw_size;  /* bytes on disk, from stat */
  uint64_t size;      /* octets of the CRLF form, as LIST reports */
  int has_crlf_size;  /* size came from ",W=" in the name */
  int deleted;        /* removed by an expunge of this session */
  char uid[MAILDIR_UID_MAX + 1];
};

/* A file dropped from the listing because another file has the same base
 * name (a copy left behind by an interrupted new->cur rename). An expunge
 * of the kept message deletes it too, so the message cannot come back. */
struct maildir_duplicate {
  char *name;
  enum maildir_subdir subdir;
  char uid[MAILDIR_UID_MAX + 1]; /* the uid of the listed message */
};

/* An open, locked mailbox: req->mailbox between OPEN and CLOSE. */
struct maildir_mailbox {
  uint32_t magic;
  const struct maildir_instance *instance;
  char *path;  /* the maildir directory */
  int dir_fd;  /* the maildir directory, for the *at() calls */
  int lock_fd; /* holds the flock on popkit.lock */
  struct maildir_message *messages;
  size_t count;
  struct maildir_duplicate *duplicates;
  size_t duplicate_count;
  /* The file of the last message READ, so that streaming a message in
   * chunks does not cost one open() per chunk. */
  int read_fd;
  uint64_t read_index;
  /* preadv2(RWF_NOWAIT) failed with EOPNOTSUPP here: every READ goes to the
   * thread pool. */
  bool nowait_unsupported;
};

/* Writes one log line for the module instance through host->log. */
void maildir_log(const struct maildir_instance *instance,
                 const struct popkit_request *req, enum popkit_log_level level,
                 const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#endif
