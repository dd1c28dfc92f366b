#include "pg_store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_module.h"
#include "pg_text.h"
#include "popkit/utf8.h"

static const char list_sql[] = "SELECT m.id, m.uid, m.size FROM popkit.messages m"
                               " JOIN popkit.mailboxes b ON b.id = m.mailbox_id"
                               " WHERE b.name = $1 ORDER BY m.id";

/* The first read of a message: the piece of message $1 that holds byte $2
 * (the last one that starts at or before it) and where the message ends.
 * No row: the message is gone. NULLs: it has no piece (an empty message).
 * octet_length reads a stored value's length without fetching it. */
static const char first_piece_sql[] =
    "SELECT c.start, c.data, e.message_end FROM popkit.messages m"
    " LEFT JOIN LATERAL (SELECT start, data FROM popkit.message_chunks"
    " WHERE message_id = m.id AND start <= $2 ORDER BY start DESC LIMIT 1) c ON true"
    " LEFT JOIN LATERAL (SELECT start + octet_length(data) AS message_end"
    " FROM popkit.message_chunks WHERE message_id = m.id ORDER BY start DESC LIMIT 1) e"
    " ON true"
    " WHERE m.id = $1";

/* The reads that follow: the piece alone (a quarter cheaper). No row: the
 * message went away meanwhile. */
static const char next_piece_sql[] =
    "SELECT start, data FROM popkit.message_chunks"
    " WHERE message_id = $1 AND start <= $2 ORDER BY start DESC LIMIT 1";

/* $1..$4 as pg_lock_params; $5 the ids. The lease is renewed and checked
 * in the same statement as the deletion, so messages are deleted only by
 * the session that holds the mailbox; it answers (leases held, messages
 * deleted). One statement is one transaction: all or nothing, and its
 * answer comes after the COMMIT. */
static const char expunge_sql[] =
    "WITH held AS (UPDATE popkit.mailbox_locks"
    " SET expires_at = now() + $4::integer * interval '1 second'"
    " WHERE mailbox = $1 AND holder = $2 AND session = $3 RETURNING 1),"
    " gone AS (DELETE FROM popkit.messages"
    " WHERE id = ANY ($5::bigint[])"
    " AND mailbox_id = (SELECT id FROM popkit.mailboxes WHERE name = $1)"
    " AND EXISTS (SELECT 1 FROM held) RETURNING 1)"
    " SELECT (SELECT count(*) FROM held), (SELECT count(*) FROM gone)";

/* An open mailbox: the lease and the listing's message ids. */
struct pg_mailbox {
  char *name;
  int64_t session;
  size_t count;
  int64_t *ids; /* popkit.messages.id in listing order */
  /* The piece of a message last read, served to popkitd's smaller reads,
   * and where that message ends. The piece goes once its last byte is
   * served, so a session that has sent its messages holds none. */
  bool have_message; /* the fields below are about message_index */
  uint64_t message_index;
  uint64_t message_end;
  PGresult *piece; /* NULL once served to its end */
  uint64_t piece_start;
  const char *piece_data;
  size_t piece_length;
};

struct store_call {
  struct pg_module *m;
  struct popkit_store_request *req;
  struct pg_mailbox *mailbox;
};

static void mailbox_free(struct pg_mailbox *mb) {
  if (mb == NULL)
    return;
  PQclear(mb->piece);
  free(mb->ids);
  free(mb->name);
  free(mb);
}

static struct store_call *call_new(struct pg_module *m,
                                   struct popkit_store_request *req) {
  struct store_call *call = calloc(1, sizeof *call);
  if (call == NULL) {
    m->host->complete(&req->base, POPKIT_TEMPFAIL, "out of memory");
    return NULL;
  }
  call->m = m;
  call->req = req;
  call->mailbox = req->mailbox;
  return call;
}

static void finish(struct store_call *call, enum popkit_result result, const char *text) {
  struct popkit_store_request *req = call->req;
  const struct popkit_host *host = call->m->host;
  req->base.module_data = NULL;
  free(call);
  host->complete(&req->base, result, text);
}

