#include "module_harness.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "password.h"

struct harness_config {
  json_t *json;
  char *base_dir;
  char *paths[64]; /* resolved paths handed out by config_path */
  size_t path_count;
};

static struct harness *current; /* one operation at a time */
/* The host contract lets a module log from any thread (a blocking module's
 * operations run on several pool threads), so appending to h->logs and
 * switching `current` are serialized. */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static void set_current(struct harness *h) {
  pthread_mutex_lock(&log_lock);
  current = h;
  pthread_mutex_unlock(&log_lock);
}

static void host_log(struct popkit_module_handle *self, const struct popkit_request *req,
                     enum popkit_log_level level, const char *fmt, ...) {
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  pthread_mutex_lock(&log_lock);
  if (current != NULL) {
    size_t used = strlen(current->logs);
    snprintf(current->logs + used, sizeof current->logs - used, "%s\n", line);
  }
  pthread_mutex_unlock(&log_lock);
  if (getenv("HARNESS_VERBOSE"))
    fprintf(stderr, "module log [%d]: %s\n", (int)level, line);
}

static void host_complete(struct popkit_request *req, enum popkit_result result,
                          const char *log_text) {
  struct harness_call *call = (struct harness_call *)req;
  if (req->magic != POPKIT_REQUEST_MAGIC) {
    fprintf(stderr, "harness: completion of a request with a bad magic\n");
    abort();
  }
  if (call->done) {
    fprintf(stderr, "harness: request completed twice\n");
    abort();
  }
  call->out->result = result;
  snprintf(call->out->log_text, sizeof call->out->log_text, "%s",
           log_text ? log_text : "");
  call->done = 1;
}

static int host_set_identity(struct popkit_auth_request *req, const char *identity) {
  struct harness_call *call = (struct harness_call *)req;
  snprintf(call->out->identity, sizeof call->out->identity, "%s", identity);
  return 0;
}

static int host_set_credential(struct popkit_auth_request *req, const char *cred) {
  struct harness_call *call = (struct harness_call *)req;
  snprintf(call->out->credential, sizeof call->out->credential, "%s", cred);
  call->out->credential_set = 1;
  return 0;
}

static int host_add_message(struct popkit_store_request *req, const char *uid,
                            uint64_t size) {
  struct harness_call *call = (struct harness_call *)req;
  size_t len = strlen(uid);
  if (len < 1 || len > 70) {
    call->out->bad_uid_seen = 1;
    return -EINVAL;
  }
  for (size_t i = 0; i < len; i++) {
    if ((unsigned char)uid[i] < 0x21 || (unsigned char)uid[i] > 0x7e) {
      call->out->bad_uid_seen = 1;
      return -EINVAL;
    }
  }
  if (call->out->message_count >= HARNESS_MAX_MESSAGES)
    return -ENOMEM;
  memcpy(call->out->uids[call->out->message_count], uid, len + 1);
  call->out->sizes[call->out->message_count] = size;
  call->out->message_count++;
  return 0;
}

static const char *host_config_string(const struct popkit_config_object *cfg,
                                      const char *key) {
  const struct harness_config *c = (const struct harness_config *)cfg;
  json_t *v = json_object_get(c->json, key);
  return json_is_string(v) ? json_string_value(v) : NULL;
}

static const char *host_config_path(const struct popkit_config_object *cfg,
                                    const char *key) {
  struct harness_config *c = (struct harness_config *)cfg;
  const char *v = host_config_string(cfg, key);
  if (v == NULL || v[0] == '/' || c->path_count >= 64)
    return v;
  size_t n = strlen(c->base_dir) + strlen(v) + 2;
  char *p = malloc(n);
  if (p == NULL)
    return NULL;
  snprintf(p, n, "%s/%s", c->base_dir, v);
  c->paths[c->path_count++] = p;
  return p;
}

static int64_t host_config_integer(const struct popkit_config_object *cfg,
                                   const char *key, int64_t fallback) {
  const struct harness_config *c = (const struct harness_config *)cfg;
  json_t *v = json_object_get(c->json, key);
  return json_is_integer(v) ? (int64_t)json_integer_value(v) : fallback;
}

static int host_config_boolean(const struct popkit_config_object *cfg, const char *key,
                               int fallback) {
  const struct harness_config *c = (const struct harness_config *)cfg;
  json_t *v = json_object_get(c->json, key);
  return json_is_boolean(v) ? json_is_true(v) : fallback;
}

