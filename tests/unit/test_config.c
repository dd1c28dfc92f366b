/*
 * Tests of core/config.c: what an operator sees when the config is right
 * (every default, every key) and when it is wrong (the exact one-line
 * message, naming the file and the line:column or the JSON path).
 *
 * JSON in this file is written with single quotes for readability; load()
 * and expect_error() turn them into double quotes before parsing.
 */
#include <check.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check_run.h"
#include "config.h"

#define LISTEN "'listen': [{'address': '127.0.0.1', 'port': 1100}]"
#define AUTH "'auth': [{'module': 'passwd-file', 'path': 'users'}]"
#define STORE "'store': {'module': 'maildir', 'path': 'mail/%u'}"
#define MINIMAL LISTEN ", " AUTH ", " STORE

#define BASE_DIR "/etc/popkit"

static char error[2048];

/* A copy of text with every ' turned into ". */
static char *unquote(const char *text) {
  char *copy = strdup(text);
  ck_assert_ptr_nonnull(copy);
  for (char *c = copy; *c; c++) {
    if (*c == '\'') {
      *c = '"';
    }
  }
  return copy;
}

static int load_rc(const char *quoted, struct config **config_r) {
  char *text = unquote(quoted);
  error[0] = '\0';
  int rc = config_load_string(text, "test.json", BASE_DIR, config_r, error, sizeof error);
  free(text);
  return rc;
}

/* Loads a config that must be valid. */
static struct config *load(const char *quoted) {
  struct config *config = NULL;
  int rc = load_rc(quoted, &config);
  ck_assert_msg(rc == 0, "config refused (%d): %s", rc, error);
  ck_assert_ptr_nonnull(config);
  return config;
}

/* Loads a config that must be refused with exactly `expected`, one line. */
static void expect_exact_error(const char *quoted, const char *expected) {
  struct config *config = (struct config *)1;
  int rc = load_rc(quoted, &config);
  ck_assert_int_eq(rc, -EINVAL);
  ck_assert_ptr_null(config);
  ck_assert_str_eq(error, expected);
  ck_assert_ptr_null(strchr(error, '\n'));
}

/* The same, with the quotes of `expected` converted too. */
static void expect_error(const char *quoted, const char *expected) {
  char *want = unquote(expected);
  expect_exact_error(quoted, want);
  free(want);
}

/* The path of a file in the checked-in config/ directory, found from this
 * source file's path so the test reads the real files wherever the build
 * directory is. */
static void config_dir_path(const char *file, char *out, size_t out_size) {
  const char *suffix = "tests/unit/test_config.c";
  const char *source = __FILE__;
  size_t length = strlen(source);
  ck_assert_msg(length >= strlen(suffix) &&
                    strcmp(source + length - strlen(suffix), suffix) == 0,
                "__FILE__ is %s", source);
  int root_length = (int)(length - strlen(suffix));
  int n = snprintf(out, out_size, "%.*sconfig/%s", root_length, source, file);
  ck_assert(n > 0 && (size_t)n < out_size);
}

/* ---- Valid configs ------------------------------------------------------- */

START_TEST(minimal_config_gets_every_default) {
  struct config *config = load("{" MINIMAL "}");
  char hostname[HOST_NAME_MAX + 1] = "";
  gethostname(hostname, sizeof hostname - 1);
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);

  ck_assert_str_eq(config->file, "test.json");
  ck_assert_str_eq(config->base_dir, BASE_DIR);
  ck_assert_str_eq(config->hostname, hostname);
  ck_assert_str_eq(config->modules_dir, POPKIT_DEFAULT_MODULES_DIR);
  ck_assert_uint_eq(config->workers, cpus > 256 ? 256 : (unsigned)cpus);
  ck_assert_ptr_null(config->user);
  ck_assert_uint_eq(config->listen_count, 1);
  ck_assert_str_eq(config->listen[0].address, "127.0.0.1");
  ck_assert_int_eq(config->listen[0].port, 1100);
  ck_assert_int_eq(config->listen[0].tls, CONFIG_TLS_NONE);
  ck_assert(!config->listen[0].proxy_protocol);
  ck_assert_ptr_null(config->tls.certificate);
  ck_assert_ptr_null(config->tls.key);
  ck_assert_ptr_null(config->tls.priorities);
  ck_assert_int_eq(config->plaintext_auth, CONFIG_PLAINTEXT_TLS_OR_LOOPBACK);
  ck_assert(!config->apop);
  ck_assert_uint_eq(config->auth_count, 1);
  ck_assert_str_eq(config->auth[0].name, "passwd-file");
  ck_assert_str_eq(config->auth[0].json_path, "$.auth[0]");
  ck_assert_str_eq(json_string_value(json_object_get(config->auth[0].json, "path")),
                   "users");
  ck_assert_ptr_null(config->auth[0].next);
  ck_assert_str_eq(config->store.name, "maildir");
  ck_assert_str_eq(config->store.json_path, "$.store");
  ck_assert_ptr_null(config->store.next);
  ck_assert_uint_eq(config->limits.max_line_bytes, 8192);
  ck_assert_uint_eq(config->limits.login_timeout_s, 60);
  ck_assert_uint_eq(config->limits.idle_timeout_s, 600);
  ck_assert_uint_eq(config->limits.max_bad_commands, 10);
  ck_assert_uint_eq(config->limits.shutdown_timeout_s, 30);
  ck_assert_uint_eq(config->limits.output_buffer_bytes, 65536);
  ck_assert_uint_eq(config->limits.max_connections, 10000);
  ck_assert_uint_eq(config->limits.max_connections_per_ip, 20);
  ck_assert_uint_eq(config->limits.max_sessions_per_user, 10);
  ck_assert_uint_eq(config->limits.auth_failure_delay_ms, 2000);
  ck_assert_uint_eq(config->limits.auth_failure_delay_max_ms, 15000);
  ck_assert_uint_eq(config->limits.auth_failure_forget_s, 900);
  ck_assert(config->limits.exempt_loopback);
  ck_assert_int_eq(config->log_level, POPKIT_LOG_INFO);
  ck_assert_ptr_null(config->metrics.address);
  ck_assert_int_eq(config->metrics.port, 0);
  config_free(config);
}
END_TEST

