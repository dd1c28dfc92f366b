#include "chain.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

void chain_module_completed(struct core_request *req);

const char *result_name(enum popkit_result r) {
  switch (r) {
  case POPKIT_OK:
    return "OK";
  case POPKIT_FAIL:
    return "FAIL";
  case POPKIT_NOT_FOUND:
    return "NOT_FOUND";
  case POPKIT_TEMPFAIL:
    return "TEMPFAIL";
  case POPKIT_PERMFAIL:
    return "PERMFAIL";
  case POPKIT_IN_USE:
    return "IN_USE";
  }
  return "?";
}

void listing_free(struct listing *l) {
  free(l->entries);
  free(l->uids);
  memset(l, 0, sizeof *l);
}

/* ---- Deferred completions ----------------------------------------------- */

static void run_deferred(uv_idle_t *idle) {
  struct chain *c = idle->data;
  /* Take the whole list: callbacks may defer new completions, which then
   * wait for the next loop turn instead of starving I/O. */
  struct core_request *req = c->deferred_head;
  c->deferred_head = c->deferred_tail = NULL;
  uv_idle_stop(idle);
  while (req != NULL) {
    struct core_request *next = req->deferred_next;
    req->deferred_next = NULL;
    req->queued = false;
    chain_module_completed(req);
    req = next;
  }
}

static void defer(struct core_request *req) {
  struct chain *c = req->chain;
  req->queued = true;
  if (c->deferred_tail != NULL)
    c->deferred_tail->deferred_next = req;
  else
    c->deferred_head = req;
  c->deferred_tail = req;
  uv_idle_start(&c->deferred_idle, run_deferred);
}

/* ---- Calling a module --------------------------------------------------- */

static void call_module(struct core_request *req) {
  module_instance *mi = req->mi;
  void *inst = mi->instance;
  const struct popkit_auth_ops *a = mi->descriptor->auth;
  const struct popkit_store_ops *s = mi->descriptor->store;
  switch ((enum popkit_request_kind)req->pub.base.kind) {
  case POPKIT_REQ_AUTH_LOOKUP:
    a->lookup(inst, &req->pub.auth);
    break;
  case POPKIT_REQ_AUTH_VERIFY_PLAIN:
    a->verify_plain(inst, &req->pub.auth);
    break;
  case POPKIT_REQ_AUTH_GET_CREDENTIAL:
    /* Never NULL here: start_call() made the request a LOOKUP for a module
     * without it. */
    a->get_credential(inst, &req->pub.auth);
    break;
  case POPKIT_REQ_STORE_OPEN:
    s->open(inst, &req->pub.store);
    break;
  case POPKIT_REQ_STORE_READ:
    s->read(inst, &req->pub.store);
    break;
  case POPKIT_REQ_STORE_EXPUNGE:
    s->expunge(inst, &req->pub.store);
    break;
  case POPKIT_REQ_STORE_CLOSE:
    s->close(inst, &req->pub.store);
    break;
  case POPKIT_REQ_STORE_APPEND_BEGIN:
    s->append_begin(inst, &req->pub.store);
    break;
  case POPKIT_REQ_STORE_APPEND_WRITE:
    s->append_write(inst, &req->pub.store);
    break;
  case POPKIT_REQ_STORE_APPEND_FINISH:
    s->append_finish(inst, &req->pub.store);
    break;
  }
}

static void blocking_work(uv_work_t *work) {
  struct core_request *req = work->data;
  call_module(req);
}

/* The request ends in TEMPFAIL with this text for the log. */
static void end_in_tempfail(struct core_request *req, const char *log_text) {
  req->result = POPKIT_TEMPFAIL;
  free(req->log_text);
  req->log_text = strdup(log_text);
  req->completed = true;
}

static void blocking_done(uv_work_t *work, int status) {
  struct core_request *req = work->data;
  req->in_call = false;
  if (status == UV_ECANCELED) {
    end_in_tempfail(req, "canceled before it ran");
  } else if (!req->completed) {
    end_in_tempfail(req, "blocking module returned without completing the request");
    log_error("%s: a blocking module must complete before returning", req->mi->label);
  }
  req->completed = true;
  chain_module_completed(req);
}

/* Whether a module call on req that began at (mi, depth) is still that
 * module's step: a decorator that handed the request on inside its call
 * has passed the step, and its flags, to the next module. */
