/* OPEN and CLOSE of a POP3 mailbox: lock, recovery, listing. */
#ifndef POPKIT_MAILDIR_MAILBOX_H
#define POPKIT_MAILDIR_MAILBOX_H

#include <stddef.h>

#include "maildir.h"

#define MAILDIR_LOCK "popkit.lock"

/* Opens the maildir of identity (creating it when missing), takes its
 * lock, finishes a deletion a crash left behind and lists it. On POPKIT_OK,
 * *mailbox_r is the handle; otherwise log says why. */
enum popkit_result maildir_mailbox_open(const struct maildir_instance *instance,
                                        const struct popkit_request *req,
                                        const char *identity,
                                        struct maildir_mailbox **mailbox_r, char *log,
                                        size_t log_size);

/* Releases the lock and frees the handle. */
void maildir_mailbox_close(struct maildir_mailbox *mailbox);

#endif
