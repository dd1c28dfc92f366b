/*
 * A small pool of PostgreSQL connections on one worker's libuv loop.
 *
 * Nothing here blocks the loop. Connections are opened on libuv's thread
 * pool (a connect may resolve a host name and do a TLS handshake, both of
 * which libpq only does blocking), then used in libpq's non-blocking mode:
 * PQsendQueryParams, the socket watched by a uv_poll, results read as they
 * arrive. Queries wait in one FIFO queue for a free connection.
 *
 * Failure, as an operator wants it:
 *   - Connections open lazily, up to `size`, when queries wait.
 *   - When no connection is up and opening one failed, the pool is down:
 *     queries fail at once (the session answers [SYS/TEMP]) instead of
 *     queueing, and a connect is retried in the background with a doubling
 *     delay up to reconnect_max_ms, so service comes back by itself
 *     within seconds of PostgreSQL.
 *   - A connection that breaks (PostgreSQL restarted, network gone) is
 *     dropped; a query marked retry_safe that was on it goes out once more
 *     on a new connection, any other fails.
 *   - Every query has a deadline, query_timeout_ms from its submission,
 *     queued or running. A running one that misses it takes its connection
 *     down with it, since libpq cannot abandon a query and keep the
 *     connection.
 *
 * One state change is logged per event (down, up again), not one line per
 * failed query.
 */
#ifndef POPKIT_PG_POOL_H
#define POPKIT_PG_POOL_H

#include <stdbool.h>
#include <uv.h>

#include "pg_query.h"
#include "popkit/module.h"

struct pg_pool;
struct pg_conn;

struct pg_pool_options {
  const char *conninfo; /* libpq keywords or a URI; copied */
  unsigned size;        /* connections at most */
  unsigned query_timeout_ms;
  unsigned reconnect_max_ms;
};

/* A connection of one's own, for a transaction: the first query submitted
 * with it takes a connection out of the pool, and the connection stays
 * with the lease until pg_pool_end_lease. Zero it before use. */
struct pg_lease {
  struct pg_conn *conn;
  bool broken; /* its connection died: every later query fails */
};

/* The pool does not touch the loop until the first query, so it may be
 * made on another thread before the loop runs. NULL on allocation
 * failure. */
struct pg_pool *pg_pool_new(uv_loop_t *loop, const struct pg_pool_options *options,
                            const struct popkit_host *host,
                            struct popkit_module_handle *self);

/* Closes every connection. Queries still queued or running are dropped
 * without their callbacks: their owners are going away too. The memory
 * goes once the loop has run the handles' close callbacks. */
void pg_pool_destroy(struct pg_pool *pool);

/* Sends q when a connection is free (q->lease: on the lease's). The
 * callback always runs later, from the loop, exactly once. */
void pg_pool_submit(struct pg_pool *pool, struct pg_query *q);

/* Fails q with "canceled" if it is still waiting for a connection; a query
 * already sent runs to its end. Returns whether it was still waiting. */
bool pg_pool_cancel(struct pg_pool *pool, struct pg_query *q);

/* Gives the lease's connection back: to the pool when no transaction is
 * open on it, otherwise it is closed, and PostgreSQL rolls back. No query
 * of the lease may be running. */
void pg_pool_end_lease(struct pg_pool *pool, struct pg_lease *lease);

#endif
