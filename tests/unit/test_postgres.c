/*
 * Tests of the postgres module, driven through the module harness against
 * a real PostgreSQL that ctest starts for them (the fixture in
 * tests/unit/CMakeLists.txt): delivery and reading back at every piece
 * boundary, deletion and the lock across instances, the auth role, and the
 * pool's own paths that a whole popkitd rarely takes (cancel of a queued
 * query, a query timeout, an unreachable server, handles left behind).
 */
#include <check.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_run.h"
#include "module_harness.h"
#include "popkit/crlf.h"

static const char *conninfo;       /* the role popkit, as popkitd connects */
static const char *admin_conninfo; /* the superuser, to set up and look */
static struct harness h, h2;
static struct harness_result *res;

/* ---- Fixture and helpers ------------------------------------------------ */

/* Runs one statement as the superuser with text parameters; returns the
 * first column of the first row, or "" (in a static buffer). */
static const char *admin(const char *sql, int nparams, ...) {
  static char first[256];
  const char *params[4];
  va_list ap;
  va_start(ap, nparams);
  for (int i = 0; i < nparams; i++)
    params[i] = va_arg(ap, const char *);
  va_end(ap);
  PGconn *pg = PQconnectdb(admin_conninfo);
  ck_assert_msg(PQstatus(pg) == CONNECTION_OK, "admin connection: %s",
                PQerrorMessage(pg));
  PGresult *r = PQexecParams(pg, sql, nparams, NULL, params, NULL, NULL, 0);
  ExecStatusType st = PQresultStatus(r);
  ck_assert_msg(st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK, "%s: %s", sql,
                PQresultErrorMessage(r));
  snprintf(first, sizeof first, "%s",
           PQntuples(r) > 0 && PQnfields(r) > 0 ? PQgetvalue(r, 0, 0) : "");
  PQclear(r);
  PQfinish(pg);
  return first;
}

static void setup(void) {
  res = calloc(1, sizeof *res);
  ck_assert_ptr_nonnull(res);
  memset(&h, 0, sizeof h);
  memset(&h2, 0, sizeof h2);
  admin(
      "TRUNCATE popkit.users, popkit.mailboxes, popkit.messages, popkit.message_chunks, "
      "popkit.mailbox_locks",
      0);
}

static void teardown(void) {
  /* Every handle the module made must be closed by destroy: uv_loop_close
   * says so. */
  if (h.dl != NULL)
    ck_assert_int_eq(harness_close(&h), 0);
  if (h2.dl != NULL)
    ck_assert_int_eq(harness_close(&h2), 0);
  free(res);
}

/* Opens the module on hh with conninfo and extra settings ("" or
 * ", \"key\": value..."). */
static void open_module(struct harness *hh, const char *info, const char *extra) {
  char json[2048], error[512];
  snprintf(json, sizeof json, "{\"module\": \"postgres\", \"conninfo\": \"%s\"%s}", info,
           extra);
  ck_assert_msg(harness_open(hh, MODULE_PATH, json, "/", error, sizeof error) == 0,
                "create: %s", error);
}

/* A message of size raw bytes, LF line ends, lines of varied length. */
static char *make_message(size_t size) {
  char *m = malloc(size);
  ck_assert_ptr_nonnull(m);
  for (size_t i = 0; i < size; i++)
    m[i] = i % 61 == 60 ? '\n' : (char)('a' + i % 26);
  return m;
}

static uint64_t crlf_size(const char *data, size_t size) {
  struct popkit_crlf_size s = {0};
  popkit_crlf_size_feed(&s, data, size);
  return popkit_crlf_size_finish(&s);
}

static void *open_mailbox(struct harness *hh, const char *name) {
  struct popkit_store_request req = {0};
  req.identity = name;
  ck_assert_int_eq(harness_store(hh, POPKIT_REQ_STORE_OPEN, &req, res), POPKIT_OK);
  return req.mailbox;
}

static void close_mailbox(struct harness *hh, void *mailbox) {
  struct popkit_store_request req = {0};
  req.mailbox = mailbox;
  ck_assert_int_eq(harness_store(hh, POPKIT_REQ_STORE_CLOSE, &req, res), POPKIT_OK);
}

