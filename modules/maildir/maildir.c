/*
 * The maildir store module: the descriptor, create/destroy, and the store
 * operations, which hand the work to the other files of this folder and
 * complete each request exactly once.
 *
 * The module is POPKIT_MODULE_BLOCKING: its operations run on libuv's
 * thread pool and use plain blocking POSIX calls.
 */
#include "maildir.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "maildir_deliver.h"
#include "maildir_expunge.h"
#include "maildir_mailbox.h"
#include "maildir_read.h"

/* Log texts of completions; long enough for a path and an error. */
#define LOG_TEXT_SIZE 1024

void maildir_log(const struct maildir_instance *instance,
                 const struct popkit_request *req, enum popkit_log_level level,
                 const char *fmt, ...) {
  char line[LOG_TEXT_SIZE];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  instance->host->log(instance->self, req, level, "%s", line);
}

/* popkitd hands back the pointer create() gave it; anything else is memory
 * corruption, and without a valid instance there is no host to complete
 * the request with, so the only safe answer is to stop. */
static struct maildir_instance *instance_of(void *instance) {
  struct maildir_instance *in = instance;
  if (in == NULL || in->magic != MAILDIR_INSTANCE_MAGIC) {
    fprintf(stderr, "maildir: operation on an invalid instance %p\n", instance);
    abort();
  }
  return in;
}

static struct maildir_mailbox *mailbox_of(const struct popkit_store_request *req) {
  struct maildir_mailbox *mailbox = req->mailbox;
  return mailbox != NULL && mailbox->magic == MAILDIR_MAILBOX_MAGIC ? mailbox : NULL;
}

static void maildir_open(void *instance, struct popkit_store_request *req) {
  struct maildir_instance *in = instance_of(instance);
  char log[LOG_TEXT_SIZE] = "";
  struct maildir_mailbox *mailbox;
  enum popkit_result result =
      maildir_mailbox_open(in, &req->base, req->identity, &mailbox, log, sizeof log);
  for (size_t i = 0; result == POPKIT_OK && i < mailbox->count; i++) {
    const struct maildir_message *m = &mailbox->messages[i];
    int rc = in->host->store_add_message(req, m->uid, m->size);
    if (rc != 0) {
      snprintf(log, sizeof log, "cannot list %s: %s", mailbox->path, strerror(-rc));
      result = rc == -ENOMEM ? POPKIT_TEMPFAIL : POPKIT_PERMFAIL;
      maildir_mailbox_close(mailbox);
    }
  }
  if (result == POPKIT_OK)
    req->mailbox = mailbox;
  in->host->complete(&req->base, result, result == POPKIT_OK ? NULL : log);
}

static void maildir_read_op(void *instance, struct popkit_store_request *req) {
  struct maildir_instance *in = instance_of(instance);
  struct maildir_mailbox *mailbox = mailbox_of(req);
  char log[LOG_TEXT_SIZE] = "";
  enum popkit_result result;
  if (mailbox == NULL) {
    snprintf(log, sizeof log, "read without an open mailbox");
    result = POPKIT_PERMFAIL;
  } else {
    result = maildir_read(mailbox, req, log, sizeof log);
  }
  in->host->complete(&req->base, result, result == POPKIT_OK ? NULL : log);
}

static int maildir_read_nowait_op(void *instance, struct popkit_store_request *req) {
  struct maildir_instance *in = instance_of(instance);
  struct maildir_mailbox *mailbox = mailbox_of(req);
  if (mailbox == NULL || !maildir_read_cached(mailbox, req))
    return 0;
  in->host->complete(&req->base, POPKIT_OK, NULL);
  return 1;
}

static void maildir_expunge_op(void *instance, struct popkit_store_request *req) {
  struct maildir_instance *in = instance_of(instance);
  struct maildir_mailbox *mailbox = mailbox_of(req);
  char log[LOG_TEXT_SIZE] = "";
  enum popkit_result result;
  if (mailbox == NULL) {
    snprintf(log, sizeof log, "expunge without an open mailbox; nothing deleted");
    result = POPKIT_PERMFAIL;
  } else {
    result = maildir_expunge(mailbox, &req->base, req->indexes, req->index_count, log,
                             sizeof log);
  }
  in->host->complete(&req->base, result, result == POPKIT_OK ? NULL : log);
}