START_TEST(every_key_is_read) {
  struct config *config = load(
      "{'hostname': 'pop.example.org', 'modules_dir': '/opt/popkit/modules', 'workers': "
      "3,"
      " 'user': 'popkit',"
      " 'listen': [{'address': '0.0.0.0', 'port': 110, 'tls': 'starttls'},"
      "            {'address': '::', 'port': 995, 'tls': 'implicit', 'proxy_protocol': "
      "true},"
      "            {'address': '::1', 'port': 110, 'tls': 'none', 'proxy_protocol': "
      "false}],"
      " 'tls': {'certificate': '/etc/ssl/pop.pem', 'key': 'pop.key', 'priorities': "
      "'SECURE128'},"
      " 'plaintext_auth': 'tls-only', 'apop': true,"
      " 'auth': [{'module': 'ldap-auth', 'uri': 'ldap://127.0.0.1'}, {'module': "
      "'passwd-file'}],"
      " 'store': {'module': 'redis-cache', 'next': {'module': 'postgres'}},"
      " 'limits': {'max_line_bytes': 512, 'login_timeout_s': 1, 'idle_timeout_s': 86400,"
      "            'max_bad_commands': 1000, 'shutdown_timeout_s': 0,"
      "            'output_buffer_bytes': 16777216, 'max_connections': 1000000},"
      " 'log': {'level': 'debug'}, 'metrics': {'address': '::1', 'port': 9110}}");
  ck_assert_str_eq(config->hostname, "pop.example.org");
  ck_assert_str_eq(config->modules_dir, "/opt/popkit/modules");
  ck_assert_uint_eq(config->workers, 3);
  ck_assert_str_eq(config->user, "popkit");
  ck_assert_uint_eq(config->listen_count, 3);
  ck_assert_str_eq(config->listen[0].address, "0.0.0.0");
  ck_assert_int_eq(config->listen[0].port, 110);
  ck_assert_int_eq(config->listen[0].tls, CONFIG_TLS_STARTTLS);
  ck_assert(!config->listen[0].proxy_protocol);
  ck_assert_str_eq(config->listen[1].address, "::");
  ck_assert_int_eq(config->listen[1].port, 995);
  ck_assert_int_eq(config->listen[1].tls, CONFIG_TLS_IMPLICIT);
  ck_assert(config->listen[1].proxy_protocol);
  ck_assert_int_eq(config->listen[2].tls, CONFIG_TLS_NONE);
  ck_assert_str_eq(config->tls.certificate, "/etc/ssl/pop.pem");
  ck_assert_str_eq(config->tls.key, BASE_DIR "/pop.key");
  ck_assert_str_eq(config->tls.priorities, "SECURE128");
  ck_assert_int_eq(config->plaintext_auth, CONFIG_PLAINTEXT_TLS_ONLY);
  ck_assert(config->apop);
  ck_assert_uint_eq(config->auth_count, 2);
  ck_assert_str_eq(config->auth[0].name, "ldap-auth");
  ck_assert_str_eq(config->auth[1].name, "passwd-file");
  ck_assert_str_eq(config->auth[1].json_path, "$.auth[1]");
  ck_assert_str_eq(config->store.name, "redis-cache");
  ck_assert_ptr_nonnull(config->store.next);
  ck_assert_str_eq(config->store.next->name, "postgres");
  ck_assert_uint_eq(config->limits.max_line_bytes, 512);
  ck_assert_uint_eq(config->limits.login_timeout_s, 1);
  ck_assert_uint_eq(config->limits.idle_timeout_s, 86400);
  ck_assert_uint_eq(config->limits.max_bad_commands, 1000);
  ck_assert_uint_eq(config->limits.shutdown_timeout_s, 0);
  ck_assert_uint_eq(config->limits.output_buffer_bytes, 16777216);
  ck_assert_uint_eq(config->limits.max_connections, 1000000);
  ck_assert_int_eq(config->log_level, POPKIT_LOG_DEBUG);
  ck_assert_str_eq(config->metrics.address, "::1");
  ck_assert_int_eq(config->metrics.port, 9110);
  config_free(config);
}
END_TEST

/* RFC 1939 wants at least 10 minutes, but an explicit smaller value is
 * allowed so that tests need not wait; 0 would mean "log out at once". */
START_TEST(idle_timeout_below_rfc_minimum_is_allowed_when_explicit) {
  struct config *config = load("{" MINIMAL ", 'limits': {'idle_timeout_s': 1}}");
  ck_assert_uint_eq(config->limits.idle_timeout_s, 1);
  config_free(config);
  expect_error("{" MINIMAL ", 'limits': {'idle_timeout_s': 0}}",
               "test.json: $.limits.idle_timeout_s: expected an integer from 1 to 86400, "
               "got 0");
}
END_TEST

START_TEST(enum_values_all_parse) {
  static const struct {
    const char *level;
    enum popkit_log_level value;
  } levels[] = {{"debug", POPKIT_LOG_DEBUG},
                {"info", POPKIT_LOG_INFO},
                {"warning", POPKIT_LOG_WARNING},
                {"error", POPKIT_LOG_ERROR}};
  for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++) {
    char text[512];
    snprintf(text, sizeof text, "{%s, 'log': {'level': '%s'}}", MINIMAL, levels[i].level);
    struct config *config = load(text);
    ck_assert_int_eq(config->log_level, levels[i].value);
    config_free(config);
  }
  static const struct {
    const char *mode;
    enum config_plaintext_auth value;
  } modes[] = {{"tls-or-loopback", CONFIG_PLAINTEXT_TLS_OR_LOOPBACK},
               {"always", CONFIG_PLAINTEXT_ALWAYS},
               {"tls-only", CONFIG_PLAINTEXT_TLS_ONLY}};
  for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
    char text[512];
    snprintf(text, sizeof text, "{%s, 'plaintext_auth': '%s'}", MINIMAL, modes[i].mode);
    struct config *config = load(text);
    ck_assert_int_eq(config->plaintext_auth, modes[i].value);
    config_free(config);
  }
}
END_TEST