/* ---- Store -------------------------------------------------------------- */

/* Sizes around the 64 KiB pieces popkit-deliver writes, delivered in
 * writes that do not line up with them, read back in reads that do not
 * either. */
START_TEST(delivered_messages_read_back_exactly) {
  open_module(&h, conninfo, "");
  const size_t sizes[] = {1, 65535, 65536, 65537, 200003};
  const size_t n = sizeof sizes / sizeof sizes[0];
  char *messages[5];
  for (size_t i = 0; i < n; i++) {
    messages[i] = make_message(sizes[i]);
    ck_assert_int_eq(
        harness_deliver(&h, "m\xc3\xbcller", messages[i], sizes[i], i % 2 ? 4096 : 70001),
        POPKIT_OK);
  }
  void *mb = open_mailbox(&h, "m\xc3\xbcller");
  ck_assert_uint_eq(res->message_count, n);
  for (size_t i = 0; i < n; i++) {
    ck_assert_uint_eq(res->sizes[i], crlf_size(messages[i], sizes[i]));
    ck_assert_uint_eq(strlen(res->uids[i]), 32);
  }
  ck_assert_str_ne(res->uids[0], res->uids[1]);
  for (size_t i = 0; i < n; i++) {
    char *data;
    size_t size;
    ck_assert_int_eq(harness_read_all(&h, mb, i, i % 2 ? 8192 : 997, &data, &size),
                     POPKIT_OK);
    ck_assert_uint_eq(size, sizes[i]);
    ck_assert_msg(memcmp(data, messages[i], size) == 0, "message %zu differs", i);
    free(data);
    free(messages[i]);
  }
  close_mailbox(&h, mb);
  ck_assert_str_eq(admin("SELECT count(*) FROM popkit.mailbox_locks", 0), "0");
}
END_TEST

/* An import may cut a message into pieces of any size; an empty message
 * has none. */
START_TEST(imported_pieces_of_any_size_read_back) {
  open_module(&h, conninfo, "");
  admin("INSERT INTO popkit.mailboxes (name) VALUES ('ana')", 0);
  admin("INSERT INTO popkit.messages (mailbox_id, uid, size) SELECT id, 'empty', 0 FROM "
        "popkit.mailboxes",
        0);
  const char *id = admin("INSERT INTO popkit.messages (mailbox_id, uid, size) SELECT id, "
                         "'old-1', 12 FROM popkit.mailboxes RETURNING id",
                         0);
  admin("INSERT INTO popkit.message_chunks VALUES ($1, 0, 'a'), ($1, 1, 'b\ncd'), ($1, "
        "5, 'ef\n')",
        1, id);
  void *mb = open_mailbox(&h, "ana");
  ck_assert_uint_eq(res->message_count, 2);
  ck_assert_str_eq(res->uids[1], "old-1");
  char *data;
  size_t size;
  ck_assert_int_eq(harness_read_all(&h, mb, 0, 8192, &data, &size), POPKIT_OK);
  ck_assert_uint_eq(size, 0);
  free(data);
  for (size_t chunk = 1; chunk <= 9; chunk += 4) {
    ck_assert_int_eq(harness_read_all(&h, mb, 1, chunk, &data, &size), POPKIT_OK);
    ck_assert_uint_eq(size, 8);
    ck_assert(memcmp(data, "ab\ncdef\n", 8) == 0);
    free(data);
  }
  close_mailbox(&h, mb);
}
END_TEST

/* One step of a delivery begun with begin_delivery. */
static enum popkit_result append_step(enum popkit_request_kind kind, void *handle,
                                      const char *data, size_t size, int commit) {
  struct popkit_store_request req = {0};
  req.mailbox = handle;
  req.data = data;
  req.data_size = size;
  req.commit = commit;
  return harness_store(&h, kind, &req, res);
}