static bool same_step(const struct core_request *req, const module_instance *mi,
                      unsigned depth) {
  return req->mi == mi && req->depth == depth;
}

/* ---- GET_CREDENTIAL at a module that has none ----------------------------
 *
 * A module without get_credential (a directory never hands out a password)
 * still decides who its users are, and for USER/PASS its FAIL stops the
 * list. Were GET_CREDENTIAL simply NOT_FOUND there, a later module's secret
 * would open the same account through APOP or SCRAM. So the module is asked
 * its LOOKUP instead, and the answer is turned back into a GET_CREDENTIAL
 * answer before anyone else (a decorator's done, the caller) sees it. */

static void clear_auth_outputs(struct core_request *req) {
  if (req->credential != NULL)
    explicit_bzero(req->credential, strlen(req->credential));
  free(req->credential);
  free(req->identity);
  req->identity = req->credential = NULL;
}

static void begin_credential_lookup(struct core_request *req) {
  if (req->pub.base.kind != POPKIT_REQ_AUTH_GET_CREDENTIAL ||
      req->mi->descriptor->auth->get_credential != NULL)
    return;
  req->credential_lookup = true;
  req->credential_lookup_depth = req->depth;
  req->pub.base.kind = POPKIT_REQ_AUTH_LOOKUP;
}

/* The module that took the LOOKUP has completed it. When that module is a
 * decorator, its next completing does not count: the LOOKUP is the
 * decorator's to pass on and to finish. */
static void end_credential_lookup(struct core_request *req) {
  if (!req->credential_lookup || req->depth != req->credential_lookup_depth)
    return;
  req->credential_lookup = false;
  req->pub.base.kind = POPKIT_REQ_AUTH_GET_CREDENTIAL;
  if (req->result != POPKIT_OK)
    return; /* NOT_FOUND moves the list on; TEMPFAIL and the rest stand */
  /* The user is this module's, and it has no secret to hand back: the
   * identity it found is no answer to GET_CREDENTIAL and stays inside. */
  clear_auth_outputs(req);
  req->result = POPKIT_FAIL;
  char text[256];
  snprintf(text, sizeof text,
           "the user belongs to %s, which cannot hand back credentials: "
           "only a password login works for this user",
           req->mi->label);
  free(req->log_text);
  req->log_text = strdup(text);
}

/* A blocking store's READ tried on the loop thread (ABI 1.3): true when the
 * module completed it there, false when it goes to the pool after all. */
static bool read_without_blocking(struct core_request *req) {
  const struct popkit_store_ops *s = req->mi->descriptor->store;
  if (req->pub.base.kind != POPKIT_REQ_STORE_READ ||
      s->struct_size <
          offsetof(struct popkit_store_ops, read_nowait) + sizeof s->read_nowait ||
      s->read_nowait == NULL)
    return false;
  /* in_call makes a completion inside the call wait, as on the pool. */
  req->in_call = true;
  int served = s->read_nowait(req->mi->instance, &req->pub.store);
  req->in_call = false;
  if (!req->completed) {
    if (!served)
      return false;
    end_in_tempfail(req, "read_nowait returned 1 without completing the request");
    log_error("%s: read_nowait must complete a request it takes", req->mi->label);
  }
  defer(req);
  return true;
}

static void start_call(struct core_request *req) {
  module_instance *mi = req->mi;
  unsigned depth = req->depth;
  req->completed = false;
  req->result = POPKIT_TEMPFAIL;
  begin_credential_lookup(req);
  if (mi->blocking) {
    if (read_without_blocking(req))
      return;
    req->in_call = true;
    req->work.data = req;
    int rc = uv_queue_work(req->chain->loop, &req->work, blocking_work, blocking_done);
    if (rc < 0) {
      req->in_call = false;
      req->completed = true;
      req->log_text = strdup(uv_strerror(rc));
      defer(req);
    }
    return;
  }
  req->in_call = true;
  call_module(req);
  if (same_step(req, mi, depth)) {
    req->in_call = false;
    if (req->completed && !req->queued)
      defer(req);
  }
}

static void cancel_holder(struct core_request *req);

/* The module after a decorator completed: the decorator hears it through
 * its done, which is a module call like any other. */