START_TEST(metrics_address_defaults_to_loopback) {
  struct config *config = load("{" MINIMAL ", 'metrics': {'port': 9110}}");
  ck_assert_str_eq(config->metrics.address, "127.0.0.1");
  ck_assert_int_eq(config->metrics.port, 9110);
  config_free(config);
}
END_TEST

/* ---- Schema errors, each with its exact message -------------------------- */

struct bad_config {
  const char *text;
  const char *message;
};

static const struct bad_config bad_configs[] = {
    /* Wrong types and ranges at the top level. */
    {"[]", "test.json: $: expected the config object {...}, got an array"},
    {"{" MINIMAL ", 'hostname': 7}", "test.json: $.hostname: expected a host name (1 to "
                                     "255 printable ASCII characters, no "
                                     "spaces), got an integer"},
    {"{" MINIMAL ", 'hostname': 'pop example'}",
     "test.json: $.hostname: expected a host name (1 to 255 printable ASCII characters, "
     "no "
     "spaces), got 'pop example'"},
    {"{" MINIMAL ", 'hostname': ''}", "test.json: $.hostname: expected a host name (1 to "
                                      "255 printable ASCII characters, no "
                                      "spaces), got an empty string"},
    {"{" MINIMAL ", 'modules_dir': false}",
     "test.json: $.modules_dir: expected a path (a non-empty string), got false"},
    {"{" MINIMAL ", 'workers': 0}",
     "test.json: $.workers: expected an integer from 1 to 256, got 0"},
    {"{" MINIMAL ", 'workers': 257}",
     "test.json: $.workers: expected an integer from 1 to 256, got 257"},
    {"{" MINIMAL ", 'workers': 2.5}", "test.json: $.workers: expected an integer from 1 "
                                      "to 256, got a number with a fraction "
                                      "or exponent"},
    {"{" MINIMAL ", 'workers': '2'}",
     "test.json: $.workers: expected an integer from 1 to 256, got a string"},
    {"{" MINIMAL ", 'user': null}",
     "test.json: $.user: expected a user name (a non-empty string), got null"},
    {"{" MINIMAL ", 'apop': 'yes'}",
     "test.json: $.apop: expected true or false, got a string"},
    {"{" MINIMAL ", 'tls': []}", "test.json: $.tls: expected an object, got an array"},
    {"{" MINIMAL ", 'tls': {'certificate': 1, 'key': 'k'}}",
     "test.json: $.tls.certificate: expected a path (a non-empty string), got an "
     "integer"},
    {"{" MINIMAL ", 'tls': {'certificate': 'c', 'key': ''}}",
     "test.json: $.tls.key: expected a path (a non-empty string), got an empty string"},
    {"{" MINIMAL ", 'tls': {'certificate': 'c'}}",
     "test.json: $.tls: 'certificate' and 'key' go together: add 'key', the private key "
     "of "
     "the certificate"},
    {"{" MINIMAL ", 'tls': {'key': 'k'}}",
     "test.json: $.tls: 'certificate' and 'key' go together: add 'certificate', the "
     "certificate chain of the server"},
    {"{" MINIMAL ", 'log': 'debug'}",
     "test.json: $.log: expected an object, got a string"},
    {"{" MINIMAL ", 'limits': 5}",
     "test.json: $.limits: expected an object, got an integer"},
    /* Limits, each at both ends. */
    {"{" MINIMAL ", 'limits': {'idle_timeout_s': 'x'}}",
     "test.json: $.limits.idle_timeout_s: expected an integer from 1 to 86400, got a "
     "string"},
    {"{" MINIMAL ", 'limits': {'idle_timeout_s': 86401}}",
     "test.json: $.limits.idle_timeout_s: expected an integer from 1 to 86400, got "
     "86401"},
    {"{" MINIMAL ", 'limits': {'max_line_bytes': 511}}",
     "test.json: $.limits.max_line_bytes: expected an integer from 512 to 1048576, got "
     "511"},
    {"{" MINIMAL ", 'limits': {'max_line_bytes': 1048577}}",
     "test.json: $.limits.max_line_bytes: expected an integer from 512 to 1048576, got "
     "1048577"},
    {"{" MINIMAL ", 'limits': {'login_timeout_s': 0}}",
     "test.json: $.limits.login_timeout_s: expected an integer from 1 to 86400, got 0"},
    {"{" MINIMAL ", 'limits': {'max_bad_commands': 1001}}",
     "test.json: $.limits.max_bad_commands: expected an integer from 1 to 1000, got "
     "1001"},
    {"{" MINIMAL ", 'limits': {'shutdown_timeout_s': -1}}",
     "test.json: $.limits.shutdown_timeout_s: expected an integer from 0 to 3600, got "
     "-1"},
    {"{" MINIMAL ", 'limits': {'output_buffer_bytes': 4095}}",
     "test.json: $.limits.output_buffer_bytes: expected an integer from 4096 to "
     "16777216, "
     "got 4095"},
    {"{" MINIMAL ", 'limits': {'max_connections': 0}}",
     "test.json: $.limits.max_connections: expected an integer from 1 to 1000000, got 0"},
    {"{" MINIMAL ", 'limits': {'auth_failure_delay_ms': 5000,"
     " 'auth_failure_delay_max_ms': 100}}",
     "test.json: $.limits.auth_failure_delay_max_ms: must be at least "
     "auth_failure_delay_ms (5000)"},
    {"{" MINIMAL ", 'limits': {'exempt_loopback': 1}}",
     "test.json: $.limits.exempt_loopback: expected true or false, got an integer"},
    {"{" MINIMAL ", 'limits': {'max_connections': 99999999999999999}}",
     "test.json: $.limits.max_connections: expected an integer from 1 to 1000000, got "
     "99999999999999999"},
    /* Unknown keys at every level, with the list of known ones. */
    {"{" MINIMAL ", 'listen_on': 1}",
     "test.json: $.listen_on: unknown key (known: hostname, modules_dir, workers, user, "
     "listen, tls, plaintext_auth, apop, auth, store, limits, log, metrics)"},
    {"{" MINIMAL ", 'limits': {'idle_timeot_s': 600}}",
     "test.json: $.limits.idle_timeot_s: unknown key (known: max_line_bytes, "
     "login_timeout_s, idle_timeout_s, max_bad_commands, shutdown_timeout_s, "
     "output_buffer_bytes, max_connections, max_connections_per_ip, "
     "max_sessions_per_user, "
     "auth_failure_delay_ms, auth_failure_delay_max_ms, auth_failure_forget_s, "
     "exempt_loopback)"},
    {"{" AUTH ", " STORE ", 'listen': [{'address': '::1', 'port': 1, 'ssl': true}]}",
     "test.json: $.listen[0].ssl: unknown key (known: address, port, tls, "
     "proxy_protocol)"},
    {"{" MINIMAL ", 'tls': {'cert': 'c'}}",
     "test.json: $.tls.cert: unknown key (known: certificate, key, priorities)"},
    {"{" MINIMAL ", 'log': {'file': 'x'}}",
     "test.json: $.log.file: unknown key (known: level)"},
    {"{" MINIMAL ", 'metrics': {'port': 1, 'path': '/'}}",
     "test.json: $.metrics.path: unknown key (known: address, port)"},
    /* A key that is not an identifier is quoted, and a control character in
     * it is escaped so the message stays on one line. */
    {"{" MINIMAL ", 'bad key\\n': 1}",
     "test.json: $['bad key\\x0a']: unknown key (known: hostname, modules_dir, workers, "
     "user, listen, tls, plaintext_auth, apop, auth, store, limits, log, metrics)"},
    /* Enums list their allowed values. */
    {"{" MINIMAL ", 'plaintext_auth': 'never'}",
     "test.json: $.plaintext_auth: expected one of 'tls-or-loopback', 'always', "
     "'tls-only', "
     "got 'never'"},
    {"{" MINIMAL ", 'plaintext_auth': true}",
     "test.json: $.plaintext_auth: expected one of 'tls-or-loopback', 'always', "
     "'tls-only', "
     "got true"},
    {"{" MINIMAL ", 'log': {'level': 'verbose'}}",
     "test.json: $.log.level: expected one of 'debug', 'info', 'warning', 'error', got "
     "'verbose'"},
    {"{" AUTH ", " STORE ", 'listen': [{'address': '::1', 'port': 995, 'tls': 'ssl'}]}",
     "test.json: $.listen[0].tls: expected one of 'none', 'starttls', 'implicit', got "
     "'ssl'"},
    /* Required keys. */
    {"{" AUTH ", " STORE "}",
     "test.json: $: missing the required key 'listen' (a non-empty array of {'address', "
     "'port'} objects)"},
    {"{" LISTEN ", " STORE "}", "test.json: $: missing the required key 'auth' (a "
                                "non-empty array of module objects)"},
    {"{" LISTEN ", " AUTH "}",
     "test.json: $: missing the required key 'store' (a module object)"},
    /* Listeners. */
    {"{" AUTH ", " STORE ", 'listen': []}",
     "test.json: $.listen: expected a non-empty array of listeners such as [{'address': "
     "'127.0.0.1', 'port': 110}], got an empty array"},
    {"{" AUTH ", " STORE ", 'listen': {'address': '::1', 'port': 110}}",
     "test.json: $.listen: expected a non-empty array of listeners such as [{'address': "
     "'127.0.0.1', 'port': 110}], got an object"},
    {"{" AUTH ", " STORE ", 'listen': ['127.0.0.1:110']}",
     "test.json: $.listen[0]: expected an object, got a string"},
    {"{" AUTH ", " STORE ", 'listen': [{'port': 110}]}",
     "test.json: $.listen[0]: missing the required key 'address' (a numeric IP address "
     "such "
     "as 127.0.0.1 or ::1)"},
    {"{" AUTH ", " STORE ", 'listen': [{'address': '::1'}]}",
     "test.json: $.listen[0]: missing the required key 'port' (an integer from 1 to "
     "65535)"},
    {"{" AUTH ", " STORE ", 'listen': [{'address': '::1', 'port': 0}]}",
     "test.json: $.listen[0].port: expected an integer from 1 to 65535, got 0"},
    {"{" AUTH ", " STORE ", 'listen': [{'address': '::1', 'port': 65536}]}",
     "test.json: $.listen[0].port: expected an integer from 1 to 65535, got 65536"},
    {"{" AUTH ", " STORE
     ", 'listen': [{'address': '::1', 'port': 1, 'proxy_protocol': 1}]}",
     "test.json: $.listen[0].proxy_protocol: expected true or false, got an integer"},
    {"{" AUTH ", " STORE ", 'listen': [{'address': 'localhost', 'port': 110}]}",
     "test.json: $.listen[0].address: expected a numeric IP address, got 'localhost': "
     "write "
     "127.0.0.1 or ::1 (popkitd does not resolve host names)"},
    {"{" AUTH ", " STORE ", 'listen': [{'address': 'pop.example.org', 'port': 110}]}",
     "test.json: $.listen[0].address: expected a numeric IPv4 or IPv6 address such as "
     "127.0.0.1 or ::1, got 'pop.example.org' (popkitd does not resolve host names)"},
    {"{" AUTH ", " STORE ", 'listen': [{'address': '[::1]', 'port': 110}]}",
     "test.json: $.listen[0].address: expected a numeric IPv4 or IPv6 address such as "
     "127.0.0.1 or ::1, got '[::1]' (popkitd does not resolve host names)"},
    {"{" AUTH ", " STORE ", 'listen': [{'address': 2130706433, 'port': 110}]}",
     "test.json: $.listen[0].address: expected a numeric IPv4 or IPv6 address such as "
     "127.0.0.1 or ::1, got an integer"},
    {"{" AUTH ", " STORE ", 'listen': [{'address': '::1', 'port': 110}, {'address': "
     "'127.0.0.1', 'port': 110},"
     " {'address': '::1', 'port': 110}]}",
     "test.json: $.listen[2]: address ::1 port 110 is already listed at $.listen[0]: "
     "each "
     "address and port can be listened on once"},
    /* The same socket however the address is spelled. */
    {"{" AUTH ", " STORE ", 'listen': [{'address': '::1', 'port': 110}, {'address': "
     "'0:0:0:0:0:0:0:1', 'port': "
     "110}]}",
     "test.json: $.listen[1]: address 0:0:0:0:0:0:0:1 port 110 is already listed at "
     "$.listen[0]: each address and port can be listened on once"},
    {"{" AUTH ", " STORE ", 'listen': [{'address': '::1', 'port': 110}, {'address': "
     "'::1', 'port': 995, 'tls': "
     "'implicit'}]}",
     "test.json: $.listen[1].tls: 'implicit' needs a certificate: set $.tls.certificate "
     "and "
     "$.tls.key"},
    {"{" AUTH ", " STORE
     ", 'listen': [{'address': '::1', 'port': 110, 'tls': 'starttls'}], 'tls': "
     "{'priorities': 'NORMAL'}}",
     "test.json: $.listen[0].tls: 'starttls' needs a certificate: set $.tls.certificate "
     "and "
     "$.tls.key"},
    /* Metrics. */
    {"{" MINIMAL ", 'metrics': {'address': '127.0.0.1'}}",
     "test.json: $.metrics: missing the required key 'port' (an integer from 1 to "
     "65535)"},
    {"{" MINIMAL ", 'metrics': {'address': 'localhost', 'port': 9110}}",
     "test.json: $.metrics.address: expected a numeric IP address, got 'localhost': "
     "write "
     "127.0.0.1 or ::1 (popkitd does not resolve host names)"},
    {"{" MINIMAL ", 'metrics': {'port': 1100}}",
     "test.json: $.metrics: address 127.0.0.1 port 1100 is already used by $.listen[0]: "
     "give "
     "the metrics endpoint a port of its own"},
    /* Module objects: the name is checked, the rest waits for the module. */
    {"{" LISTEN ", " STORE ", 'auth': []}",
     "test.json: $.auth: expected a non-empty array of module objects such as "
     "[{'module': "
     "'passwd-file', 'path': 'users'}], got an empty array"},
    {"{" LISTEN ", " STORE ", 'auth': {'module': 'passwd-file'}}",
     "test.json: $.auth: expected a non-empty array of module objects such as "
     "[{'module': "
     "'passwd-file', 'path': 'users'}], got an object"},
    {"{" LISTEN ", " STORE ", 'auth': ['passwd-file']}",
     "test.json: $.auth[0]: expected a module object such as {'module': 'maildir', ...}, "
     "got "
     "a string"},
    {"{" LISTEN ", " STORE ", 'auth': [{'module': 'passwd-file'}, {'path': 'users'}]}",
     "test.json: $.auth[1]: missing the required key 'module' (the name of the module to "
     "load)"},
    {"{" LISTEN ", " STORE ", 'auth': [{'module': ''}]}",
     "test.json: $.auth[0].module: expected a module name (1 to 64 characters of A-Z, "
     "a-z, "
     "0-9, _ and -), got ''"},
    {"{" LISTEN ", " STORE ", 'auth': [{'module': '../x'}]}",
     "test.json: $.auth[0].module: expected a module name (1 to 64 characters of A-Z, "
     "a-z, "
     "0-9, _ and -), got '../x'"},
    {"{" LISTEN ", " STORE ", 'auth': [{'module': 'a/b'}]}",
     "test.json: $.auth[0].module: expected a module name (1 to 64 characters of A-Z, "
     "a-z, "
     "0-9, _ and -), got 'a/b'"},
    {"{" LISTEN ", " STORE ", 'auth': [{'module': 'passwd-file.so'}]}",
     "test.json: $.auth[0].module: expected a module name (1 to 64 characters of A-Z, "
     "a-z, "
     "0-9, _ and -), got 'passwd-file.so'"},
    {"{" LISTEN ", " STORE ", 'auth': [{'module': "
     "'m123456789m123456789m123456789m123456789m123456789m123456789abcde'}]}",
     "test.json: $.auth[0].module: expected a module name (1 to 64 characters of A-Z, "
     "a-z, "
     "0-9, _ and -), got "
     "'m123456789m123456789m123456789m123456789m123456789m123456789abcde'"},
    {"{" LISTEN ", " STORE ", 'auth': [{'module': ['x']}]}",
     "test.json: $.auth[0].module: expected a module name (1 to 64 characters of A-Z, "
     "a-z, "
     "0-9, _ and -), got an array"},
    {"{" LISTEN ", " AUTH ", 'store': 'maildir'}",
     "test.json: $.store: expected a module object such as {'module': 'maildir', ...}, "
     "got a "
     "string"},
    {"{" LISTEN ", " AUTH
     ", 'store': {'module': 'redis-cache', 'next': {'module': 'a b'}}}",
     "test.json: $.store.next.module: expected a module name (1 to 64 characters of A-Z, "
     "a-z, 0-9, _ and -), got 'a b'"},
    {"{" LISTEN ", " AUTH ", 'store': {'module': 'redis-cache', 'next': {'module': "
     "'redis-cache', 'next': 7}}}",
     "test.json: $.store.next.next: expected a module object such as {'module': "
     "'maildir', "
     "...}, got an integer"},
    {"{" LISTEN ", " STORE ", 'auth': [{'module': 'x', 'next': {}}]}",
     "test.json: $.auth[0].next: missing the required key 'module' (the name of the "
     "module "
     "to load)"},
};

