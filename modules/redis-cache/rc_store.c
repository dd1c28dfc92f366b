#include "rc_store.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rc_body.h"
#include "rc_listing.h"
#include "rc_mailbox.h"

/* ---- Open --------------------------------------------------------------- */

/* Keeps the unique ids, which name the bodies in Redis. Short of memory,
 * it keeps what it can: messages past mb->count are just not cached. */
static void copy_listing(struct rc_module *m, struct popkit_store_request *req,
                         struct rc_mailbox *mb) {
  size_t count = m->host->store_message_count(req);
  mb->uids = calloc(count > 0 ? count : 1, sizeof *mb->uids);
  mb->sizes = calloc(count > 0 ? count : 1, sizeof *mb->sizes);
  if (mb->uids == NULL || mb->sizes == NULL)
    return;
  for (size_t i = 0; i < count; i++) {
    const char *uid;
    if (m->host->store_message(req, i, &uid, &mb->sizes[i]) < 0 ||
        (mb->uids[i] = strdup(uid)) == NULL)
      return;
    mb->count++;
  }
}

static void open_failed(struct store_call *call, enum popkit_result result,
                        const char *text) {
  struct rc_mailbox *mb = call->mb;
  if (mb->lock.held)
    rc_lock_release(call->m, &mb->lock, NULL, NULL);
  rc_mailbox_free(mb);
  call->req->mailbox = NULL;
  rc_call_finish(call, result, text);
}

static void on_next_opened(void *instance, struct popkit_request *base,
                           enum popkit_result result, const char *log_text) {
  struct rc_module *m = instance;
  struct store_call *call = rc_call_of(base);
  struct rc_mailbox *mb = call->mb;
  if (result != POPKIT_OK) {
    open_failed(call, result, log_text);
    return;
  }
  mb->inner = call->req->mailbox;
  copy_listing(m, call->req, mb);
  /* Under the Redis lock the listing is worth keeping (rc_listing.h). */
  if (mb->lock.held && mb->count == m->host->store_message_count(call->req))
    rc_listing_store(m, mb);
  call->req->mailbox = mb;
  rc_call_finish(call, POPKIT_OK, NULL);
}

static void open_at_next(struct store_call *call) {
  rc_call_pass(call, NULL, on_next_opened);
}

static void on_listed(struct store_call *call, int outcome) {
  if (outcome < 0) {
    open_failed(call, POPKIT_TEMPFAIL, "out of memory");
    return;
  }
  if (outcome == 0) {
    open_at_next(call);
    return;
  }
  /* next opens the mailbox when a body is missing or at QUIT. */
  call->req->mailbox = call->mb;
  rc_call_finish(call, POPKIT_OK, NULL);
}

static void on_locked(void *data, int outcome) {
  struct store_call *call = data;
  struct rc_module *m = call->m;
  if (outcome == 0) {
    rc_mailbox_free(call->mb);
    rc_call_finish(call, POPKIT_IN_USE,
                   "another session holds the mailbox's lock in Redis");
    return;
  }
  if (outcome < 0) {
    rc_stats_count(&m->stats, m->loop, &m->stats.fall_throughs);
    open_at_next(call);
    return;
  }
  if (rc_listing_fetch(call, on_listed) < 0) {
    rc_stats_count(&m->stats, m->loop, &m->stats.fall_throughs);
    open_at_next(call);
  }
}

static void rc_open(void *instance, struct popkit_store_request *req) {
  struct rc_module *m = instance;
  struct rc_mailbox *mb = rc_mailbox_new();
  struct store_call *call = mb != NULL ? rc_call_new(m, req, mb) : NULL;
  if (call == NULL) {
    if (mb == NULL)
      m->host->complete(&req->base, POPKIT_TEMPFAIL, "out of memory");
    rc_mailbox_free(mb);
    return;
  }
  req->mailbox = NULL;
  mb->identity = strdup(req->identity);
  if (mb->identity == NULL || rc_mailbox_hash(req->identity, mb->hash) < 0) {
    rc_mailbox_free(mb);
    rc_call_finish(call, POPKIT_TEMPFAIL, "out of memory");
    return;
  }
  if (m->lock_enabled && rc_lock_acquire(m, &mb->lock, mb->hash, on_locked, call) == 0)
    return;
  if (m->lock_enabled)
    rc_stats_count(&m->stats, m->loop, &m->stats.fall_throughs);
  open_at_next(call);
}

/* ---- Expunge ------------------------------------------------------------ */

static void on_invalidated(void *data, redisReply *reply) {
  struct store_call *call = data;
  if (reply == NULL || reply->type != REDIS_REPLY_INTEGER)
    rc_log(call->m, &call->req->base, POPKIT_LOG_WARNING,
           "the mailbox's cached listing could not be invalidated: it may be used up to "
           "listing_ttl_s");
  rc_call_finish(call, POPKIT_OK, NULL);
}

