/*
 * Listening sockets. popkitd binds every socket before it drops privileges
 * and before any worker starts, one socket per worker per listen entry,
 * with SO_REUSEPORT so the kernel spreads connections over the workers.
 */
#ifndef POPKIT_CORE_LISTENER_H
#define POPKIT_CORE_LISTENER_H

#include <stddef.h>

#include "config.h"

/* Binds one socket for `l`. Returns the fd, or a negative errno code with
 * "cannot listen on ADDRESS:PORT: REASON" in error. */
int listener_bind(const struct config_listen *l, char *error, size_t error_size);

/* Formats "127.0.0.1:110" or "[::1]:110". */
void listener_format(const struct config_listen *l, char *out, size_t out_size);

#endif