START_TEST(bad_config_is_refused_with_its_path) {
  expect_error(bad_configs[_i].text, bad_configs[_i].message);
}
END_TEST

/* ---- Syntax errors ------------------------------------------------------- */

START_TEST(missing_comma_reports_line_and_column) {
  expect_exact_error(
      "{\n"
      "  'listen': [{'address': '127.0.0.1', 'port': 1100}],\n"
      "  'auth': [{'module': 'passwd-file'}] 'store': {'module': 'maildir'}\n"
      "}\n",
      "test.json:3:45: '}' expected near '\"store\"'");
}
END_TEST

START_TEST(duplicate_key_reports_line_and_column) {
  expect_exact_error("{" MINIMAL ",\n  'workers': 2,\n  'workers': 3}",
                     "test.json:3:11: duplicate object key near '\"workers\"'");
  expect_exact_error("{" MINIMAL ",\n 'limits': {'idle_timeout_s': 600,\n"
                     "             'idle_timeout_s': 700}}",
                     "test.json:3:29: duplicate object key near '\"idle_timeout_s\"'");
}
END_TEST

START_TEST(empty_and_truncated_input_are_syntax_errors) {
  expect_exact_error("[" MINIMAL "]", "test.json:1:10: ']' expected near ':'");
  expect_exact_error("", "test.json:1:0: '[' or '{' expected near end of file");
  expect_exact_error("{" MINIMAL, "test.json:1:156: '}' expected near end of file");
  expect_exact_error("{" MINIMAL "} x", "test.json:1:159: end of file expected near 'x'");
}
END_TEST

