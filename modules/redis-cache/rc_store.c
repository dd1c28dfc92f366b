#include "rc_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rc_keys.h"
#include "rc_module.h"
#include "rc_pass.h"

#define RC_MAILBOX_MAGIC 0x584d4352u /* "RCMX" */

/* An open mailbox: next's handle, the Redis lock, the listing (uids, to
 * name bodies) and the body of one message while it is sent. */
struct rc_mailbox {
  uint32_t magic;
  void *inner;
  char hash[RC_MAILBOX_HASH_SIZE];
  struct rc_lock lock;
  size_t count;
  char **uids;
  uint64_t *sizes;
  bool have_body;     /* the fields below are about body_index */
  bool body_complete; /* body holds the whole message (or held it) */
  bool body_caching;  /* next's bytes are being gathered for Redis */
  uint64_t body_index;
  char *body; /* NULL once sent to its end */
  size_t body_length;
};

/* A store request while Redis or next works on it. */
struct store_call {
  struct rc_module *m;
  struct popkit_store_request *req;
  struct rc_mailbox *mb;
};

static void drop_body(struct rc_mailbox *mb) {
  free(mb->body);
  mb->body = NULL;
  mb->have_body = mb->body_complete = mb->body_caching = false;
  mb->body_length = 0;
}

static void mailbox_free(struct rc_mailbox *mb) {
  if (mb == NULL)
    return;
  drop_body(mb);
  for (size_t i = 0; i < mb->count; i++)
    free(mb->uids[i]);
  free(mb->uids);
  free(mb->sizes);
  mb->magic = 0;
  free(mb);
}

static struct rc_mailbox *mailbox_of(struct popkit_store_request *req) {
  struct rc_mailbox *mb = req->mailbox;
  if (mb == NULL || mb->magic != RC_MAILBOX_MAGIC)
    abort(); /* popkitd handed back something that is not ours */
  return mb;
}

static struct store_call *call_new(struct rc_module *m, struct popkit_store_request *req,
                                   struct rc_mailbox *mb) {
  struct store_call *call = calloc(1, sizeof *call);
  if (call == NULL) {
    m->host->complete(&req->base, POPKIT_TEMPFAIL, "out of memory");
    return NULL;
  }
  *call = (struct store_call){m, req, mb};
  return call;
}

static void finish(struct store_call *call, enum popkit_result result, const char *text) {
  struct popkit_store_request *req = call->req;
  const struct popkit_host *host = call->m->host;
  free(call);
  host->complete(&req->base, result, text);
}

/* Hands the request to next with next's handle in it; done gets ours back. */
static void pass_inner(struct store_call *call, void *inner, popkit_next_done done) {
  call->req->mailbox = inner;
  call->req->base.module_data = call;
  call->m->host->pass_to_next(&call->req->base, done);
}

static struct store_call *call_of(struct popkit_request *base) {
  struct store_call *call = base->module_data;
  base->module_data = NULL;
  return call;
}

/* Sends a command whose answer changes nothing for the caller. */
static void send_and_forget(struct rc_module *m, int argc, const char **argv,
                            const size_t *lengths) {
  if (rc_redis_command(m->redis, NULL, NULL, argc, argv, lengths) < 0)
    rc_stats_count(&m->stats, m->loop, &m->stats.fall_throughs);
}

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
  mailbox_free(mb);
  call->req->mailbox = NULL;
  finish(call, result, text);
}

static void on_next_opened(void *instance, struct popkit_request *base,
                           enum popkit_result result, const char *log_text) {
  struct store_call *call = call_of(base);
  struct rc_mailbox *mb = call->mb;
  (void)instance;
  if (result != POPKIT_OK) {
    open_failed(call, result, log_text);
    return;
  }
  mb->inner = call->req->mailbox;
  copy_listing(call->m, call->req, mb);
  call->req->mailbox = mb;
  finish(call, POPKIT_OK, NULL);
}

static void on_locked(void *data, int outcome) {
  struct store_call *call = data;
  struct rc_module *m = call->m;
  if (outcome == 0) {
    mailbox_free(call->mb);
    finish(call, POPKIT_IN_USE, "another session holds the mailbox's lock in Redis");
    return;
  }
  if (outcome < 0)
    rc_stats_count(&m->stats, m->loop, &m->stats.fall_throughs);
  pass_inner(call, NULL, on_next_opened);
}