static void *begin_delivery(const char *identity) {
  struct popkit_store_request req = {0};
  req.identity = identity;
  ck_assert_int_eq(harness_store(&h, POPKIT_REQ_STORE_APPEND_BEGIN, &req, res),
                   POPKIT_OK);
  return req.mailbox;
}

static void assert_no_message_stored(void) {
  ck_assert_str_eq(admin("SELECT count(*) FROM popkit.messages", 0), "0");
  ck_assert_str_eq(admin("SELECT count(*) FROM popkit.message_chunks", 0), "0");
}

START_TEST(thrown_away_delivery_leaves_nothing) {
  open_module(&h, conninfo, "");
  void *handle = begin_delivery("ana");
  char *data = make_message(150000);
  ck_assert_int_eq(append_step(POPKIT_REQ_STORE_APPEND_WRITE, handle, data, 150000, 0),
                   POPKIT_OK);
  ck_assert_int_eq(append_step(POPKIT_REQ_STORE_APPEND_FINISH, handle, NULL, 0, 0),
                   POPKIT_OK);
  free(data);
  assert_no_message_stored();
}
END_TEST

/* The connection of a delivery dies between two writes (PostgreSQL
 * restarted, say): the write fails, the delivery is still finished once,
 * and nothing of it is left. */
START_TEST(a_delivery_whose_connection_dies_leaves_nothing) {
  open_module(&h, conninfo, "");
  void *handle = begin_delivery("ana");
  admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'popkit'",
        0);
  char *data = make_message(200000); /* more than one piece: a write reaches the server */
  ck_assert_int_eq(append_step(POPKIT_REQ_STORE_APPEND_WRITE, handle, data, 200000, 0),
                   POPKIT_TEMPFAIL);
  ck_assert_int_eq(append_step(POPKIT_REQ_STORE_APPEND_WRITE, handle, data, 10, 0),
                   POPKIT_TEMPFAIL);
  ck_assert_int_eq(append_step(POPKIT_REQ_STORE_APPEND_FINISH, handle, NULL, 0, 0),
                   POPKIT_OK);
  free(data);
  assert_no_message_stored();
  /* The pool is fine afterwards. */
  ck_assert_int_eq(harness_deliver(&h, "ana", "x\n", 2, 64), POPKIT_OK);
}
END_TEST

START_TEST(expunge_deletes_exactly_the_named) {
  open_module(&h, conninfo, "");
  for (int i = 0; i < 3; i++) {
    char text[64];
    int len = snprintf(text, sizeof text, "Subject: %d\n\nbody\n", i);
    ck_assert_int_eq(harness_deliver(&h, "ana", text, (size_t)len, 64), POPKIT_OK);
  }
  void *mb = open_mailbox(&h, "ana");
  char kept[71];
  snprintf(kept, sizeof kept, "%s", res->uids[1]);
  struct popkit_store_request req = {0};
  uint64_t indexes[] = {0, 2};
  req.mailbox = mb;
  req.indexes = indexes;
  req.index_count = 2;
  ck_assert_int_eq(harness_store(&h, POPKIT_REQ_STORE_EXPUNGE, &req, res), POPKIT_OK);
  close_mailbox(&h, mb);
  mb = open_mailbox(&h, "ana");
  ck_assert_uint_eq(res->message_count, 1);
  ck_assert_str_eq(res->uids[0], kept);
  close_mailbox(&h, mb);
  ck_assert_str_eq(admin("SELECT count(*) FROM popkit.message_chunks", 0), "1");
}
END_TEST

/* A session whose lease another took (it expired while PostgreSQL was
 * away) must not delete anything. */
START_TEST(expunge_without_the_lock_deletes_nothing) {
  open_module(&h, conninfo, "");
  ck_assert_int_eq(harness_deliver(&h, "ana", "x\n", 2, 64), POPKIT_OK);
  void *mb = open_mailbox(&h, "ana");
  admin("UPDATE popkit.mailbox_locks SET holder = 'another host', session = 1", 0);
  struct popkit_store_request req = {0};
  uint64_t indexes[] = {0};
  req.mailbox = mb;
  req.indexes = indexes;
  req.index_count = 1;
  ck_assert_int_eq(harness_store(&h, POPKIT_REQ_STORE_EXPUNGE, &req, res),
                   POPKIT_TEMPFAIL);
  ck_assert_str_eq(admin("SELECT count(*) FROM popkit.messages", 0), "1");
  close_mailbox(&h, mb);
  /* Giving back a lease that is no longer ours leaves the other's alone. */
  ck_assert_str_eq(admin("SELECT holder FROM popkit.mailbox_locks", 0), "another host");
}
END_TEST