/* Submits a query for call, or finishes the call when there is no memory. */
static void submit(struct store_call *call, struct pg_query *q) {
  if (q == NULL) {
    finish(call, POPKIT_TEMPFAIL, "out of memory");
    return;
  }
  pg_module_submit(call->m, &call->req->base, q);
}

/* ---- Open --------------------------------------------------------------- */

static void open_failed(struct store_call *call, enum popkit_result result,
                        const char *text) {
  struct pg_mailbox *mb = call->mailbox;
  pg_locks_returned(call->m);
  pg_locks_release(call->m, mb->name, mb->session);
  mailbox_free(mb);
  call->req->mailbox = NULL;
  finish(call, result, text);
}

static enum popkit_result read_listing(struct store_call *call, const PGresult *res,
                                       char *why, size_t why_size) {
  struct pg_mailbox *mb = call->mailbox;
  int rows = PQntuples(res);
  mb->ids = calloc(rows > 0 ? (size_t)rows : 1, sizeof *mb->ids);
  if (mb->ids == NULL) {
    snprintf(why, why_size, "out of memory");
    return POPKIT_TEMPFAIL;
  }
  for (int r = 0; r < rows; r++) {
    int64_t id, size;
    const char *uid = PQgetvalue(res, r, 1);
    if (pg_text_parse_int64(PQgetvalue(res, r, 0), &id) < 0 ||
        pg_text_parse_int64(PQgetvalue(res, r, 2), &size) < 0 || size < 0) {
      snprintf(why, why_size, "message row with uid \"%s\" is unreadable", uid);
      return POPKIT_PERMFAIL;
    }
    int rc = call->m->host->store_add_message(call->req, uid, (uint64_t)size);
    if (rc == -EINVAL) {
      snprintf(why, why_size, "message %lld has an unusable uid \"%s\"", (long long)id,
               uid);
      return POPKIT_PERMFAIL;
    }
    if (rc < 0) {
      snprintf(why, why_size, "out of memory");
      return POPKIT_TEMPFAIL;
    }
    mb->ids[mb->count++] = id;
  }
  return POPKIT_OK;
}

static void on_listed(struct pg_query *q, PGresult *res, const char *error) {
  struct store_call *call = q->data;
  pg_query_free(q);
  if (error != NULL) {
    open_failed(call, POPKIT_TEMPFAIL, error);
    return;
  }
  char why[256];
  enum popkit_result result = read_listing(call, res, why, sizeof why);
  PQclear(res);
  if (result != POPKIT_OK) {
    open_failed(call, result, why);
    return;
  }
  finish(call, POPKIT_OK, NULL);
}

static void on_locked(struct pg_query *q, PGresult *res, const char *error) {
  struct store_call *call = q->data;
  struct pg_mailbox *mb = call->mailbox;
  pg_query_free(q);
  int rows = res != NULL ? PQntuples(res) : 0;
  PQclear(res);
  if (error != NULL || rows == 0) {
    if (error != NULL)
      /* The lease may have been taken just before the answer was lost;
       * giving back one that is not ours changes nothing. */
      pg_locks_release(call->m, mb->name, mb->session);
    mailbox_free(mb);
    call->req->mailbox = NULL;
    finish(call, error != NULL ? POPKIT_TEMPFAIL : POPKIT_IN_USE,
           error != NULL ? error : "another session holds the mailbox's lock");
    return;
  }
  pg_locks_taken(call->m);
  q = pg_query_new(list_sql, on_listed, call);
  if (q == NULL) {
    open_failed(call, POPKIT_TEMPFAIL, "out of memory");
    return;
  }
  pg_query_text(q, mb->name);
  q->retry_safe = true;
  pg_module_submit(call->m, &call->req->base, q);
}

void pg_store_open(void *instance, struct popkit_store_request *req) {
  struct pg_module *m = instance;
  req->mailbox = NULL;
  struct store_call *call = call_new(m, req);
  if (call == NULL)
    return;
  if (!popkit_is_utf8(req->identity)) {
    finish(call, POPKIT_PERMFAIL, "the mailbox name is not UTF-8");
    return;
  }
  struct pg_mailbox *mb = calloc(1, sizeof *mb);
  if (mb == NULL || (mb->name = strdup(req->identity)) == NULL) {
    free(mb);
    finish(call, POPKIT_TEMPFAIL, "out of memory");
    return;
  }
  mb->session = pg_locks_new_session(&m->locks);
  /* The mailbox is the request's from here, so open_failed frees it. */
  call->mailbox = mb;
  req->mailbox = mb;
  struct pg_query *q = pg_query_new(pg_lock_acquire_sql, on_locked, call);
  if (q != NULL) {
    pg_lock_params(q, &m->locks, mb->name, mb->session);
    q->retry_safe = true;
  } else {
    mailbox_free(mb);
    req->mailbox = NULL;
  }
  submit(call, q);
}

