#include "rc_body.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rc_listing.h"

/* Answers from the body in hand; false when it does not hold the bytes. */
static bool serve_body(struct rc_mailbox *mb, struct popkit_store_request *req) {
  if (mb->body_state != RC_BODY_COMPLETE || mb->body_index != req->index)
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
  rc_send_and_forget(m, 5, argv, lengths);
}

/* Gathers what next sent into the body, in order; the end stores it. */
static void gather(struct rc_module *m, struct rc_mailbox *mb,
                   const struct popkit_store_request *req, enum popkit_result result) {
  if (mb->body_state != RC_BODY_GATHERING || mb->body_index != req->index)
    return;
  bool in_order = result == POPKIT_OK && req->offset == mb->body_length &&
                  mb->body_length + req->length <= m->max_body_bytes;
  if (!in_order) {
    rc_mailbox_drop_body(mb);
  } else if (req->length > 0) {
    memcpy(mb->body + mb->body_length, req->buffer, req->length);
    mb->body_length += req->length;
  } else {
    mb->body_state = RC_BODY_COMPLETE;
    store_body(m, mb);
    free(mb->body);
    mb->body = NULL;
  }
}

static void on_next_read(void *instance, struct popkit_request *base,
                         enum popkit_result result, const char *log_text) {
  struct store_call *call = rc_call_of(base);
  struct popkit_store_request *req = call->req;
  req->mailbox = call->mb;
  req->index = call->saved_index;
  gather(instance, call->mb, req, result);
  rc_call_finish(call, result, log_text);
}

/* Reads from next, in next's numbering. */
static void read_from_next(struct store_call *call) {
  struct rc_mailbox *mb = call->mb;
  struct popkit_store_request *req = call->req;
  if (mb->inner == NULL) {
    rc_listing_open_next(call, read_from_next);
    return;
  }
  call->saved_index = req->index;
  if (mb->to_next != NULL) {
    size_t index = req->index < mb->count ? mb->to_next[req->index] : SIZE_MAX;
    if (index == SIZE_MAX) {
      rc_call_finish(call, POPKIT_PERMFAIL, "the message is gone from the store");
      return;
    }
    req->index = index;
  }
  rc_call_pass(call, mb->inner, on_next_read);
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
      mb->body_state = RC_BODY_COMPLETE;
      serve_body(mb, call->req);
      rc_call_finish(call, POPKIT_OK, NULL);
      return;
    }
    mb->body_state = RC_BODY_NONE;
  } else if (reply != NULL && reply->type == REDIS_REPLY_NIL) {
    /* Gather the body while next sends it. */
    mb->body = malloc(m->max_body_bytes);
    mb->body_state = mb->body != NULL ? RC_BODY_GATHERING : RC_BODY_NONE;
    rc_stats_count(&m->stats, m->loop, &m->stats.misses);
  } else {
    mb->body_state = RC_BODY_NONE;
    rc_stats_count(&m->stats, m->loop, &m->stats.fall_throughs);
  }
  read_from_next(call);
}

void rc_body_read(void *instance, struct popkit_store_request *req) {
  struct rc_module *m = instance;
  struct rc_mailbox *mb = rc_mailbox_of(req);
  if (serve_body(mb, req)) {
    m->host->complete(&req->base, POPKIT_OK, NULL);
    return;
  }
  struct store_call *call = rc_call_new(m, req, mb);
  if (call == NULL)
    return;
  bool in_hand = mb->body_state != RC_BODY_NONE && mb->body_index == req->index;
  bool gathering = in_hand && mb->body_state == RC_BODY_GATHERING;
  if (req->offset == 0 && !gathering && m->max_body_bytes > 0 && req->index < mb->count &&
      mb->sizes[req->index] <= m->max_body_bytes) {
    char key[256];
    int n = body_key(m, mb, req->index, key, sizeof key);
    rc_mailbox_drop_body(mb);
    mb->body_state = RC_BODY_ASKED;
    mb->body_index = req->index;
    const char *argv[] = {"GET", key};
    size_t lengths[] = {3, n > 0 ? (size_t)n : 0};
    if (n > 0 && rc_redis_command(m->redis, on_body, call, 2, argv, lengths) == 0)
      return;
    mb->body_state = RC_BODY_NONE;
    rc_stats_count(&m->stats, m->loop, &m->stats.fall_throughs);
  } else if (!in_hand) {
    rc_mailbox_drop_body(mb);
  }
  read_from_next(call);
}

void rc_body_forget(struct rc_module *m, const struct rc_mailbox *mb,
                    const struct popkit_store_request *req) {
  char key[256];
  for (size_t i = 0; i < req->index_count; i++) {
    uint64_t index = req->indexes[i];
    int n = index < mb->count ? body_key(m, mb, index, key, sizeof key) : -1;
    if (n < 0)
      continue;
    const char *argv[] = {"DEL", key};
    size_t lengths[] = {3, (size_t)n};
    rc_send_and_forget(m, 2, argv, lengths);
  }
}
