/* Whether the file system a test works in serves reads with
 * preadv2(RWF_NOWAIT): ext4 and XFS do, tmpfs answers EOPNOTSUPP. A store's
 * read_nowait (ABI 1.3) can only serve READs on the loop thread where it
 * does, so tests that expect it probe first. */
#ifndef POPKIT_TEST_NOWAIT_READS_H
#define POPKIT_TEST_NOWAIT_READS_H

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <sys/uio.h>
#include <unistd.h>

/* path: an existing regular file, just written (so in the page cache). */
static inline bool nowait_reads_supported(const char *path) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return false;
  char byte;
  struct iovec iov = {.iov_base = &byte, .iov_len = 1};
  bool supported = preadv2(fd, &iov, 1, 0, RWF_NOWAIT) >= 0 || errno != EOPNOTSUPP;
  close(fd);
  return supported;
}

#endif
