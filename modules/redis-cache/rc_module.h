/*
 * One instance of the redis-cache decorator: what its parts share. Every
 * function runs on the worker's loop thread (a decorator is never a
 * blocking module), so nothing here needs a lock.
 */
#ifndef POPKIT_RC_MODULE_H
#define POPKIT_RC_MODULE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "popkit/module.h"
#include "rc_lock.h"
#include "rc_redis.h"
#include "rc_stats.h"

#define RC_SECRET_BYTES 32

struct rc_module {
  const struct popkit_host *host;
  struct popkit_module_handle *self;
  uv_loop_t *loop;
  struct rc_redis *redis;
  struct rc_stats stats;
  char *key_prefix;
  unsigned char *secret; /* the HMAC key of auth entries */
  size_t secret_size;
  unsigned ttl_s, negative_ttl_s, stale_ttl_s;
  /* Store side. */
  size_t max_body_bytes; /* bodies up to this size are cached; 0: none */
  unsigned body_ttl_s;
  unsigned listing_ttl_s;
  bool lock_enabled; /* "lock": true */
  unsigned lock_ttl_s;
  struct rc_lock *locks; /* held by this instance's sessions */
  uv_timer_t *lock_timer;
};

#define rc_log(m, req, level, ...) (m)->host->log((m)->self, (req), (level), __VA_ARGS__)

#endif
