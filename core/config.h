/*
 * The config file: parsed with jansson into struct config, every key checked.
 *
 * Errors name the file and either the line and column (syntax) or the JSON
 * path (schema), e.g.
 *   popkit.json:12:7: syntax error: ...
 *   popkit.json: $.limits.idle_timeout_s: expected an integer, got a string
 */
#ifndef POPKIT_CORE_CONFIG_H
#define POPKIT_CORE_CONFIG_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "popkit/module.h"

enum config_tls_mode {
  CONFIG_TLS_NONE = 0, /* plain POP3 */
  CONFIG_TLS_STARTTLS, /* plain, STLS offered */
  CONFIG_TLS_IMPLICIT  /* TLS from the first byte */
};

enum config_plaintext_auth {
  CONFIG_PLAINTEXT_TLS_OR_LOOPBACK = 0, /* default */
  CONFIG_PLAINTEXT_ALWAYS,
  CONFIG_PLAINTEXT_TLS_ONLY
};

struct config_listen {
  char *address; /* numeric IPv4 or IPv6 address */
  int port;      /* 1..65535 */
  enum config_tls_mode tls;
  bool proxy_protocol;
};

/* One module object of the auth list or the store (and its `next`). */
struct config_module {
  char *name;                 /* the "module" key */
  char *json_path;            /* where it sits, e.g. "$.auth[1]" or "$.store.next" */
  json_t *json;               /* the whole object, borrowed from the config's root */
  struct config_module *next; /* the "next" object of a decorator, or NULL */
};

struct config_limits {
  size_t max_line_bytes;       /* default 8192, at least 512 */
  unsigned login_timeout_s;    /* before login; default 60 */
  unsigned idle_timeout_s;     /* after login; default 600 (RFC 1939 min); values
                                  down to 1 are accepted when set explicitly (for
                                  tests) but break RFC 1939's 10-minute minimum */
  unsigned max_bad_commands;   /* consecutive -ERR before close; default 10 */
  unsigned shutdown_timeout_s; /* SIGTERM grace; default 30 */
  size_t output_buffer_bytes;  /* write high-water mark; default 65536 */
  unsigned max_connections;    /* per worker; default 10000 */

  /* Defence against guessing and hogging (0 turns a cap off). Connections
   * from loopback are exempt from all of these while exempt_loopback is
   * true (the default). */
  unsigned max_connections_per_ip;    /* all workers; default 20; IPv6 by /64 */
  unsigned max_sessions_per_user;     /* logged-in sessions; default 10 */
  unsigned auth_failure_delay_ms;     /* after the first failure; default 2000 */
  unsigned auth_failure_delay_max_ms; /* the delay doubles up to this; 15000 */
  unsigned auth_failure_forget_s;     /* failures older than this are forgotten;
                                         default 900 */
  bool exempt_loopback;               /* default true */
};

struct config {
  char *file;     /* as given on the command line */
  char *base_dir; /* absolute directory of the file, for relative paths */
  json_t *root;

  char *hostname;    /* default: gethostname() */
  char *modules_dir; /* absolute; default POPKIT_MODULES_DIR */
  unsigned workers;  /* default: number of CPUs */
  char *user;        /* NULL: do not change user */
  struct config_listen *listen;
  size_t listen_count;
  struct {
    char *certificate; /* absolute path or NULL */
    char *key;
    char *priorities; /* NULL: GnuTLS defaults */
  } tls;
  enum config_plaintext_auth plaintext_auth;
  bool apop;                  /* offer APOP (default false) */
  struct config_module *auth; /* array */
  size_t auth_count;
  struct config_module store;
  struct config_limits limits;
  enum popkit_log_level log_level; /* "log": {"level": "info"} */
  struct {
    char *address; /* numeric IP, default "127.0.0.1"; NULL when "metrics" is
                      absent, which means no metrics endpoint */
    int port;      /* 1..65535, required in "metrics"; 0 when it is absent */
  } metrics;
};

/* Loads and checks FILE. Returns 0, or a negative errno code with a one-line
 * message in error: -EINVAL for a syntax or schema error, -ENOMEM, or the
 * code of opening or reading the file (-ENOENT, -EACCES, -EISDIR...). */
int config_load(const char *file, struct config **config_r, char *error,
                size_t error_size);

/* The same from a string; `name` stands for the file name in messages and
 * base_dir (NULL: the current directory) resolves relative paths. For tests
 * and --check-config. */
int config_load_string(const char *text, const char *name, const char *base_dir,
                       struct config **config_r, char *error, size_t error_size);

void config_free(struct config *config);

/* Checks a module object against the keys its descriptor declares: unknown
 * keys, missing required keys and wrong types, naming the JSON path. "module"
 * and "next" are the core's and always accepted. */
int config_check_module_keys(const struct config *config,
                             const struct config_module *module,
                             const struct popkit_config_key *keys, char *error,
                             size_t error_size);

/* Makes `path` absolute against the config file's directory. Returns a new
 * string or NULL on allocation failure. */
char *config_resolve_path(const struct config *config, const char *path);

#endif
