/*
 * The config loader: reads the JSON file with jansson and checks every key
 * against the contract of DESIGN.md ("The config file") before anything else
 * looks at it, so a mistake stops popkitd at startup with one line that
 * names the file, the place (line and column, or JSON path), what is wrong
 * and what is expected.
 *
 * Module objects are checked in two steps: here only their "module" name and
 * their "next" chain, because the keys a module accepts are known only once
 * its descriptor is loaded; config_check_module_keys() does the rest then.
 */
#include "config.h"
#include "config_reader.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef POPKIT_DEFAULT_MODULES_DIR
#error "POPKIT_DEFAULT_MODULES_DIR must be defined by the build (core/CMakeLists.txt)"
#endif

/* A config file is a few kilobytes; anything past this is a wrong path (a
 * log file, a device), and reading it whole would only waste memory. */
#define CONFIG_MAX_FILE_BYTES (16u * 1024u * 1024u)

/* Longest module name, as the loader accepts it. */
#define CONFIG_MAX_MODULE_NAME 64

/* ---- Sections ------------------------------------------------------------ */

/* The host name goes into the greeting and the APOP challenge, so it must be
 * one token of printable ASCII: anything else would corrupt a reply line. */
static int parse_hostname(struct config_parser *p, const json_t *root) {
  const char *hostname = NULL;
  const char *what = "a host name (1 to 255 printable ASCII characters, no spaces)";
  int rc = config_get_string(p, root, "$", "hostname", what, &hostname);
  if (rc < 0) {
    return rc;
  }
  if (hostname != NULL) {
    size_t length = strlen(hostname);
    bool printable = length <= 255;
    for (size_t i = 0; printable && i < length; i++) {
      printable = hostname[i] > 0x20 && hostname[i] < 0x7f;
    }
    if (!printable) {
      char got[QUOTE_MAX_CHARS * 4 + 8];
      config_escape_text(hostname, true, got, sizeof got);
      return config_fail(p, "$", "hostname", "expected %s, got \"%s\"", what, got);
    }
    p->config->hostname = strdup(hostname);
  } else {
    char buffer[HOST_NAME_MAX + 1] = "";
    if (gethostname(buffer, sizeof buffer - 1) != 0 || buffer[0] == '\0') {
      strcpy(buffer, "localhost");
    }
    p->config->hostname = strdup(buffer);
  }
  return p->config->hostname ? 0 : config_fail_no_memory(p);
}

static int parse_listeners(struct config_parser *p, const json_t *list,
                           struct binary_address **binaries_r) {
  static const char *const known[] = {"address", "port", "tls", "proxy_protocol", NULL};
  static const char *const tls_modes[] = {"none", "starttls", "implicit", NULL};
  const char *what = "a non-empty array of listeners such as "
                     "[{\"address\": \"127.0.0.1\", \"port\": 110}]";
  if (!json_is_array(list)) {
    return config_fail(p, "$", "listen", "expected %s, got %s", what,
                       config_type_phrase(list));
  }
  size_t count = json_array_size(list);
  if (count == 0) {
    return config_fail(p, "$", "listen", "expected %s, got an empty array", what);
  }
  struct config *config = p->config;
  config->listen = calloc(count, sizeof *config->listen);
  *binaries_r = calloc(count, sizeof **binaries_r);
  if (config->listen == NULL || *binaries_r == NULL) {
    return config_fail_no_memory(p);
  }
  config->listen_count = count;
  struct binary_address *binaries = *binaries_r;
  for (size_t i = 0; i < count; i++) {
    const json_t *item = json_array_get(list, i);
    struct config_listen *listen = &config->listen[i];
    char path[64];
    snprintf(path, sizeof path, "$.listen[%zu]", i);
    int rc;
    if ((rc = config_expect_object(p, item, path, NULL)) < 0 ||
        (rc = config_check_known_keys(p, item, path, known)) < 0 ||
        (rc = config_require_key(p, item, path, "address",
                                 "a numeric IP address such as 127.0.0.1 or ::1")) < 0 ||
        (rc = config_require_key(p, item, path, "port", "an integer from 1 to 65535")) <
            0) {
      return rc;
    }
    const char *address = NULL;
    json_int_t port = 0;
    int tls = CONFIG_TLS_NONE;
    bool proxy_protocol = false;
    if ((rc = config_get_address(p, item, path, "address", &address, &binaries[i])) < 0 ||
        (rc = config_get_integer(p, item, path, "port", 1, 65535, &port)) < 0 ||
        (rc = config_get_enum(p, item, path, "tls", tls_modes, &tls)) < 0 ||
        (rc = config_get_boolean(p, item, path, "proxy_protocol", &proxy_protocol)) < 0) {
      return rc;
    }
    listen->address = strdup(address);
    if (listen->address == NULL) {
      return config_fail_no_memory(p);
    }
    listen->port = (int)port;
    listen->tls = (enum config_tls_mode)tls;
    listen->proxy_protocol = proxy_protocol;
    for (size_t j = 0; j < i; j++) {
      if (config_same_socket(&binaries[i], listen->port, &binaries[j],
                             config->listen[j].port)) {
        return config_fail(p, path, NULL,
                           "address %s port %d is already listed at $.listen[%zu]: each "
                           "address and port can be listened on once",
                           listen->address, listen->port, j);
      }
    }
  }
  return 0;
}

