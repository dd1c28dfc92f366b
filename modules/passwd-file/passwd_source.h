/*
 * A passwd-file as one module instance sees it: the table of the version it
 * loaded last, kept in step with the file on disk.
 *
 * Every operation stat()s the file (cheap next to a crypt) and, when the
 * device, inode, size, mtime or ctime (with nanoseconds) differ from the
 * version loaded, reads and parses the file again before it looks the user
 * up. Editing in place, appending and replacing by rename are all seen on
 * the next operation, without a SIGHUP.
 *
 * The new table is built on the side and swapped in only once it is
 * complete, so an operation never sees a half-built table. When the file
 * cannot be read (deleted, unreadable), the old table stays and a warning
 * is logged once per change of the file, not once per operation.
 *
 * Operations of one instance run concurrently on several thread-pool
 * threads. A mutex guards the current table pointer; each operation holds a
 * reference to the table it started with, so a swap never frees a table
 * under a running crypt and the lock is never held across one.
 */
#ifndef POPKIT_PASSWD_SOURCE_H
#define POPKIT_PASSWD_SOURCE_H

#include <stddef.h>

#include "passwd_table.h"
#include "popkit/module.h"

struct passwd_source;

/* A table version held by one operation. */
struct passwd_snapshot {
  const struct passwd_table *table;
  /* What the password of an unknown user is checked against (see
   * unknown_user.h); chosen once per version. */
  const char *unknown_user_secret;
  size_t refs; /* guarded by the source's mutex */
};

/* Loads path. On failure returns a negative errno code with a message in
 * error naming the config key and the path, e.g. "path: cannot read
 * /etc/popkit/users: No such file or directory". */
int passwd_source_open(const char *path, const struct popkit_host *host,
                       struct popkit_module_handle *self, struct passwd_source **source_r,
                       char *error, size_t error_size);

/* Frees the source; no operation may still hold a snapshot of it. */
void passwd_source_close(struct passwd_source *source);

/* The file's path, for log texts. */
const char *passwd_source_path(const struct passwd_source *source);

/* Returns the current table for one operation, after reloading the file if
 * it changed. req names the session in the log lines a reload writes. Never
 * fails: when a reload fails, the old table is returned. Hand the snapshot
 * back with passwd_source_release. */
struct passwd_snapshot *passwd_source_acquire(struct passwd_source *source,
                                              const struct popkit_request *req);

void passwd_source_release(struct passwd_source *source,
                           struct passwd_snapshot *snapshot);

#endif
