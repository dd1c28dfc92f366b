/*
 * One instance of the postgres module: what its parts (auth, store,
 * delivery, locks) share. popkitd makes one instance per worker and per
 * place the module has in the config, so nothing here needs a lock: every
 * function runs on the worker's loop thread, except the password checks,
 * which pg_auth.c hands to libuv's thread pool with copies of what they
 * read.
 *
 * A request that waits on a query keeps that query in
 * req->base.module_data, so the module's cancel can take it out of the
 * queue when the client goes away.
 */
#ifndef POPKIT_PG_MODULE_H
#define POPKIT_PG_MODULE_H

#include <uv.h>

#include "pg_lock.h"
#include "pg_pool.h"
#include "popkit/module.h"

struct pg_module {
  const struct popkit_host *host;
  struct popkit_module_handle *self;
  uv_loop_t *loop;
  struct pg_pool *pool;
  const char *password_query; /* the config's, or the default */
  char *stand_in_secret;      /* pg_auth.c: what an unknown user's password costs */
  struct pg_locks locks;
};

#define pg_log(m, req, level, ...) (m)->host->log((m)->self, (req), (level), __VA_ARGS__)

/* Hands q to the pool on behalf of req (NULL for the module's own
 * queries), remembering it for cancel. */
void pg_module_submit(struct pg_module *m, struct popkit_request *req,
                      struct pg_query *q);

#endif