static void rc_open(void *instance, struct popkit_store_request *req) {
  struct rc_module *m = instance;
  struct rc_mailbox *mb = calloc(1, sizeof *mb);
  struct store_call *call = mb != NULL ? call_new(m, req, mb) : NULL;
  if (call == NULL) {
    if (mb == NULL)
      m->host->complete(&req->base, POPKIT_TEMPFAIL, "out of memory");
    free(mb);
    return;
  }
  mb->magic = RC_MAILBOX_MAGIC;
  if (rc_mailbox_hash(req->identity, mb->hash) < 0) {
    mailbox_free(mb);
    finish(call, POPKIT_TEMPFAIL, "cannot hash the mailbox name");
    return;
  }
  if (m->lock_enabled && rc_lock_acquire(m, &mb->lock, mb->hash, on_locked, call) == 0)
    return;
  if (m->lock_enabled)
    rc_stats_count(&m->stats, m->loop, &m->stats.fall_throughs);
  pass_inner(call, NULL, on_next_opened);
}

/* ---- Read --------------------------------------------------------------- */

/* Answers from the body in hand; false when it does not hold the bytes. */
static bool serve_body(struct rc_mailbox *mb, struct popkit_store_request *req) {
  if (!mb->have_body || !mb->body_complete || mb->body_index != req->index)
    return false;
  if (req->offset >= mb->body_length) {
    req->length = 0;
    return true;
  }
  if (mb->body == NULL)
    return false; /* sent to its end and let go; a second RETR asks again */
  size_t n = mb->body_length - (size_t)req->offset;
  if (n > req->buffer_size)
    n = req->buffer_size;
  memcpy(req->buffer, mb->body + req->offset, n);
  req->length = n;
  if (req->offset + n == mb->body_length) {
    /* The last byte is out: an idle session keeps no body. */
    free(mb->body);
    mb->body = NULL;
  }
  return true;
}

static int body_key(struct rc_module *m, const struct rc_mailbox *mb, uint64_t index,
                    char *key, size_t size) {
  return rc_key(key, size, m->key_prefix, "body", mb->hash, mb->uids[index]);
}

static void store_body(struct rc_module *m, struct rc_mailbox *mb) {
  char key[256], ttl[16];
  int n = body_key(m, mb, mb->body_index, key, sizeof key);
  if (n < 0)
    return;
  snprintf(ttl, sizeof ttl, "%u", m->body_ttl_s);
  const char *argv[] = {"SET", key, mb->body, "EX", ttl};
  size_t lengths[] = {3, (size_t)n, mb->body_length, 2, strlen(ttl)};
  send_and_forget(m, 5, argv, lengths);
}

static void on_next_read(void *instance, struct popkit_request *base,
                         enum popkit_result result, const char *log_text) {
  struct rc_module *m = instance;
  struct store_call *call = call_of(base);
  struct rc_mailbox *mb = call->mb;
  struct popkit_store_request *req = call->req;
  req->mailbox = mb;
  if (mb->body_caching && mb->body_index == req->index) {
    bool in_order = result == POPKIT_OK && req->offset == mb->body_length &&
                    mb->body_length + req->length <= m->max_body_bytes;
    if (!in_order) {
      drop_body(mb);
    } else if (req->length > 0) {
      memcpy(mb->body + mb->body_length, req->buffer, req->length);
      mb->body_length += req->length;
    } else {
      /* The end: the whole message is in hand, and goes to Redis. */
      mb->body_caching = false;
      mb->body_complete = true;
      store_body(m, mb);
      free(mb->body);
      mb->body = NULL;
    }
  }
  finish(call, result, log_text);
}

static void read_from_next(struct store_call *call) {
  pass_inner(call, call->mb->inner, on_next_read);
}

static void on_body(void *data, redisReply *reply) {
  struct store_call *call = data;
  struct rc_module *m = call->m;
  struct rc_mailbox *mb = call->mb;
  if (reply != NULL && reply->type == REDIS_REPLY_STRING) {
    mb->body = malloc(reply->len > 0 ? reply->len : 1);
    if (mb->body != NULL) {
      rc_stats_count(&m->stats, m->loop, &m->stats.hits);
      memcpy(mb->body, reply->str, reply->len);
      mb->body_length = reply->len;
      mb->body_complete = true;
      serve_body(mb, call->req);
      finish(call, POPKIT_OK, NULL);
      return;
    }
    mb->have_body = false;
  } else if (reply != NULL && reply->type == REDIS_REPLY_NIL) {
    /* Gather the body while next sends it. */
    mb->body = malloc(m->max_body_bytes);
    mb->body_caching = mb->body != NULL;
    rc_stats_count(&m->stats, m->loop, &m->stats.misses);
  } else {
    mb->have_body = false;
    rc_stats_count(&m->stats, m->loop, &m->stats.fall_throughs);
  }
  read_from_next(call);
}

