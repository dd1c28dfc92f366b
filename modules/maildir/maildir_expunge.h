/*
 * Deletion of messages, all or none, even across a crash.
 *
 * Before the first file is removed, the list of files to remove is made
 * durable in <maildir>/popkit-expunge (written as popkit-expunge.tmp,
 * fsynced, renamed, the directory fsynced): from that point on the deletion
 * is committed, and whoever opens the mailbox next finishes it before
 * listing, so a client never sees part of it undone. A popkit-expunge.tmp
 * that was never renamed is an expunge that did not commit: it is thrown
 * away and deletes nothing.
 *
 * The journal holds one record per file, "new/<name>" or "cur/<name>",
 * each ended by a NUL byte (the one byte a file name cannot hold).
 */
#ifndef POPKIT_MAILDIR_EXPUNGE_H
#define POPKIT_MAILDIR_EXPUNGE_H

#include <stddef.h>
#include <stdint.h>

#include "maildir.h"

#define MAILDIR_JOURNAL "popkit-expunge"
#define MAILDIR_JOURNAL_TMP "popkit-expunge.tmp"

/* Finishes a committed deletion left by a crash (or by an earlier failure)
 * and drops an uncommitted one. Returns 0, or a negative errno code with a
 * message in error when the deletion cannot be finished: the mailbox must
 * not be listed then, or deleted messages would come back. */
int maildir_journal_recover(struct maildir_mailbox *mailbox,
                            const struct popkit_request *req, char *error,
                            size_t error_size);

/* Deletes the messages at indexes of the listing. POPKIT_OK once the
 * deletion is committed; TEMPFAIL (or PERMFAIL) when it could not be, and
 * then nothing was deleted. */
enum popkit_result maildir_expunge(struct maildir_mailbox *mailbox,
                                   const struct popkit_request *req,
                                   const uint64_t *indexes, size_t index_count, char *log,
                                   size_t log_size);

#endif
