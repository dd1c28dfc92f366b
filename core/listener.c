#include "listener.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

void listener_format(const struct config_listen *l, char *out, size_t out_size) {
  if (strchr(l->address, ':') != NULL)
    snprintf(out, out_size, "[%s]:%d", l->address, l->port);
  else
    snprintf(out, out_size, "%s:%d", l->address, l->port);
}

int listener_bind(const struct config_listen *l, char *error, size_t error_size) {
  struct sockaddr_storage ss;
  socklen_t len;
  char where[80];
  listener_format(l, where, sizeof where);
  memset(&ss, 0, sizeof ss);
  struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
  struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
  if (inet_pton(AF_INET, l->address, &in4->sin_addr) == 1) {
    in4->sin_family = AF_INET;
    in4->sin_port = htons((uint16_t)l->port);
    len = sizeof *in4;
  } else if (inet_pton(AF_INET6, l->address, &in6->sin6_addr) == 1) {
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons((uint16_t)l->port);
    len = sizeof *in6;
  } else {
    snprintf(error, error_size, "cannot listen on %s: not a numeric address", where);
    return -EINVAL;
  }
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    int e = errno;
    snprintf(error, error_size, "cannot listen on %s: %s", where, strerror(e));
    return -e;
  }
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0 ||
      (ss.ss_family == AF_INET6 &&
       setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) < 0) ||
      bind(fd, (struct sockaddr *)&ss, len) < 0) {
    int e = errno;
    snprintf(error, error_size, "cannot listen on %s: %s", where, strerror(e));
    close(fd);
    return -e;
  }
  return fd;
}
