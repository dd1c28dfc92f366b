/*
 * The listing of a maildir as OPEN reports it: every regular file of new/
 * and cur/ whose name does not start with '.', one message per base name,
 * in a deterministic order (the leading timestamp of the name, then the
 * name), each with its unique id and CRLF-form size.
 */
#ifndef POPKIT_MAILDIR_LIST_H
#define POPKIT_MAILDIR_LIST_H

#include <stddef.h>

#include "maildir.h"

/* Fills mailbox->messages and mailbox->duplicates from the maildir at
 * mailbox->dir_fd: from the listing index (maildir_index.h) when new/ and
 * cur/ did not change since it was written, otherwise by a scan, which
 * updates the size cache and writes a new index. Bad entries are logged
 * and skipped. Returns 0, or a negative errno code with a message in error
 * when the maildir cannot be listed at all. */
int maildir_list(struct maildir_mailbox *mailbox, const struct popkit_request *req,
                 char *error, size_t error_size);

/* The listing order: the leading timestamp of the name, then the base
 * name; 0 for two files of one message. The index relies on it to check a
 * listing it reads and to find the message a duplicate belongs to. */
int maildir_listing_compare(const struct maildir_message *a,
                            const struct maildir_message *b);

/* Frees the listing of a mailbox. */
void maildir_list_free(struct maildir_mailbox *mailbox);

#endif
