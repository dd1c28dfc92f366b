/*
 * decorator: a test decorator (ABI 1.2) of both roles that goes through
 * every path a decorator has, so tests/unit/test_chain.c can check the
 * core's side of each one. It is non-blocking, as every decorator must be.
 *
 * Auth:
 *   - the user "answered" is answered by the decorator itself: OK, identity
 *     "by-decorator", and next never hears of it;
 *   - every other user goes to next (host->pass_to_next). When next is done
 *     the decorator reads next's outputs through host->auth_identity and
 *     host->auth_credential and completes with next's result; on OK the
 *     identity becomes next's identity + "+d", so two decorators in a row
 *     give "+d+d";
 *   - for the user "late" it completes `late_ms` milliseconds (config,
 *     default 20) after next is done, from a libuv timer, instead of inside
 *     done; cancel ends that wait at once with TEMPFAIL.
 *
 * Store:
 *   - OPEN and APPEND_BEGIN go to next; in done the decorator puts next's
 *     handle inside a handle of its own (magic-checked). OPEN also checks
 *     the listing through host->store_message_count and
 *     host->store_message (every index answers, index == count is -ERANGE)
 *     and completes PERMFAIL when it does not hold. Then, and for the
 *     mailbox "refused", it refuses a mailbox next has opened: it closes
 *     next's mailbox with a request of its own (host->next_request) before
 *     it answers PERMFAIL, so nothing stays locked;
 *   - READ, EXPUNGE, APPEND_WRITE, CLOSE and APPEND_FINISH take the
 *     decorator's handle, hand next its own handle, and put the decorator's
 *     back in done; CLOSE and APPEND_FINISH free it.
 *
 * Across every pass_to_next the decorator keeps req->base.module_data set
 * to something of its own and checks in done that it came back, else it
 * completes PERMFAIL.
 *
 * Built with TEST_BLOCKING it also declares POPKIT_MODULE_BLOCKING, which
 * the loader must refuse: a decorator hands requests on from the loop
 * thread, where a blocking module's operations never run.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "popkit/module.h"

#ifdef TEST_BLOCKING
#define DECORATOR_FLAGS (POPKIT_MODULE_DECORATOR | POPKIT_MODULE_BLOCKING)
#else
#define DECORATOR_FLAGS POPKIT_MODULE_DECORATOR
#endif

#define DECORATOR_MAGIC 0x4f434544u /* "DECO" */
#define AUTH_CALL_MAGIC 0x4c414344u /* "DCAL" */
#define HANDLE_MAGIC 0x444e4844u    /* "DHND" */

/* The suffix each decorator adds to next's identity. */
#define IDENTITY_SUFFIX "+d"
#define ANSWERED_USER "answered"
#define ANSWERED_IDENTITY "by-decorator"
#define LATE_USER "late"
#define LATE_DEFAULT_MS 20
#define LATE_MAX_MS 600000 /* ten minutes: longer is a typo in a test config */

struct decorator {
  uint32_t magic;
  const struct popkit_host *host;
  struct popkit_module_handle *self;
  uv_loop_t *loop;
  uint64_t late_ms;
};

/* An auth request that went to next: the decorator's module_data while
 * next works, and the timer of a "late" answer. Freed when the timer
 * handle is closed, or in done when no timer was needed. */
struct auth_call {
  uint32_t magic;
  struct decorator *decorator;
  struct popkit_auth_request *req; /* NULL once completed */
  uv_timer_t timer;
  enum popkit_result result; /* what a "late" answer completes with */
  char log_text[512];
};

/* The mailbox (OPEN) or delivery (APPEND_BEGIN) handle popkitd holds: it
 * wraps next's handle, which only next understands. */
struct wrapped_handle {
  uint32_t magic;
  void *inner;
};

static struct decorator *decorator_of(void *instance) {
  struct decorator *d = instance;
  if (d == NULL || d->magic != DECORATOR_MAGIC) {
    /* No valid instance means no host to complete with: stop here. */
    fprintf(stderr, "decorator: operation on an invalid instance %p\n", instance);
    abort();
  }
  return d;
}

static struct auth_call *auth_call_of(void *data) {
  struct auth_call *call = data;
  return call != NULL && call->magic == AUTH_CALL_MAGIC ? call : NULL;
}

static struct wrapped_handle *handle_of(void *data) {
  struct wrapped_handle *h = data;
  return h != NULL && h->magic == HANDLE_MAGIC ? h : NULL;
}

