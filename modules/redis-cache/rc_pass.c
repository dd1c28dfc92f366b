#include "rc_pass.h"

#include "rc_module.h"

static void on_next_answered(void *instance, struct popkit_request *req,
                             enum popkit_result result, const char *log_text) {
  struct rc_module *m = instance;
  m->host->complete(req, result, log_text);
}

void rc_pass(void *instance, struct popkit_request *req) {
  struct rc_module *m = instance;
  m->host->pass_to_next(req, on_next_answered);
}