static const struct popkit_host harness_host = {
    .struct_size = sizeof(struct popkit_host),
    .abi_major = POPKIT_ABI_MAJOR,
    .abi_minor = POPKIT_ABI_MINOR,
    .log = host_log,
    .complete = host_complete,
    .auth_set_identity = host_set_identity,
    .auth_set_credential = host_set_credential,
    .store_add_message = host_add_message,
    .config_string = host_config_string,
    .config_path = host_config_path,
    .config_integer = host_config_integer,
    .config_boolean = host_config_boolean,
    /* The core's own: a module test checks the module, not a stand-in for
     * the schemes. */
    .password_verify = password_verify,
};

int harness_open(struct harness *h, const char *so_path, const char *config_json,
                 const char *base_dir, char *error, size_t error_size) {
  return harness_open_host_size(h, so_path, config_json, base_dir,
                                (uint32_t)sizeof(struct popkit_host), error, error_size);
}

int harness_open_host_size(struct harness *h, const char *so_path,
                           const char *config_json, const char *base_dir,
                           uint32_t host_struct_size, char *error, size_t error_size) {
  memset(h, 0, sizeof *h);
  h->host = harness_host;
  h->host.struct_size = host_struct_size;
  set_current(h);
  h->dl = dlopen(so_path, RTLD_NOW | RTLD_LOCAL);
  if (h->dl == NULL) {
    snprintf(error, error_size, "dlopen: %s", dlerror());
    return -1;
  }
  h->descriptor = dlsym(h->dl, POPKIT_MODULE_SYMBOL);
  if (h->descriptor == NULL) {
    snprintf(error, error_size, "no descriptor in %s", so_path);
    return -1;
  }
  json_error_t jerr;
  struct harness_config *cfg = calloc(1, sizeof *cfg);
  cfg->json = json_loads(config_json, 0, &jerr);
  if (cfg->json == NULL) {
    snprintf(error, error_size, "test config: %s", jerr.text);
    free(cfg);
    return -1;
  }
  cfg->base_dir = strdup(base_dir ? base_dir : "/");
  h->config = cfg;
  uv_loop_init(&h->loop);
  struct popkit_module_args args = {
      .struct_size = sizeof args,
      .worker_id = 0,
      .host = &h->host,
      .self = NULL,
      .config = (const struct popkit_config_object *)cfg,
      .loop = &h->loop,
  };
  int rc = h->descriptor->create(&args, &h->instance, error, error_size);
  return rc;
}

int harness_close(struct harness *h) {
  struct harness_config *cfg = h->config;
  if (h->instance != NULL)
    h->descriptor->destroy(h->instance);
  h->instance = NULL;
  uv_run(&h->loop, UV_RUN_DEFAULT);
  int loop_rc = uv_loop_close(&h->loop);
  if (cfg != NULL) {
    json_decref(cfg->json);
    for (size_t i = 0; i < cfg->path_count; i++)
      free(cfg->paths[i]);
    free(cfg->base_dir);
    free(cfg);
  }
  if (h->dl != NULL)
    dlclose(h->dl);
  h->dl = NULL;
  set_current(NULL);
  return loop_rc;
}

static void wait_done(struct harness *h, struct harness_call *call) {
  while (!call->done)
    uv_run(&h->loop, UV_RUN_ONCE);
}

void harness_auth_start(struct harness *h, struct harness_call *call,
                        enum popkit_request_kind kind, const char *user,
                        const char *password, struct harness_result *out) {
  memset(call, 0, sizeof *call);
  memset(out, 0, sizeof *out);
  set_current(h);
  call->out = out;
  call->req.auth.base.magic = POPKIT_REQUEST_MAGIC;
  call->req.auth.base.kind = kind;
  call->req.auth.user = user;
  call->req.auth.password = password;
  call->req.auth.client_address = "127.0.0.1";
  const struct popkit_auth_ops *ops = h->descriptor->auth;
  switch (kind) {
  case POPKIT_REQ_AUTH_LOOKUP:
    ops->lookup(h->instance, &call->req.auth);
    break;
  case POPKIT_REQ_AUTH_VERIFY_PLAIN:
    ops->verify_plain(h->instance, &call->req.auth);
    break;
  case POPKIT_REQ_AUTH_GET_CREDENTIAL:
    ops->get_credential(h->instance, &call->req.auth);
    break;
  default:
    abort();
  }
}

void harness_cancel(struct harness *h, struct harness_call *call) {
  h->descriptor->cancel(h->instance, &call->req.base);
}

enum popkit_result harness_auth(struct harness *h, enum popkit_request_kind kind,
                                const char *user, const char *password,
                                struct harness_result *out) {
  struct harness_call call;
  harness_auth_start(h, &call, kind, user, password, out);
  wait_done(h, &call);
  return out->result;
}

