/*
 * redis-cache: a decorator (ABI 1.2) that puts Redis in front of the auth
 * or store module named by its "next", to make the pair faster without
 * changing what a client sees. When Redis is away or slow, every call goes
 * to next: the cache can make things faster, never make them fail.
 *
 *   "auth":  [{"module": "redis-cache", "address": "127.0.0.1:6379",
 *              "next": {"module": "postgres", "conninfo": "..."}}]
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "popkit/settings.h"
#include "rc_auth.h"
#include "rc_module.h"
#include "rc_store.h"

static const struct popkit_config_key config_keys[] = {
    {"address", POPKIT_CONFIG_STRING, 1},
    {"password", POPKIT_CONFIG_STRING, 0},
    {"database", POPKIT_CONFIG_INTEGER, 0},
    {"key_prefix", POPKIT_CONFIG_STRING, 0},
    {"secret", POPKIT_CONFIG_STRING, 0},
    {"ttl_s", POPKIT_CONFIG_INTEGER, 0},
    {"negative_ttl_s", POPKIT_CONFIG_INTEGER, 0},
    {"stale_ttl_s", POPKIT_CONFIG_INTEGER, 0},
    {"timeout_ms", POPKIT_CONFIG_INTEGER, 0},
    {"reconnect_max_ms", POPKIT_CONFIG_INTEGER, 0},
    {"log_interval_s", POPKIT_CONFIG_INTEGER, 0},
    {"stats_interval_s", POPKIT_CONFIG_INTEGER, 0},
    {"max_body_bytes", POPKIT_CONFIG_INTEGER, 0},
    {"body_ttl_s", POPKIT_CONFIG_INTEGER, 0},
    {"listing_ttl_s", POPKIT_CONFIG_INTEGER, 0},
    {"lock", POPKIT_CONFIG_BOOLEAN, 0},
    {"lock_ttl_s", POPKIT_CONFIG_INTEGER, 0},
    {NULL, 0, 0},
};

/* Without a configured secret, one random secret per process: the workers
 * of one popkitd share their cache, other hosts keep their own. */
static unsigned char process_secret[RC_SECRET_BYTES];
static int process_secret_rc;
static pthread_once_t process_secret_once = PTHREAD_ONCE_INIT;

static void make_process_secret(void) {
  process_secret_rc = getrandom(process_secret, sizeof process_secret, 0) ==
                              (ssize_t)sizeof process_secret
                          ? 0
                          : -EIO;
}

