#include "host.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chain.h"
#include "log.h"
#include "password.h"

/* ---- Host functions ----------------------------------------------------- */

static void host_log(struct popkit_module_handle *self, const struct popkit_request *req,
                     enum popkit_log_level level, const char *fmt, ...) {
  char prefix[160];
  const char *label =
      self != NULL && self->magic == MODULE_INSTANCE_MAGIC ? self->label : "module";
  if (req != NULL && req->session_id != 0)
    snprintf(prefix, sizeof prefix, "conn=%llu %s: ", (unsigned long long)req->session_id,
             label);
  else
    snprintf(prefix, sizeof prefix, "%s: ", label);
  va_list ap;
  va_start(ap, fmt);
  log_vmsg(level, prefix, fmt, ap);
  va_end(ap);
}

static struct core_request *from_public(const void *pub) {
  struct core_request *req = (struct core_request *)pub;
  if (req == NULL || req->magic != CORE_REQUEST_MAGIC ||
      req->pub.base.magic != POPKIT_REQUEST_MAGIC) {
    /* A module handed back something that is not a live request: continuing
     * would corrupt memory, and the log line says which call did it. */
    log_error("a module passed an invalid request pointer to the host: aborting");
    abort();
  }
  return req;
}

void chain_module_completed(struct core_request *req); /* chain.c */

static void host_complete(struct popkit_request *pub, enum popkit_result result,
                          const char *log_text) {
  struct core_request *req = from_public(pub);
  if (req->completed) {
    log_error("%s completed a request twice: ignoring the second time",
              req->mi ? req->mi->label : "a module");
    return;
  }
  if ((unsigned)result > POPKIT_IN_USE) {
    log_error("%s completed with unknown result %d: treating it as TEMPFAIL",
              req->mi ? req->mi->label : "a module", (int)result);
    result = POPKIT_TEMPFAIL;
  }
  req->result = result;
  free(req->log_text);
  req->log_text = log_text != NULL ? strdup(log_text) : NULL;
  req->completed = true;
  chain_module_completed(req);
}

static int replace_string(char **slot, const char *value) {
  char *copy = strdup(value != NULL ? value : "");
  if (copy == NULL)
    return -ENOMEM;
  free(*slot);
  *slot = copy;
  return 0;
}

static int host_auth_set_identity(struct popkit_auth_request *pub, const char *identity) {
  return replace_string(&from_public(pub)->identity, identity);
}

static int host_auth_set_credential(struct popkit_auth_request *pub,
                                    const char *credential) {
  return replace_string(&from_public(pub)->credential, credential);
}

/* RFC 1939 section 7: a unique-id is 1 to 70 characters in 0x21..0x7e. */
static bool uid_is_valid(const char *uid, size_t len) {
  if (len < 1 || len > 70)
    return false;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)uid[i];
    if (c < 0x21 || c > 0x7e)
      return false;
  }
  return true;
}

static int host_store_add_message(struct popkit_store_request *pub, const char *uid,
                                  uint64_t size) {
  struct core_request *req = from_public(pub);
  struct listing *l = &req->listing;
  size_t len = uid != NULL ? strnlen(uid, 71) : 0;
  if (!uid_is_valid(uid, len))
    return -EINVAL;
  if (l->count == l->capacity) {
    size_t cap = l->capacity ? l->capacity * 2 : 64;
    struct listing_entry *e = realloc(l->entries, cap * sizeof *e);
    if (e == NULL)
      return -ENOMEM;
    l->entries = e;
    l->capacity = cap;
  }
  if (l->uids_len + len + 1 > l->uids_capacity) {
    size_t cap = l->uids_capacity ? l->uids_capacity * 2 : 4096;
    while (cap < l->uids_len + len + 1)
      cap *= 2;
    char *u = realloc(l->uids, cap);
    if (u == NULL)
      return -ENOMEM;
    l->uids = u;
    l->uids_capacity = cap;
  }
  if (l->uids_len > UINT32_MAX - 71)
    return -ENOMEM;
  struct listing_entry *e = &l->entries[l->count++];
  e->size = size;
  e->uid_off = (uint32_t)l->uids_len;
  e->uid_len = (uint8_t)len;
  e->deleted = false;
  memcpy(l->uids + l->uids_len, uid, len + 1);
  l->uids_len += len + 1;
  return 0;
}

/* ---- Decorators (ABI 1.2) ---------------------------------------------- */

static void host_pass_to_next(struct popkit_request *pub, popkit_next_done done) {
  chain_pass_to_next(from_public(pub), done);
}

static const char *host_auth_identity(const struct popkit_auth_request *pub) {
  return from_public(pub)->identity;
}

static const char *host_auth_credential(const struct popkit_auth_request *pub) {
  return from_public(pub)->credential;
}

static size_t host_store_message_count(const struct popkit_store_request *pub) {
  return from_public(pub)->listing.count;
}

static int host_store_message(const struct popkit_store_request *pub, size_t index,
                              const char **uid_r, uint64_t *size_r) {
  const struct listing *l = &from_public(pub)->listing;
  if (index >= l->count)
    return -ERANGE;
  *uid_r = l->uids + l->entries[index].uid_off;
  *size_r = l->entries[index].size;
  return 0;
}

static struct popkit_request *host_next_request(struct popkit_request *pub,
                                                uint32_t kind) {
  struct core_request *req = chain_next_request(from_public(pub), kind);
  return req != NULL ? &req->pub.base : NULL;
}

static const char *host_config_string(const struct popkit_config_object *cfg,
                                      const char *key) {
  json_t *v = json_object_get(cfg->json, key);
  return json_is_string(v) ? json_string_value(v) : NULL;
}