static void return_to_decorator(struct core_request *req) {
  struct decorator_frame *f = &req->frames[--req->depth];
  module_instance *mi = f->mi;
  unsigned depth = req->depth;
  enum popkit_result result = req->result;
  req->mi = mi;
  req->pub.base.module_data = f->module_data;
  /* next's text is the decorator's to read during done only: the request
   * cannot be freed before done returns (completions inside it wait for
   * the next loop turn). */
  char *next_log_text = req->log_text;
  req->log_text = NULL;
  req->completed = false;
  req->result = POPKIT_TEMPFAIL;
  req->in_call = true;
  f->done(mi->instance, &req->pub.base, result, next_log_text);
  free(next_log_text);
  if (same_step(req, mi, depth)) {
    req->in_call = false;
    if (req->completed && !req->queued)
      defer(req);
    else if (!req->completed && req->canceled)
      /* The cancel reached the module after the decorator, which has
       * finished; the decorator goes on working for the request and must
       * hear it too. */
      cancel_holder(req);
  }
}

void chain_pass_to_next(struct core_request *req, popkit_next_done done) {
  module_instance *mi = req->mi;
  if (mi->next == NULL || req->depth == CHAIN_MAX_DECORATORS || done == NULL) {
    log_error("%s: pass_to_next on a request it cannot pass on (no next module)",
              mi->label);
    host_table.complete(&req->pub.base, POPKIT_TEMPFAIL, "no next module to pass to");
    return;
  }
  struct decorator_frame *f = &req->frames[req->depth++];
  f->mi = mi;
  f->done = done;
  f->module_data = req->pub.base.module_data;
  req->pub.base.module_data = NULL;
  req->mi = mi->next;
  start_call(req);
}

/* Called by the host's complete() and by the deferral machinery. */
void chain_module_completed(struct core_request *req) {
  if (req->mi->blocking && req->in_call)
    return; /* on a pool thread: blocking_done() carries on, on the loop */
  if (req->in_call)
    return; /* inside the module's call: start_call() defers it */
  end_credential_lookup(req);
  if (req->depth > 0) {
    return_to_decorator(req);
    return;
  }
  const uint32_t kind = req->pub.base.kind;
  bool is_auth = kind >= POPKIT_REQ_AUTH_LOOKUP && kind <= POPKIT_REQ_AUTH_GET_CREDENTIAL;
  if (is_auth && !req->own && req->result == POPKIT_NOT_FOUND && !req->canceled &&
      req->auth_link + 1 < req->chain->auth_count) {
    /* An auth list is tried in order: NOT_FOUND moves on. */
    req->auth_link++;
    req->mi = req->chain->auth[req->auth_link];
    clear_auth_outputs(req);
    req->pub.base.module_data = NULL;
    start_call(req);
    return;
  }
  req->cb(req);
}

static struct core_request *request_new(struct chain *c, enum popkit_request_kind kind,
                                        uint64_t session_id, core_request_cb cb,
                                        void *data) {
  struct core_request *req = calloc(1, sizeof *req);
  if (req == NULL)
    return NULL;
  req->magic = CORE_REQUEST_MAGIC;
  req->pub.base.magic = POPKIT_REQUEST_MAGIC;
  req->pub.base.kind = kind;
  req->pub.base.session_id = session_id;
  req->chain = c;
  req->cb = cb;
  req->data = data;
  return req;
}

struct core_request *chain_auth(struct chain *c, enum popkit_request_kind kind,
                                const char *user, const char *password,
                                const char *client_address, uint64_t session_id,
                                core_request_cb cb, void *data) {
  struct core_request *req = request_new(c, kind, session_id, cb, data);
  if (req == NULL)
    return NULL;
  /* Copies: the command line they came from is reused for the next
   * command while the backend works. */
  char *u = strdup(user);
  char *p = password != NULL ? strdup(password) : NULL;
  char *a = strdup(client_address != NULL ? client_address : "");
  if (u == NULL || a == NULL || (password != NULL && p == NULL)) {
    free(u);
    free(p);
    free(a);
    free(req);
    return NULL;
  }
  req->pub.auth.user = u;
  req->pub.auth.password = p;
  req->pub.auth.client_address = a;
  req->auth_link = 0;
  req->mi = c->auth[0];
  start_call(req);
  return req;
}

struct core_request *chain_store_request(struct chain *c, enum popkit_request_kind kind,
                                         uint64_t session_id, core_request_cb cb,
                                         void *data) {
  struct core_request *req = request_new(c, kind, session_id, cb, data);
  if (req != NULL)
    req->mi = c->store;
  return req;
}