static void on_next_expunged(void *instance, struct popkit_request *base,
                             enum popkit_result result, const char *log_text) {
  struct rc_module *m = instance;
  struct store_call *call = rc_call_of(base);
  struct popkit_store_request *req = call->req;
  req->mailbox = call->mb;
  if (req->indexes != call->saved_indexes) {
    free((void *)req->indexes);
    req->indexes = call->saved_indexes;
    req->index_count = call->saved_index_count;
  }
  if (result != POPKIT_OK) {
    rc_call_finish(call, result, log_text);
    return;
  }
  rc_body_forget(m, call->mb, req);
  /* The +OK of QUIT waits for the generation to move: a login right after
   * it must not get the listing from before. */
  if (rc_listing_invalidate(m, call->mb->hash, on_invalidated, call) < 0)
    on_invalidated(call, NULL);
}

/* Deletes at next, in next's numbering (a listing from Redis may number
 * messages otherwise; one next no longer has needs no deleting). */
static void expunge_at_next(struct store_call *call) {
  struct rc_mailbox *mb = call->mb;
  struct popkit_store_request *req = call->req;
  if (mb->inner == NULL) {
    rc_listing_open_next(call, expunge_at_next);
    return;
  }
  call->saved_indexes = req->indexes;
  call->saved_index_count = req->index_count;
  if (mb->to_next != NULL) {
    uint64_t *mapped =
        calloc(req->index_count > 0 ? req->index_count : 1, sizeof *mapped);
    if (mapped == NULL) {
      rc_call_finish(call, POPKIT_TEMPFAIL, "out of memory");
      return;
    }
    size_t n = 0;
    for (size_t i = 0; i < req->index_count; i++) {
      uint64_t index = req->indexes[i];
      size_t to = index < mb->count ? mb->to_next[index] : SIZE_MAX;
      if (to != SIZE_MAX)
        mapped[n++] = to;
    }
    req->indexes = mapped;
    req->index_count = n;
  }
  rc_call_pass(call, mb->inner, on_next_expunged);
}

static void rc_expunge(void *instance, struct popkit_store_request *req) {
  struct rc_mailbox *mb = rc_mailbox_of(req);
  rc_mailbox_drop_body(mb);
  struct store_call *call = rc_call_new(instance, req, mb);
  if (call != NULL)
    expunge_at_next(call);
}

/* ---- Close -------------------------------------------------------------- */

static void on_unlocked(void *data, int outcome) {
  struct store_call *call = data;
  (void)outcome; /* a lock that could not be given back expires */
  rc_mailbox_free(call->mb);
  call->req->mailbox = NULL;
  rc_call_finish(call, POPKIT_OK, NULL);
}

/* QUIT's +OK waits for the unlock, so the client may log in again at once. */
static void unlock(struct store_call *call) {
  struct rc_mailbox *mb = call->mb;
  if (mb->lock.held && rc_lock_release(call->m, &mb->lock, on_unlocked, call) == 0)
    return;
  on_unlocked(call, -1);
}

static void on_next_closed(void *instance, struct popkit_request *base,
                           enum popkit_result result, const char *log_text) {
  struct rc_module *m = instance;
  struct store_call *call = rc_call_of(base);
  if (result != POPKIT_OK)
    rc_log(m, base, POPKIT_LOG_WARNING, "next could not close the mailbox: %s",
           log_text != NULL ? log_text : "");
  unlock(call);
}

/* Short of memory for a call: next still closes its mailbox (its lock),
 * and the Redis lock expires by itself. */
static void on_next_closed_bare(void *instance, struct popkit_request *base,
                                enum popkit_result result, const char *log_text) {
  struct rc_module *m = instance;
  struct rc_mailbox *mb = base->module_data;
  base->module_data = NULL;
  ((struct popkit_store_request *)base)->mailbox = NULL;
  rc_locks_forget(m, &mb->lock);
  rc_mailbox_free(mb);
  m->host->complete(base, result, log_text);
}

static void rc_close(void *instance, struct popkit_store_request *req) {
  struct rc_module *m = instance;
  struct rc_mailbox *mb = rc_mailbox_of(req);
  rc_mailbox_drop_body(mb);
  struct store_call *call = calloc(1, sizeof *call);
  if (call == NULL && mb->inner != NULL) {
    req->mailbox = mb->inner;
    req->base.module_data = mb;
    m->host->pass_to_next(&req->base, on_next_closed_bare);
    return;
  }
  if (call == NULL) {
    rc_locks_forget(m, &mb->lock);
    rc_mailbox_free(mb);
    req->mailbox = NULL;
    m->host->complete(&req->base, POPKIT_OK, NULL);
    return;
  }
  *call = (struct store_call){.m = m, .req = req, .mb = mb};
  if (mb->inner == NULL) {
    unlock(call); /* next never opened it */
    return;
  }
  rc_call_pass(call, mb->inner, on_next_closed);
}

/* ---- Delivery ----------------------------------------------------------- */

#define RC_DELIVERY_MAGIC 0x44434352u /* "RCCD" */

/* A delivery in progress: next's handle and the mailbox's name in Redis. */
struct rc_delivery {
  uint32_t magic;
  void *inner;
  char hash[RC_MAILBOX_HASH_SIZE];
};