static void maildir_close_op(void *instance, struct popkit_store_request *req) {
  struct maildir_instance *in = instance_of(instance);
  maildir_mailbox_close(mailbox_of(req));
  req->mailbox = NULL;
  in->host->complete(&req->base, POPKIT_OK, NULL);
}

static void maildir_append_begin(void *instance, struct popkit_store_request *req) {
  struct maildir_instance *in = instance_of(instance);
  char log[LOG_TEXT_SIZE] = "";
  struct maildir_delivery *delivery;
  enum popkit_result result =
      maildir_deliver_begin(in, req->identity, &delivery, log, sizeof log);
  if (result == POPKIT_OK)
    req->mailbox = delivery;
  in->host->complete(&req->base, result, result == POPKIT_OK ? NULL : log);
}

static void maildir_append_write(void *instance, struct popkit_store_request *req) {
  struct maildir_instance *in = instance_of(instance);
  struct maildir_delivery *delivery = req->mailbox;
  char log[LOG_TEXT_SIZE] = "";
  enum popkit_result result;
  if (!maildir_delivery_is_valid(delivery)) {
    snprintf(log, sizeof log, "append without a delivery in progress");
    result = POPKIT_PERMFAIL;
  } else {
    result = maildir_deliver_write(delivery, req->data, req->data_size, log, sizeof log);
  }
  in->host->complete(&req->base, result, result == POPKIT_OK ? NULL : log);
}

static void maildir_append_finish(void *instance, struct popkit_store_request *req) {
  struct maildir_instance *in = instance_of(instance);
  struct maildir_delivery *delivery = req->mailbox;
  char log[LOG_TEXT_SIZE] = "";
  enum popkit_result result;
  if (!maildir_delivery_is_valid(delivery)) {
    snprintf(log, sizeof log, "append finish without a delivery in progress");
    result = POPKIT_PERMFAIL;
  } else {
    result = maildir_deliver_finish(delivery, req->commit, log, sizeof log);
    req->mailbox = NULL;
  }
  in->host->complete(&req->base, result, result == POPKIT_OK ? NULL : log);
}

static int maildir_create(const struct popkit_module_args *args, void **instance_r,
                          char *error, size_t error_size) {
  *instance_r = NULL;
  struct maildir_instance *in = calloc(1, sizeof *in);
  if (in == NULL) {
    snprintf(error, error_size, "out of memory");
    return -ENOMEM;
  }
  in->magic = MAILDIR_INSTANCE_MAGIC;
  in->host = args->host;
  in->self = args->self;
  const char *path = args->host->config_path(args->config, "path");
  int rc = maildir_template_parse(path, &in->template, error, error_size);
  if (rc != 0) {
    free(in);
    return rc;
  }
  maildir_deliver_init_hostname(in);
  *instance_r = in;
  return 0;
}

static void maildir_destroy(void *instance) {
  if (instance == NULL)
    return;
  struct maildir_instance *in = instance_of(instance);
  maildir_template_free(&in->template);
  in->magic = 0;
  free(in);
}

static const struct popkit_config_key maildir_config_keys[] = {
    {.name = "path", .type = POPKIT_CONFIG_PATH, .required = 1},
    {.name = NULL},
};

static const struct popkit_store_ops maildir_store_ops = {
    .struct_size = sizeof(struct popkit_store_ops),
    .open = maildir_open,
    .read = maildir_read_op,
    .expunge = maildir_expunge_op,
    .close = maildir_close_op,
    .append_begin = maildir_append_begin,
    .append_write = maildir_append_write,
    .append_finish = maildir_append_finish,
    .read_nowait = maildir_read_nowait_op,
};

POPKIT_MODULE_EXPORT const struct popkit_module_descriptor popkit_module = {
    POPKIT_MODULE_HEADER("maildir"),
    .roles = POPKIT_ROLE_STORE,
    .flags = POPKIT_MODULE_BLOCKING,
    .config_keys = maildir_config_keys,
    .create = maildir_create,
    .destroy = maildir_destroy,
    .auth = NULL,
    .store = &maildir_store_ops,
    .cancel = NULL,
};