static void handle_free(struct wrapped_handle *h) {
  h->magic = 0;
  free(h);
}

/* ---- Auth --------------------------------------------------------------- */

static void auth_call_free(struct auth_call *call) {
  call->magic = 0;
  free(call);
}

static void auth_call_closed(uv_handle_t *handle) {
  auth_call_free(handle->data);
}

static void late_answer(uv_timer_t *timer) {
  struct auth_call *call = timer->data;
  struct popkit_auth_request *req = call->req;
  call->req = NULL;
  req->base.module_data = NULL;
  uv_close((uv_handle_t *)&call->timer, auth_call_closed);
  call->decorator->host->complete(&req->base, call->result,
                                  call->log_text[0] != '\0' ? call->log_text : NULL);
}

/* next's identity (the user name when next set none) with the suffix. */
static enum popkit_result add_suffix(struct decorator *d, struct popkit_auth_request *req,
                                     char *text, size_t text_size) {
  const char *identity = d->host->auth_identity(req);
  if (identity == NULL)
    identity = req->user;
  size_t size = strlen(identity) + sizeof IDENTITY_SUFFIX;
  char *ours = malloc(size);
  if (ours == NULL) {
    snprintf(text, text_size, "decorator: out of memory");
    return POPKIT_TEMPFAIL;
  }
  snprintf(ours, size, "%s%s", identity, IDENTITY_SUFFIX);
  int rc = d->host->auth_set_identity(req, ours);
  free(ours);
  if (rc < 0) {
    snprintf(text, text_size, "decorator: out of memory");
    return POPKIT_TEMPFAIL;
  }
  return POPKIT_OK;
}

static void auth_next_done(void *instance, struct popkit_request *base,
                           enum popkit_result result, const char *log_text) {
  struct decorator *d = decorator_of(instance);
  struct popkit_auth_request *req = (struct popkit_auth_request *)base;
  struct auth_call *call = auth_call_of(base->module_data);
  if (call == NULL || call->req != req) {
    /* The call cannot be freed without its pointer: the test that sees
     * this PERMFAIL fails anyway. */
    d->host->complete(base, POPKIT_PERMFAIL,
                      "decorator: module_data did not come back from pass_to_next");
    return;
  }
  /* log_text lives during this call only, and "late" answers later. */
  snprintf(call->log_text, sizeof call->log_text, "%s", log_text ? log_text : "");
  if (result == POPKIT_OK) {
    result = add_suffix(d, req, call->log_text, sizeof call->log_text);
    if (result == POPKIT_OK && base->kind == POPKIT_REQ_AUTH_GET_CREDENTIAL &&
        d->host->auth_credential(req) == NULL) {
      result = POPKIT_PERMFAIL;
      snprintf(call->log_text, sizeof call->log_text,
               "decorator: next said OK to GET_CREDENTIAL but set no credential");
    }
  }
  call->result = result;
  if (strcmp(req->user, LATE_USER) == 0) {
    uv_timer_init(d->loop, &call->timer);
    call->timer.data = call;
    if (uv_timer_start(&call->timer, late_answer, d->late_ms, 0) == 0)
      return; /* module_data stays the call, for cancel */
    uv_close((uv_handle_t *)&call->timer, auth_call_closed);
    base->module_data = NULL;
    d->host->complete(base, POPKIT_TEMPFAIL, "decorator: cannot start a timer");
    return;
  }
  base->module_data = NULL;
  char text[sizeof call->log_text];
  memcpy(text, call->log_text, sizeof text);
  auth_call_free(call);
  d->host->complete(base, result, text[0] != '\0' ? text : NULL);
}

static void auth_start(void *instance, struct popkit_auth_request *req) {
  struct decorator *d = decorator_of(instance);
  if (strcmp(req->user, ANSWERED_USER) == 0) {
    int rc = d->host->auth_set_identity(req, ANSWERED_IDENTITY);
    d->host->complete(&req->base, rc < 0 ? POPKIT_TEMPFAIL : POPKIT_OK,
                      rc < 0 ? "decorator: out of memory" : NULL);
    return;
  }
  struct auth_call *call = calloc(1, sizeof *call);
  if (call == NULL) {
    d->host->complete(&req->base, POPKIT_TEMPFAIL, "decorator: out of memory");
    return;
  }
  call->magic = AUTH_CALL_MAGIC;
  call->decorator = d;
  call->req = req;
  req->base.module_data = call;
  d->host->pass_to_next(&req->base, auth_next_done);
}