static int parse_tls(struct config_parser *p, const json_t *tls) {
  static const char *const known[] = {"certificate", "key", "priorities", NULL};
  const char *what = "a path (a non-empty string)";
  const char *certificate = NULL;
  const char *key = NULL;
  const char *priorities = NULL;
  int rc;
  if ((rc = config_expect_object(p, tls, "$", "tls")) < 0 ||
      (rc = config_check_known_keys(p, tls, "$.tls", known)) < 0 ||
      (rc = config_get_string(p, tls, "$.tls", "certificate", what, &certificate)) < 0 ||
      (rc = config_get_string(p, tls, "$.tls", "key", what, &key)) < 0 ||
      (rc = config_get_string(p, tls, "$.tls", "priorities",
                              "a GnuTLS priority string such as \"NORMAL\"",
                              &priorities)) < 0) {
    return rc;
  }
  /* A certificate without its key (or the reverse) can never be loaded;
   * saying so here beats a GnuTLS error at the first handshake. */
  if ((certificate == NULL) != (key == NULL)) {
    return config_fail(p, "$.tls", NULL, "\"certificate\" and \"key\" go together: %s",
                       certificate
                           ? "add \"key\", the private key of the certificate"
                           : "add \"certificate\", the certificate chain of the server");
  }
  struct config *config = p->config;
  if (certificate != NULL) {
    config->tls.certificate = config_resolve_path(config, certificate);
    config->tls.key = config_resolve_path(config, key);
    if (config->tls.certificate == NULL || config->tls.key == NULL) {
      return config_fail_no_memory(p);
    }
  }
  if (priorities != NULL && (config->tls.priorities = strdup(priorities)) == NULL) {
    return config_fail_no_memory(p);
  }
  return 0;
}

/* A listener that speaks TLS needs the certificate; reported at the
 * listener, since that is the line the user will look at. */
static int check_listener_tls(struct config_parser *p) {
  static const char *const tls_modes[] = {"none", "starttls", "implicit"};
  struct config *config = p->config;
  for (size_t i = 0; i < config->listen_count; i++) {
    if (config->listen[i].tls != CONFIG_TLS_NONE && config->tls.certificate == NULL) {
      char path[64];
      snprintf(path, sizeof path, "$.listen[%zu]", i);
      return config_fail(
          p, path, "tls",
          "\"%s\" needs a certificate: set $.tls.certificate and $.tls.key",
          tls_modes[config->listen[i].tls]);
    }
  }
  return 0;
}

static bool is_module_name(const char *name) {
  size_t length = strlen(name);
  return length >= 1 && length <= CONFIG_MAX_MODULE_NAME && config_is_plain_key(name);
}

/* A module object: its name, and the decorator's `next`, recursively. The
 * other keys are the module's and are checked by config_check_module_keys()
 * once its descriptor is loaded. */
