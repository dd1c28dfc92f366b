/*
 * Small filesystem helpers of the maildir module. All return 0 or a
 * negative errno code, and take directory file descriptors so that the
 * paths of messages never need to be built in full.
 */
#ifndef POPKIT_MAILDIR_FS_H
#define POPKIT_MAILDIR_FS_H

#include <dirent.h>
#include <stddef.h>

#include "maildir.h"
#include "maildir_path.h"
#include "popkit/module.h"

/* How a POP3 session should see a filesystem error: TEMPFAIL for what may
 * go away by itself (ENOSPC, EDQUOT, EIO, EMFILE, ENOMEM, ...), PERMFAIL for
 * what needs an administrator (EACCES, EROFS, ENOTDIR, ...). err is a
 * negative errno code. */
enum popkit_result maildir_result_for_errno(int err);

/* write(2) until every byte is written. */
int maildir_write_all(int fd, const void *data, size_t len);

/* Opens and fsyncs the directory name (relative to dir_fd; "." for dir_fd
 * itself), so that entries created, renamed or removed in it are durable. */
int maildir_fsync_dir_at(int dir_fd, const char *name);

/* Makes sure the maildir at path exists with new/, cur/ and tmp/, creating
 * what is missing (mode 0700) below the template's root, which must exist
 * already; returns an O_DIRECTORY descriptor of the maildir in *dir_fd_r.
 * The message in error names the path that failed. */
int maildir_ensure(const struct maildir_template *template, const char *path,
                   int *dir_fd_r, char *error, size_t error_size);

/* Looks for a file whose base name (the part before ':') is base in new/
 * and cur/ of the maildir, as a message another agent renamed (new->cur,
 * flag change) is found again. Returns 0 with its subdir and a malloc'ed
 * name, -ENOENT when there is none, or another error. */
/* Opens new/ or cur/ of the maildir at dir_fd for readdir. Returns 0 or a
 * negative errno. */
int maildir_open_subdir(int dir_fd, enum maildir_subdir subdir, DIR **dir_r);

int maildir_find_base(int dir_fd, const char *base, size_t base_len,
                      enum maildir_subdir *subdir_r, char **name_r);

/* Reads the whole regular file name (relative to dir_fd) into a malloc'ed,
 * NUL-terminated buffer. -ENOENT when it does not exist. */
int maildir_read_small_file(int dir_fd, const char *name, char **data_r, size_t *size_r);

/* Replaces name atomically with data: writes tmp_name, fsyncs it, renames
 * it over name, and, when sync_dir is set, fsyncs the directory so that the
 * rename itself is durable. On failure tmp_name is removed and name is
 * untouched. */
int maildir_replace_file(int dir_fd, const char *name, const char *tmp_name,
                         const void *data, size_t len, int sync_dir);

#endif