/* jansson quotes the offending bytes; a control character among them is
 * escaped so the message stays one printable line. */
START_TEST(control_character_in_syntax_error_is_escaped) {
  expect_exact_error("{\x01}", "test.json:1:2: string or '}' expected near '\\x01'");
}
END_TEST

/* A huge key is cut short so the rest of the message survives. */
START_TEST(long_key_is_cut_in_messages) {
  char text[1024];
  char key[201];
  memset(key, 'k', 200);
  key[200] = '\0';
  snprintf(text, sizeof text, "{%s, '%s': 1}", MINIMAL, key);
  struct config *config = (struct config *)1;
  ck_assert_int_eq(load_rc(text, &config), -EINVAL);
  char expected[512];
  snprintf(expected, sizeof expected, "test.json: $.%.80s...: unknown key (known: ", key);
  ck_assert_msg(strncmp(error, expected, strlen(expected)) == 0, "%s", error);
}
END_TEST

/* ---- Files ---------------------------------------------------------------- */

START_TEST(missing_file_is_named) {
  struct config *config = (struct config *)1;
  int rc =
      config_load("/nonexistent-popkit-dir/popkit.json", &config, error, sizeof error);
  ck_assert_int_eq(rc, -ENOENT);
  ck_assert_ptr_null(config);
  ck_assert_str_eq(error, "/nonexistent-popkit-dir/popkit.json: cannot read the config "
                          "file: No such file or directory");
}
END_TEST

