/*
 * passwd-file: an auth module that reads users and password hashes from a
 * text file (format in passwd_table.h). The file's secrets are checked by
 * popkitd's host->password_verify (ABI 1.1), so this module reads every
 * scheme popkitd knows without any code of its own for them, and hands the
 * secret unchanged to popkitd for SCRAM and APOP.
 *
 * Checking a yescrypt, bcrypt or SCRAM secret takes tens of milliseconds,
 * so the module is POPKIT_MODULE_BLOCKING: popkitd runs every operation on
 * libuv's thread pool, and each one completes its request before it
 * returns.
 *
 * Config: {"module": "passwd-file", "path": "/etc/popkit/users"}.
 */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "passwd_source.h"
#include "popkit/module.h"
#include "unknown_user.h"

struct passwd_file {
  const struct popkit_host *host;
  struct passwd_source *source;
};

static const struct popkit_config_key config_keys[] = {
    {"path", POPKIT_CONFIG_PATH, 1},
    {NULL, 0, 0},
};

static int passwd_file_create(const struct popkit_module_args *args, void **instance_r,
                              char *error, size_t error_size) {
  const struct popkit_host *host = args->host;
  /* The loader already refuses this module on a popkitd older than its
   * descriptor's 1.1; this guards a host that hands out a short table. */
  if (args->struct_size < sizeof *args || !POPKIT_HOST_HAS(host, password_verify)) {
    snprintf(
        error, error_size,
        "popkitd is older than this module: it needs ABI 1.1 (host->password_verify)");
    return -EINVAL;
  }
  const char *path = host->config_path(args->config, "path");
  if (path == NULL) {
    snprintf(error, error_size, "path: missing (the passwd-file to read)");
    return -EINVAL;
  }
  struct passwd_file *instance = calloc(1, sizeof *instance);
  if (instance == NULL) {
    snprintf(error, error_size, "out of memory");
    return -ENOMEM;
  }
  instance->host = host;
  int rc =
      passwd_source_open(path, host, args->self, &instance->source, error, error_size);
  if (rc < 0) {
    free(instance);
    return rc;
  }
  *instance_r = instance;
  return 0;
}

static void passwd_file_destroy(void *instance) {
  struct passwd_file *pf = instance;
  passwd_source_close(pf->source);
  free(pf);
}

/* LOOKUP and GET_CREDENTIAL: the user's identity, and for GET_CREDENTIAL
 * the hash exactly as the file has it, whatever its scheme ({SCRAM-SHA-256},
 * {PLAIN}, crypt): popkitd decides which mechanisms it can serve from it. */
static void answer_user(struct passwd_file *pf, struct popkit_auth_request *req,
                        bool with_credential) {
  struct passwd_snapshot *snapshot = passwd_source_acquire(pf->source, &req->base);
  const struct passwd_entry *entry = passwd_table_find(snapshot->table, req->user);
  enum popkit_result result = POPKIT_NOT_FOUND;
  const char *text = "no such user in the passwd-file";
  if (entry != NULL) {
    result = POPKIT_OK;
    text = NULL;
    if (pf->host->auth_set_identity(req, entry->user) < 0 ||
        (with_credential && pf->host->auth_set_credential(req, entry->hash) < 0)) {
      result = POPKIT_TEMPFAIL;
      text = "out of memory";
    }
  }
  passwd_source_release(pf->source, snapshot);
  pf->host->complete(&req->base, result, text);
}

static void passwd_file_lookup(void *instance, struct popkit_auth_request *req) {
  answer_user(instance, req, false);
}

static void passwd_file_verify_plain(void *instance, struct popkit_auth_request *req) {
  struct passwd_file *pf = instance;
  if (req->password == NULL) {
    pf->host->complete(&req->base, POPKIT_FAIL, "no password in the request");
    return;
  }
  struct passwd_snapshot *snapshot = passwd_source_acquire(pf->source, &req->base);
  const struct passwd_entry *entry = passwd_table_find(snapshot->table, req->user);
  const char *path = passwd_source_path(pf->source);
  const struct popkit_host *host = pf->host;
  enum popkit_result result;
  char text[512];
  text[0] = '\0';
  int rc;
  if (entry == NULL) {
    rc = unknown_user_spend(host, snapshot->unknown_user_secret, req->password);
    result = POPKIT_NOT_FOUND;
    snprintf(text, sizeof text, "no such user in %s", path);
  } else {
    rc = host->password_verify(entry->hash, req->password);
    if (rc == POPKIT_PASSWORD_MATCH) {
      result = POPKIT_OK;
      rc = host->auth_set_identity(req, entry->user);
    } else if (rc == POPKIT_PASSWORD_MISMATCH) {
      result = POPKIT_FAIL;
      snprintf(text, sizeof text, "wrong password for the user of %s:%zu", path,
               entry->line);
    } else {
      /* A locked or unknown secret is refused without hashing: the
       * stand-in check makes this answer cost what a real one does. */
      if (rc >= 0)
        rc = unknown_user_spend(host, snapshot->unknown_user_secret, req->password);
      result = POPKIT_FAIL;
      snprintf(text, sizeof text,
               "%s:%zu: the hash is locked or of an unknown scheme, no password "
               "matches it",
               path, entry->line);
    }
  }
  passwd_source_release(pf->source, snapshot);
  if (rc < 0) {
    result = POPKIT_TEMPFAIL;
    snprintf(text, sizeof text, "out of memory");
  }
  host->complete(&req->base, result, text[0] != '\0' ? text : NULL);
}

static void passwd_file_get_credential(void *instance, struct popkit_auth_request *req) {
  answer_user(instance, req, true);
}

static const struct popkit_auth_ops passwd_file_auth_ops = {
    .struct_size = sizeof(struct popkit_auth_ops),
    .lookup = passwd_file_lookup,
    .verify_plain = passwd_file_verify_plain,
    .get_credential = passwd_file_get_credential,
};

POPKIT_MODULE_EXPORT const struct popkit_module_descriptor popkit_module = {
    POPKIT_MODULE_HEADER("passwd-file"),
    .roles = POPKIT_ROLE_AUTH,
    .flags = POPKIT_MODULE_BLOCKING,
    .config_keys = config_keys,
    .create = passwd_file_create,
    .destroy = passwd_file_destroy,
    .auth = &passwd_file_auth_ops,
    .store = NULL,
    .cancel = NULL,
};
