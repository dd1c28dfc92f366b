#include "rc_mailbox.h"

#include <stdlib.h>

#define RC_MAILBOX_MAGIC 0x584d4352u /* "RCMX" */

struct rc_mailbox *rc_mailbox_of(struct popkit_store_request *req) {
  struct rc_mailbox *mb = req->mailbox;
  if (mb == NULL || mb->magic != RC_MAILBOX_MAGIC)
    abort(); /* popkitd handed back something that is not ours */
  return mb;
}

void rc_mailbox_drop_body(struct rc_mailbox *mb) {
  free(mb->body);
  mb->body = NULL;
  mb->body_state = RC_BODY_NONE;
  mb->body_length = 0;
}

void rc_mailbox_free(struct rc_mailbox *mb) {
  if (mb == NULL)
    return;
  rc_mailbox_drop_body(mb);
  for (size_t i = 0; i < mb->count; i++)
    free(mb->uids[i]);
  free(mb->uids);
  free(mb->sizes);
  free(mb->to_next);
  free(mb->identity);
  mb->magic = 0;
  free(mb);
}

struct store_call *rc_call_new(struct rc_module *m, struct popkit_store_request *req,
                               struct rc_mailbox *mb) {
  struct store_call *call = calloc(1, sizeof *call);
  if (call == NULL) {
    m->host->complete(&req->base, POPKIT_TEMPFAIL, "out of memory");
    return NULL;
  }
  call->m = m;
  call->req = req;
  call->mb = mb;
  return call;
}

void rc_call_finish(struct store_call *call, enum popkit_result result,
                    const char *text) {
  struct popkit_store_request *req = call->req;
  const struct popkit_host *host = call->m->host;
  free(call);
  host->complete(&req->base, result, text);
}

void rc_call_pass(struct store_call *call, void *inner, popkit_next_done done) {
  call->req->mailbox = inner;
  call->req->base.module_data = call;
  call->m->host->pass_to_next(&call->req->base, done);
}

struct store_call *rc_call_of(struct popkit_request *base) {
  struct store_call *call = base->module_data;
  base->module_data = NULL;
  return call;
}

void rc_send_and_forget(struct rc_module *m, int argc, const char **argv,
                        const size_t *lengths) {
  if (rc_redis_command(m->redis, NULL, NULL, argc, argv, lengths) < 0)
    rc_stats_count(&m->stats, m->loop, &m->stats.fall_throughs);
}

struct rc_mailbox *rc_mailbox_new(void) {
  struct rc_mailbox *mb = calloc(1, sizeof *mb);
  if (mb != NULL)
    mb->magic = RC_MAILBOX_MAGIC;
  return mb;
}