START_TEST(second_instance_gets_in_use_until_close) {
  open_module(&h, conninfo, "");
  open_module(&h2, conninfo, "");
  void *mb = open_mailbox(&h, "o'brien");
  struct popkit_store_request req = {0};
  req.identity = "o'brien";
  ck_assert_int_eq(harness_store(&h2, POPKIT_REQ_STORE_OPEN, &req, res), POPKIT_IN_USE);
  ck_assert_ptr_null(req.mailbox);
  close_mailbox(&h, mb);
  void *mb2 = open_mailbox(&h2, "o'brien");
  close_mailbox(&h2, mb2);
}
END_TEST

START_TEST(expired_lease_is_taken_over) {
  open_module(&h, conninfo, "");
  admin("INSERT INTO popkit.mailbox_locks VALUES ('ana', 'a dead host', 7, now() - "
        "interval '1 second')",
        0);
  void *mb = open_mailbox(&h, "ana");
  ck_assert_str_ne(admin("SELECT holder FROM popkit.mailbox_locks", 0), "a dead host");
  close_mailbox(&h, mb);
}
END_TEST

/* ---- Auth --------------------------------------------------------------- */

START_TEST(passwords_identities_and_credentials) {
  open_module(&h, conninfo, "");
  admin("INSERT INTO popkit.users VALUES ($1, '{PLAIN}irish', 'box of o''brien'), "
        "('ana', '{PLAIN}pw', NULL), ('locked', NULL, NULL)",
        1, "o'brien");
  ck_assert_int_eq(
      harness_auth(&h, POPKIT_REQ_AUTH_VERIFY_PLAIN, "o'brien", "irish", res), POPKIT_OK);
  ck_assert_str_eq(res->identity, "box of o'brien");
  ck_assert_int_eq(harness_auth(&h, POPKIT_REQ_AUTH_VERIFY_PLAIN, "ana", "pw", res),
                   POPKIT_OK);
  ck_assert_str_eq(res->identity, "ana");
  ck_assert_int_eq(harness_auth(&h, POPKIT_REQ_AUTH_VERIFY_PLAIN, "ana", "PW", res),
                   POPKIT_FAIL);
  ck_assert_int_eq(harness_auth(&h, POPKIT_REQ_AUTH_VERIFY_PLAIN, "locked", "", res),
                   POPKIT_FAIL);
  ck_assert_int_eq(harness_auth(&h, POPKIT_REQ_AUTH_VERIFY_PLAIN, "nobody", "pw", res),
                   POPKIT_NOT_FOUND);
  ck_assert_int_eq(harness_auth(&h, POPKIT_REQ_AUTH_VERIFY_PLAIN,
                                "x'; DROP TABLE popkit.users; --", "pw", res),
                   POPKIT_NOT_FOUND);
  ck_assert_int_eq(harness_auth(&h, POPKIT_REQ_AUTH_VERIFY_PLAIN, "\xff\xfe", "pw", res),
                   POPKIT_NOT_FOUND);
  ck_assert_int_eq(harness_auth(&h, POPKIT_REQ_AUTH_LOOKUP, "o'brien", NULL, res),
                   POPKIT_OK);
  ck_assert_str_eq(res->identity, "box of o'brien");
  ck_assert_int_eq(harness_auth(&h, POPKIT_REQ_AUTH_GET_CREDENTIAL, "ana", NULL, res),
                   POPKIT_OK);
  ck_assert_str_eq(res->credential, "{PLAIN}pw");
  ck_assert_int_eq(harness_auth(&h, POPKIT_REQ_AUTH_GET_CREDENTIAL, "locked", NULL, res),
                   POPKIT_OK);
  ck_assert_str_eq(res->credential, "*");
  ck_assert_str_eq(admin("SELECT count(*) FROM popkit.users", 0), "3");
}
END_TEST