START_TEST(directory_is_not_a_config_file) {
  struct config *config = (struct config *)1;
  int rc = config_load("/", &config, error, sizeof error);
  ck_assert_int_eq(rc, -EISDIR);
  ck_assert_ptr_null(config);
  ck_assert_str_eq(error, "/: cannot read the config file: Is a directory");
}
END_TEST

/* Writes text into dir/name; returns the path to free. */
static char *write_file(const char *dir, const char *name, const char *quoted) {
  char *path = malloc(strlen(dir) + strlen(name) + 2);
  ck_assert_ptr_nonnull(path);
  sprintf(path, "%s/%s", dir, name);
  FILE *f = fopen(path, "w");
  ck_assert_ptr_nonnull(f);
  char *text = unquote(quoted);
  fputs(text, f);
  free(text);
  ck_assert_int_eq(fclose(f), 0);
  return path;
}

START_TEST(relative_paths_resolve_against_the_file_directory) {
  char dir_template[] = "/tmp/popkit-test-config-XXXXXX";
  char *dir = mkdtemp(dir_template);
  ck_assert_ptr_nonnull(dir);
  char *real_dir = realpath(dir, NULL);
  ck_assert_ptr_nonnull(real_dir);
  char sub[PATH_MAX];
  snprintf(sub, sizeof sub, "%s/sub", dir);
  ck_assert_int_eq(mkdir(sub, 0700), 0);
  char *file =
      write_file(dir, "popkit.json",
                 "{" MINIMAL ", 'modules_dir': 'lib/modules', 'tls': {'certificate':"
                 " '../certs/pop.pem', 'key': '/etc/ssl/private/pop.key'}}");

  /* Reached through a detour, the base directory is still the plain one. */
  char detour[PATH_MAX];
  snprintf(detour, sizeof detour, "%s/sub/../popkit.json", dir);
  struct config *config = NULL;
  int rc = config_load(detour, &config, error, sizeof error);
  ck_assert_msg(rc == 0, "%s", error);
  ck_assert_str_eq(config->file, detour);
  ck_assert_str_eq(config->base_dir, real_dir);

  char expected[PATH_MAX];
  snprintf(expected, sizeof expected, "%s/lib/modules", real_dir);
  ck_assert_str_eq(config->modules_dir, expected);
  snprintf(expected, sizeof expected, "%s/../certs/pop.pem", real_dir);
  ck_assert_str_eq(config->tls.certificate, expected);
  ck_assert_str_eq(config->tls.key, "/etc/ssl/private/pop.key");

  char *resolved = config_resolve_path(config, "users");
  snprintf(expected, sizeof expected, "%s/users", real_dir);
  ck_assert_str_eq(resolved, expected);
  free(resolved);
  resolved = config_resolve_path(config, "/var/mail/%u");
  ck_assert_str_eq(resolved, "/var/mail/%u");
  free(resolved);

  config_free(config);
  unlink(file);
  rmdir(sub);
  rmdir(dir);
  free(file);
  free(real_dir);
}
END_TEST

START_TEST(resolve_path_joins_with_one_slash) {
  struct config *config = load("{" MINIMAL "}");
  char *resolved = config_resolve_path(config, "mail/%u");
  ck_assert_str_eq(resolved, BASE_DIR "/mail/%u");
  free(resolved);
  config_free(config);

  /* A config at the root of the file system. */
  config = NULL;
  char *text = unquote("{" MINIMAL "}");
  ck_assert_int_eq(
      config_load_string(text, "root.json", "/", &config, error, sizeof error), 0);
  free(text);
  resolved = config_resolve_path(config, "users");
  ck_assert_str_eq(resolved, "/users");
  free(resolved);
  config_free(config);
}
END_TEST

