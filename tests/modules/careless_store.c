/*
 * careless_store: a blocking store with a read_nowait (ABI 1.3) that breaks
 * the rule: it says it served a READ (returns 1) without completing it.
 * tests/unit/test_chain.c checks that the core ends such a READ itself, in
 * TEMPFAIL with a reason, instead of waiting for a completion that never
 * comes. Every other operation completes at once: OPEN with an empty
 * mailbox, READ (on the pool) with the end of the message, CLOSE with OK.
 */
#include <stddef.h>

#include "popkit/module.h"

struct careless_store {
  const struct popkit_host *host;
};

static struct careless_store the_instance;
static int the_mailbox; /* any non-NULL handle */

static int careless_create(const struct popkit_module_args *args, void **instance_r,
                           char *error, size_t error_size) {
  (void)error;
  (void)error_size;
  the_instance.host = args->host;
  *instance_r = &the_instance;
  return 0;
}

static void careless_destroy(void *instance) {
  (void)instance;
}

static void complete_ok(void *instance, struct popkit_store_request *req) {
  struct careless_store *self = instance;
  if (req->base.kind == POPKIT_REQ_STORE_OPEN)
    req->mailbox = &the_mailbox;
  req->length = 0;
  self->host->complete(&req->base, POPKIT_OK, NULL);
}

static int says_served_but_does_nothing(void *instance,
                                        struct popkit_store_request *req) {
  (void)instance;
  (void)req;
  return 1;
}

static const struct popkit_store_ops careless_store_ops = {
    .struct_size = sizeof(struct popkit_store_ops),
    .open = complete_ok,
    .read = complete_ok,
    .expunge = complete_ok,
    .close = complete_ok,
    .append_begin = complete_ok,
    .append_write = complete_ok,
    .append_finish = complete_ok,
    .read_nowait = says_served_but_does_nothing,
};

static const struct popkit_config_key careless_config_keys[] = {{NULL, 0, 0}};

POPKIT_MODULE_EXPORT const struct popkit_module_descriptor popkit_module = {
    POPKIT_MODULE_HEADER("careless_store"),
    .roles = POPKIT_ROLE_STORE,
    .flags = POPKIT_MODULE_BLOCKING,
    .config_keys = careless_config_keys,
    .create = careless_create,
    .destroy = careless_destroy,
    .auth = NULL,
    .store = &careless_store_ops,
    .cancel = NULL,
};