/* The delivery's request while next works on it. */
struct delivery_call {
  struct rc_module *m;
  struct popkit_store_request *req;
  struct rc_delivery *d;
  enum popkit_result result;
  char *log_text;
};

static void delivery_finish(struct delivery_call *dc) {
  struct popkit_store_request *req = dc->req;
  const struct popkit_host *host = dc->m->host;
  enum popkit_result result = dc->result;
  char *text = dc->log_text;
  free(dc);
  host->complete(&req->base, result, text);
  free(text);
}

static void on_generation_moved(void *data, redisReply *reply) {
  struct delivery_call *dc = data;
  if (reply == NULL || reply->type != REDIS_REPLY_INTEGER)
    rc_log(dc->m, &dc->req->base, POPKIT_LOG_WARNING,
           "the mailbox's cached listing could not be invalidated: it may be used up to "
           "listing_ttl_s");
  delivery_finish(dc);
}

static void on_next_appended(void *instance, struct popkit_request *base,
                             enum popkit_result result, const char *log_text) {
  struct rc_module *m = instance;
  struct delivery_call *dc = base->module_data;
  base->module_data = NULL;
  struct popkit_store_request *req = dc->req;
  dc->result = result;
  dc->log_text = log_text != NULL ? strdup(log_text) : NULL;
  if (base->kind == POPKIT_REQ_STORE_APPEND_BEGIN) {
    if (result == POPKIT_OK) {
      dc->d->inner = req->mailbox;
      req->mailbox = dc->d;
    } else {
      free(dc->d);
      req->mailbox = NULL;
    }
  } else if (base->kind == POPKIT_REQ_STORE_APPEND_WRITE) {
    req->mailbox = dc->d;
  } else {
    /* APPEND_FINISH: a committed message moves the mailbox's generation
     * before popkit-deliver reports success (rc_listing.h). */
    struct rc_delivery *d = dc->d;
    req->mailbox = NULL;
    bool committed = result == POPKIT_OK && req->commit;
    char hash[RC_MAILBOX_HASH_SIZE];
    memcpy(hash, d->hash, sizeof hash);
    free(d);
    if (committed) {
      if (rc_listing_invalidate(m, hash, on_generation_moved, dc) == 0)
        return;
      on_generation_moved(dc, NULL);
      return;
    }
  }
  delivery_finish(dc);
}

/* Short of memory for a call at APPEND_FINISH: next must still finish
 * (and roll back or commit) what it began. */
static void on_next_finished_bare(void *instance, struct popkit_request *base,
                                  enum popkit_result result, const char *log_text) {
  struct rc_module *m = instance;
  free(base->module_data);
  base->module_data = NULL;
  ((struct popkit_store_request *)base)->mailbox = NULL;
  m->host->complete(base, result, log_text);
}

static void pass_delivery(struct rc_module *m, struct popkit_store_request *req,
                          struct rc_delivery *d) {
  struct delivery_call *dc = calloc(1, sizeof *dc);
  if (dc == NULL && req->base.kind == POPKIT_REQ_STORE_APPEND_FINISH) {
    req->mailbox = d->inner;
    req->base.module_data = d;
    m->host->pass_to_next(&req->base, on_next_finished_bare);
    return;
  }
  if (dc == NULL) {
    if (req->base.kind == POPKIT_REQ_STORE_APPEND_BEGIN)
      free(d);
    m->host->complete(&req->base, POPKIT_TEMPFAIL, "out of memory");
    return;
  }
  *dc = (struct delivery_call){.m = m, .req = req, .d = d};
  req->mailbox = d->inner;
  req->base.module_data = dc;
  m->host->pass_to_next(&req->base, on_next_appended);
}

static void rc_append_begin(void *instance, struct popkit_store_request *req) {
  struct rc_module *m = instance;
  struct rc_delivery *d = calloc(1, sizeof *d);
  if (d == NULL || rc_mailbox_hash(req->identity, d->hash) < 0) {
    free(d);
    m->host->complete(&req->base, POPKIT_TEMPFAIL, "out of memory");
    return;
  }
  d->magic = RC_DELIVERY_MAGIC;
  /* popkit-deliver is a fresh process: Redis connects while the message
   * is written, so the invalidation after COMMIT finds it up. */
  rc_redis_connect_soon(m->redis);
  pass_delivery(m, req, d);
}

static void rc_append_more(void *instance, struct popkit_store_request *req) {
  struct rc_delivery *d = req->mailbox;
  if (d == NULL || d->magic != RC_DELIVERY_MAGIC)
    abort(); /* popkitd handed back something that is not ours */
  pass_delivery(instance, req, d);
}

const struct popkit_store_ops rc_store_ops = {
    .struct_size = sizeof(struct popkit_store_ops),
    .open = rc_open,
    .read = rc_body_read,
    .expunge = rc_expunge,
    .close = rc_close,
    .append_begin = rc_append_begin,
    .append_write = rc_append_more,
    .append_finish = rc_append_more,
};
