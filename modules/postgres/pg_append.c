#include "pg_append.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_module.h"
#include "pg_text.h"
#include "popkit/crlf.h"
#include "popkit/utf8.h"

static const char begin_sql[] = "BEGIN";
/* A statement of its own, before the message's: when two deliveries make
 * the same new mailbox, the second waits here for the first to commit and
 * its next statement then sees the row. */
static const char mailbox_sql[] =
    "INSERT INTO popkit.mailboxes (name) VALUES ($1) ON CONFLICT (name) DO NOTHING";
static const char message_sql[] = "INSERT INTO popkit.messages (mailbox_id, size)"
                                  " SELECT id, 0 FROM popkit.mailboxes WHERE name = $1"
                                  " RETURNING id";
static const char piece_sql[] =
    "INSERT INTO popkit.message_chunks (message_id, start, data) VALUES ($1, $2, $3)";
static const char size_sql[] = "UPDATE popkit.messages SET size = $2 WHERE id = $1";
static const char commit_sql[] = "COMMIT";

/* A delivery in progress; req->mailbox between the calls. */
struct pg_append {
  struct pg_module *m;
  struct pg_lease lease;
  char *mailbox;
  int64_t message_id;
  struct popkit_crlf_size size;
  char *staging; /* the next piece, PG_APPEND_PIECE_BYTES */
  size_t staged;
  uint64_t stored;                  /* raw bytes sent in pieces */
  struct popkit_store_request *req; /* the call being served */
  const char *rest;                 /* APPEND_WRITE data not yet staged */
  size_t rest_size;
  bool failed; /* a write failed: the transaction is gone */
};

static void append_free(struct pg_append *a) {
  pg_pool_end_lease(a->m->pool, &a->lease);
  free(a->staging);
  free(a->mailbox);
  free(a);
}

static void complete(struct pg_append *a, enum popkit_result result, const char *text) {
  struct popkit_store_request *req = a->req;
  req->base.module_data = NULL;
  a->req = NULL;
  a->m->host->complete(&req->base, result, text);
}

/* Ends the delivery: the lease goes back (rolling back whatever is not
 * committed) and the request completes. */
/* Ends the delivery, or, in the middle of it, its transaction: APPEND_FINISH
 * still comes (once per successful APPEND_BEGIN) and frees the delivery
 * then, so a failed write must leave it in place. */
static void give_up(struct pg_append *a, enum popkit_result result, const char *text) {
  struct popkit_store_request *req = a->req;
  struct pg_module *m = a->m;
  req->base.module_data = NULL;
  if (req->base.kind == POPKIT_REQ_STORE_APPEND_WRITE) {
    pg_pool_end_lease(m->pool, &a->lease); /* rolls back */
    a->failed = true;
    a->req = NULL;
  } else {
    req->mailbox = NULL;
    append_free(a);
  }
  m->host->complete(&req->base, result, text);
}

/* A statement of the delivery's transaction, for the request in hand. */
static struct pg_query *statement(struct pg_append *a, const char *sql, pg_query_cb cb) {
  struct pg_query *q = pg_query_new(sql, cb, a);
  if (q != NULL)
    q->lease = &a->lease;
  return q;
}

static void send_statement(struct pg_append *a, struct pg_query *q) {
  if (q == NULL) {
    give_up(a, POPKIT_TEMPFAIL, "out of memory");
    return;
  }
  pg_module_submit(a->m, &a->req->base, q);
}

/* Takes the answer of a statement: false (with the delivery given up) on
 * an error. */
static bool statement_done(struct pg_query *q, PGresult *res, const char *error) {
  struct pg_append *a = q->data;
  pg_query_free(q);
  if (error == NULL)
    return true;
  PQclear(res);
  give_up(a, POPKIT_TEMPFAIL, error);
  return false;
}

/* ---- Begin -------------------------------------------------------------- */

static void on_message_row(struct pg_query *q, PGresult *res, const char *error) {
  struct pg_append *a = q->data;
  if (!statement_done(q, res, error))
    return;
  int ok = PQntuples(res) == 1 &&
           pg_text_parse_int64(PQgetvalue(res, 0, 0), &a->message_id) == 0;
  PQclear(res);
  if (!ok) {
    give_up(a, POPKIT_TEMPFAIL, "the new message row did not come back");
    return;
  }
  complete(a, POPKIT_OK, NULL);
}

static void on_mailbox_row(struct pg_query *q, PGresult *res, const char *error) {
  struct pg_append *a = q->data;
  if (!statement_done(q, res, error))
    return;
  PQclear(res);
  q = statement(a, message_sql, on_message_row);
  if (q != NULL)
    pg_query_text(q, a->mailbox);
  send_statement(a, q);
}