static int parse_module(struct config_parser *p, json_t *object, const char *path,
                        struct config_module *module) {
  module->json_path = strdup(path);
  if (module->json_path == NULL) {
    return config_fail_no_memory(p);
  }
  if (!json_is_object(object)) {
    return config_fail(
        p, path, NULL,
        "expected a module object such as {\"module\": \"maildir\", ...}, got %s",
        config_type_phrase(object));
  }
  int rc =
      config_require_key(p, object, path, "module", "the name of the module to load");
  if (rc < 0) {
    return rc;
  }
  const json_t *name = json_object_get(object, "module");
  const char *what = "a module name (1 to 64 characters of A-Z, a-z, 0-9, _ and -)";
  if (!json_is_string(name)) {
    return config_fail(p, path, "module", "expected %s, got %s", what,
                       config_type_phrase(name));
  }
  if (!is_module_name(json_string_value(name))) {
    char got[QUOTE_MAX_CHARS * 4 + 8];
    config_escape_text(json_string_value(name), true, got, sizeof got);
    return config_fail(p, path, "module", "expected %s, got \"%s\"", what, got);
  }
  module->name = strdup(json_string_value(name));
  if (module->name == NULL) {
    return config_fail_no_memory(p);
  }
  module->json = object;

  json_t *next = json_object_get(object, "next");
  if (next == NULL) {
    return 0;
  }
  size_t path_length = strlen(path);
  char *next_path = malloc(path_length + sizeof ".next");
  module->next = calloc(1, sizeof *module->next);
  if (next_path == NULL || module->next == NULL) {
    free(next_path);
    return config_fail_no_memory(p);
  }
  memcpy(next_path, path, path_length);
  memcpy(next_path + path_length, ".next", sizeof ".next");
  rc = parse_module(p, next, next_path, module->next);
  free(next_path);
  return rc;
}

static int parse_auth(struct config_parser *p, json_t *list) {
  const char *what = "a non-empty array of module objects such as "
                     "[{\"module\": \"passwd-file\", \"path\": \"users\"}]";
  if (!json_is_array(list)) {
    return config_fail(p, "$", "auth", "expected %s, got %s", what,
                       config_type_phrase(list));
  }
  size_t count = json_array_size(list);
  if (count == 0) {
    return config_fail(p, "$", "auth", "expected %s, got an empty array", what);
  }
  struct config *config = p->config;
  config->auth = calloc(count, sizeof *config->auth);
  if (config->auth == NULL) {
    return config_fail_no_memory(p);
  }
  config->auth_count = count;
  for (size_t i = 0; i < count; i++) {
    char path[64];
    snprintf(path, sizeof path, "$.auth[%zu]", i);
    int rc = parse_module(p, json_array_get(list, i), path, &config->auth[i]);
    if (rc < 0) {
      return rc;
    }
  }
  return 0;
}

/* Every numeric limit: its key, its range and where it lands. */
struct limit_key {
  const char *name;
  json_int_t min, max;
  size_t offset;
  bool is_size; /* size_t field; otherwise unsigned */
};

