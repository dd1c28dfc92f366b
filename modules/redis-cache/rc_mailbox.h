/*
 * The store side's shared parts: an open mailbox as redis-cache holds it,
 * and a store request while Redis or next works on it.
 */
#ifndef POPKIT_RC_MAILBOX_H
#define POPKIT_RC_MAILBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rc_keys.h"
#include "rc_lock.h"
#include "rc_module.h"

/* An open mailbox: next's handle (opened late when the listing came from
 * Redis), the Redis lock, the listing (unique ids name bodies), and the
 * body of one message while it is sent. */
/* The body of one message, in hand while it is sent. */
enum rc_body_state {
  RC_BODY_NONE,      /* no body in hand */
  RC_BODY_ASKED,     /* Redis was asked for body_index's body */
  RC_BODY_GATHERING, /* next's bytes of body_index are gathered for Redis */
  RC_BODY_COMPLETE   /* body_index's body was whole in hand (body is NULL
                        once sent to its end) */
};

struct rc_mailbox {
  uint32_t magic;
  void *inner; /* next's handle; NULL until next has opened the mailbox */
  char *identity;
  char hash[RC_MAILBOX_HASH_SIZE];
  char generation[24]; /* the mailbox's generation when it was listed */
  struct rc_lock lock;
  size_t count;
  char **uids;
  uint64_t *sizes;
  /* After a late open: index in next's listing of each of ours, or
   * SIZE_MAX for a message next no longer has. NULL: the same indexes. */
  size_t *to_next;
  enum rc_body_state body_state;
  uint64_t body_index;
  char *body; /* NULL once sent to its end */
  size_t body_length;
};

struct store_call;
typedef void (*rc_then)(struct store_call *call);

struct store_call {
  struct rc_module *m;
  struct popkit_store_request *req;
  struct rc_mailbox *mb;
  rc_then then; /* what goes on once next has opened the mailbox late */
  uint64_t saved_index;
  const uint64_t *saved_indexes;
  size_t saved_index_count;
};

/* A new, empty mailbox (NULL without memory); rc_mailbox_of checks that a
 * handle popkitd gives back is one. */
struct rc_mailbox *rc_mailbox_new(void);
struct rc_mailbox *rc_mailbox_of(struct popkit_store_request *req);
void rc_mailbox_free(struct rc_mailbox *mb);
void rc_mailbox_drop_body(struct rc_mailbox *mb);

/* A call for req (completes req TEMPFAIL and returns NULL without memory). */
struct store_call *rc_call_new(struct rc_module *m, struct popkit_store_request *req,
                               struct rc_mailbox *mb);
/* Completes the request and frees the call. */
void rc_call_finish(struct store_call *call, enum popkit_result result, const char *text);
/* Hands the request to next with inner as its mailbox; done finds the
 * call again with rc_call_of. */
void rc_call_pass(struct store_call *call, void *inner, popkit_next_done done);
struct store_call *rc_call_of(struct popkit_request *base);

/* Sends a command whose answer changes nothing; Redis away counts a
 * fall-through. */
void rc_send_and_forget(struct rc_module *m, int argc, const char **argv,
                        const size_t *lengths);

#endif
