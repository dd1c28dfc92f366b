/*
 * slow_auth: a real asynchronous auth module for popkitd's tests. It shows
 * what the core must handle when a backend takes its time: requests that
 * finish later on the loop, requests that finish inside the call, and
 * requests canceled because the client went away.
 *
 * Users whose name starts with "slow" exist; every one of them has the
 * password of the config key `password` and the mailbox identity of its
 * own name. Other users are NOT_FOUND at once, so slow_auth can sit in
 * front of a real auth module in a chain. Each answer about a slow user
 * comes after `delay_ms` milliseconds on a libuv timer (never by blocking);
 * a delay of 0 completes inside the call.
 *
 * Users whose name starts with "slowdown" stand for a backend that is
 * unreachable: they get POPKIT_TEMPFAIL, which must reach the client as
 * -ERR [SYS/TEMP] and stop the chain.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "popkit/module.h"

/* An hour: anything longer is a typo, and would outlive any client. */
#define SLOW_AUTH_MAX_DELAY_MS 3600000

struct slow_auth {
  const struct popkit_host *host;
  struct popkit_module_handle *self;
  uv_loop_t *loop;
  char *password;
  uint64_t delay_ms;
};

/* One request waiting for its timer; freed when the timer handle closes. */
struct slow_pending {
  uv_timer_t timer;
  struct slow_auth *module;
  struct popkit_auth_request *req; /* NULL once the request is completed */
};

static int is_slow_user(const char *user) {
  return strncmp(user, "slow", 4) == 0;
}

/* Gives the answer for a slow user and completes the request. */
static void slow_answer(struct slow_auth *module, struct popkit_auth_request *req) {
  const struct popkit_host *host = module->host;
  enum popkit_result result = POPKIT_OK;
  const char *log_text = NULL;
  if (strncmp(req->user, "slowdown", 8) == 0) {
    host->complete(&req->base, POPKIT_TEMPFAIL, "slow_auth: backend unreachable");
    return;
  }
  if (req->base.kind == POPKIT_REQ_AUTH_VERIFY_PLAIN &&
      (req->password == NULL || strcmp(req->password, module->password) != 0)) {
    result = POPKIT_FAIL;
    log_text = "slow_auth: wrong password";
  }
  if (result == POPKIT_OK && host->auth_set_identity(req, req->user) < 0) {
    result = POPKIT_TEMPFAIL;
    log_text = "slow_auth: out of memory";
  }
  if (result == POPKIT_OK && req->base.kind == POPKIT_REQ_AUTH_GET_CREDENTIAL) {
    size_t size = strlen(module->password) + sizeof "{PLAIN}";
    char *credential = malloc(size);
    if (credential != NULL)
      snprintf(credential, size, "{PLAIN}%s", module->password);
    if (credential == NULL || host->auth_set_credential(req, credential) < 0) {
      result = POPKIT_TEMPFAIL;
      log_text = "slow_auth: out of memory";
    }
    free(credential);
  }
  host->complete(&req->base, result, log_text);
}

static void slow_pending_free(uv_handle_t *handle) {
  free(handle->data);
}

static void slow_timer_fired(uv_timer_t *timer) {
  struct slow_pending *pending = timer->data;
  struct popkit_auth_request *req = pending->req;
  pending->req = NULL;
  req->base.module_data = NULL;
  uv_close((uv_handle_t *)&pending->timer, slow_pending_free);
  slow_answer(pending->module, req);
}

static void slow_start(void *instance, struct popkit_auth_request *req) {
  struct slow_auth *module = instance;
  req->base.module_data = NULL;
  if (!is_slow_user(req->user)) {
    module->host->complete(&req->base, POPKIT_NOT_FOUND, "slow_auth: not a slow user");
    return;
  }
  if (module->delay_ms == 0) {
    slow_answer(module, req);
    return;
  }
  struct slow_pending *pending = calloc(1, sizeof *pending);
  if (pending == NULL) {
    module->host->complete(&req->base, POPKIT_TEMPFAIL, "slow_auth: out of memory");
    return;
  }
  pending->module = module;
  pending->req = req;
  uv_timer_init(module->loop, &pending->timer);
  pending->timer.data = pending;
  int rc = uv_timer_start(&pending->timer, slow_timer_fired, module->delay_ms, 0);
  if (rc < 0) {
    uv_close((uv_handle_t *)&pending->timer, slow_pending_free);
    module->host->complete(&req->base, POPKIT_TEMPFAIL,
                           "slow_auth: cannot start a timer");
    return;
  }
  req->base.module_data = pending;
}

static void slow_lookup(void *instance, struct popkit_auth_request *req) {
  slow_start(instance, req);
}

static void slow_verify_plain(void *instance, struct popkit_auth_request *req) {
  slow_start(instance, req);
}

static void slow_get_credential(void *instance, struct popkit_auth_request *req) {
  slow_start(instance, req);
}

static void slow_cancel(void *instance, struct popkit_request *req) {
  struct slow_auth *module = instance;
  struct slow_pending *pending = req->module_data;
  if (pending == NULL || pending->req == NULL)
    return; /* already answered: nothing to cancel */
  req->module_data = NULL;
  pending->req = NULL;
  uv_timer_stop(&pending->timer);
  uv_close((uv_handle_t *)&pending->timer, slow_pending_free);
  module->host->log(module->self, req, POPKIT_LOG_INFO, "slow_auth: request canceled");
  module->host->complete(req, POPKIT_TEMPFAIL, "canceled");
}

static int slow_create(const struct popkit_module_args *args, void **instance_r,
                       char *error, size_t error_size) {
  const struct popkit_host *host = args->host;
  const char *password = host->config_string(args->config, "password");
  if (password == NULL) {
    snprintf(error, error_size, "password: slow_auth needs a password");
    return -EINVAL;
  }
  int64_t delay_ms = host->config_integer(args->config, "delay_ms", 0);
  if (delay_ms < 0 || delay_ms > SLOW_AUTH_MAX_DELAY_MS) {
    snprintf(error, error_size, "delay_ms: must be 0 to %d milliseconds, not %" PRId64,
             SLOW_AUTH_MAX_DELAY_MS, delay_ms);
    return -EINVAL;
  }
  struct slow_auth *module = calloc(1, sizeof *module);
  if (module == NULL || (module->password = strdup(password)) == NULL) {
    free(module);
    snprintf(error, error_size, "out of memory");
    return -ENOMEM;
  }
  module->host = host;
  module->self = args->self;
  module->loop = args->loop;
  module->delay_ms = (uint64_t)delay_ms;
  *instance_r = module;
  return 0;
}

static void slow_destroy(void *instance) {
  struct slow_auth *module = instance;
  free(module->password);
  free(module);
}

static const struct popkit_auth_ops slow_auth_ops = {
    .struct_size = sizeof(struct popkit_auth_ops),
    .lookup = slow_lookup,
    .verify_plain = slow_verify_plain,
    .get_credential = slow_get_credential,
};

static const struct popkit_config_key slow_config_keys[] = {
    {"password", POPKIT_CONFIG_STRING, 1},
    {"delay_ms", POPKIT_CONFIG_INTEGER, 0},
    {NULL, 0, 0},
};

POPKIT_MODULE_EXPORT const struct popkit_module_descriptor popkit_module = {
    POPKIT_MODULE_HEADER("slow_auth"),
    .roles = POPKIT_ROLE_AUTH,
    .flags = 0,
    .config_keys = slow_config_keys,
    .create = slow_create,
    .destroy = slow_destroy,
    .auth = &slow_auth_ops,
    .store = NULL,
    .cancel = slow_cancel,
};
