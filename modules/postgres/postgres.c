/*
 * postgres: users and mail in PostgreSQL, for sites that run several
 * popkitd hosts on one database. One module, both roles:
 *
 *   auth   the site's password_query ($1 is the user name) returns the
 *          stored secret and optionally the mailbox name (pg_auth.c);
 *   store  mailboxes and messages in the schema of schema.sql, mailbox
 *          locks that every host sees (pg_store.c, pg_lock.c), delivery
 *          in one transaction (pg_append.c).
 *
 * Every statement goes through a small pool of non-blocking connections
 * on the worker's loop (pg_pool.c), so a slow or absent PostgreSQL holds
 * up only the sessions that wait on it. Values always travel as
 * parameters, never inside the SQL text.
 */
#include <errno.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_append.h"
#include "pg_auth.h"
#include "pg_module.h"
#include "pg_store.h"
#include "pg_text.h"
#include "popkit/settings.h"

static const struct popkit_config_key config_keys[] = {
    {"conninfo", POPKIT_CONFIG_STRING, 1},
    {"password_query", POPKIT_CONFIG_STRING, 0},
    {"pool_size", POPKIT_CONFIG_INTEGER, 0},
    {"query_timeout_s", POPKIT_CONFIG_INTEGER, 0},
    {"lock_ttl_s", POPKIT_CONFIG_INTEGER, 0},
    {"reconnect_max_ms", POPKIT_CONFIG_INTEGER, 0},
    {NULL, 0, 0},
};

/* Checks the conninfo's syntax now, so --check-config catches a typo;
 * whether the server answers is a matter for run time. */
static int check_conninfo(const char *conninfo, char *error, size_t error_size) {
  char *why = NULL;
  PQconninfoOption *options = PQconninfoParse(conninfo, &why);
  if (options == NULL) {
    char line[400];
    pg_text_one_line(line, sizeof line, why != NULL ? why : "out of memory");
    snprintf(error, error_size, "conninfo: %s", line);
    PQfreemem(why);
    return -EINVAL;
  }
  PQconninfoFree(options);
  return 0;
}

static int pg_create(const struct popkit_module_args *args, void **instance_r,
                     char *error, size_t error_size) {
  const struct popkit_host *host = args->host;
  if (args->struct_size < sizeof *args || !POPKIT_HOST_HAS(host, password_verify)) {
    snprintf(
        error, error_size,
        "popkitd is older than this module: it needs ABI 1.1 (host->password_verify)");
    return -EINVAL;
  }
  const char *conninfo = host->config_string(args->config, "conninfo");
  if (conninfo == NULL) {
    snprintf(error, error_size, "conninfo: missing (libpq's connection string)");
    return -EINVAL;
  }
  int rc = check_conninfo(conninfo, error, error_size);
  if (rc < 0)
    return rc;
  const char *password_query = host->config_string(args->config, "password_query");
  if (password_query == NULL)
    password_query = pg_auth_default_query;
  else if (strstr(password_query, "$1") == NULL) {
    snprintf(error, error_size,
             "password_query: has no $1, the parameter that holds the user name");
    return -EINVAL;
  }

  struct pg_pool_options options = {.conninfo = conninfo};
  unsigned lock_ttl_s, query_timeout_s;
  const struct popkit_integer_setting integers[] = {
      {"pool_size", 4, 1, 64, &options.size},
      {"query_timeout_s", 10, 1, 3600, &query_timeout_s},
      {"lock_ttl_s", 30, 3, 3600, &lock_ttl_s},
      {"reconnect_max_ms", 2000, 100, 600000, &options.reconnect_max_ms},
  };
  rc = popkit_read_integers(host, args->config, integers,
                            sizeof integers / sizeof integers[0], error, error_size);
  if (rc < 0)
    return rc;
  options.query_timeout_ms = query_timeout_s * 1000;

  struct pg_module *m = calloc(1, sizeof *m);
  if (m == NULL) {
    snprintf(error, error_size, "out of memory");
    return -ENOMEM;
  }
  m->host = host;
  m->self = args->self;
  m->loop = args->loop;
  m->password_query = password_query;
  rc = pg_locks_init(&m->locks, args->worker_id, lock_ttl_s);
  if (rc == 0) {
    m->pool = pg_pool_new(args->loop, &options, host, args->self);
    if (m->pool == NULL)
      rc = -ENOMEM;
  }
  if (rc < 0) {
    snprintf(error, error_size, "%s", strerror(-rc));
    free(m);
    return rc;
  }
  *instance_r = m;
  return 0;
}

static void pg_destroy(void *instance) {
  struct pg_module *m = instance;
  pg_locks_close(&m->locks);
  pg_pool_destroy(m->pool);
  pg_auth_forget(m);
  free(m);
}

void pg_module_submit(struct pg_module *m, struct popkit_request *req,
                      struct pg_query *q) {
  if (req != NULL)
    req->module_data = q;
  pg_pool_submit(m->pool, q);
}

static void pg_cancel(void *instance, struct popkit_request *req) {
  struct pg_module *m = instance;
  if (req->module_data != NULL)
    pg_pool_cancel(m->pool, req->module_data);
}

static const struct popkit_store_ops store_ops = {
    .struct_size = sizeof(struct popkit_store_ops),
    .open = pg_store_open,
    .read = pg_store_read,
    .expunge = pg_store_expunge,
    .close = pg_store_close,
    .append_begin = pg_append_begin,
    .append_write = pg_append_write,
    .append_finish = pg_append_finish,
};

POPKIT_MODULE_EXPORT const struct popkit_module_descriptor popkit_module = {
    POPKIT_MODULE_HEADER("postgres"),
    .roles = POPKIT_ROLE_AUTH | POPKIT_ROLE_STORE,
    .flags = 0,
    .config_keys = config_keys,
    .create = pg_create,
    .destroy = pg_destroy,
    .auth = &pg_auth_ops,
    .store = &store_ops,
    .cancel = pg_cancel,
};