#define LIMIT_U(name, min, max)                                                          \
  { #name, min, max, offsetof(struct config_limits, name), false }
#define LIMIT_SZ(name, min, max)                                                         \
  { #name, min, max, offsetof(struct config_limits, name), true }

/* RFC 1939 section 3 says an autologout timer MUST be at least 10 minutes,
 * and 600 is the default. Smaller values are accepted when set explicitly,
 * because tests cannot wait 10 minutes; a production config with
 * idle_timeout_s under 600 breaks RFC 1939. A zero per-address or per-user
 * cap means no cap. */
static const struct limit_key limit_keys[] = {
    LIMIT_SZ(max_line_bytes, 512, 1048576),
    LIMIT_U(login_timeout_s, 1, 86400),
    LIMIT_U(idle_timeout_s, 1, 86400),
    LIMIT_U(max_bad_commands, 1, 1000),
    LIMIT_U(shutdown_timeout_s, 0, 3600),
    LIMIT_SZ(output_buffer_bytes, 4096, 16777216),
    LIMIT_U(max_connections, 1, 1000000),
    LIMIT_U(max_connections_per_ip, 0, 1000000),
    LIMIT_U(max_sessions_per_user, 0, 1000000),
    LIMIT_U(auth_failure_delay_ms, 0, 600000),
    LIMIT_U(auth_failure_delay_max_ms, 0, 3600000),
    LIMIT_U(auth_failure_forget_s, 1, 86400),
};

static int parse_limits(struct config_parser *p, const json_t *limits) {
  static const char *known[sizeof limit_keys / sizeof limit_keys[0] + 2];
  const size_t count = sizeof limit_keys / sizeof limit_keys[0];
  const char *path = "$.limits";
  struct config_limits *out = &p->config->limits;
  for (size_t i = 0; i < count; i++)
    known[i] = limit_keys[i].name;
  known[count] = "exempt_loopback";
  known[count + 1] = NULL;
  int rc;
  if ((rc = config_expect_object(p, limits, "$", "limits")) < 0 ||
      (rc = config_check_known_keys(p, limits, path, known)) < 0)
    return rc;
  for (size_t i = 0; i < count; i++) {
    const struct limit_key *k = &limit_keys[i];
    char *field = (char *)out + k->offset;
    json_int_t value = k->is_size ? (json_int_t) * (size_t *)field : *(unsigned *)field;
    if ((rc = config_get_integer(p, limits, path, k->name, k->min, k->max, &value)) < 0)
      return rc;
    if (k->is_size)
      *(size_t *)field = (size_t)value;
    else
      *(unsigned *)field = (unsigned)value;
  }
  if ((rc = config_get_boolean(p, limits, path, "exempt_loopback",
                               &out->exempt_loopback)) < 0)
    return rc;
  if (out->auth_failure_delay_max_ms < out->auth_failure_delay_ms)
    return config_fail(p, path, "auth_failure_delay_max_ms",
                       "must be at least auth_failure_delay_ms (%u)",
                       out->auth_failure_delay_ms);
  return 0;
}

static int parse_log(struct config_parser *p, const json_t *log) {
  static const char *const known[] = {"level", NULL};
  /* In the order of enum popkit_log_level. */
  static const char *const levels[] = {"debug", "info", "warning", "error", NULL};
  int level = (int)p->config->log_level;
  int rc;
  if ((rc = config_expect_object(p, log, "$", "log")) < 0 ||
      (rc = config_check_known_keys(p, log, "$.log", known)) < 0 ||
      (rc = config_get_enum(p, log, "$.log", "level", levels, &level)) < 0) {
    return rc;
  }
  p->config->log_level = (enum popkit_log_level)level;
  return 0;
}

/* The metrics endpoint; its address defaults to loopback so that turning it
 * on never exposes it to the network by accident. */
static int parse_metrics(struct config_parser *p, const json_t *metrics,
                         const struct binary_address *listen_binaries) {
  static const char *const known[] = {"address", "port", NULL};
  const char *path = "$.metrics";
  const char *address = "127.0.0.1";
  struct binary_address binary = {.family = AF_INET};
  json_int_t port = 0;
  int rc;
  inet_pton(AF_INET, address, binary.bytes);
  if ((rc = config_expect_object(p, metrics, "$", "metrics")) < 0 ||
      (rc = config_check_known_keys(p, metrics, path, known)) < 0 ||
      (rc = config_require_key(p, metrics, path, "port", "an integer from 1 to 65535")) <
          0 ||
      (rc = config_get_address(p, metrics, path, "address", &address, &binary)) < 0 ||
      (rc = config_get_integer(p, metrics, path, "port", 1, 65535, &port)) < 0) {
    return rc;
  }
  struct config *config = p->config;
  for (size_t i = 0; i < config->listen_count; i++) {
    if (config_same_socket(&binary, (int)port, &listen_binaries[i],
                           config->listen[i].port)) {
      return config_fail(
          p, path, NULL,
          "address %s port %lld is already used by $.listen[%zu]: give the "
          "metrics endpoint a port of its own",
          address, (long long)port, i);
    }
  }
  config->metrics.address = strdup(address);
  if (config->metrics.address == NULL) {
    return config_fail_no_memory(p);
  }
  config->metrics.port = (int)port;
  return 0;
}

static unsigned online_cpus(void) {
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  if (cpus < 1) {
    return 1;
  }
  return cpus > 256 ? 256 : (unsigned)cpus;
}

static void set_defaults(struct config *config) {
  config->workers = online_cpus();
  config->plaintext_auth = CONFIG_PLAINTEXT_TLS_OR_LOOPBACK;
  config->apop = false;
  config->log_level = POPKIT_LOG_INFO;
  config->limits = (struct config_limits){
      .max_line_bytes = 8192,
      .login_timeout_s = 60,
      .idle_timeout_s = 600,
      .max_bad_commands = 10,
      .shutdown_timeout_s = 30,
      .output_buffer_bytes = 65536,
      .max_connections = 10000,
      .max_connections_per_ip = 20,
      .max_sessions_per_user = 10,
      .auth_failure_delay_ms = 2000,
      .auth_failure_delay_max_ms = 15000,
      .auth_failure_forget_s = 900,
      .exempt_loopback = true,
  };
}

static int parse_root(struct config_parser *p, json_t *root) {
  static const char *const known[] = {"hostname", "modules_dir", "workers",        "user",
                                      "listen",   "tls",         "plaintext_auth", "apop",
                                      "auth",     "store",       "limits",         "log",
                                      "metrics",  NULL};
  static const char *const plaintext_modes[] = {"tls-or-loopback", "always", "tls-only",
                                                NULL};
  struct config *config = p->config;
  struct binary_address *listen_binaries = NULL;
  int rc;
  if (!json_is_object(root)) {
    return config_fail(p, "$", NULL, "expected the config object {...}, got %s",
                       config_type_phrase(root));
  }
  set_defaults(config);
  if ((rc = config_check_known_keys(p, root, "$", known)) < 0 ||
      (rc = config_require_key(p, root, "$", "listen",
                               "a non-empty array of {\"address\", \"port\"} objects")) <
          0 ||
      (rc = config_require_key(p, root, "$", "auth",
                               "a non-empty array of module objects")) < 0 ||
      (rc = config_require_key(p, root, "$", "store", "a module object")) < 0 ||
      (rc = parse_hostname(p, root)) < 0) {
    return rc;
  }

  const char *modules_dir = POPKIT_DEFAULT_MODULES_DIR;
  const char *user = NULL;
  json_int_t workers = config->workers;
  int plaintext_auth = (int)config->plaintext_auth;
  if ((rc = config_get_string(p, root, "$", "modules_dir", "a path (a non-empty string)",
                              &modules_dir)) < 0 ||
      (rc = config_get_integer(p, root, "$", "workers", 1, 256, &workers)) < 0 ||
      (rc = config_get_string(p, root, "$", "user", "a user name (a non-empty string)",
                              &user)) < 0 ||
      (rc = config_get_enum(p, root, "$", "plaintext_auth", plaintext_modes,
                            &plaintext_auth)) < 0 ||
      (rc = config_get_boolean(p, root, "$", "apop", &config->apop)) < 0) {
    return rc;
  }
  config->modules_dir = config_resolve_path(config, modules_dir);
  if (config->modules_dir == NULL ||
      (user != NULL && (config->user = strdup(user)) == NULL)) {
    return config_fail_no_memory(p);
  }
  config->workers = (unsigned)workers;
  config->plaintext_auth = (enum config_plaintext_auth)plaintext_auth;

  json_t *value;
  rc = parse_listeners(p, json_object_get(root, "listen"), &listen_binaries);
  if (rc == 0 && (value = json_object_get(root, "tls")) != NULL) {
    rc = parse_tls(p, value);
  }
  if (rc == 0) {
    rc = check_listener_tls(p);
  }
  if (rc == 0 && (value = json_object_get(root, "metrics")) != NULL) {
    rc = parse_metrics(p, value, listen_binaries);
  }
  free(listen_binaries);
  if (rc < 0) {
    return rc;
  }
  if ((rc = parse_auth(p, json_object_get(root, "auth"))) < 0 ||
      (rc = parse_module(p, json_object_get(root, "store"), "$.store", &config->store)) <
          0) {
    return rc;
  }
  if ((value = json_object_get(root, "limits")) != NULL &&
      (rc = parse_limits(p, value)) < 0) {
    return rc;
  }
  if ((value = json_object_get(root, "log")) != NULL && (rc = parse_log(p, value)) < 0) {
    return rc;
  }
  return 0;
}

/* ---- Loading ------------------------------------------------------------- */

/* Parses text (length bytes) into a new config that takes base_dir over. */
static int load_text(const char *text, size_t length, const char *name, char *base_dir,
                     struct config **config_r, char *error, size_t error_size) {
  *config_r = NULL;
  struct config *config = calloc(1, sizeof *config);
  struct config_parser p = {
      .name = name, .error = error, .error_size = error_size, .config = config};
  if (config == NULL) {
    free(base_dir);
    return config_fail_no_memory(&p);
  }
  config->base_dir = base_dir;
  config->file = strdup(name);
  if (config->file == NULL) {
    config_free(config);
    return config_fail_no_memory(&p);
  }
  json_error_t json_error;
  config->root = json_loadb(text, length, JSON_REJECT_DUPLICATES, &json_error);
  if (config->root == NULL) {
    char escaped[sizeof json_error.text * 4];
    config_escape_text(json_error.text, false, escaped, sizeof escaped);
    snprintf(error, error_size, "%s:%d:%d: %s", name, json_error.line, json_error.column,
             escaped);
    config_free(config);
    return -EINVAL;
  }
  int rc = parse_root(&p, config->root);
  if (rc < 0) {
    config_free(config);
    return rc;
  }
  *config_r = config;
  return 0;
}

/* Reads a whole file; returns 0 or a negative errno code. */
static int read_file(const char *file, char **text_r, size_t *length_r) {
  int fd = open(file, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return -errno;
  }
  size_t capacity = 4096;
  size_t length = 0;
  char *text = malloc(capacity);
  int rc = text ? 0 : -ENOMEM;
  while (rc == 0) {
    if (length == capacity) {
      char *bigger =
          capacity < CONFIG_MAX_FILE_BYTES ? realloc(text, capacity * 2) : NULL;
      if (bigger == NULL) {
        rc = capacity < CONFIG_MAX_FILE_BYTES ? -ENOMEM : -EFBIG;
        break;
      }
      text = bigger;
      capacity *= 2;
    }
    ssize_t n = read(fd, text + length, capacity - length);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      rc = -errno;
    } else if (n == 0) {
      break;
    } else {
      length += (size_t)n;
    }
  }
  close(fd);
  if (rc < 0) {
    free(text);
    return rc;
  }
  *text_r = text;
  *length_r = length;
  return 0;
}

/* The absolute directory of file, or NULL with errno set. */
static char *absolute_dirname(const char *file) {
  const char *slash = strrchr(file, '/');
  if (slash == NULL) {
    return realpath(".", NULL);
  }
  size_t length = slash == file ? 1 : (size_t)(slash - file);
  char *directory = strndup(file, length);
  if (directory == NULL) {
    return NULL;
  }
  char *absolute = realpath(directory, NULL);
  free(directory);
  return absolute;
}

int config_load(const char *file, struct config **config_r, char *error,
                size_t error_size) {
  *config_r = NULL;
  char *text = NULL;
  size_t length = 0;
  int rc = read_file(file, &text, &length);
  if (rc == -EFBIG) {
    snprintf(error, error_size,
             "%s: cannot read the config file: it is larger than %u MiB", file,
             CONFIG_MAX_FILE_BYTES >> 20);
    return rc;
  }
  if (rc < 0) {
    snprintf(error, error_size, "%s: cannot read the config file: %s", file,
             strerror(-rc));
    return rc;
  }
  char *base_dir = absolute_dirname(file);
  if (base_dir == NULL) {
    rc = -errno;
    snprintf(error, error_size, "%s: cannot find the config file's directory: %s", file,
             strerror(errno));
    free(text);
    return rc;
  }
  rc = load_text(text, length, file, base_dir, config_r, error, error_size);
  free(text);
  return rc;
}

int config_load_string(const char *text, const char *name, const char *base_dir,
                       struct config **config_r, char *error, size_t error_size) {
  *config_r = NULL;
  char *base_dir_copy = base_dir ? strdup(base_dir) : getcwd(NULL, 0);
  if (base_dir_copy == NULL) {
    int code = errno;
    snprintf(error, error_size, "%s: cannot find the base directory: %s", name,
             strerror(code));
    return -code;
  }
  return load_text(text, strlen(text), name, base_dir_copy, config_r, error, error_size);
}

static void free_module(struct config_module *module) {
  if (module == NULL) {
    return;
  }
  free_module(module->next);
  free(module->next);
  free(module->name);
  free(module->json_path);
}

void config_free(struct config *config) {
  if (config == NULL) {
    return;
  }
  for (size_t i = 0; i < config->listen_count; i++) {
    free(config->listen[i].address);
  }
  free(config->listen);
  for (size_t i = 0; i < config->auth_count; i++) {
    free_module(&config->auth[i]);
  }
  free(config->auth);
  free_module(&config->store);
  free(config->hostname);
  free(config->modules_dir);
  free(config->user);
  free(config->tls.certificate);
  free(config->tls.key);
  free(config->tls.priorities);
  free(config->metrics.address);
  json_decref(config->root);
  free(config->file);
  free(config->base_dir);
  free(config);
}

/* ---- Module keys and paths ----------------------------------------------- */

static int check_module_value(struct config_parser *p, const struct config_module *module,
                              const char *key, const json_t *value, uint32_t type) {
  switch (type) {
  case POPKIT_CONFIG_STRING:
    if (!json_is_string(value)) {
      return config_fail(p, module->json_path, key, "expected a string, got %s",
                         config_type_phrase(value));
    }
    return 0;
  case POPKIT_CONFIG_PATH:
    if (!json_is_string(value)) {
      return config_fail(p, module->json_path, key,
                         "expected a path (a non-empty string), got %s",
                         config_type_phrase(value));
    }
    if (json_string_length(value) == 0) {
      return config_fail(p, module->json_path, key,
                         "expected a path (a non-empty string), got an empty string");
    }
    return 0;
  case POPKIT_CONFIG_INTEGER:
    if (!json_is_integer(value)) {
      return config_fail(p, module->json_path, key, "expected an integer, got %s",
                         config_type_phrase(value));
    }
    return 0;
  case POPKIT_CONFIG_BOOLEAN:
    if (!json_is_boolean(value)) {
      return config_fail(p, module->json_path, key, "expected true or false, got %s",
                         config_type_phrase(value));
    }
    return 0;
  }
  /* A broken descriptor, not a user mistake, but the user is the one who
   * has to hear about it. */
  return config_fail(
      p, module->json_path, key,
      "module %s declares this key with an unknown type %u: the module is broken, "
      "rebuild it against this popkitd's include/popkit",
      module->name, (unsigned)type);
}

int config_check_module_keys(const struct config *config,
                             const struct config_module *module,
                             const struct popkit_config_key *keys, char *error,
                             size_t error_size) {
  struct config_parser p = {.name = config && config->file ? config->file : "config",
                            .error = error,
                            .error_size = error_size};
  const char *key;
  json_t *value;
  json_object_foreach(module->json, key, value) {
    if (strcmp(key, "module") == 0 || strcmp(key, "next") == 0) {
      continue;
    }
    const struct popkit_config_key *declared = NULL;
    for (size_t i = 0; keys != NULL && keys[i].name != NULL; i++) {
      if (strcmp(keys[i].name, key) == 0) {
        declared = &keys[i];
        break;
      }
    }
    if (declared == NULL) {
      char list[512] = "";
      size_t used = 0;
      for (size_t i = 0; keys != NULL && keys[i].name != NULL && used < sizeof list;
           i++) {
        int n = snprintf(list + used, sizeof list - used, "%s%s", used ? ", " : "",
                         keys[i].name);
        used += n > 0 ? (size_t)n : 0;
      }
      if (list[0] == '\0') {
        return config_fail(
            &p, module->json_path, key,
            "unknown key for module %s (it takes no settings besides \"module\")",
            module->name);
      }
      return config_fail(&p, module->json_path, key,
                         "unknown key for module %s (known: %s)", module->name, list);
    }
    int rc = check_module_value(&p, module, key, value, declared->type);
    if (rc < 0) {
      return rc;
    }
  }
  for (size_t i = 0; keys != NULL && keys[i].name != NULL; i++) {
    if (keys[i].required && json_object_get(module->json, keys[i].name) == NULL) {
      return config_fail(&p, module->json_path, NULL, "module %s needs the key \"%s\"",
                         module->name, keys[i].name);
    }
  }
  return 0;
}

char *config_resolve_path(const struct config *config, const char *path) {
  if (path[0] == '/' || config->base_dir == NULL) {
    return strdup(path);
  }
  const char *base = config->base_dir;
  size_t base_length = strlen(base);
  if (path[0] == '\0') {
    return strdup(base);
  }
  bool needs_slash = base_length == 0 || base[base_length - 1] != '/';
  size_t path_length = strlen(path);
  char *joined = malloc(base_length + needs_slash + path_length + 1);
  if (joined == NULL) {
    return NULL;
  }
  memcpy(joined, base, base_length);
  if (needs_slash) {
    joined[base_length] = '/';
  }
  memcpy(joined + base_length + needs_slash, path, path_length + 1);
  return joined;
}
