/*
 * Tests of the ldap-auth module, driven through the module harness against
 * a real slapd that with_slapd.py starts for them (its docstring lists the
 * users: uid=NAME under ou=people, password "NAME pw"). They cover what a
 * whole popkitd shows badly: every config error by its key, the results of
 * both modes, many logins at once on one instance, cancel at each stage, a
 * stuck (SIGSTOPped) or absent directory, and destroy with connections up
 * or still opening on the thread pool.
 *
 * Where a test must know how far a request got (its search queued or out,
 * its bind out), it reads the ldap_op the module keeps in the request's
 * module_data: the stage is the point of the test, and nothing a client
 * sees tells it.
 */
#include <arpa/inet.h>
#include <check.h>
#include <dirent.h>
#include <jansson.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check_run.h"
#include "ldap_dir.h"
#include "module_harness.h"

/* From with_slapd.py, each as a JSON string. */
static char *uri, *ldaps_uri, *ca, *other_ca, *base, *bind_dn, *bind_password;
static pid_t slapd_pid;
static const char *slapd_log;

static const char direct_template[] = "\"uid=%n,ou=people,dc=example,dc=test\"";

static struct harness h;
static struct harness_result *res;

/* ---- Helpers ------------------------------------------------------------ */

/* text as a JSON string, malloc'd; NULL when out of memory. */
static char *json_quote(const char *text) {
  json_t *s = json_string(text);
  char *quoted = s != NULL ? json_dumps(s, JSON_ENCODE_ANY) : NULL;
  json_decref(s);
  return quoted;
}

static double now_s(void) {
  return (double)uv_hrtime() / 1e9;
}

/* Whether every thread of pid is stopped (state T in /proc). */
static bool all_threads_stopped(pid_t pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
  DIR *tasks = opendir(path);
  if (tasks == NULL)
    return false;
  bool stopped = true;
  struct dirent *e;
  while (stopped && (e = readdir(tasks)) != NULL) {
    if (e->d_name[0] == '.')
      continue;
    char stat_path[sizeof path + sizeof e->d_name + 8], text[512] = "";
    snprintf(stat_path, sizeof stat_path, "%s/%s/stat", path, e->d_name);
    FILE *f = fopen(stat_path, "r");
    if (f == NULL)
      continue; /* the thread is gone */
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    const char *after_name = strrchr(text, ')');
    stopped = after_name != NULL && after_name[1] == ' ' && after_name[2] == 'T';
  }
  closedir(tasks);
  return stopped;
}

static void slapd_signal(int sig) {
  ck_assert_msg(kill(slapd_pid, sig) == 0, "kill(%d, %d) failed", (int)slapd_pid, sig);
  if (sig != SIGSTOP)
    return;
  /* kill() returns before every thread has stopped: one already running
   * could still answer the next request. */
  double deadline = now_s() + 5;
  while (!all_threads_stopped(slapd_pid)) {
    ck_assert_msg(now_s() < deadline, "slapd did not stop within 5 s of SIGSTOP");
    usleep(1000);
  }
}

static void setup(void) {
  res = calloc(1, sizeof *res);
  ck_assert_ptr_nonnull(res);
  memset(&h, 0, sizeof h);
  /* A test that failed while slapd was stopped must not stop the next. */
  slapd_signal(SIGCONT);
}

static void teardown(void) {
  slapd_signal(SIGCONT);
  /* destroy must leave no handle: uv_loop_close says so. */
  if (h.dl != NULL)
    ck_assert_int_eq(harness_close(&h), 0);
  free(res);
}

/* Creates an instance from the module's settings (a JSON object's
 * members); returns create's result, with its error in error. */
static int try_open(struct harness *hh, char *error, size_t error_size, const char *fmt,
                    ...) {
  char members[2048], json[2200];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(members, sizeof members, fmt, ap);
  va_end(ap);
  snprintf(json, sizeof json, "{\"module\": \"ldap-auth\"%s%s}",
           members[0] != '\0' ? ", " : "", members);
  error[0] = '\0';
  return harness_open(hh, MODULE_PATH, json, "/", error, error_size);
}

/* Search mode as the service account, with more settings in extra ("" or
 * ", \"key\": value..."). */
static void open_search(const char *extra) {
  char error[512];
  int rc = try_open(&h, error, sizeof error,
                    "\"uri\": %s, \"base\": %s, \"bind_dn\": %s, \"bind_password\": %s%s",
                    uri, base, bind_dn, bind_password, extra);
  ck_assert_msg(rc == 0, "create: %s", error);
}

/* Direct bind, uid=%n under ou=people, reads as the service account. */
static void open_direct(const char *extra) {
  char error[512];
  int rc = try_open(&h, error, sizeof error,
                    "\"uri\": %s, \"dn_template\": %s, \"bind_dn\": %s, "
                    "\"bind_password\": %s%s",
                    uri, direct_template, bind_dn, bind_password, extra);
  ck_assert_msg(rc == 0, "create: %s", error);
}

static enum popkit_result verify(const char *user, const char *password) {
  return harness_auth(&h, POPKIT_REQ_AUTH_VERIFY_PLAIN, user, password, res);
}

static enum popkit_result lookup(const char *user) {
  return harness_auth(&h, POPKIT_REQ_AUTH_LOOKUP, user, NULL, res);
}

#define ck_assert_result(call, expected)                                                 \
  do {                                                                                   \
    enum popkit_result got_ = (call);                                                    \
    ck_assert_msg(got_ == (expected), "%s: %d, expected %d (%s)", #call, (int)got_,      \
                  (int)(expected), res->log_text);                                       \
  } while (0)