/* ---- Read --------------------------------------------------------------- */

static void drop_piece(struct pg_mailbox *mb) {
  PQclear(mb->piece);
  mb->piece = NULL;
}

/* Answers the read from what is in hand: a byte of the piece, or the end
 * of the message. */
static bool serve_from_hand(struct pg_mailbox *mb, struct popkit_store_request *req) {
  if (!mb->have_message || mb->message_index != req->index)
    return false;
  if (req->offset >= mb->message_end) {
    req->length = 0;
    return true;
  }
  if (mb->piece == NULL || req->offset < mb->piece_start ||
      req->offset >= mb->piece_start + mb->piece_length)
    return false;
  size_t skip = (size_t)(req->offset - mb->piece_start);
  size_t n = mb->piece_length - skip;
  if (n > req->buffer_size)
    n = req->buffer_size;
  memcpy(req->buffer, mb->piece_data + skip, n);
  req->length = n;
  if (skip + n == mb->piece_length &&
      mb->piece_start + mb->piece_length >= mb->message_end)
    drop_piece(mb); /* the message's last byte is out */
  return true;
}

static void on_piece(struct pg_query *q, PGresult *res, const char *error) {
  struct store_call *call = q->data;
  struct pg_mailbox *mb = call->mailbox;
  struct popkit_store_request *req = call->req;
  pg_query_free(q);
  if (error != NULL) {
    finish(call, POPKIT_TEMPFAIL, error);
    return;
  }
  if (PQntuples(res) == 0) {
    PQclear(res);
    finish(call, POPKIT_PERMFAIL, "the message was deleted by another session");
    return;
  }
  drop_piece(mb);
  bool first = PQnfields(res) == 3;
  if (first) {
    mb->have_message = true;
    mb->message_index = req->index;
    mb->message_end =
        PQgetlength(res, 0, 2) == 8 ? (uint64_t)pg_text_int8(PQgetvalue(res, 0, 2)) : 0;
  }
  if (PQgetisnull(res, 0, 0) || PQgetlength(res, 0, 0) != 8) {
    /* No piece at or before the offset: an empty message. */
    PQclear(res);
    mb->message_end = 0;
  } else {
    mb->piece = res;
    mb->piece_start = (uint64_t)pg_text_int8(PQgetvalue(res, 0, 0));
    mb->piece_data = PQgetvalue(res, 0, 1);
    mb->piece_length = (size_t)PQgetlength(res, 0, 1);
  }
  if (!serve_from_hand(mb, req)) {
    /* The pieces leave a gap at the offset: a message imported wrongly. */
    finish(call, POPKIT_PERMFAIL, "the message's pieces do not cover it without gaps");
    return;
  }
  finish(call, POPKIT_OK, NULL);
}

void pg_store_read(void *instance, struct popkit_store_request *req) {
  struct pg_module *m = instance;
  struct pg_mailbox *mb = req->mailbox;
  if (req->index >= mb->count) {
    m->host->complete(&req->base, POPKIT_PERMFAIL, "no such message in the listing");
    return;
  }
  if (serve_from_hand(mb, req)) {
    m->host->complete(&req->base, POPKIT_OK, NULL);
    return;
  }
  struct store_call *call = call_new(m, req);
  if (call == NULL)
    return;
  bool known = mb->have_message && mb->message_index == req->index;
  struct pg_query *q =
      pg_query_new(known ? next_piece_sql : first_piece_sql, on_piece, call);
  if (q != NULL) {
    pg_query_int64(q, mb->ids[req->index]);
    pg_query_int64(q, (int64_t)req->offset);
    q->result_format = 1; /* bytea as raw bytes, start as 8 bytes */
    q->retry_safe = true;
  }
  submit(call, q);
}