static void decorator_cancel(void *instance, struct popkit_request *req) {
  struct decorator *d = decorator_of(instance);
  struct auth_call *call = auth_call_of(req->module_data);
  /* popkitd cancels the module that holds the request: this one only while
   * a "late" answer waits for its timer; next's step is next's to cancel. */
  if (call == NULL || call->req == NULL || !uv_is_active((uv_handle_t *)&call->timer))
    return;
  call->req = NULL;
  req->module_data = NULL;
  uv_timer_stop(&call->timer);
  uv_close((uv_handle_t *)&call->timer, auth_call_closed);
  d->host->complete(req, POPKIT_TEMPFAIL, "decorator: canceled");
}

static const struct popkit_auth_ops decorator_auth_ops = {
    .struct_size = sizeof(struct popkit_auth_ops),
    .lookup = auth_start,
    .verify_plain = auth_start,
    .get_credential = auth_start,
};

/* ---- Store -------------------------------------------------------------- */

/* The listing next made, as a decorator reads it. Returns true when every
 * index answers and the first one past the end is -ERANGE. */
static bool listing_reads_back(struct decorator *d,
                               const struct popkit_store_request *req, char *text,
                               size_t text_size) {
  size_t count = d->host->store_message_count(req);
  for (size_t i = 0; i < count; i++) {
    const char *uid = NULL;
    uint64_t size = 0;
    int rc = d->host->store_message(req, i, &uid, &size);
    if (rc != 0 || uid == NULL || uid[0] == '\0') {
      snprintf(text, text_size, "decorator: store_message(%zu) of %zu: %d", i, count, rc);
      return false;
    }
  }
  const char *uid = NULL;
  uint64_t size = 0;
  int rc = d->host->store_message(req, count, &uid, &size);
  if (rc != -ERANGE) {
    snprintf(text, text_size, "decorator: store_message(%zu) of %zu gave %d, not -ERANGE",
             count, count, rc);
    return false;
  }
  return true;
}

/* A mailbox next opened and the decorator will not use. */
struct refusal {
  struct popkit_request *original; /* the OPEN, answered once next closed */
  char text[512];
};

static void refusal_closed(void *instance, struct popkit_request *own,
                           enum popkit_result result, const char *log_text) {
  struct decorator *d = decorator_of(instance);
  struct refusal *f = own->module_data;
  own->module_data = NULL;
  d->host->complete(own, result, log_text); /* frees the decorator's request */
  d->host->complete(f->original, POPKIT_PERMFAIL, f->text);
  free(f);
}

static void refuse_open(struct decorator *d, struct popkit_store_request *req,
                        const char *text) {
  struct refusal *f = calloc(1, sizeof *f);
  struct popkit_request *own =
      f != NULL ? d->host->next_request(&req->base, POPKIT_REQ_STORE_CLOSE) : NULL;
  if (own == NULL) {
    free(f);
    d->host->complete(&req->base, POPKIT_PERMFAIL, text);
    return;
  }
  f->original = &req->base;
  snprintf(f->text, sizeof f->text, "%s", text);
  ((struct popkit_store_request *)own)->mailbox = req->mailbox;
  req->mailbox = NULL;
  own->module_data = f;
  d->host->pass_to_next(own, refusal_closed);
}

static void opened_by_next(void *instance, struct popkit_request *base,
                           enum popkit_result result, const char *log_text) {
  struct decorator *d = decorator_of(instance);
  struct popkit_store_request *req = (struct popkit_store_request *)base;
  struct wrapped_handle *h = handle_of(base->module_data);
  if (h == NULL) {
    d->host->complete(base, POPKIT_PERMFAIL,
                      "decorator: module_data did not come back from pass_to_next");
    return;
  }
  base->module_data = NULL;
  char text[512];
  if (result == POPKIT_OK && base->kind == POPKIT_REQ_STORE_OPEN &&
      (!listing_reads_back(d, req, text, sizeof text) ||
       strcmp(req->identity, "refused") == 0)) {
    if (strcmp(req->identity, "refused") == 0)
      snprintf(text, sizeof text, "decorator: refused");
    handle_free(h);
    refuse_open(d, req, text);
    return;
  }
  if (result != POPKIT_OK) {
    handle_free(h);
    d->host->complete(base, result, log_text);
    return;
  }
  h->inner = req->mailbox;
  req->mailbox = h;
  d->host->complete(base, POPKIT_OK, log_text);
}

