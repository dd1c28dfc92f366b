/*
 * A constructor shared by the test modules that popkitd must refuse. When
 * the environment names a marker file, loading the module creates it, so a
 * test can prove that a refused module ran no code at all: the loader read
 * its descriptor from the file and never dlopen'ed it.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

__attribute__((constructor)) static void create_marker(void) {
  const char *marker = getenv("POPKIT_TEST_MARKER");
  if (marker == NULL || marker[0] == '\0')
    return;
  int fd = open(marker, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd >= 0)
    close(fd);
}