START_TEST(syntax_error_in_a_file_names_the_file) {
  char dir_template[] = "/tmp/popkit-test-config-XXXXXX";
  char *dir = mkdtemp(dir_template);
  ck_assert_ptr_nonnull(dir);
  char *file = write_file(dir, "broken.json", "{\n  'workers': 2\n  'user': 'x'\n}\n");
  struct config *config = (struct config *)1;
  ck_assert_int_eq(config_load(file, &config, error, sizeof error), -EINVAL);
  ck_assert_ptr_null(config);
  char expected[PATH_MAX + 64];
  snprintf(expected, sizeof expected, "%s:3:8: '}' expected near '\"user\"'", file);
  ck_assert_str_eq(error, expected);
  unlink(file);
  rmdir(dir);
  free(file);
}
END_TEST

/* ---- Decorators ----------------------------------------------------------- */

START_TEST(next_chain_gets_its_json_paths) {
  struct config *config = load(
      "{" LISTEN
      ", 'auth': [{'module': 'a'}, {'module': 'redis-cache', 'next': {'module': "
      "'ldap-auth'}}],"
      " 'store': {'module': 'redis-cache', 'ttl_s': 60, 'next': {'module': 'redis-cache',"
      " 'next': {'module': 'postgres', 'conninfo': 'x'}}}}");
  ck_assert_str_eq(config->store.json_path, "$.store");
  ck_assert_ptr_nonnull(config->store.next);
  ck_assert_str_eq(config->store.next->name, "redis-cache");
  ck_assert_str_eq(config->store.next->json_path, "$.store.next");
  ck_assert_ptr_nonnull(config->store.next->next);
  ck_assert_str_eq(config->store.next->next->name, "postgres");
  ck_assert_str_eq(config->store.next->next->json_path, "$.store.next.next");
  ck_assert_ptr_null(config->store.next->next->next);
  ck_assert_str_eq(
      json_string_value(json_object_get(config->store.next->next->json, "conninfo")),
      "x");
  ck_assert_str_eq(config->auth[1].next->json_path, "$.auth[1].next");
  ck_assert_str_eq(config->auth[1].next->name, "ldap-auth");
  config_free(config);
}
END_TEST

/* ---- Module keys ---------------------------------------------------------- */

static const struct popkit_config_key fake_keys[] = {
    {"path", POPKIT_CONFIG_PATH, 1},
    {"label", POPKIT_CONFIG_STRING, 0},
    {"ttl_s", POPKIT_CONFIG_INTEGER, 0},
    {"strict", POPKIT_CONFIG_BOOLEAN, 0},
    {NULL, 0, 0},
};

/* Checks the first auth module of a config whose auth list is `auth`. */
static int check_auth_keys(const char *auth, const struct popkit_config_key *keys) {
  char text[1024];
  snprintf(text, sizeof text, "{%s, %s, 'auth': [%s]}", LISTEN, STORE, auth);
  struct config *config = load(text);
  error[0] = '\0';
  int rc = config_check_module_keys(config, &config->auth[0], keys, error, sizeof error);
  config_free(config);
  return rc;
}

START_TEST(module_keys_accept_what_the_module_declares) {
  ck_assert_int_eq(check_auth_keys("{'module': 'fake', 'path': 'users', 'label': '',"
                                   " 'ttl_s': -5, 'strict': false}",
                                   fake_keys),
                   0);
  /* "module" and "next" are the core's, whatever the module declares. */
  ck_assert_int_eq(
      check_auth_keys("{'module': 'fake', 'path': 'p', 'next': {'module': 'x'}}",
                      fake_keys),
      0);
}
END_TEST

static const struct bad_config bad_module_keys[] = {
    {"{'module': 'fake', 'path': 'users', 'paht': 'x'}",
     "test.json: $.auth[0].paht: unknown key for module fake (known: path, label, ttl_s, "
     "strict)"},
    {"{'module': 'fake', 'path': 7}",
     "test.json: $.auth[0].path: expected a path (a non-empty string), got an integer"},
    {"{'module': 'fake', 'path': ''}", "test.json: $.auth[0].path: expected a path (a "
                                       "non-empty string), got an empty string"},
    {"{'module': 'fake', 'path': 'p', 'label': true}",
     "test.json: $.auth[0].label: expected a string, got true"},
    {"{'module': 'fake', 'path': 'p', 'ttl_s': '60'}",
     "test.json: $.auth[0].ttl_s: expected an integer, got a string"},
    {"{'module': 'fake', 'path': 'p', 'ttl_s': 60.0}",
     "test.json: $.auth[0].ttl_s: expected an integer, got a number with a fraction or "
     "exponent"},
    {"{'module': 'fake', 'path': 'p', 'strict': 'yes'}",
     "test.json: $.auth[0].strict: expected true or false, got a string"},
    {"{'module': 'fake', 'label': 'x'}",
     "test.json: $.auth[0]: module fake needs the key 'path'"},
};

START_TEST(module_keys_refuse_with_the_path) {
  ck_assert_int_eq(check_auth_keys(bad_module_keys[_i].text, fake_keys), -EINVAL);
  char *want = unquote(bad_module_keys[_i].message);
  ck_assert_str_eq(error, want);
  free(want);
}
END_TEST

START_TEST(module_without_keys_refuses_any_setting) {
  static const struct popkit_config_key no_keys[] = {{NULL, 0, 0}};
  ck_assert_int_eq(check_auth_keys("{'module': 'plain'}", no_keys), 0);
  ck_assert_int_eq(check_auth_keys("{'module': 'plain', 'path': 'x'}", no_keys), -EINVAL);
  ck_assert_str_eq(error,
                   "test.json: $.auth[0].path: unknown key for module plain (it takes "
                   "no settings besides \"module\")");
  ck_assert_int_eq(check_auth_keys("{'module': 'plain', 'path': 'x'}", NULL), -EINVAL);
}
END_TEST

START_TEST(module_keys_of_a_nested_next) {
  struct config *config =
      load("{" LISTEN ", " AUTH ", 'store': {'module': 'redis-cache', "
           "'next': {'module': 'fake', 'paht': 'x'}}}");
  ck_assert_int_eq(config_check_module_keys(config, config->store.next, fake_keys, error,
                                            sizeof error),
                   -EINVAL);
  ck_assert_str_eq(error, "test.json: $.store.next.paht: unknown key for module fake "
                          "(known: path, label, ttl_s, strict)");
  config_free(config);
}
END_TEST