static void rc_read(void *instance, struct popkit_store_request *req) {
  struct rc_module *m = instance;
  struct rc_mailbox *mb = mailbox_of(req);
  if (serve_body(mb, req)) {
    m->host->complete(&req->base, POPKIT_OK, NULL);
    return;
  }
  struct store_call *call = call_new(m, req, mb);
  if (call == NULL)
    return;
  bool gathering = mb->body_caching && mb->body_index == req->index;
  if (req->offset == 0 && !gathering && m->max_body_bytes > 0 && req->index < mb->count &&
      mb->sizes[req->index] <= m->max_body_bytes) {
    char key[256];
    int n = body_key(m, mb, req->index, key, sizeof key);
    drop_body(mb);
    mb->have_body = true;
    mb->body_index = req->index;
    const char *argv[] = {"GET", key};
    size_t lengths[] = {3, n > 0 ? (size_t)n : 0};
    if (n > 0 && rc_redis_command(m->redis, on_body, call, 2, argv, lengths) == 0)
      return;
    mb->have_body = false;
    rc_stats_count(&m->stats, m->loop, &m->stats.fall_throughs);
  } else if (!gathering && !(mb->have_body && mb->body_index == req->index)) {
    drop_body(mb);
  }
  read_from_next(call);
}

/* ---- Expunge ------------------------------------------------------------ */

/* Bodies of deleted messages leave Redis. (Unique ids are never reused,
 * so a body left behind would only take room until its ttl.) */
static void forget_deleted(struct rc_module *m, struct rc_mailbox *mb,
                           const struct popkit_store_request *req) {
  char key[256];
  for (size_t i = 0; i < req->index_count; i++) {
    uint64_t index = req->indexes[i];
    int n = index < mb->count ? body_key(m, mb, index, key, sizeof key) : -1;
    if (n < 0)
      continue;
    const char *argv[] = {"DEL", key};
    size_t lengths[] = {3, (size_t)n};
    send_and_forget(m, 2, argv, lengths);
  }
}

static void on_next_expunged(void *instance, struct popkit_request *base,
                             enum popkit_result result, const char *log_text) {
  struct store_call *call = call_of(base);
  call->req->mailbox = call->mb;
  if (result == POPKIT_OK)
    forget_deleted(instance, call->mb, call->req);
  finish(call, result, log_text);
}

static void rc_expunge(void *instance, struct popkit_store_request *req) {
  struct rc_mailbox *mb = mailbox_of(req);
  drop_body(mb);
  struct store_call *call = call_new(instance, req, mb);
  if (call != NULL)
    pass_inner(call, mb->inner, on_next_expunged);
}

/* ---- Close -------------------------------------------------------------- */

static void on_unlocked(void *data, int outcome) {
  struct store_call *call = data;
  (void)outcome; /* a lock that could not be given back expires */
  mailbox_free(call->mb);
  finish(call, POPKIT_OK, NULL);
}

static void on_next_closed(void *instance, struct popkit_request *base,
                           enum popkit_result result, const char *log_text) {
  struct rc_module *m = instance;
  struct store_call *call = call_of(base);
  struct rc_mailbox *mb = call->mb;
  call->req->mailbox = NULL;
  if (result != POPKIT_OK)
    rc_log(m, base, POPKIT_LOG_WARNING, "next could not close the mailbox: %s",
           log_text != NULL ? log_text : "");
  /* QUIT's +OK waits for the unlock, so the client may log in again at
   * once. */
  if (mb->lock.held && rc_lock_release(m, &mb->lock, on_unlocked, call) == 0)
    return;
  on_unlocked(call, -1);
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
  mailbox_free(mb);
  m->host->complete(base, result, log_text);
}

static void rc_close(void *instance, struct popkit_store_request *req) {
  struct rc_module *m = instance;
  struct rc_mailbox *mb = mailbox_of(req);
  drop_body(mb);
  struct store_call *call = calloc(1, sizeof *call);
  if (call == NULL) {
    req->mailbox = mb->inner;
    req->base.module_data = mb;
    m->host->pass_to_next(&req->base, on_next_closed_bare);
    return;
  }
  *call = (struct store_call){m, req, mb};
  pass_inner(call, mb->inner, on_next_closed);
}

/* ---- Delivery ----------------------------------------------------------- */

/* Deliveries pass through: a new message changes no body in Redis (bodies
 * are keyed by unique id and never change). */
static void rc_append(void *instance, struct popkit_store_request *req) {
  rc_pass(instance, &req->base);
}

const struct popkit_store_ops rc_store_ops = {
    .struct_size = sizeof(struct popkit_store_ops),
    .open = rc_open,
    .read = rc_read,
    .expunge = rc_expunge,
    .close = rc_close,
    .append_begin = rc_append,
    .append_write = rc_append,
    .append_finish = rc_append,
};