/* OPEN and APPEND_BEGIN. The handle is made before next opens anything, so
 * that running out of memory never leaves next's mailbox open and locked
 * with nobody to close it. */
static void store_open(void *instance, struct popkit_store_request *req) {
  struct decorator *d = decorator_of(instance);
  struct wrapped_handle *h = calloc(1, sizeof *h);
  if (h == NULL) {
    d->host->complete(&req->base, POPKIT_TEMPFAIL, "decorator: out of memory");
    return;
  }
  h->magic = HANDLE_MAGIC;
  req->base.module_data = h;
  d->host->pass_to_next(&req->base, opened_by_next);
}

static void handle_step_done(void *instance, struct popkit_request *base,
                             enum popkit_result result, const char *log_text) {
  struct decorator *d = decorator_of(instance);
  struct popkit_store_request *req = (struct popkit_store_request *)base;
  struct wrapped_handle *h = handle_of(base->module_data);
  if (h == NULL) {
    d->host->complete(base, POPKIT_PERMFAIL,
                      "decorator: module_data did not come back from pass_to_next");
    return;
  }
  base->module_data = NULL;
  if (base->kind == POPKIT_REQ_STORE_CLOSE ||
      base->kind == POPKIT_REQ_STORE_APPEND_FINISH) {
    /* The last call on the handle, whatever next answered. */
    req->mailbox = NULL;
    handle_free(h);
  } else {
    req->mailbox = h;
  }
  d->host->complete(base, result, log_text);
}

/* READ, EXPUNGE, CLOSE, APPEND_WRITE and APPEND_FINISH: next gets its own
 * handle back for the call. */
static void store_with_handle(void *instance, struct popkit_store_request *req) {
  struct decorator *d = decorator_of(instance);
  struct wrapped_handle *h = handle_of(req->mailbox);
  if (h == NULL) {
    d->host->complete(&req->base, POPKIT_PERMFAIL,
                      "decorator: the mailbox handle is not the decorator's");
    return;
  }
  req->base.module_data = h;
  req->mailbox = h->inner;
  d->host->pass_to_next(&req->base, handle_step_done);
}

static const struct popkit_store_ops decorator_store_ops = {
    .struct_size = sizeof(struct popkit_store_ops),
    .open = store_open,
    .read = store_with_handle,
    .expunge = store_with_handle,
    .close = store_with_handle,
    .append_begin = store_open,
    .append_write = store_with_handle,
    .append_finish = store_with_handle,
};

/* ---- Instances ---------------------------------------------------------- */

static int decorator_create(const struct popkit_module_args *args, void **instance_r,
                            char *error, size_t error_size) {
  const struct popkit_host *host = args->host;
  if (args->struct_size < sizeof *args || !POPKIT_HOST_HAS(host, next_request)) {
    snprintf(error, error_size,
             "popkitd is older than this module: it needs ABI 1.2 (host->pass_to_next)");
    return -EINVAL;
  }
  int64_t late_ms = host->config_integer(args->config, "late_ms", LATE_DEFAULT_MS);
  if (late_ms < 0 || late_ms > LATE_MAX_MS) {
    snprintf(error, error_size, "late_ms: must be 0 to %d milliseconds, not %" PRId64,
             LATE_MAX_MS, late_ms);
    return -EINVAL;
  }
  struct decorator *d = calloc(1, sizeof *d);
  if (d == NULL) {
    snprintf(error, error_size, "out of memory");
    return -ENOMEM;
  }
  d->magic = DECORATOR_MAGIC;
  d->host = host;
  d->self = args->self;
  d->loop = args->loop;
  d->late_ms = (uint64_t)late_ms;
  *instance_r = d;
  return 0;
}

static void decorator_destroy(void *instance) {
  struct decorator *d = decorator_of(instance);
  d->magic = 0;
  free(d);
}

static const struct popkit_config_key decorator_config_keys[] = {
    {"late_ms", POPKIT_CONFIG_INTEGER, 0},
    {NULL, 0, 0},
};

POPKIT_MODULE_EXPORT const struct popkit_module_descriptor popkit_module = {
    POPKIT_MODULE_HEADER("decorator"), .roles = POPKIT_ROLE_AUTH | POPKIT_ROLE_STORE,
    .flags = DECORATOR_FLAGS,          .config_keys = decorator_config_keys,
    .create = decorator_create,        .destroy = decorator_destroy,
    .auth = &decorator_auth_ops,       .store = &decorator_store_ops,
    .cancel = decorator_cancel,
};
