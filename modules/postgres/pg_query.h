/*
 * One SQL statement on its way to PostgreSQL: its text, its parameters
 * (always sent apart from the text, never spliced into it) and what to do
 * with the answer.
 */
#ifndef POPKIT_PG_QUERY_H
#define POPKIT_PG_QUERY_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PG_QUERY_MAX_PARAMS 8

struct pg_query;
struct pg_lease;

/* Called exactly once, on the loop thread, never from inside the call that
 * submitted the query. On success res is the statement's result (tuples or
 * command status) and the callback owns it (PQclear). On failure res is
 * NULL and error says why, on one line. */
typedef void (*pg_query_cb)(struct pg_query *q, PGresult *res, const char *error);

struct pg_query {
  struct pg_query *next; /* in the pool's queue */
  const char *sql;       /* a constant, or the instance's own text */
  int nparams;
  char *values[PG_QUERY_MAX_PARAMS];
  int lengths[PG_QUERY_MAX_PARAMS];
  int formats[PG_QUERY_MAX_PARAMS]; /* 0 text, 1 binary */
  int result_format;                /* 0 text, 1 binary */
  bool out_of_memory;               /* a parameter could not be copied */
  /* Safe to send again on a new connection when the one it went out on
   * broke: reads, and writes that are idempotent. Never a statement of a
   * transaction. */
  bool retry_safe;
  unsigned attempts;
  /* Set before a failure's callback: PostgreSQL answered the statement
   * with an error (a fault of the SQL or the data, not of the connection). */
  bool statement_failed;
  bool canceled;          /* pg_pool_cancel: fail it instead of sending it */
  uint64_t deadline_ms;   /* uv_now() after which it fails */
  struct pg_lease *lease; /* runs on the lease's connection */
  pg_query_cb cb;
  void *data;
};

/* A query of sql (not copied: it must outlive the query). NULL on
 * allocation failure. */
struct pg_query *pg_query_new(const char *sql, pg_query_cb cb, void *data);

/* Appends a parameter, copied. A failed copy marks the query, which then
 * fails when submitted, so callers check nothing in between. */
void pg_query_text(struct pg_query *q, const char *value);
void pg_query_bytes(struct pg_query *q, const void *data, size_t size);
void pg_query_int64(struct pg_query *q, int64_t value);

/* Frees the query and its parameters, wiping them (they may hold a user
 * name or a message). */
void pg_query_free(struct pg_query *q);

/* The one-line error text of a failed result: "SQLSTATE: message". */
void pg_query_error_text(const PGresult *res, char *buf, size_t size);

#endif