static const char *host_config_path(const struct popkit_config_object *cfg_const,
                                    const char *key) {
  /* The object is the core's own; the const in the ABI only promises the
   * module that it will not change what the module sees. */
  struct popkit_config_object *cfg = (struct popkit_config_object *)cfg_const;
  const char *value = host_config_string(cfg, key);
  if (value == NULL)
    return NULL;
  char *resolved = config_resolve_path(cfg->config, value);
  if (resolved == NULL)
    return NULL;
  char **paths = realloc(cfg->paths, (cfg->path_count + 1) * sizeof *paths);
  if (paths == NULL) {
    free(resolved);
    return NULL;
  }
  cfg->paths = paths;
  cfg->paths[cfg->path_count++] = resolved;
  return resolved;
}

static int64_t host_config_integer(const struct popkit_config_object *cfg,
                                   const char *key, int64_t fallback) {
  json_t *v = json_object_get(cfg->json, key);
  return json_is_integer(v) ? (int64_t)json_integer_value(v) : fallback;
}

static int host_config_boolean(const struct popkit_config_object *cfg, const char *key,
                               int fallback) {
  json_t *v = json_object_get(cfg->json, key);
  return json_is_boolean(v) ? json_is_true(v) : fallback;
}

const struct popkit_host host_table = {
    .struct_size = sizeof(struct popkit_host),
    .abi_major = POPKIT_ABI_MAJOR,
    .abi_minor = POPKIT_ABI_MINOR,
    .log = host_log,
    .complete = host_complete,
    .auth_set_identity = host_auth_set_identity,
    .auth_set_credential = host_auth_set_credential,
    .store_add_message = host_store_add_message,
    .config_string = host_config_string,
    .config_path = host_config_path,
    .config_integer = host_config_integer,
    .config_boolean = host_config_boolean,
    .password_verify = password_verify,
    .pass_to_next = host_pass_to_next,
    .auth_identity = host_auth_identity,
    .auth_credential = host_auth_credential,
    .store_message_count = host_store_message_count,
    .store_message = host_store_message,
    .next_request = host_next_request,
};

/* ---- Instances ---------------------------------------------------------- */

int module_instance_create(const struct config *config, const struct config_module *entry,
                           uv_loop_t *loop, unsigned worker_id, uint32_t required_role,
                           module_instance **mi_r, char *error, size_t error_size) {
  struct loaded_module *lm;
  int rc = loader_load(config->modules_dir, entry->name, &lm, error, error_size);
  if (rc < 0)
    return rc;
  const struct popkit_module_descriptor *d = lm->descriptor;
  if ((d->roles & required_role) == 0) {
    snprintf(error, error_size,
             "%s: %s: module %s cannot be used here: it is not %s module", config->file,
             entry->json_path, entry->name,
             required_role == POPKIT_ROLE_AUTH ? "an auth" : "a store");
    return -EINVAL;
  }
  bool decorator = (d->flags & POPKIT_MODULE_DECORATOR) != 0;
  if (entry->next != NULL && !decorator) {
    snprintf(error, error_size,
             "%s: %s.next: module %s does not take a next module (it is not a "
             "decorator)",
             config->file, entry->json_path, entry->name);
    return -EINVAL;
  }
  unsigned nesting = 0;
  for (const char *p = entry->json_path; (p = strstr(p, ".next")) != NULL; p++)
    nesting++;
  if (entry->next != NULL && nesting >= CHAIN_MAX_DECORATORS) {
    snprintf(error, error_size, "%s: %s.next: decorators nest %d deep at most",
             config->file, entry->json_path, CHAIN_MAX_DECORATORS);
    return -EINVAL;
  }
  if (entry->next == NULL && decorator) {
    snprintf(error, error_size,
             "%s: %s: module %s is a decorator and needs \"next\": the module it "
             "wraps",
             config->file, entry->json_path, entry->name);
    return -EINVAL;
  }
  rc = config_check_module_keys(config, entry, d->config_keys, error, error_size);
  if (rc < 0)
    return rc;

  module_instance *mi = calloc(1, sizeof *mi);
  if (mi == NULL)
    return -ENOMEM;
  mi->magic = MODULE_INSTANCE_MAGIC;
  mi->descriptor = d;
  mi->blocking = (d->flags & POPKIT_MODULE_BLOCKING) != 0;
  mi->worker_id = worker_id;
  mi->config.json = entry->json;
  mi->config.config = config;
  snprintf(mi->label, sizeof mi->label, "%s(%s)", entry->name, entry->json_path);
  if (entry->next != NULL) {
    /* next first: a decorator may look at nothing of it, but it must never
     * run without it. */
    rc = module_instance_create(config, entry->next, loop, worker_id, required_role,
                                &mi->next, error, error_size);
    if (rc < 0) {
      module_instance_destroy(mi);
      return rc;
    }
  }

  struct popkit_module_args args = {
      .struct_size = sizeof args,
      .worker_id = worker_id,
      .host = &host_table,
      .self = mi,
      .config = &mi->config,
      .loop = loop,
  };
  char module_error[512] = "";
  rc = d->create(&args, &mi->instance, module_error, sizeof module_error);
  if (rc < 0) {
    snprintf(error, error_size, "%s: %s: module %s: %s", config->file, entry->json_path,
             entry->name, module_error[0] ? module_error : strerror(-rc));
    module_instance_destroy(mi);
    return rc;
  }
  *mi_r = mi;
  return 0;
}

void module_instance_destroy(module_instance *mi) {
  if (mi == NULL)
    return;
  if (mi->instance != NULL)
    mi->descriptor->destroy(mi->instance);
  module_instance_destroy(mi->next);
  for (size_t i = 0; i < mi->config.path_count; i++)
    free(mi->config.paths[i]);
  free(mi->config.paths);
  mi->magic = 0;
  free(mi);
}