/* The operation a request waits on, or NULL. */
static struct ldap_op *op_of(struct harness_call *call) {
  return call->req.base.module_data;
}

/* Runs the loop without blocking until the request waits on an
 * operation of kind, sent if sent is set (or until it is done); false if
 * it was done first. */
static int run_until_op(struct harness_call *call, enum ldap_op_kind kind, int sent) {
  double deadline = now_s() + 5;
  for (;;) {
    struct ldap_op *op = op_of(call);
    if (call->done)
      return 0;
    if (op != NULL && op->kind == kind && (!sent || op->conn != NULL))
      return 1;
    ck_assert_msg(now_s() < deadline, "the operation never came");
    uv_run(&h.loop, UV_RUN_NOWAIT);
    if (!call->done && op_of(call) == op)
      usleep(200);
  }
}

static int run_until_sent(struct harness_call *call, enum ldap_op_kind kind) {
  return run_until_op(call, kind, 1);
}

/* Without blocking: a completion from a timer that was due when the loop
 * began its turn leaves UV_RUN_ONCE waiting for I/O that may never come
 * (slapd is stopped). */
static void run_until_done(struct harness_call *call) {
  while (!call->done) {
    uv_run(&h.loop, UV_RUN_NOWAIT);
    if (!call->done)
      usleep(200);
  }
}

/* How many binds as dn slapd has received, from its log. */
static unsigned binds_received(const char *dn) {
  char needle[256];
  snprintf(needle, sizeof needle, " BIND dn=\"%s\" method=", dn);
  FILE *f = fopen(slapd_log, "r");
  ck_assert_msg(f != NULL, "cannot read %s", slapd_log);
  unsigned n = 0;
  char line[4096];
  while (fgets(line, sizeof line, f) != NULL)
    if (strstr(line, needle) != NULL)
      n++;
  fclose(f);
  return n;
}

/* Waits (slapd logs as it goes) until dn's binds reach at least count. */
static unsigned wait_binds(const char *dn, unsigned count) {
  double deadline = now_s() + 3;
  unsigned n;
  while ((n = binds_received(dn)) < count && now_s() < deadline)
    usleep(10000);
  return n;
}

/* A loopback port where nothing listens: bound, never listening, so a
 * connect is refused for as long as fd stays open. */
static int closed_port(int *fd_r) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  ck_assert_int_ge(fd, 0);
  struct sockaddr_in addr = {.sin_family = AF_INET,
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  ck_assert_int_eq(bind(fd, (struct sockaddr *)&addr, sizeof addr), 0);
  socklen_t length = sizeof addr;
  ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&addr, &length), 0);
  *fd_r = fd;
  return ntohs(addr.sin_port);
}

/* ---- create() ----------------------------------------------------------- */

