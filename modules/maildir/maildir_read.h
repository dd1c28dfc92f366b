/* READ: raw bytes of one message, in chunks, for RETR and TOP. */
#ifndef POPKIT_MAILDIR_READ_H
#define POPKIT_MAILDIR_READ_H

#include <stddef.h>

#include "maildir.h"

/* Reads up to req->buffer_size raw bytes of message req->index from
 * req->offset into req->buffer and sets req->length (0 at the end). */
enum popkit_result maildir_read(struct maildir_mailbox *mailbox,
                                struct popkit_store_request *req, char *log,
                                size_t log_size);

#endif
