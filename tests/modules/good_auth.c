/*
 * A complete, minimal, valid auth module: the user "alice" with the
 * password "secret" exists, nobody else does. It answers synchronously and
 * has no get_credential (which the ABI makes optional).
 *
 * The same source builds the modules that are broken on purpose: each
 * TEST_* definition below changes one thing of an otherwise valid module,
 * so that every refusal the loader makes is tested against a module that is
 * wrong in exactly that way.
 */
#include <errno.h>
#include <string.h>

#include "popkit/module.h"

#ifndef TEST_MAGIC
#define TEST_MAGIC POPKIT_MODULE_MAGIC
#endif
#ifndef TEST_ABI_MAJOR
#define TEST_ABI_MAJOR POPKIT_ABI_MAJOR
#endif
#ifndef TEST_ABI_MINOR
#define TEST_ABI_MINOR POPKIT_ABI_MINOR
#endif
#ifndef TEST_NAME
#define TEST_NAME "good_auth"
#endif
#ifndef TEST_ROLES
#define TEST_ROLES POPKIT_ROLE_AUTH
#endif
#ifndef TEST_FLAGS
#define TEST_FLAGS 0
#endif
#ifndef TEST_AUTH_OPS_SIZE
#define TEST_AUTH_OPS_SIZE sizeof(struct popkit_auth_ops)
#endif

#ifdef TEST_NEEDS_FOREIGN
int foreign_add(int a, int b); /* from libforeign.so */
#endif

struct good_auth {
  const struct popkit_host *host;
};

static struct good_auth the_instance;

/* unused only in the variant that leaves create NULL */
__attribute__((unused)) static int good_create(const struct popkit_module_args *args,
                                               void **instance_r, char *error,
                                               size_t error_size) {
#ifdef TEST_NEEDS_FOREIGN
  /* A call into libforeign.so makes it a library this module needs. */
  if (foreign_add(1, 1) != 2)
    return -EINVAL;
#endif
  the_instance.host = args->host;
  *instance_r = &the_instance;
  return 0;
}

static void good_destroy(void *instance) {}

static int known_user(const struct popkit_auth_request *req) {
  return strcmp(req->user, "alice") == 0;
}

static void good_lookup(void *instance, struct popkit_auth_request *req) {
  struct good_auth *self = instance;
  self->host->complete(&req->base, known_user(req) ? POPKIT_OK : POPKIT_NOT_FOUND, NULL);
}

/* unused only in the variant that leaves verify_plain NULL */
__attribute__((unused)) static void good_verify_plain(void *instance,
                                                      struct popkit_auth_request *req) {
  struct good_auth *self = instance;
  enum popkit_result result = POPKIT_NOT_FOUND;
  if (known_user(req))
    result = strcmp(req->password, "secret") == 0 ? POPKIT_OK : POPKIT_FAIL;
  self->host->complete(&req->base, result, NULL);
}

/* unused only in the variant that declares the auth role without its table */
__attribute__((unused)) static const struct popkit_auth_ops good_auth_ops = {
    .struct_size = TEST_AUTH_OPS_SIZE,
    .lookup = good_lookup,
#ifdef TEST_NULL_VERIFY
    .verify_plain = NULL,
#else
    .verify_plain = good_verify_plain,
#endif
    .get_credential = NULL,
};

#ifdef TEST_STORE_NULL_OP
/* A store role whose tables are complete but for append_write. */
static void store_fail(void *instance, struct popkit_store_request *req) {
  struct good_auth *self = instance;
  self->host->complete(&req->base, POPKIT_PERMFAIL, "good_auth has no mail");
}

static const struct popkit_store_ops good_store_ops = {
    .struct_size = sizeof(struct popkit_store_ops),
    .open = store_fail,
    .read = store_fail,
    .expunge = store_fail,
    .close = store_fail,
    .append_begin = store_fail,
    .append_write = NULL,
    .append_finish = store_fail,
};
#endif

static const struct popkit_config_key good_config_keys[] = {{NULL, 0, 0}};

POPKIT_MODULE_EXPORT const struct popkit_module_descriptor popkit_module = {
    .magic = TEST_MAGIC,
    .abi_major = TEST_ABI_MAJOR,
    .abi_minor = TEST_ABI_MINOR,
    .struct_size = sizeof(struct popkit_module_descriptor),
    .reserved = 0,
#ifdef TEST_NO_NAME
    .name = NULL,
#else
    .name = TEST_NAME,
#endif
    .build_signature = POPKIT_BUILD_SIGNATURE,
    .roles = TEST_ROLES,
    .flags = TEST_FLAGS,
    .config_keys = good_config_keys,
#ifdef TEST_NULL_CREATE
    .create = NULL,
#else
    .create = good_create,
#endif
    .destroy = good_destroy,
#ifdef TEST_NO_AUTH_OPS
    .auth = NULL,
#else
    .auth = &good_auth_ops,
#endif
#ifdef TEST_STORE_NULL_OP
    .store = &good_store_ops,
#else
    .store = NULL,
#endif
    .cancel = NULL,
};
