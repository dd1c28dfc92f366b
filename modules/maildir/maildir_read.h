/* READ: raw bytes of one message, in chunks, for RETR and TOP. */
#ifndef POPKIT_MAILDIR_READ_H
#define POPKIT_MAILDIR_READ_H

#include <stdbool.h>
#include <stddef.h>

#include "maildir.h"

/* Reads up to req->buffer_size raw bytes of message req->index from
 * req->offset into req->buffer and sets req->length (0 at the end). */
enum popkit_result maildir_read(struct maildir_mailbox *mailbox,
                                struct popkit_store_request *req, char *log,
                                size_t log_size);

/* The same READ from the page cache only, for the loop thread: true with
 * req->length set when the message is the one already open and bytes at
 * req->offset are cached (or the message has ended); false when
 * maildir_read() must do it on the thread pool (first chunk of a message,
 * bytes on disk only, or any error, which maildir_read() then reports).
 * Never waits for the disk. */
bool maildir_read_cached(struct maildir_mailbox *mailbox,
                         struct popkit_store_request *req);

#endif