START_TEST(broken_queries_are_tempfail) {
  open_module(&h, conninfo,
              ", \"password_query\": \"SELECT password FROM popkit.users WHERE name = $1 "
              "OR name = 'ana'\"");
  admin("INSERT INTO popkit.users VALUES ('ana', '{PLAIN}a', NULL), ('bo', '{PLAIN}b', "
        "NULL)",
        0);
  ck_assert_int_eq(harness_auth(&h, POPKIT_REQ_AUTH_VERIFY_PLAIN, "bo", "b", res),
                   POPKIT_TEMPFAIL);
  ck_assert_msg(strstr(res->log_text, "2 rows") != NULL, "%s", res->log_text);
  ck_assert_int_eq(harness_close(&h), 0);
  open_module(&h, conninfo, ", \"password_query\": \"SELEC password FROM x WHERE $1\"");
  ck_assert_int_eq(harness_auth(&h, POPKIT_REQ_AUTH_VERIFY_PLAIN, "bo", "b", res),
                   POPKIT_TEMPFAIL);
  ck_assert_msg(strstr(res->log_text, "42601") != NULL, "%s", res->log_text);
}
END_TEST

START_TEST(bad_settings_are_refused_by_name) {
  char error[512];
  const char *configs[][2] = {
      {"{\"module\": \"postgres\", \"conninfo\": \"host=x port\"}", "conninfo"},
      {"{\"module\": \"postgres\", \"conninfo\": \"host=x\", \"password_query\": "
       "\"SELECT "
       "1\"}",
       "$1"},
      {"{\"module\": \"postgres\", \"conninfo\": \"host=x\", \"pool_size\": 0}",
       "pool_size"},
      {"{\"module\": \"postgres\", \"conninfo\": \"host=x\", \"lock_ttl_s\": 2}",
       "lock_ttl_s"},
  };
  for (size_t i = 0; i < sizeof configs / sizeof configs[0]; i++) {
    ck_assert_int_ne(
        harness_open(&h, MODULE_PATH, configs[i][0], "/", error, sizeof error), 0);
    ck_assert_msg(strstr(error, configs[i][1]) != NULL, "%s: %s", configs[i][0], error);
    harness_close(&h);
  }
}
END_TEST

/* ---- The pool ----------------------------------------------------------- */

static const char sleepy_query[] =
    ", \"pool_size\": 1, \"password_query\": \"SELECT password, mailbox FROM "
    "popkit.users, "
    "pg_sleep(CASE WHEN $1 = 'slow' THEN 1.5 ELSE 0 END) WHERE name = $1\"";

/* With the one connection busy, a second request waits in the queue, and
 * cancel takes it out at once. */
START_TEST(cancel_takes_a_queued_request_out) {
  open_module(&h, conninfo, sleepy_query);
  admin("INSERT INTO popkit.users VALUES ('slow', '{PLAIN}s', NULL), ('ana', '{PLAIN}a', "
        "NULL)",
        0);
  struct harness_call slow, fast;
  struct harness_result *slow_out = calloc(1, sizeof *slow_out);
  harness_auth_start(&h, &slow, POPKIT_REQ_AUTH_VERIFY_PLAIN, "slow", "s", slow_out);
  harness_auth_start(&h, &fast, POPKIT_REQ_AUTH_VERIFY_PLAIN, "ana", "a", res);
  /* Until the slow query is on the connection. */
  for (int i = 0; i < 50; i++)
    uv_run(&h.loop, UV_RUN_NOWAIT);
  harness_cancel(&h, &fast);
  while (!fast.done)
    uv_run(&h.loop, UV_RUN_ONCE);
  ck_assert_msg(!slow.done, "the slow login finished before the canceled one");
  ck_assert_int_eq(res->result, POPKIT_TEMPFAIL);
  ck_assert_str_eq(res->log_text, "canceled");
  while (!slow.done)
    uv_run(&h.loop, UV_RUN_ONCE);
  ck_assert_int_eq(slow_out->result, POPKIT_OK);
  free(slow_out);
}
END_TEST