/* A store call of kind on a copy of req, its answer going to out. */
static void store_call_init(struct harness *h, struct harness_call *call,
                            enum popkit_request_kind kind,
                            const struct popkit_store_request *req,
                            struct harness_result *out) {
  memset(call, 0, sizeof *call);
  memset(out, 0, sizeof *out);
  set_current(h);
  call->out = out;
  call->req.store = *req;
  call->req.store.base.magic = POPKIT_REQUEST_MAGIC;
  call->req.store.base.kind = kind;
}

enum popkit_result harness_store(struct harness *h, enum popkit_request_kind kind,
                                 struct popkit_store_request *req,
                                 struct harness_result *out) {
  struct harness_call call;
  store_call_init(h, &call, kind, req, out);
  const struct popkit_store_ops *ops = h->descriptor->store;
  switch (kind) {
  case POPKIT_REQ_STORE_OPEN:
    ops->open(h->instance, &call.req.store);
    break;
  case POPKIT_REQ_STORE_READ:
    ops->read(h->instance, &call.req.store);
    break;
  case POPKIT_REQ_STORE_EXPUNGE:
    ops->expunge(h->instance, &call.req.store);
    break;
  case POPKIT_REQ_STORE_CLOSE:
    ops->close(h->instance, &call.req.store);
    break;
  case POPKIT_REQ_STORE_APPEND_BEGIN:
    ops->append_begin(h->instance, &call.req.store);
    break;
  case POPKIT_REQ_STORE_APPEND_WRITE:
    ops->append_write(h->instance, &call.req.store);
    break;
  case POPKIT_REQ_STORE_APPEND_FINISH:
    ops->append_finish(h->instance, &call.req.store);
    break;
  default:
    abort();
  }
  wait_done(h, &call);
  *req = call.req.store;
  return out->result;
}

int harness_read_nowait(struct harness *h, struct popkit_store_request *req,
                        struct harness_result *out) {
  struct harness_call call;
  store_call_init(h, &call, POPKIT_REQ_STORE_READ, req, out);
  const struct popkit_store_ops *ops = h->descriptor->store;
  if (ops->struct_size <
          offsetof(struct popkit_store_ops, read_nowait) + sizeof ops->read_nowait ||
      ops->read_nowait == NULL)
    return -2;
  int served = ops->read_nowait(h->instance, &call.req.store);
  *req = call.req.store;
  /* Served means completed inside the call: it runs on the loop thread and
   * must never leave a completion for later, nor complete and decline. */
  if (served != call.done)
    return -1;
  return served;
}

enum popkit_result harness_read_all(struct harness *h, void *mailbox, uint64_t index,
                                    size_t chunk_size, char **data_r, size_t *size_r) {
  struct harness_result *out = malloc(sizeof *out);
  char *data = NULL;
  size_t size = 0;
  char *chunk = malloc(chunk_size);
  enum popkit_result result;
  for (;;) {
    struct popkit_store_request req = {0};
    req.mailbox = mailbox;
    req.index = index;
    req.offset = size;
    req.buffer = chunk;
    req.buffer_size = chunk_size;
    result = harness_store(h, POPKIT_REQ_STORE_READ, &req, out);
    if (result != POPKIT_OK || req.length == 0)
      break;
    data = realloc(data, size + req.length + 1);
    memcpy(data + size, chunk, req.length);
    size += req.length;
  }
  free(chunk);
  free(out);
  if (result != POPKIT_OK) {
    free(data);
    return result;
  }
  if (data == NULL)
    data = calloc(1, 1);
  data[size] = '\0';
  *data_r = data;
  *size_r = size;
  return result;
}

enum popkit_result harness_deliver(struct harness *h, const char *identity,
                                   const char *data, size_t size, size_t chunk_size) {
  struct harness_result *out = malloc(sizeof *out);
  struct popkit_store_request req = {0};
  req.identity = identity;
  enum popkit_result result = harness_store(h, POPKIT_REQ_STORE_APPEND_BEGIN, &req, out);
  if (result != POPKIT_OK) {
    free(out);
    return result;
  }
  void *handle = req.mailbox;
  size_t done = 0;
  while (done < size && result == POPKIT_OK) {
    size_t n = size - done < chunk_size ? size - done : chunk_size;
    struct popkit_store_request w = {0};
    w.mailbox = handle;
    w.data = data + done;
    w.data_size = n;
    result = harness_store(h, POPKIT_REQ_STORE_APPEND_WRITE, &w, out);
    done += n;
  }
  struct popkit_store_request f = {0};
  f.mailbox = handle;
  f.commit = result == POPKIT_OK;
  enum popkit_result fin = harness_store(h, POPKIT_REQ_STORE_APPEND_FINISH, &f, out);
  free(out);
  return result != POPKIT_OK ? result : fin;
}