static void on_begun(struct pg_query *q, PGresult *res, const char *error) {
  struct pg_append *a = q->data;
  if (!statement_done(q, res, error))
    return;
  PQclear(res);
  q = statement(a, mailbox_sql, on_mailbox_row);
  if (q != NULL)
    pg_query_text(q, a->mailbox);
  send_statement(a, q);
}

void pg_append_begin(void *instance, struct popkit_store_request *req) {
  struct pg_module *m = instance;
  req->mailbox = NULL;
  if (!popkit_is_utf8(req->identity)) {
    m->host->complete(&req->base, POPKIT_PERMFAIL, "the mailbox name is not UTF-8");
    return;
  }
  struct pg_append *a = calloc(1, sizeof *a);
  if (a == NULL) {
    m->host->complete(&req->base, POPKIT_TEMPFAIL, "out of memory");
    return;
  }
  a->m = m;
  a->req = req;
  a->mailbox = strdup(req->identity);
  a->staging = malloc(PG_APPEND_PIECE_BYTES);
  req->mailbox = a;
  if (a->mailbox == NULL || a->staging == NULL) {
    give_up(a, POPKIT_TEMPFAIL, "out of memory");
    return;
  }
  send_statement(a, statement(a, begin_sql, on_begun));
}

/* ---- Write -------------------------------------------------------------- */

static void send_piece(struct pg_append *a, pg_query_cb cb) {
  struct pg_query *q = statement(a, piece_sql, cb);
  if (q != NULL) {
    pg_query_int64(q, a->message_id);
    pg_query_int64(q, (int64_t)a->stored);
    pg_query_bytes(q, a->staging, a->staged);
  }
  send_statement(a, q);
}

static void stage_rest(struct pg_append *a);

static void on_piece_written(struct pg_query *q, PGresult *res, const char *error) {
  struct pg_append *a = q->data;
  if (!statement_done(q, res, error))
    return;
  PQclear(res);
  a->stored += a->staged;
  a->staged = 0;
  stage_rest(a);
}

/* Copies the request's data into pieces, sending each one that fills up
 * and waiting for it before going on, so a fast writer cannot queue more
 * than one piece ahead of PostgreSQL. */
static void stage_rest(struct pg_append *a) {
  while (a->rest_size > 0) {
    size_t n = PG_APPEND_PIECE_BYTES - a->staged;
    if (n > a->rest_size)
      n = a->rest_size;
    memcpy(a->staging + a->staged, a->rest, n);
    a->staged += n;
    a->rest += n;
    a->rest_size -= n;
    if (a->staged == PG_APPEND_PIECE_BYTES) {
      send_piece(a, on_piece_written);
      return;
    }
  }
  complete(a, POPKIT_OK, NULL);
}

void pg_append_write(void *instance, struct popkit_store_request *req) {
  struct pg_append *a = req->mailbox;
  (void)instance;
  a->req = req;
  if (a->failed) {
    give_up(a, POPKIT_TEMPFAIL, "an earlier write of this delivery failed");
    return;
  }
  a->rest = req->data;
  a->rest_size = req->data_size;
  popkit_crlf_size_feed(&a->size, req->data, req->data_size);
  stage_rest(a);
}

/* ---- Finish ------------------------------------------------------------- */

static void on_committed(struct pg_query *q, PGresult *res, const char *error) {
  struct pg_append *a = q->data;
  if (!statement_done(q, res, error))
    return;
  PQclear(res);
  give_up(a, POPKIT_OK, NULL);
}

static void on_sized(struct pg_query *q, PGresult *res, const char *error) {
  struct pg_append *a = q->data;
  if (!statement_done(q, res, error))
    return;
  PQclear(res);
  send_statement(a, statement(a, commit_sql, on_committed));
}

static void send_size(struct pg_append *a) {
  struct pg_query *q = statement(a, size_sql, on_sized);
  if (q != NULL) {
    pg_query_int64(q, a->message_id);
    pg_query_int64(q, (int64_t)popkit_crlf_size_finish(&a->size));
  }
  send_statement(a, q);
}

static void on_last_piece(struct pg_query *q, PGresult *res, const char *error) {
  struct pg_append *a = q->data;
  if (!statement_done(q, res, error))
    return;
  PQclear(res);
  send_size(a);
}

void pg_append_finish(void *instance, struct popkit_store_request *req) {
  struct pg_append *a = req->mailbox;
  (void)instance;
  a->req = req;
  if (!req->commit || a->failed) {
    /* Closing the lease rolls back. */
    give_up(a, req->commit ? POPKIT_TEMPFAIL : POPKIT_OK,
            req->commit ? "an earlier write of this delivery failed" : NULL);
    return;
  }
  if (a->staged > 0)
    send_piece(a, on_last_piece);
  else
    send_size(a);
}
