/*
 * Calls into modules: the auth chain (a list tried in order, NOT_FOUND
 * moves on) and the store, for one worker's loop.
 *
 * A GET_CREDENTIAL that reaches an auth module without get_credential is
 * that module's LOOKUP: a user it does not know moves the list on, a user it
 * knows ends the request with FAIL (no identity, no credential). The chain
 * so decides a user the same way for APOP and SCRAM as for USER/PASS, where
 * that module's FAIL stops the list too.
 *
 * A call is a struct core_request: the public request a module sees comes
 * first, then the core's bookkeeping. Its callback always runs on the loop
 * thread, exactly once, and never from inside the call that started it (a
 * module that completes at once is deferred to the next loop turn), so a
 * 50 MB RETR from a synchronous store cannot grow the stack.
 */
#ifndef POPKIT_CORE_CHAIN_H
#define POPKIT_CORE_CHAIN_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "host.h"
#include "popkit/module.h"

#define CORE_REQUEST_MAGIC 0x5152434bu /* "KCRQ" */

/* How deep decorators may nest ("next" of a "next" ...). */
#define CHAIN_MAX_DECORATORS 4

struct listing_entry {
  uint64_t size;    /* CRLF-form octets */
  uint32_t uid_off; /* into listing.uids */
  uint8_t uid_len;  /* 1..70 */
  bool deleted;     /* DELE in this session */
};

/* The snapshot of a mailbox taken at login. */
struct listing {
  struct listing_entry *entries;
  size_t count, capacity;
  char *uids; /* uid bytes, NUL after each */
  size_t uids_len, uids_capacity;
};

void listing_free(struct listing *l);

struct core_request;
typedef void (*core_request_cb)(struct core_request *req);

struct core_request {
  union {
    struct popkit_request base;
    struct popkit_auth_request auth;
    struct popkit_store_request store;
  } pub; /* first: the module's completion finds us from it */
  uint32_t magic;
  struct chain *chain;
  module_instance *mi; /* the module working on it */
  size_t auth_link;    /* auth chain: index of mi */
  enum popkit_result result;
  char *log_text; /* from the module, for the log */
  char *identity; /* auth outputs */
  char *credential;
  struct listing listing; /* OPEN output */
  core_request_cb cb;
  void *data;
  char *owned_string; /* the caller's, freed with the request */
  uv_work_t work;     /* blocking modules run here */
  bool in_call;       /* the module's function has not returned yet */
  bool completed;
  bool canceled;
  bool queued; /* waits in the chain's deferred list */
  bool own;    /* a decorator's own request (host->next_request) */
  /* A GET_CREDENTIAL that the module at credential_lookup_depth, which has
   * no get_credential, works on as a LOOKUP; it is a GET_CREDENTIAL again
   * once that module completes. */
  bool credential_lookup;
  unsigned credential_lookup_depth;
  struct core_request *deferred_next;
  /* Decorators that passed the request on (host->pass_to_next), innermost
   * last: each gets the request back, through its done, when the module
   * after it completes. */
  struct decorator_frame {
    module_instance *mi;
    popkit_next_done done;
    void *module_data; /* the decorator's, kept while next works */
  } frames[CHAIN_MAX_DECORATORS];
  unsigned depth;
};

/* One worker's module instances and the machinery to call them. */
struct chain {
  uv_loop_t *loop;
  module_instance **auth;
  size_t auth_count;
  module_instance *store;
  uv_idle_t deferred_idle; /* runs deferred completions */
  struct core_request *deferred_head, *deferred_tail;
  bool can_get_credential; /* some auth module hands back credentials */
};

int chain_init(struct chain *c, uv_loop_t *loop, const struct config *config,
               unsigned worker_id, char *error, size_t error_size);
/* Destroys the instances; no request may be in flight. Closes the idle
 * handle: run the loop once more to finish it. */
void chain_close(struct chain *c);

/* Starts an auth request (LOOKUP, VERIFY_PLAIN or GET_CREDENTIAL) through
 * the chain. Strings are copied. Returns NULL on allocation failure. */
struct core_request *chain_auth(struct chain *c, enum popkit_request_kind kind,
                                const char *user, const char *password,
                                const char *client_address, uint64_t session_id,
                                core_request_cb cb, void *data);

/* A store request of `kind`: fill pub.store, then chain_submit(). */
struct core_request *chain_store_request(struct chain *c, enum popkit_request_kind kind,
                                         uint64_t session_id, core_request_cb cb,
                                         void *data);
void chain_submit(struct core_request *req);

/* The client went away: ask the module to finish early. The callback still
 * runs. */
void chain_cancel(struct core_request *req);

void core_request_free(struct core_request *req);

/* host->pass_to_next (ABI 1.2). */
void chain_pass_to_next(struct core_request *req, popkit_next_done done);
/* host->next_request (ABI 1.2): a request of the decorator that holds
 * parent, for its next module. NULL on allocation failure. */
struct core_request *chain_next_request(struct core_request *parent, uint32_t kind);

/* The text for result codes in logs. */
const char *result_name(enum popkit_result r);

#endif