START_TEST(settings_errors_name_their_key) {
  static const struct {
    const char *members, *key;
  } cases[] = {
      {"\"base\": \"dc=example,dc=test\"", "uri"},
      {"\"uri\": \"\", \"base\": \"dc=example,dc=test\"", "uri"},
      {"\"uri\": \"http://127.0.0.1\", \"base\": \"dc=example,dc=test\"", "uri"},
      {"\"uri\": \"127.0.0.1:389\", \"base\": \"dc=example,dc=test\"", "uri"},
      {"\"uri\": \"ldap://127.0.0.1 ftp://x\", \"base\": \"dc=example,dc=test\"", "uri"},
      {"\"uri\": \"ldaps://127.0.0.1\", \"starttls\": true, \"base\": \"dc=x\"",
       "starttls"},
      {"\"uri\": \"ldap://a ldaps://b\", \"starttls\": true, \"base\": \"dc=x\"",
       "starttls"},
      {"\"uri\": \"ldap://127.0.0.1\"", "base"},
      {"\"uri\": \"ldap://127.0.0.1\", \"base\": \"people\"", "base"},
      {"\"uri\": \"ldap://127.0.0.1\", \"base\": \"ou=people,,dc=x\"", "base"},
      {"\"uri\": \"ldap://127.0.0.1\", \"base\": \"dc=x\", \"filter\": \"(uid=%x)\"",
       "filter"},
      {"\"uri\": \"ldap://127.0.0.1\", \"base\": \"dc=x\", \"filter\": \"(uid=%u)%\"",
       "filter"},
      {"\"uri\": \"ldap://127.0.0.1\", \"base\": \"dc=x\", \"filter\": \"(uid=%u\"",
       "filter"},
      {"\"uri\": \"ldap://127.0.0.1\", \"base\": \"dc=x\", \"filter\": \"(&(uid=%u)\"",
       "filter"},
      {"\"uri\": \"ldap://127.0.0.1\", \"base\": \"dc=x\", \"filter\": \"(uid=%u))\"",
       "filter"},
      {"\"uri\": \"ldap://127.0.0.1\", \"base\": \"dc=x\", \"scope\": \"subtree\"",
       "scope"},
      {"\"uri\": \"ldap://127.0.0.1\", \"base\": \"dc=x\", \"scope\": \"\"", "scope"},
      {"\"uri\": \"ldap://127.0.0.1\", \"base\": \"dc=x\", \"bind_dn\": \"cn=a,dc=x\", "
       "\"bind_password\": \"\"",
       "bind_password"},
      {"\"uri\": \"ldap://127.0.0.1\", \"base\": \"dc=x\", \"bind_dn\": \"not a dn\", "
       "\"bind_password\": \"pw\"",
       "bind_dn"},
      {"\"uri\": \"ldap://127.0.0.1\", \"base\": \"dc=x\", \"identity_attribute\": \"\"",
       "identity_attribute"},
      {"\"uri\": \"ldap://127.0.0.1\", \"dn_template\": \"uid=%u,dc=x\", \"base\": "
       "\"dc=x\"",
       "base"},
      {"\"uri\": \"ldap://127.0.0.1\", \"dn_template\": \"uid=%u,dc=x\", \"filter\": "
       "\"(uid=%u)\"",
       "filter"},
      {"\"uri\": \"ldap://127.0.0.1\", \"dn_template\": \"uid=%u,dc=x\", \"scope\": "
       "\"sub\"",
       "scope"},
      {"\"uri\": \"ldap://127.0.0.1\", \"dn_template\": \"uid=fixed,dc=x\"",
       "dn_template"},
      {"\"uri\": \"ldap://127.0.0.1\", \"dn_template\": \"uid=%d,dc=x\"", "dn_template"},
      {"\"uri\": \"ldap://127.0.0.1\", \"dn_template\": \"uid=%x,dc=x\"", "dn_template"},
      {"\"uri\": \"ldap://127.0.0.1\", \"dn_template\": \"uid=%u,,dc=x\"", "dn_template"},
      {"\"uri\": \"ldap://127.0.0.1\", \"dn_template\": \"%u\"", "dn_template"},
      {"\"uri\": \"ldap://127.0.0.1\", \"base\": \"dc=x\", \"timeout_s\": 0",
       "timeout_s"},
      {"\"uri\": \"ldap://127.0.0.1\", \"base\": \"dc=x\", \"timeout_s\": 301",
       "timeout_s"},
      {"\"uri\": \"ldap://127.0.0.1\", \"base\": \"dc=x\", \"timeout_s\": -1",
       "timeout_s"},
      {"\"uri\": \"ldap://127.0.0.1\", \"base\": \"dc=x\", \"bind_connections\": 0",
       "bind_connections"},
      {"\"uri\": \"ldap://127.0.0.1\", \"base\": \"dc=x\", \"bind_connections\": 33",
       "bind_connections"},
      {"\"uri\": \"ldap://127.0.0.1\", \"base\": \"dc=x\", \"reconnect_max_ms\": 99",
       "reconnect_max_ms"},
      {"\"uri\": \"ldap://127.0.0.1\", \"base\": \"dc=x\", \"reconnect_max_ms\": 600001",
       "reconnect_max_ms"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char error[512], prefix[64];
    int rc = try_open(&h, error, sizeof error, "%s", cases[i].members);
    ck_assert_msg(rc != 0, "{%s} was accepted", cases[i].members);
    ck_assert_ptr_null(h.instance);
    snprintf(prefix, sizeof prefix, "%s: ", cases[i].key);
    ck_assert_msg(strncmp(error, prefix, strlen(prefix)) == 0,
                  "{%s}: the error does not start with \"%s\": %s", cases[i].members,
                  prefix, error);
    ck_assert_int_eq(harness_close(&h), 0);
  }
}
END_TEST

/* bind_dn and bind_password go together: the error names both, whichever
 * is missing. */
START_TEST(bind_dn_and_password_go_together) {
  const char *members[] = {
      "\"uri\": \"ldap://127.0.0.1\", \"base\": \"dc=x\", \"bind_dn\": \"cn=a,dc=x\"",
      "\"uri\": \"ldap://127.0.0.1\", \"base\": \"dc=x\", \"bind_password\": \"pw\""};
  for (size_t i = 0; i < 2; i++) {
    char error[512];
    ck_assert_int_ne(try_open(&h, error, sizeof error, "%s", members[i]), 0);
    ck_assert_msg(strstr(error, "bind_dn") != NULL && strstr(error, "bind_password"),
                  "%s", error);
    ck_assert_int_eq(harness_close(&h), 0);
  }
}
END_TEST

/* "%%u" is a literal "%u" in the DN, not the user: with only that, every
 * user would bind as one DN, as with no placeholder at all. */
START_TEST(dn_template_with_only_a_literal_percent_u_is_refused) {
  const char *templates[] = {"uid=%%u,ou=people,dc=example,dc=test",
                             "uid=%%n,ou=people,dc=example,dc=test"};
  for (size_t i = 0; i < 2; i++) {
    char error[512];
    int rc =
        try_open(&h, error, sizeof error,
                 "\"uri\": \"ldap://127.0.0.1\", \"dn_template\": \"%s\"", templates[i]);
    ck_assert_msg(rc != 0 && strncmp(error, "dn_template: ", 13) == 0,
                  "dn_template %s: accepted (%s)", templates[i], error);
    ck_assert_int_eq(harness_close(&h), 0);
  }
}
END_TEST

START_TEST(good_settings_are_accepted_without_connecting) {
  const char *members[] = {
      "\"uri\": \"ldap://127.0.0.1:1\", \"base\": \"dc=x\"",
      "\"uri\": \"ldap://127.0.0.1:1 ldap://[::1]:1\", \"base\": \"dc=x\", \"filter\": "
      "\"(&(objectClass=inetOrgPerson)(|(uid=%n)(mail=%u))(o=%d)(cn=100%%))\", "
      "\"scope\": \"one\"",
      "\"uri\": \"ldaps://127.0.0.1:1\", \"dn_template\": \"uid=%n,ou=%d,dc=x\", "
      "\"timeout_s\": 300, \"bind_connections\": 32, \"reconnect_max_ms\": 600000",
      "\"uri\": \"ldap://127.0.0.1:1\", \"starttls\": true, \"base\": \"dc=x\", "
      "\"scope\": \"base\", \"timeout_s\": 1, \"bind_connections\": 1, "
      "\"reconnect_max_ms\": 100",
  };
  for (size_t i = 0; i < sizeof members / sizeof members[0]; i++) {
    char error[512];
    ck_assert_msg(try_open(&h, error, sizeof error, "%s", members[i]) == 0, "{%s}: %s",
                  members[i], error);
    ck_assert_int_eq(harness_close(&h), 0);
  }
  /* tls_verify false is allowed, with a warning. */
  char error[512];
  ck_assert_int_eq(try_open(&h, error, sizeof error,
                            "\"uri\": \"ldaps://127.0.0.1:1\", \"base\": \"dc=x\", "
                            "\"tls_verify\": false"),
                   0);
  ck_assert_msg(strstr(h.logs, "tls_verify") != NULL, "log: %s", h.logs);
}
END_TEST

/* ---- Search mode -------------------------------------------------------- */

START_TEST(search_mode_results) {
  open_search(", \"identity_attribute\": \"mail\"");
  ck_assert_result(verify("alice", "alice pw"), POPKIT_OK);
  ck_assert_str_eq(res->identity, "alice.box@example.test");
  /* No mail: the identity is the user name. */
  ck_assert_result(verify("bob", "bob pw"), POPKIT_OK);
  ck_assert_str_eq(res->identity, "bob");
  ck_assert_result(verify("m\xc3\xbcller", "m\xc3\xbcller pw"), POPKIT_OK);
  ck_assert_str_eq(res->identity, "m\xc3\xbcller");
  ck_assert_result(verify("o'hara", "o'hara pw"), POPKIT_OK);
  ck_assert_result(verify("*", "* pw"), POPKIT_OK);
  ck_assert_str_eq(res->identity, "*");
  ck_assert_result(verify("alice", "bob pw"), POPKIT_FAIL);
  ck_assert_result(verify("alice", "alice pw "), POPKIT_FAIL);
  ck_assert_result(verify("nobody", "nobody pw"), POPKIT_NOT_FOUND);
  ck_assert_result(verify("x*", "* pw"), POPKIT_NOT_FOUND);
  ck_assert_result(verify("a)(uid=*", "alice pw"), POPKIT_NOT_FOUND);
  ck_assert_result(verify("*)(|(uid=*", "alice pw"), POPKIT_NOT_FOUND);
  ck_assert_result(verify("\xff\xfe", "pw"), POPKIT_NOT_FOUND);
  ck_assert_result(verify("alic\xc3", "alice pw"), POPKIT_NOT_FOUND);
  ck_assert_result(lookup("alice"), POPKIT_OK);
  ck_assert_str_eq(res->identity, "alice.box@example.test");
  ck_assert_result(lookup("bob"), POPKIT_OK);
  ck_assert_str_eq(res->identity, "bob");
  ck_assert_result(lookup("nobody"), POPKIT_NOT_FOUND);
  ck_assert_result(lookup("*"), POPKIT_OK);
  ck_assert_result(lookup("\xff\xfe"), POPKIT_NOT_FOUND);
  /* The site's mistakes are [SYS/TEMP], logged as errors: a filter that
   * finds two entries, an identity with two values. */
  ck_assert_result(verify("twin", "twin pw"), POPKIT_TEMPFAIL);
  ck_assert_msg(strstr(res->log_text, "more than one") != NULL, "%s", res->log_text);
  ck_assert_result(lookup("twin"), POPKIT_TEMPFAIL);
  ck_assert_result(verify("many", "many pw"), POPKIT_TEMPFAIL);
  ck_assert_msg(strstr(res->log_text, "mail") != NULL, "%s", res->log_text);
}
END_TEST

/* An empty password would be an unauthenticated bind: a known user gets
 * FAIL and slapd never sees a bind for it. */
static void assert_empty_password_is_never_sent(void) {
  const char alice_dn[] = "uid=alice,ou=people,dc=example,dc=test";
  unsigned before = binds_received(alice_dn);
  ck_assert_result(verify("alice", ""), POPKIT_FAIL);
  ck_assert_result(verify("nobody", ""), POPKIT_NOT_FOUND);
  /* A wrong password does bind: once its bind is in the log, the empty
   * one's would be too. */
  ck_assert_result(verify("alice", "wrong"), POPKIT_FAIL);
  ck_assert_uint_eq(wait_binds(alice_dn, before + 1), before + 1);
}

START_TEST(search_mode_never_sends_an_empty_password) {
  open_search("");
  assert_empty_password_is_never_sent();
}
END_TEST

/* The searches run as bind_dn: this directory shows nothing to an
 * anonymous search, which is the site's problem, not the user's. */
START_TEST(anonymous_search_where_it_is_refused_is_tempfail) {
  char error[512];
  ck_assert_int_eq(
      try_open(&h, error, sizeof error, "\"uri\": %s, \"base\": %s", uri, base), 0);
  ck_assert_result(verify("alice", "alice pw"), POPKIT_TEMPFAIL);
}
END_TEST

START_TEST(search_base_that_does_not_exist_is_tempfail) {
  char error[512];
  ck_assert_int_eq(try_open(&h, error, sizeof error,
                            "\"uri\": %s, \"base\": \"ou=nowhere,dc=example,dc=test\", "
                            "\"bind_dn\": %s, \"bind_password\": %s",
                            uri, bind_dn, bind_password),
                   0);
  ck_assert_result(verify("alice", "alice pw"), POPKIT_TEMPFAIL);
  ck_assert_msg(strstr(h.logs, "ou=nowhere") != NULL, "log: %s", h.logs);
}
END_TEST

/* ---- Direct bind -------------------------------------------------------- */

START_TEST(direct_bind_results) {
  open_direct(", \"identity_attribute\": \"mail\"");
  ck_assert_result(verify("alice", "alice pw"), POPKIT_OK);
  ck_assert_str_eq(res->identity, "alice.box@example.test");
  ck_assert_result(verify("alice@example.test", "alice pw"), POPKIT_OK);
  ck_assert_str_eq(res->identity, "alice.box@example.test");
  ck_assert_result(verify("bob@example.test", "bob pw"), POPKIT_OK);
  ck_assert_str_eq(res->identity, "bob@example.test");
  ck_assert_result(verify("m\xc3\xbcller", "m\xc3\xbcller pw"), POPKIT_OK);
  ck_assert_result(verify("*", "* pw"), POPKIT_OK);
  ck_assert_result(verify("alice", "bob pw"), POPKIT_FAIL);
  ck_assert_result(verify("nobody", "nobody pw"), POPKIT_NOT_FOUND);
  ck_assert_result(verify("alice,ou=admins", "alice pw"), POPKIT_NOT_FOUND);
  ck_assert_result(verify("x+cn=y", "alice pw"), POPKIT_NOT_FOUND);
  /* (" alice" would be alice: uid matching ignores leading and trailing
   * spaces, RFC 4518.) */
  ck_assert_result(verify(" nobody", "alice pw"), POPKIT_NOT_FOUND);
  ck_assert_result(verify("nobody ", "alice pw"), POPKIT_NOT_FOUND);
  ck_assert_result(verify("#alice", "alice pw"), POPKIT_NOT_FOUND);
  ck_assert_result(verify("\xff\xfe", "pw"), POPKIT_NOT_FOUND);
  ck_assert_result(lookup("alice@example.test"), POPKIT_OK);
  ck_assert_str_eq(res->identity, "alice.box@example.test");
  ck_assert_result(lookup("bob"), POPKIT_OK);
  ck_assert_str_eq(res->identity, "bob");
  ck_assert_result(lookup("nobody"), POPKIT_NOT_FOUND);
  ck_assert_result(lookup("\xff\xfe"), POPKIT_NOT_FOUND);
  ck_assert_result(verify("many", "many pw"), POPKIT_TEMPFAIL);
}
END_TEST

/* Without identity_attribute the identity is the name as sent. */
START_TEST(direct_bind_identity_is_the_user_name) {
  open_direct("");
  ck_assert_result(verify("alice@example.test", "alice pw"), POPKIT_OK);
  ck_assert_str_eq(res->identity, "alice@example.test");
  ck_assert_result(lookup("alice@example.test"), POPKIT_OK);
  ck_assert_str_eq(res->identity, "alice@example.test");
}
END_TEST

START_TEST(direct_bind_never_sends_an_empty_password) {
  open_direct("");
  assert_empty_password_is_never_sent();
}
END_TEST

/* ---- Load --------------------------------------------------------------- */

/* 50 logins at once on one instance: binds wait for the two bind
 * connections, and each request gets its own answer. */
static void many_at_once(void) {
  enum { N = 50 };
  struct harness_call *calls = calloc(N, sizeof *calls);
  struct harness_result *outs = calloc(N, sizeof *outs);
  ck_assert(calls != NULL && outs != NULL);
  static const struct {
    const char *user, *password, *identity;
    enum popkit_result result;
  } kinds[] = {
      {"alice", "alice pw", "alice.box@example.test", POPKIT_OK},
      {"bob", "bob pw", "bob", POPKIT_OK},
      {"alice", "bob pw", "", POPKIT_FAIL},
      {"nobody", "pw", "", POPKIT_NOT_FOUND},
      {"m\xc3\xbcller", "m\xc3\xbcller pw", "m\xc3\xbcller", POPKIT_OK},
  };
  for (int i = 0; i < N; i++)
    harness_auth_start(&h, &calls[i], POPKIT_REQ_AUTH_VERIFY_PLAIN, kinds[i % 5].user,
                       kinds[i % 5].password, &outs[i]);
  for (int i = 0; i < N; i++)
    run_until_done(&calls[i]);
  for (int i = 0; i < N; i++) {
    ck_assert_msg(outs[i].result == kinds[i % 5].result, "login %d (%s): %d, %s", i,
                  kinds[i % 5].user, (int)outs[i].result, outs[i].log_text);
    if (outs[i].result == POPKIT_OK)
      ck_assert_str_eq(outs[i].identity, kinds[i % 5].identity);
  }
  free(calls);
  free(outs);
}

START_TEST(fifty_logins_at_once_in_search_mode) {
  open_search(", \"identity_attribute\": \"mail\"");
  many_at_once();
}
END_TEST

START_TEST(fifty_logins_at_once_with_direct_bind) {
  open_direct(", \"identity_attribute\": \"mail\"");
  many_at_once();
}
END_TEST

/* TLS records may hold several answers, or part of one. */
START_TEST(fifty_logins_at_once_over_ldaps) {
  char error[512];
  ck_assert_int_eq(try_open(&h, error, sizeof error,
                            "\"uri\": %s, \"ca_file\": %s, \"base\": %s, \"bind_dn\": "
                            "%s, \"bind_password\": %s, \"identity_attribute\": \"mail\"",
                            ldaps_uri, ca, base, bind_dn, bind_password),
                   0);
  many_at_once();
}
END_TEST

/* ---- Cancel ------------------------------------------------------------- */

/* Queued while the first connection opens on the thread pool. */
START_TEST(cancel_of_a_queued_search) {
  open_search("");
  struct harness_call call;
  harness_auth_start(&h, &call, POPKIT_REQ_AUTH_VERIFY_PLAIN, "alice", "alice pw", res);
  ck_assert(!call.done);
  ck_assert_ptr_nonnull(op_of(&call));
  ck_assert_ptr_null(op_of(&call)->conn);
  harness_cancel(&h, &call);
  run_until_done(&call);
  ck_assert_result(res->result, POPKIT_TEMPFAIL);
  ck_assert_str_eq(res->log_text, "canceled");
  /* The next login runs the loop on; a second completion would abort. */
  ck_assert_result(verify("alice", "alice pw"), POPKIT_OK);
}
END_TEST

/* The search is out on a stopped slapd: cancel ends it at once, not at
 * its deadline, and its late answer confuses nothing. */
START_TEST(cancel_of_a_search_in_flight) {
  /* The deadline is far: a cancel that waited for it would take 30 s. */
  open_search(", \"timeout_s\": 30");
  ck_assert_result(verify("alice", "alice pw"), POPKIT_OK);
  slapd_signal(SIGSTOP);
  struct harness_call call;
  harness_auth_start(&h, &call, POPKIT_REQ_AUTH_VERIFY_PLAIN, "alice", "alice pw", res);
  ck_assert(run_until_sent(&call, LDAP_OP_SEARCH));
  double started = now_s();
  harness_cancel(&h, &call);
  run_until_done(&call);
  ck_assert_msg(now_s() - started < 10, "cancel took %.2f s", now_s() - started);
  ck_assert_result(res->result, POPKIT_TEMPFAIL);
  ck_assert_str_eq(res->log_text, "canceled");
  slapd_signal(SIGCONT);
  ck_assert_result(verify("bob", "bob pw"), POPKIT_OK);
  ck_assert_result(verify("alice", "alice pw"), POPKIT_OK);
}
END_TEST

/* A bind cannot be abandoned: the canceled request ends when its answer
 * comes (or at its deadline), once, and the next logins work. */
START_TEST(cancel_of_a_bind_in_flight) {
  open_search(", \"bind_connections\": 1");
  ck_assert_result(verify("alice", "alice pw"), POPKIT_OK);
  struct harness_call call;
  /* slapd stops once the bind is queued, so it is out and unanswered when
   * the cancel comes. Should it be out and answered already (a libuv that
   * runs timers late in a turn sends it in the same run), try again. */
  for (int attempt = 0;; attempt++) {
    ck_assert_msg(attempt < 20, "never stopped slapd with the bind out");
    harness_auth_start(&h, &call, POPKIT_REQ_AUTH_VERIFY_PLAIN, "alice", "alice pw", res);
    if (!run_until_op(&call, LDAP_OP_BIND, 0))
      continue;
    slapd_signal(SIGSTOP);
    if (run_until_sent(&call, LDAP_OP_BIND))
      break;
    slapd_signal(SIGCONT);
  }
  harness_cancel(&h, &call);
  for (int i = 0; i < 50; i++) {
    uv_run(&h.loop, UV_RUN_NOWAIT);
    usleep(1000);
  }
  slapd_signal(SIGCONT);
  run_until_done(&call);
  ck_assert_result(res->result, POPKIT_TEMPFAIL);
  ck_assert_str_eq(res->log_text, "canceled");
  ck_assert_result(verify("bob", "bob pw"), POPKIT_OK);
  ck_assert_result(verify("alice", "wrong"), POPKIT_FAIL);
}
END_TEST

/* ---- A directory that does not answer ----------------------------------- */

START_TEST(a_stopped_slapd_is_tempfail_within_timeout) {
  open_search(", \"timeout_s\": 1");
  ck_assert_result(verify("alice", "alice pw"), POPKIT_OK);
  slapd_signal(SIGSTOP);
  double started = now_s();
  ck_assert_result(verify("alice", "alice pw"), POPKIT_TEMPFAIL);
  double took = now_s() - started;
  /* Not before the deadline; the upper bound only says it ends, with room
   * for a loaded machine. */
  ck_assert_msg(took > 0.8 && took < 10, "TEMPFAIL after %.2f s, timeout_s is 1", took);
  slapd_signal(SIGCONT);
  ck_assert_result(verify("alice", "alice pw"), POPKIT_OK);
  ck_assert_str_eq(res->identity, "alice");
}
END_TEST

/* A bind cannot be abandoned, so one past its deadline costs its
 * connection; the next login gets a new one. */
START_TEST(a_bind_past_its_deadline_is_tempfail) {
  open_search(", \"timeout_s\": 1, \"bind_connections\": 1");
  ck_assert_result(verify("alice", "alice pw"), POPKIT_OK);
  struct harness_call call;
  /* slapd is stopped as soon as the bind is queued, before it goes out
   * (it goes on the next loop turn); should it be out already and
   * answered, try again. */
  for (int attempt = 0;; attempt++) {
    ck_assert_msg(attempt < 20, "never stopped slapd with the bind out");
    harness_auth_start(&h, &call, POPKIT_REQ_AUTH_VERIFY_PLAIN, "alice", "alice pw", res);
    if (!run_until_op(&call, LDAP_OP_BIND, 0))
      continue;
    slapd_signal(SIGSTOP);
    double started = now_s();
    run_until_done(&call);
    double took = now_s() - started;
    slapd_signal(SIGCONT);
    if (res->result == POPKIT_OK)
      continue;
    ck_assert_result(res->result, POPKIT_TEMPFAIL);
    ck_assert_msg(took > 0.5 && took < 10, "TEMPFAIL after %.2f s, timeout_s is 1", took);
    break;
  }
  ck_assert_result(verify("bob", "bob pw"), POPKIT_OK);
  ck_assert_result(verify("alice", "wrong"), POPKIT_FAIL);
}
END_TEST

/* The first connection hangs in its service bind on the thread pool: the
 * login fails at its deadline, and logins work again soon after slapd
 * does. */
START_TEST(a_connect_to_a_stopped_slapd_recovers) {
  open_search(", \"timeout_s\": 1, \"reconnect_max_ms\": 200");
  slapd_signal(SIGSTOP);
  double started = now_s();
  ck_assert_result(verify("alice", "alice pw"), POPKIT_TEMPFAIL);
  double took = now_s() - started;
  ck_assert_msg(took > 0.8 && took < 10, "TEMPFAIL after %.2f s, timeout_s is 1", took);
  slapd_signal(SIGCONT);
  double deadline = now_s() + 10;
  while (verify("alice", "alice pw") != POPKIT_OK) {
    ck_assert_msg(res->result == POPKIT_TEMPFAIL, "%d: %s", (int)res->result,
                  res->log_text);
    ck_assert_msg(now_s() < deadline, "still %s", res->log_text);
    usleep(20000);
  }
}
END_TEST

START_TEST(an_unreachable_directory_fails_at_once) {
  int fd;
  int port = closed_port(&fd);
  char error[512];
  ck_assert_int_eq(try_open(&h, error, sizeof error,
                            "\"uri\": \"ldap://127.0.0.1:%d\", \"base\": %s, "
                            "\"bind_dn\": %s, \"bind_password\": %s, "
                            "\"timeout_s\": 30",
                            port, base, bind_dn, bind_password),
                   0);
  double started = now_s();
  ck_assert_result(verify("alice", "alice pw"), POPKIT_TEMPFAIL);
  double took = now_s() - started;
  /* At once: not at the 30 s deadline. */
  ck_assert_msg(took < 10, "the first TEMPFAIL took %.2f s", took);
  ck_assert_msg(strstr(h.logs, "unreachable") != NULL, "log: %s", h.logs);
  /* Down: the next ones fail without waiting for a connect. */
  started = now_s();
  ck_assert_result(verify("alice", "alice pw"), POPKIT_TEMPFAIL);
  ck_assert_result(lookup("alice"), POPKIT_TEMPFAIL);
  took = now_s() - started;
  ck_assert_msg(took < 10, "the next TEMPFAILs took %.2f s", took);
  /* Nothing that needs no directory asks it. */
  ck_assert_result(verify("\xff\xfe", "pw"), POPKIT_NOT_FOUND);
  close(fd);
}
END_TEST

/* ---- TLS ---------------------------------------------------------------- */

START_TEST(tls_with_the_right_ca_works_and_with_another_fails) {
  char error[512];
  ck_assert_int_eq(try_open(&h, error, sizeof error,
                            "\"uri\": %s, \"ca_file\": %s, \"dn_template\": %s, "
                            "\"bind_dn\": %s, \"bind_password\": %s",
                            ldaps_uri, ca, direct_template, bind_dn, bind_password),
                   0);
  ck_assert_result(verify("alice", "alice pw"), POPKIT_OK);
  ck_assert_result(verify("nobody", "pw"), POPKIT_NOT_FOUND);
  ck_assert_int_eq(harness_close(&h), 0);
  ck_assert_int_eq(try_open(&h, error, sizeof error,
                            "\"uri\": %s, \"starttls\": true, \"ca_file\": %s, "
                            "\"base\": %s, \"bind_dn\": %s, \"bind_password\": %s",
                            uri, ca, base, bind_dn, bind_password),
                   0);
  ck_assert_result(verify("alice", "alice pw"), POPKIT_OK);
  ck_assert_int_eq(harness_close(&h), 0);
  /* A certificate no CA of ca_file signed: TEMPFAIL, never a login. */
  ck_assert_int_eq(try_open(&h, error, sizeof error,
                            "\"uri\": %s, \"ca_file\": %s, \"base\": %s, \"bind_dn\": "
                            "%s, \"bind_password\": %s",
                            ldaps_uri, other_ca, base, bind_dn, bind_password),
                   0);
  ck_assert_result(verify("alice", "alice pw"), POPKIT_TEMPFAIL);
  ck_assert_int_eq(harness_close(&h), 0);
  ck_assert_int_eq(try_open(&h, error, sizeof error,
                            "\"uri\": %s, \"starttls\": true, \"ca_file\": %s, "
                            "\"base\": %s, \"bind_dn\": %s, \"bind_password\": %s",
                            uri, other_ca, base, bind_dn, bind_password),
                   0);
  ck_assert_result(verify("alice", "alice pw"), POPKIT_TEMPFAIL);
  ck_assert_int_eq(harness_close(&h), 0);
  /* tls_verify false: the same certificate is taken. */
  ck_assert_int_eq(try_open(&h, error, sizeof error,
                            "\"uri\": %s, \"ca_file\": %s, \"tls_verify\": false, "
                            "\"base\": %s, \"bind_dn\": %s, \"bind_password\": %s",
                            ldaps_uri, other_ca, base, bind_dn, bind_password),
                   0);
  ck_assert_result(verify("alice", "alice pw"), POPKIT_OK);
}
END_TEST

/* ---- Destroy ------------------------------------------------------------ */

START_TEST(destroy_with_connections_up) {
  open_direct(", \"identity_attribute\": \"mail\"");
  ck_assert_result(verify("alice", "alice pw"), POPKIT_OK);
  ck_assert_result(verify("alice", "wrong"), POPKIT_FAIL);
  ck_assert_int_eq(harness_close(&h), 0);
  /* And one that never connected. */
  open_search("");
  ck_assert_int_eq(harness_close(&h), 0);
}
END_TEST

/* The search connection is still opening on the thread pool (its service
 * bind waits on a stopped slapd) when the instance goes: the loop still
 * runs to its end and closes. */
START_TEST(destroy_while_a_connect_runs_on_the_thread_pool) {
  /* 3 s: the connect is surely still running when destroy comes. */
  open_search(", \"timeout_s\": 3");
  slapd_signal(SIGSTOP);
  struct harness_call call;
  harness_auth_start(&h, &call, POPKIT_REQ_AUTH_VERIFY_PLAIN, "alice", "alice pw", res);
  for (int i = 0; i < 20; i++) {
    uv_run(&h.loop, UV_RUN_NOWAIT);
    usleep(1000);
  }
  ck_assert(!call.done);
  harness_cancel(&h, &call);
  run_until_done(&call);
  ck_assert_str_eq(res->log_text, "canceled");
  double started = now_s();
  ck_assert_int_eq(harness_close(&h), 0);
  double took = now_s() - started;
  /* It waited for the connect, so the connect was still running. */
  ck_assert_msg(took > 0.3, "destroy took %.2f s: no connect was running (log: %s)", took,
                h.logs);
  slapd_signal(SIGCONT);
}
END_TEST

int main(void) {
  const char *names[] = {"POPKIT_TEST_LDAP_URI",
                         "POPKIT_TEST_LDAPS_URI",
                         "POPKIT_TEST_LDAP_CA",
                         "POPKIT_TEST_LDAP_OTHER_CA",
                         "POPKIT_TEST_LDAP_BASE",
                         "POPKIT_TEST_LDAP_BIND_DN",
                         "POPKIT_TEST_LDAP_BIND_PASSWORD",
                         "POPKIT_TEST_LDAP_PID",
                         "POPKIT_TEST_LDAP_LOG"};
  char **quoted[] = {&uri, &ldaps_uri, &ca, &other_ca, &base, &bind_dn, &bind_password};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    const char *value = getenv(names[i]);
    if (value == NULL) {
      fprintf(stderr,
              "test_ldap_auth: %s is not set: run it under with_slapd.py "
              "(ctest does)\n",
              names[i]);
      return EXIT_FAILURE;
    }
    if (i < sizeof quoted / sizeof quoted[0] &&
        (*quoted[i] = json_quote(value)) == NULL) {
      fprintf(stderr, "test_ldap_auth: %s is not UTF-8\n", names[i]);
      return EXIT_FAILURE;
    }
  }
  slapd_pid = (pid_t)atoi(getenv("POPKIT_TEST_LDAP_PID"));
  slapd_log = getenv("POPKIT_TEST_LDAP_LOG");

  Suite *s = suite_create("ldap-auth");
  TCase *tc = check_tcase(s, "module", setup, teardown);
  tcase_set_timeout(tc, 30);
  tcase_add_test(tc, settings_errors_name_their_key);
  tcase_add_test(tc, bind_dn_and_password_go_together);
  tcase_add_test(tc, dn_template_with_only_a_literal_percent_u_is_refused);
  tcase_add_test(tc, good_settings_are_accepted_without_connecting);
  tcase_add_test(tc, search_mode_results);
  tcase_add_test(tc, search_mode_never_sends_an_empty_password);
  tcase_add_test(tc, anonymous_search_where_it_is_refused_is_tempfail);
  tcase_add_test(tc, search_base_that_does_not_exist_is_tempfail);
  tcase_add_test(tc, direct_bind_results);
  tcase_add_test(tc, direct_bind_identity_is_the_user_name);
  tcase_add_test(tc, direct_bind_never_sends_an_empty_password);
  tcase_add_test(tc, fifty_logins_at_once_in_search_mode);
  tcase_add_test(tc, fifty_logins_at_once_with_direct_bind);
  tcase_add_test(tc, fifty_logins_at_once_over_ldaps);
  tcase_add_test(tc, cancel_of_a_queued_search);
  tcase_add_test(tc, cancel_of_a_search_in_flight);
  tcase_add_test(tc, cancel_of_a_bind_in_flight);
  tcase_add_test(tc, a_stopped_slapd_is_tempfail_within_timeout);
  tcase_add_test(tc, a_bind_past_its_deadline_is_tempfail);
  tcase_add_test(tc, a_connect_to_a_stopped_slapd_recovers);
  tcase_add_test(tc, an_unreachable_directory_fails_at_once);
  tcase_add_test(tc, tls_with_the_right_ca_works_and_with_another_fails);
  tcase_add_test(tc, destroy_with_connections_up);
  tcase_add_test(tc, destroy_while_a_connect_runs_on_the_thread_pool);
  int failed = check_run(s);
  kill(slapd_pid, SIGCONT);
  for (size_t i = 0; i < sizeof quoted / sizeof quoted[0]; i++)
    free(*quoted[i]);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