/* ---- Expunge ------------------------------------------------------------ */

static void on_expunged(struct pg_query *q, PGresult *res, const char *error) {
  struct store_call *call = q->data;
  size_t wanted = call->req->index_count;
  pg_query_free(q);
  if (error != NULL) {
    finish(call, POPKIT_TEMPFAIL, error);
    return;
  }
  int64_t held = 0, gone = 0;
  if (PQntuples(res) != 1 || pg_text_parse_int64(PQgetvalue(res, 0, 0), &held) < 0 ||
      pg_text_parse_int64(PQgetvalue(res, 0, 1), &gone) < 0)
    held = -1;
  PQclear(res);
  if (held != 1) {
    finish(call, POPKIT_TEMPFAIL,
           held == 0 ? "the mailbox's lock expired and was not renewed (was PostgreSQL "
                       "away longer than lock_ttl_s?): nothing deleted"
                     : "unexpected answer to the deletion");
    return;
  }
  if ((size_t)gone < wanted)
    pg_log(call->m, &call->req->base, POPKIT_LOG_INFO,
           "%zu of %zu messages to delete were already gone", wanted - (size_t)gone,
           wanted);
  finish(call, POPKIT_OK, NULL);
}

void pg_store_expunge(void *instance, struct popkit_store_request *req) {
  struct pg_module *m = instance;
  struct pg_mailbox *mb = req->mailbox;
  int64_t *ids = calloc(req->index_count > 0 ? req->index_count : 1, sizeof *ids);
  if (ids == NULL) {
    m->host->complete(&req->base, POPKIT_TEMPFAIL, "out of memory");
    return;
  }
  for (size_t i = 0; i < req->index_count; i++) {
    if (req->indexes[i] >= mb->count) {
      free(ids);
      m->host->complete(&req->base, POPKIT_PERMFAIL, "no such message in the listing");
      return;
    }
    ids[i] = mb->ids[req->indexes[i]];
  }
  char *array = pg_text_int64_array(ids, req->index_count);
  free(ids);
  struct store_call *call = array != NULL ? call_new(m, req) : NULL;
  if (call == NULL) {
    if (array == NULL)
      m->host->complete(&req->base, POPKIT_TEMPFAIL, "out of memory");
    free(array);
    return;
  }
  struct pg_query *q = pg_query_new(expunge_sql, on_expunged, call);
  if (q != NULL) {
    pg_lock_params(q, &m->locks, mb->name, mb->session);
    pg_query_text(q, array);
    /* Sent twice, it deletes what it deleted once: safe to repeat. */
    q->retry_safe = true;
  }
  free(array);
  submit(call, q);
}

/* ---- Close -------------------------------------------------------------- */

static void on_unlocked(struct pg_query *q, PGresult *res, const char *error) {
  struct store_call *call = q->data;
  if (error != NULL)
    pg_log(call->m, &call->req->base, POPKIT_LOG_WARNING,
           "giving back the lock of mailbox \"%s\" failed: %s; it expires within %u s",
           call->mailbox->name, error, call->m->locks.ttl_s);
  pg_query_free(q);
  PQclear(res);
  mailbox_free(call->mailbox);
  call->req->mailbox = NULL;
  /* The session ends either way: a lock that stays behind expires. */
  finish(call, POPKIT_OK, NULL);
}

void pg_store_close(void *instance, struct popkit_store_request *req) {
  struct pg_module *m = instance;
  struct pg_mailbox *mb = req->mailbox;
  pg_locks_returned(m);
  struct store_call *call = call_new(m, req);
  if (call == NULL) {
    mailbox_free(mb);
    return;
  }
  struct pg_query *q =
      pg_locks_release_query(m, mb->name, mb->session, on_unlocked, call);
  if (q == NULL) {
    pg_log(m, &req->base, POPKIT_LOG_WARNING,
           "out of memory giving back the lock of mailbox \"%s\"; it expires within %u s",
           mb->name, m->locks.ttl_s);
    mailbox_free(mb);
    req->mailbox = NULL;
    finish(call, POPKIT_OK, NULL);
    return;
  }
  pg_module_submit(m, &req->base, q);
}
