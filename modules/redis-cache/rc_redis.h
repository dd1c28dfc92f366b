/*
 * One connection to Redis on a worker's libuv loop, with hiredis's
 * asynchronous API.
 *
 * The cache must never make anything fail or wait long, so:
 *   - a command is only sent while the connection is up; otherwise
 *     rc_redis_command says so at once and the caller goes to its next
 *     module (a fall-through);
 *   - Redis answers in order, so one timer watches the oldest command:
 *     when it has had no answer within timeout_ms, the connection is
 *     dropped, every command waiting on it gets a NULL reply, and the
 *     callers fall through;
 *   - a dropped or refused connection is opened again in the background,
 *     100 ms after the failure, doubling up to reconnect_max_ms;
 *   - the log gets one line when Redis goes away, one when it is back, and
 *     while it stays away one line per log_interval_s, not one per request.
 *
 * hiredis's own libuv adapter (0.14) ignores a poll error, so a refused
 * connect would never complete; the few lines of glue here hand errors to
 * hiredis as readiness, which is how it learns of them.
 */
#ifndef POPKIT_RC_REDIS_H
#define POPKIT_RC_REDIS_H

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "popkit/module.h"

struct rc_redis;

struct rc_redis_options {
  const char *address;  /* "host:port" (a numeric address) or a unix socket path */
  const char *password; /* AUTH, or NULL */
  unsigned database;    /* SELECT, 0 by default */
  unsigned timeout_ms;
  unsigned reconnect_max_ms;
  unsigned log_interval_s;
};

/* Checks an address: 0, or -EINVAL with the reason in error. */
int rc_redis_check_address(const char *address, char *error, size_t error_size);

/* Makes the connection object; it connects at the first command, on the
 * loop's thread. NULL on allocation failure. */
struct rc_redis *rc_redis_new(uv_loop_t *loop, const struct rc_redis_options *options,
                              const struct popkit_host *host,
                              struct popkit_module_handle *self);

/* Drops the connection; commands still waiting are forgotten without their
 * callbacks. */
void rc_redis_destroy(struct rc_redis *r);

/* Opens the connection now if it was never opened, so that a command
 * that matters later (popkit-deliver's invalidation) finds it up. */
void rc_redis_connect_soon(struct rc_redis *r);

/* reply is NULL when no answer came (connection lost, timeout): the caller
 * falls through. The reply is freed after the callback returns. */
typedef void (*rc_reply_cb)(void *data, redisReply *reply);

/* Sends one command (argv with lengths, binary-safe). Returns 0, and the
 * callback runs later, once; or -ENOTCONN when Redis is not up, and the
 * callback never runs. cb may be NULL for a command whose answer does not
 * matter. */
int rc_redis_command(struct rc_redis *r, rc_reply_cb cb, void *data, int argc,
                     const char **argv, const size_t *lengths);

#endif