START_TEST(query_timeout_fails_and_the_next_query_works) {
  char extra[512];
  snprintf(extra, sizeof extra, "%s, \"query_timeout_s\": 1", sleepy_query);
  open_module(&h, conninfo, extra);
  admin("INSERT INTO popkit.users VALUES ('slow', '{PLAIN}s', NULL), ('ana', '{PLAIN}a', "
        "NULL)",
        0);
  /* 1.5 s of sleep against a 1 s deadline. */
  ck_assert_int_eq(harness_auth(&h, POPKIT_REQ_AUTH_VERIFY_PLAIN, "slow", "s", res),
                   POPKIT_TEMPFAIL);
  ck_assert_msg(strstr(res->log_text, "query_timeout_s") != NULL, "%s", res->log_text);
  ck_assert_int_eq(harness_auth(&h, POPKIT_REQ_AUTH_VERIFY_PLAIN, "ana", "a", res),
                   POPKIT_OK);
}
END_TEST

/* Nothing listens on the port: TEMPFAIL (never FAIL or NOT_FOUND), and once
 * the pool knows the server is down, at once. */
START_TEST(unreachable_server_is_tempfail) {
  open_module(&h, "host=127.0.0.1 port=1 connect_timeout=2", "");
  ck_assert_int_eq(harness_auth(&h, POPKIT_REQ_AUTH_VERIFY_PLAIN, "ana", "a", res),
                   POPKIT_TEMPFAIL);
  ck_assert_msg(strstr(res->log_text, "unreachable") != NULL, "%s", res->log_text);
  struct popkit_store_request req = {0};
  req.identity = "ana";
  ck_assert_int_eq(harness_store(&h, POPKIT_REQ_STORE_OPEN, &req, res), POPKIT_TEMPFAIL);
  ck_assert_int_eq(harness_deliver(&h, "ana", "x\n", 2, 64), POPKIT_TEMPFAIL);
  ck_assert_msg(strstr(h.logs, "unreachable") != NULL, "log: %s", h.logs);
}
END_TEST

int main(void) {
  conninfo = getenv("POPKIT_TEST_PG_CONNINFO");
  admin_conninfo = getenv("POPKIT_TEST_PG_ADMIN_CONNINFO");
  if (conninfo == NULL || admin_conninfo == NULL) {
    fprintf(stderr, "test_postgres: POPKIT_TEST_PG_CONNINFO and "
                    "POPKIT_TEST_PG_ADMIN_CONNINFO must name the test database "
                    "(ctest's postgres fixture sets them)\n");
    return EXIT_FAILURE;
  }
  Suite *s = suite_create("postgres");
  TCase *tc = tcase_create("module");
  tcase_set_timeout(tc, 60);
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, delivered_messages_read_back_exactly);
  tcase_add_test(tc, imported_pieces_of_any_size_read_back);
  tcase_add_test(tc, thrown_away_delivery_leaves_nothing);
  tcase_add_test(tc, a_delivery_whose_connection_dies_leaves_nothing);
  tcase_add_test(tc, expunge_deletes_exactly_the_named);
  tcase_add_test(tc, expunge_without_the_lock_deletes_nothing);
  tcase_add_test(tc, second_instance_gets_in_use_until_close);
  tcase_add_test(tc, expired_lease_is_taken_over);
  tcase_add_test(tc, passwords_identities_and_credentials);
  tcase_add_test(tc, broken_queries_are_tempfail);
  tcase_add_test(tc, bad_settings_are_refused_by_name);
  tcase_add_test(tc, cancel_takes_a_queued_request_out);
  tcase_add_test(tc, query_timeout_fails_and_the_next_query_works);
  tcase_add_test(tc, unreachable_server_is_tempfail);
  suite_add_tcase(s, tc);
  return check_run(s) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
