/*
 * The listing index: <maildir>/popkit-index keeps the listing the last
 * scan produced, so that opening a mailbox whose new/ and cur/ did not
 * change since reads one file instead of a readdir and an fstatat per
 * message. It is a shortcut only: it is trusted when both directories
 * still have the modification times it recorded, and anything odd in it
 * sends the open back to a scan.
 *
 *     popkit-index 1
 *     new <mtime seconds> <mtime nanoseconds>
 *     cur <mtime seconds> <mtime nanoseconds>
 *     count <messages> <duplicates>
 *     <new|cur> <raw size> <crlf size> <0|1: size from ",W="> <name length> <name>
 *     ...          (one line per message, in listing order)
 *     <new|cur> <index of the listed message> <name length> <name>
 *     ...          (one line per duplicate)
 *     end
 *
 * Names carry their length, so a name may hold any byte a file name can
 * (a space, a line break) but '/' and NUL.
 */
#ifndef POPKIT_MAILDIR_INDEX_H
#define POPKIT_MAILDIR_INDEX_H

#include <time.h>

#include "maildir.h"
#include "maildir_list.h"

#define MAILDIR_INDEX "popkit-index"
#define MAILDIR_INDEX_TMP "popkit-index.tmp"

/* new/ and cur/ as they were just before a listing started, indexed by
 * enum maildir_subdir. */
struct maildir_index_stamp {
  struct timespec mtime[2];
  /* The mtime is old enough that any later change of the directory gets
   * another one (see maildir_index_stamp_take). */
  int trusted[2];
};

/* Reads the clock, then stats new/ and cur/ of the maildir at dir_fd.
 * Returns 0 or a negative errno code (a missing directory: the scan that
 * follows reports it). */
int maildir_index_stamp_take(int dir_fd, struct maildir_index_stamp *stamp);

/* Fills mailbox->messages and mailbox->duplicates from the index when it
 * exists, parses, and was written for the directories as stamp found them
 * (both trusted). Returns 0 when the listing came from the index, 1 when
 * the mailbox must be scanned (no index, a stale one, or a damaged one,
 * which is logged once), or -ENOMEM. */
int maildir_index_load(struct maildir_mailbox *mailbox, const struct popkit_request *req,
                       const struct maildir_index_stamp *stamp);

/* Records the listing of mailbox, produced by a scan that started when
 * stamp was taken. When a directory changed too recently to be told apart
 * from a later change, no index is written and an old one is removed. A
 * failure is logged, never returned: it costs the next open a scan. */
void maildir_index_save(const struct maildir_mailbox *mailbox,
                        const struct popkit_request *req,
                        const struct maildir_index_stamp *stamp);

#endif