void chain_submit(struct core_request *req) {
  start_call(req);
}

/* Asks the module that holds req now to finish early. */
static void cancel_holder(struct core_request *req) {
  if (req->mi->blocking) {
    /* Succeeds only if the work has not started; a running call finishes
     * normally and its result is thrown away by the caller. */
    uv_cancel((uv_req_t *)&req->work);
    return;
  }
  if (req->mi->descriptor->cancel != NULL)
    req->mi->descriptor->cancel(req->mi->instance, &req->pub.base);
}

static void free_own_request(struct core_request *req) {
  core_request_free(req);
}

struct core_request *chain_next_request(struct core_request *parent, uint32_t kind) {
  bool known =
      (kind >= POPKIT_REQ_AUTH_LOOKUP && kind <= POPKIT_REQ_AUTH_GET_CREDENTIAL) ||
      (kind >= POPKIT_REQ_STORE_OPEN && kind <= POPKIT_REQ_STORE_APPEND_FINISH);
  if (!known || parent->mi->next == NULL)
    return NULL;
  struct core_request *req =
      request_new(parent->chain, (enum popkit_request_kind)kind,
                  parent->pub.base.session_id, free_own_request, NULL);
  if (req == NULL)
    return NULL;
  /* The decorator holds it, as it holds parent: pass_to_next goes on from
   * there, and its completion at depth 0 just frees it. */
  req->mi = parent->mi;
  req->own = true;
  return req;
}

void chain_cancel(struct core_request *req) {
  if (req->canceled)
    return;
  req->canceled = true;
  /* A blocking module's completion is written on a pool thread while it
   * runs, so `completed` is only read when no such call is under way. */
  if (!(req->mi->blocking && req->in_call) && req->completed)
    return;
  cancel_holder(req);
}

void core_request_free(struct core_request *req) {
  if (req == NULL)
    return;
  const uint32_t kind = req->pub.base.kind;
  if (kind >= POPKIT_REQ_AUTH_LOOKUP && kind <= POPKIT_REQ_AUTH_GET_CREDENTIAL &&
      !req->own) {
    free((char *)req->pub.auth.user);
    if (req->pub.auth.password != NULL) {
      /* Passwords do not linger in freed memory. */
      explicit_bzero((char *)req->pub.auth.password, strlen(req->pub.auth.password));
      free((char *)req->pub.auth.password);
    }
    free((char *)req->pub.auth.client_address);
  }
  clear_auth_outputs(req);
  free(req->log_text);
  free(req->owned_string);
  listing_free(&req->listing);
  req->magic = 0;
  free(req);
}

/* ---- Setup -------------------------------------------------------------- */

/* A decorator hands back a credential only if what it wraps does. */
static bool hands_back_credentials(const module_instance *mi) {
  for (; mi != NULL; mi = mi->next)
    if (mi->descriptor->auth->get_credential == NULL)
      return false;
  return true;
}

int chain_init(struct chain *c, uv_loop_t *loop, const struct config *config,
               unsigned worker_id, char *error, size_t error_size) {
  memset(c, 0, sizeof *c);
  c->loop = loop;
  c->auth = calloc(config->auth_count, sizeof *c->auth);
  if (c->auth == NULL)
    return -ENOMEM;
  uv_idle_init(loop, &c->deferred_idle);
  c->deferred_idle.data = c;
  int rc = 0;
  for (size_t i = 0; i < config->auth_count && rc == 0; i++) {
    rc = module_instance_create(config, &config->auth[i], loop, worker_id,
                                POPKIT_ROLE_AUTH, &c->auth[i], error, error_size);
    if (rc == 0) {
      c->auth_count++;
      if (hands_back_credentials(c->auth[i]))
        c->can_get_credential = true;
    }
  }
  if (rc == 0)
    rc = module_instance_create(config, &config->store, loop, worker_id,
                                POPKIT_ROLE_STORE, &c->store, error, error_size);
  if (rc < 0)
    chain_close(c);
  return rc;
}

void chain_close(struct chain *c) {
  for (size_t i = 0; i < c->auth_count; i++)
    module_instance_destroy(c->auth[i]);
  free(c->auth);
  c->auth = NULL;
  c->auth_count = 0;
  module_instance_destroy(c->store);
  c->store = NULL;
  if (!uv_is_closing((uv_handle_t *)&c->deferred_idle))
    uv_close((uv_handle_t *)&c->deferred_idle, NULL);
}
