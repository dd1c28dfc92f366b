#include "maildir_fs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *maildir_subdir_name(enum maildir_subdir subdir) {
  return subdir == MAILDIR_NEW ? "new" : "cur";
}

enum popkit_result maildir_result_for_errno(int err) {
  switch (-err) {
  case ENOSPC:
  case EDQUOT:
  case EIO:
  case EMFILE:
  case ENFILE:
  case ENOMEM:
  case EAGAIN:
  case EINTR:
  case EBUSY:
  case ESTALE:
  case ETIMEDOUT:
    return POPKIT_TEMPFAIL;
  default:
    return POPKIT_PERMFAIL;
  }
}

int maildir_write_all(int fd, const void *data, size_t len) {
  const char *p = data;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

int maildir_fsync_dir_at(int dir_fd, const char *name) {
  int fd = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return -errno;
  int rc = fsync(fd) == 0 ? 0 : -errno;
  close(fd);
  return rc;
}

static int make_dir(const char *path) {
  if (mkdir(path, 0700) == 0 || errno == EEXIST)
    return 0;
  return -errno;
}

int maildir_ensure(const struct maildir_template *template, const char *path,
                   int *dir_fd_r, char *error, size_t error_size) {
  struct stat st;
  *dir_fd_r = -1;
  /* The root is the administrator's: creating it here would hide a typo in
   * the config or an unmounted mail volume behind a fresh empty mailbox. */
  int err = 0;
  if (stat(template->root, &st) != 0)
    err = errno;
  else if (!S_ISDIR(st.st_mode))
    err = ENOTDIR;
  if (err != 0) {
    snprintf(error, error_size, "the maildir root %s is missing: %s", template->root,
             strerror(err));
    return -err;
  }
  char *copy = strdup(path);
  if (copy == NULL) {
    snprintf(error, error_size, "out of memory");
    return -ENOMEM;
  }
  /* Create every directory below the root, one component at a time, as
   * "mkdir -p" would; EEXIST is the common case. */
  int rc = 0;
  for (char *p = copy + template->root_len + 1; rc == 0; p++) {
    if (*p != '/' && *p != '\0')
      continue;
    char saved = *p;
    *p = '\0';
    if (p > copy && p[-1] != '/')
      rc = make_dir(copy);
    if (rc != 0)
      snprintf(error, error_size, "cannot create %s: %s", copy, strerror(-rc));
    *p = saved;
    if (saved == '\0')
      break;
  }
  free(copy);
  if (rc != 0)
    return rc;
  int dir_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) {
    rc = -errno;
    snprintf(error, error_size, "cannot open the maildir %s: %s", path, strerror(-rc));
    return rc;
  }
  static const char *const subdirs[] = {"new", "cur", "tmp"};
  for (size_t i = 0; i < 3; i++) {
    if (mkdirat(dir_fd, subdirs[i], 0700) != 0 && errno != EEXIST) {
      rc = -errno;
      snprintf(error, error_size, "cannot create %s/%s: %s", path, subdirs[i],
               strerror(-rc));
      close(dir_fd);
      return rc;
    }
  }
  *dir_fd_r = dir_fd;
  return 0;
}

int maildir_open_subdir(int dir_fd, enum maildir_subdir subdir, DIR **dir_r) {
  int fd =
      openat(dir_fd, maildir_subdir_name(subdir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return -errno;
  DIR *dir = fdopendir(fd);
  if (dir == NULL) {
    int rc = -errno;
    close(fd);
    return rc;
  }
  *dir_r = dir;
  return 0;
}

static int find_in(int dir_fd, enum maildir_subdir subdir, const char *base,
                   size_t base_len, char **name_r) {
  DIR *dir = NULL; /* set by maildir_open_subdir on success; -O3 cannot tell */
  int rc = maildir_open_subdir(dir_fd, subdir, &dir);
  if (rc < 0)
    return rc;
  rc = -ENOENT;
  for (;;) {
    errno = 0;
    struct dirent *entry = readdir(dir);
    if (entry == NULL) {
      if (errno != 0)
        rc = -errno;
      break;
    }
    const char *name = entry->d_name;
    if (strncmp(name, base, base_len) == 0 &&
        (name[base_len] == '\0' || name[base_len] == ':')) {
      *name_r = strdup(name);
      rc = *name_r != NULL ? 0 : -ENOMEM;
      break;
    }
  }
  closedir(dir);
  return rc;
}

int maildir_find_base(int dir_fd, const char *base, size_t base_len,
                      enum maildir_subdir *subdir_r, char **name_r) {
  /* cur/ first: a message leaves new/ for cur/, never the other way. */
  static const enum maildir_subdir order[] = {MAILDIR_CUR, MAILDIR_NEW};
  /* A name holding NUL cannot be on disk; strncmp above would stop at it. */
  if (memchr(base, '\0', base_len) != NULL)
    return -ENOENT;
  for (size_t i = 0; i < 2; i++) {
    int rc = find_in(dir_fd, order[i], base, base_len, name_r);
    if (rc != -ENOENT) {
      if (rc == 0)
        *subdir_r = order[i];
      return rc;
    }
  }
  return -ENOENT;
}

int maildir_read_small_file(int dir_fd, const char *name, char **data_r, size_t *size_r) {
  int fd = openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0)
    return -errno;
  struct stat st;
  int rc = 0;
  if (fstat(fd, &st) != 0)
    rc = -errno;
  else if (!S_ISREG(st.st_mode))
    rc = -EINVAL;
  char *data = NULL;
  size_t used = 0;
  size_t capacity = rc == 0 ? (size_t)st.st_size + 1 : 0;
  if (rc == 0 && (data = malloc(capacity)) == NULL)
    rc = -ENOMEM;
  /* Read to the end even when the file grew since fstat. */
  while (rc == 0) {
    if (used + 1 == capacity) {
      char *bigger = realloc(data, capacity * 2);
      if (bigger == NULL) {
        rc = -ENOMEM;
        break;
      }
      data = bigger;
      capacity *= 2;
    }
    ssize_t n = read(fd, data + used, capacity - 1 - used);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      rc = -errno;
    else if (n == 0)
      break;
    else
      used += (size_t)n;
  }
  close(fd);
  if (rc != 0) {
    free(data);
    return rc;
  }
  data[used] = '\0';
  *data_r = data;
  *size_r = used;
  return 0;
}

int maildir_replace_file(int dir_fd, const char *name, const char *tmp_name,
                         const void *data, size_t len, int sync_dir) {
  int fd = openat(dir_fd, tmp_name, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC,
                  0600);
  if (fd < 0)
    return -errno;
  int rc = maildir_write_all(fd, data, len);
  if (rc == 0 && fsync(fd) != 0)
    rc = -errno;
  if (close(fd) != 0 && rc == 0)
    rc = -errno;
  if (rc == 0 && renameat(dir_fd, tmp_name, dir_fd, name) != 0)
    rc = -errno;
  if (rc != 0) {
    unlinkat(dir_fd, tmp_name, 0);
    return rc;
  }
  if (sync_dir)
    return maildir_fsync_dir_at(dir_fd, ".");
  return 0;
}
