#include "rc_store.h"

#include "rc_pass.h"

static void pass_through(void *instance, struct popkit_store_request *req) {
  rc_pass(instance, &req->base);
}

const struct popkit_store_ops rc_store_ops = {
    .struct_size = sizeof(struct popkit_store_ops),
    .open = pass_through,
    .read = pass_through,
    .expunge = pass_through,
    .close = pass_through,
    .append_begin = pass_through,
    .append_write = pass_through,
    .append_finish = pass_through,
};