START_TEST(module_key_of_unknown_type_blames_the_module) {
  static const struct popkit_config_key odd_keys[] = {{"size", 99, 0}, {NULL, 0, 0}};
  ck_assert_int_eq(check_auth_keys("{'module': 'odd', 'size': 1}", odd_keys), -EINVAL);
  ck_assert_str_eq(error,
                   "test.json: $.auth[0].size: module odd declares this key with an "
                   "unknown type 99: the module is broken, rebuild it against this "
                   "popkitd's include/popkit");
}
END_TEST

/* ---- The shipped configs --------------------------------------------------- */

static struct config *load_shipped(const char *name) {
  char path[PATH_MAX];
  config_dir_path(name, path, sizeof path);
  struct config *config = NULL;
  int rc = config_load(path, &config, error, sizeof error);
  ck_assert_msg(rc == 0, "%s does not load: %s", path, error);
  return config;
}

START_TEST(shipped_default_config_loads) {
  struct config *config = load_shipped("popkit.json");
  char dir[PATH_MAX];
  config_dir_path("", dir, sizeof dir);
  char *real_dir = realpath(dir, NULL);
  ck_assert_ptr_nonnull(real_dir);
  ck_assert_str_eq(config->base_dir, real_dir);
  ck_assert_str_eq(config->hostname, "localhost");
  ck_assert_uint_eq(config->workers, 2);
  ck_assert_uint_eq(config->listen_count, 2);
  ck_assert_str_eq(config->listen[0].address, "127.0.0.1");
  ck_assert_int_eq(config->listen[0].port, 1100);
  ck_assert_int_eq(config->listen[0].tls, CONFIG_TLS_STARTTLS);
  ck_assert_int_eq(config->listen[1].port, 9950);
  ck_assert_int_eq(config->listen[1].tls, CONFIG_TLS_IMPLICIT);
  ck_assert_str_eq(config->tls.certificate + strlen(config->tls.certificate) -
                       strlen("/_demo/tls/cert.pem"),
                   "/_demo/tls/cert.pem");
  ck_assert_int_eq(config->plaintext_auth, CONFIG_PLAINTEXT_TLS_OR_LOOPBACK);
  ck_assert_uint_eq(config->auth_count, 1);
  ck_assert_str_eq(config->auth[0].name, "passwd-file");
  ck_assert_str_eq(config->store.name, "maildir");
  ck_assert_uint_eq(config->limits.idle_timeout_s, 600);
  ck_assert_int_eq(config->log_level, POPKIT_LOG_INFO);
  free(real_dir);
  config_free(config);
}
END_TEST

START_TEST(shipped_maildir_example_loads) {
  struct config *config = load_shipped("maildir.example.json");
  ck_assert_str_eq(config->store.name, "maildir");
  config_free(config);
}
END_TEST

START_TEST(shipped_passwd_file_example_loads) {
  struct config *config = load_shipped("passwd-file.example.json");
  int found = 0;
  for (size_t i = 0; i < config->auth_count; i++) {
    found += strcmp(config->auth[i].name, "passwd-file") == 0;
  }
  ck_assert_msg(found > 0, "no passwd-file in $.auth");
  config_free(config);
}
END_TEST

static Suite *config_suite(void) {
  Suite *suite = suite_create("config");

  TCase *valid = tcase_create("valid");
  tcase_add_test(valid, minimal_config_gets_every_default);
  tcase_add_test(valid, every_key_is_read);
  tcase_add_test(valid, idle_timeout_below_rfc_minimum_is_allowed_when_explicit);
  tcase_add_test(valid, enum_values_all_parse);
  tcase_add_test(valid, metrics_address_defaults_to_loopback);
  suite_add_tcase(suite, valid);

  TCase *schema = tcase_create("schema");
  tcase_add_loop_test(schema, bad_config_is_refused_with_its_path, 0,
                      (int)(sizeof bad_configs / sizeof bad_configs[0]));
  suite_add_tcase(suite, schema);

  TCase *syntax = tcase_create("syntax");
  tcase_add_test(syntax, missing_comma_reports_line_and_column);
  tcase_add_test(syntax, duplicate_key_reports_line_and_column);
  tcase_add_test(syntax, empty_and_truncated_input_are_syntax_errors);
  tcase_add_test(syntax, control_character_in_syntax_error_is_escaped);
  tcase_add_test(syntax, long_key_is_cut_in_messages);
  suite_add_tcase(suite, syntax);

  TCase *files = tcase_create("files");
  tcase_add_test(files, missing_file_is_named);
  tcase_add_test(files, directory_is_not_a_config_file);
  tcase_add_test(files, relative_paths_resolve_against_the_file_directory);
  tcase_add_test(files, resolve_path_joins_with_one_slash);
  tcase_add_test(files, syntax_error_in_a_file_names_the_file);
  suite_add_tcase(suite, files);

  TCase *modules = tcase_create("modules");
  tcase_add_test(modules, next_chain_gets_its_json_paths);
  tcase_add_test(modules, module_keys_accept_what_the_module_declares);
  tcase_add_loop_test(modules, module_keys_refuse_with_the_path, 0,
                      (int)(sizeof bad_module_keys / sizeof bad_module_keys[0]));
  tcase_add_test(modules, module_without_keys_refuses_any_setting);
  tcase_add_test(modules, module_keys_of_a_nested_next);
  tcase_add_test(modules, module_key_of_unknown_type_blames_the_module);
  suite_add_tcase(suite, modules);

  TCase *shipped = tcase_create("shipped");
  tcase_add_test(shipped, shipped_default_config_loads);
  tcase_add_test(shipped, shipped_maildir_example_loads);
  tcase_add_test(shipped, shipped_passwd_file_example_loads);
  suite_add_tcase(suite, shipped);
  return suite;
}

int main(void) {
  int failed = check_run(config_suite());
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