static int rc_create(const struct popkit_module_args *args, void **instance_r,
                     char *error, size_t error_size) {
  const struct popkit_host *host = args->host;
  if (args->struct_size < sizeof *args || !POPKIT_HOST_HAS(host, next_request)) {
    snprintf(error, error_size,
             "popkitd is older than this module: it needs ABI 1.2 (decorators)");
    return -EINVAL;
  }
  const struct popkit_config_object *cfg = args->config;
  struct rc_redis_options options = {
      .address = host->config_string(cfg, "address"),
      .password = host->config_string(cfg, "password"),
  };
  if (options.address == NULL) {
    snprintf(error, error_size,
             "address: missing (HOST:PORT of Redis, or a socket path)");
    return -EINVAL;
  }
  int rc = rc_redis_check_address(options.address, error, error_size);
  if (rc < 0)
    return rc;
  unsigned ttl_s, negative_ttl_s, stale_ttl_s, stats_interval_s;
  unsigned max_body_bytes, body_ttl_s, listing_ttl_s, lock_ttl_s;
  const struct popkit_integer_setting integers[] = {
      {"database", 0, 0, 65535, &options.database},
      {"ttl_s", 300, 1, 86400 * 30, &ttl_s},
      {"negative_ttl_s", 30, 1, 86400, &negative_ttl_s},
      {"stale_ttl_s", 3600, 1, 86400 * 30, &stale_ttl_s},
      {"timeout_ms", 250, 10, 60000, &options.timeout_ms},
      {"reconnect_max_ms", 2000, 100, 600000, &options.reconnect_max_ms},
      {"log_interval_s", 60, 1, 86400, &options.log_interval_s},
      {"stats_interval_s", 300, 0, 86400, &stats_interval_s},
      {"max_body_bytes", 262144, 0, 64 << 20, &max_body_bytes},
      {"body_ttl_s", 3600, 1, 86400 * 30, &body_ttl_s},
      {"listing_ttl_s", 300, 1, 86400, &listing_ttl_s},
      {"lock_ttl_s", 30, 3, 3600, &lock_ttl_s},
  };
  rc = popkit_read_integers(host, cfg, integers, sizeof integers / sizeof integers[0],
                            error, error_size);
  if (rc < 0)
    return rc;
  if (stale_ttl_s < ttl_s) {
    snprintf(error, error_size,
             "stale_ttl_s: %u is shorter than ttl_s (%u); a success is kept at least as "
             "long as it is used",
             stale_ttl_s, ttl_s);
    return -EINVAL;
  }
  const char *secret = host->config_string(cfg, "secret");
  if (secret != NULL && strlen(secret) < 16) {
    snprintf(error, error_size,
             "secret: at least 16 characters, or leave it out for a random one");
    return -EINVAL;
  }
  if (secret == NULL) {
    pthread_once(&process_secret_once, make_process_secret);
    if (process_secret_rc < 0) {
      snprintf(error, error_size, "secret: no random bytes for one");
      return process_secret_rc;
    }
  }
  const char *prefix = host->config_string(cfg, "key_prefix");

  struct rc_module *m = calloc(1, sizeof *m);
  if (m == NULL) {
    snprintf(error, error_size, "out of memory");
    return -ENOMEM;
  }
  m->host = host;
  m->self = args->self;
  m->loop = args->loop;
  m->ttl_s = ttl_s;
  m->negative_ttl_s = negative_ttl_s;
  m->stale_ttl_s = stale_ttl_s;
  m->max_body_bytes = max_body_bytes;
  m->body_ttl_s = body_ttl_s;
  m->listing_ttl_s = listing_ttl_s;
  m->lock_ttl_s = lock_ttl_s;
  m->lock_enabled = host->config_boolean(cfg, "lock", 0) != 0;
  m->secret_size = secret != NULL ? strlen(secret) : RC_SECRET_BYTES;
  m->secret = malloc(m->secret_size);
  if (m->secret != NULL)
    memcpy(m->secret, secret != NULL ? (const void *)secret : process_secret,
           m->secret_size);
  m->key_prefix = strdup(prefix != NULL ? prefix : "popkit:");
  m->redis = rc_redis_new(args->loop, &options, host, args->self);
  if (m->secret == NULL || m->key_prefix == NULL || m->redis == NULL) {
    rc_redis_destroy(m->redis);
    free(m->key_prefix);
    free(m->secret);
    free(m);
    snprintf(error, error_size, "out of memory");
    return -ENOMEM;
  }
  rc_stats_init(&m->stats, stats_interval_s, host, args->self);
  *instance_r = m;
  return 0;
}

static void rc_destroy(void *instance) {
  struct rc_module *m = instance;
  rc_stats_close(&m->stats);
  rc_locks_close(m);
  rc_redis_destroy(m->redis);
  explicit_bzero(m->secret, m->secret_size);
  free(m->secret);
  free(m->key_prefix);
  free(m);
}

POPKIT_MODULE_EXPORT const struct popkit_module_descriptor popkit_module = {
    POPKIT_MODULE_HEADER("redis-cache"),
    .roles = POPKIT_ROLE_AUTH | POPKIT_ROLE_STORE,
    .flags = POPKIT_MODULE_DECORATOR,
    .config_keys = config_keys,
    .create = rc_create,
    .destroy = rc_destroy,
    .auth = &rc_auth_ops,
    .store = &rc_store_ops,
    .cancel = NULL,
};
