/*
 * Tests of slow_auth.so, the asynchronous auth module popkitd's integration
 * tests rely on, driven on a real libuv loop by the module test harness
 * (tests/unit/module_harness.h).
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "../unit/check_run.h"
#include "../unit/module_harness.h"
#include "popkit/module.h"

static char module_path[4096];
static struct harness h;
static bool opened;

static void setup(void) {
  const char *dir = getenv("POPKIT_TEST_MODULES_DIR");
  ck_assert_msg(dir != NULL, "POPKIT_TEST_MODULES_DIR is not set");
  snprintf(module_path, sizeof module_path, "%s/slow_auth.so", dir);
  opened = false;
}

static void teardown(void) {
  /* Every test ends with a loop that has nothing left: no timer leaked. */
  if (opened)
    ck_assert_int_eq(harness_close(&h), 0);
}

/* Opens slow_auth with a JSON config; returns create()'s result. */
static int open_with(const char *config_json, char *error, size_t error_size) {
  int rc = harness_open(&h, module_path, config_json, "/", error, error_size);
  opened = true;
  return rc;
}

static void open_ok(const char *config_json) {
  char error[256] = "";
  int rc = open_with(config_json, error, sizeof error);
  ck_assert_msg(rc == 0, "create failed: %s", error);
}

/* A started request and its answer. */
struct request {
  struct harness_call call;
  struct harness_result *out;
};

static void start(struct request *r, enum popkit_request_kind kind, const char *user,
                  const char *password) {
  r->out = malloc(sizeof *r->out);
  ck_assert_ptr_nonnull(r->out);
  harness_auth_start(&h, &r->call, kind, user, password, r->out);
}

static void done(struct request *r) {
  free(r->out);
}

START_TEST(descriptor_declares_auth_and_config_keys) {
  open_ok("{\"password\": \"pw\"}");
  const struct popkit_module_descriptor *module = h.descriptor;
  ck_assert_str_eq(module->name, "slow_auth");
  ck_assert_uint_eq(module->roles, POPKIT_ROLE_AUTH);
  ck_assert_ptr_nonnull(module->cancel);
  ck_assert_str_eq(module->config_keys[0].name, "password");
  ck_assert_uint_eq(module->config_keys[0].required, 1);
  ck_assert_str_eq(module->config_keys[1].name, "delay_ms");
  ck_assert_uint_eq(module->config_keys[1].type, POPKIT_CONFIG_INTEGER);
  ck_assert_uint_eq(module->config_keys[1].required, 0);
  ck_assert_ptr_null(module->config_keys[2].name);
}
END_TEST

START_TEST(create_refuses_a_negative_delay) {
  char error[256] = "";
  ck_assert_int_lt(
      open_with("{\"password\": \"pw\", \"delay_ms\": -5}", error, sizeof error), 0);
  ck_assert_msg(strstr(error, "delay_ms") != NULL, "error names no key: %s", error);
  ck_assert_msg(strstr(error, "-5") != NULL, "error hides the value: %s", error);
}
END_TEST

START_TEST(create_refuses_a_missing_password) {
  char error[256] = "";
  ck_assert_int_lt(open_with("{}", error, sizeof error), 0);
  ck_assert_msg(strstr(error, "password") != NULL, "error names no key: %s", error);
}
END_TEST

START_TEST(delay_defaults_to_zero) {
  open_ok("{\"password\": \"pw\"}");
  struct request r;
  start(&r, POPKIT_REQ_AUTH_VERIFY_PLAIN, "slowpoke", "pw");
  ck_assert_int_eq(r.call.done, 1);
  ck_assert_int_eq(r.out->result, POPKIT_OK);
  done(&r);
}
END_TEST

START_TEST(other_users_are_not_found_at_once) {
  open_ok("{\"password\": \"pw\", \"delay_ms\": 10000}");
  struct request r;
  start(&r, POPKIT_REQ_AUTH_VERIFY_PLAIN, "alice", "pw");
  ck_assert_int_eq(r.call.done, 1);
  ck_assert_int_eq(r.out->result, POPKIT_NOT_FOUND);
  done(&r);
  start(&r, POPKIT_REQ_AUTH_LOOKUP, "slo", NULL);
  ck_assert_int_eq(r.call.done, 1);
  ck_assert_int_eq(r.out->result, POPKIT_NOT_FOUND);
  done(&r);
}
END_TEST

START_TEST(zero_delay_completes_inside_the_call) {
  open_ok("{\"password\": \"s3cret\", \"delay_ms\": 0}");
  struct request r;
  start(&r, POPKIT_REQ_AUTH_VERIFY_PLAIN, "slow1", "s3cret");
  ck_assert_int_eq(r.call.done, 1);
  ck_assert_int_eq(r.out->result, POPKIT_OK);
  ck_assert_str_eq(r.out->identity, "slow1");
  done(&r);

  start(&r, POPKIT_REQ_AUTH_VERIFY_PLAIN, "slow1", "wrong");
  ck_assert_int_eq(r.call.done, 1);
  ck_assert_int_eq(r.out->result, POPKIT_FAIL);
  done(&r);

  start(&r, POPKIT_REQ_AUTH_LOOKUP, "slow2", NULL);
  ck_assert_int_eq(r.call.done, 1);
  ck_assert_int_eq(r.out->result, POPKIT_OK);
  ck_assert_str_eq(r.out->identity, "slow2");
  done(&r);

  start(&r, POPKIT_REQ_AUTH_GET_CREDENTIAL, "slow3", NULL);
  ck_assert_int_eq(r.call.done, 1);
  ck_assert_int_eq(r.out->result, POPKIT_OK);
  ck_assert_str_eq(r.out->credential, "{PLAIN}s3cret");
  ck_assert_str_eq(r.out->identity, "slow3");
  done(&r);
}
END_TEST

START_TEST(slowdown_users_stand_for_an_unreachable_backend) {
  open_ok("{\"password\": \"pw\", \"delay_ms\": 0}");
  struct request r;
  start(&r, POPKIT_REQ_AUTH_VERIFY_PLAIN, "slowdown1", "pw");
  ck_assert_int_eq(r.call.done, 1);
  ck_assert_int_eq(r.out->result, POPKIT_TEMPFAIL);
  done(&r);
}
END_TEST

START_TEST(delayed_answers_come_from_the_loop_after_the_delay) {
  open_ok("{\"password\": \"pw\", \"delay_ms\": 60}");
  struct request good, bad, credential;
  uint64_t started = uv_hrtime();
  start(&good, POPKIT_REQ_AUTH_VERIFY_PLAIN, "slowpoke", "pw");
  start(&bad, POPKIT_REQ_AUTH_VERIFY_PLAIN, "slowpoke", "nope");
  start(&credential, POPKIT_REQ_AUTH_GET_CREDENTIAL, "slowpoke", NULL);
  ck_assert_int_eq(good.call.done + bad.call.done + credential.call.done, 0);

  uv_run(&h.loop, UV_RUN_DEFAULT);
  uint64_t elapsed_ms = (uv_hrtime() - started) / 1000000u;
  ck_assert_uint_ge(elapsed_ms, 55); /* the loop's clock rounds to a millisecond */
  ck_assert_int_eq(good.call.done, 1);
  ck_assert_int_eq(good.out->result, POPKIT_OK);
  ck_assert_int_eq(bad.call.done, 1);
  ck_assert_int_eq(bad.out->result, POPKIT_FAIL);
  ck_assert_int_eq(credential.call.done, 1);
  ck_assert_str_eq(credential.out->credential, "{PLAIN}pw");
  done(&good);
  done(&bad);
  done(&credential);
}
END_TEST

START_TEST(cancel_completes_with_tempfail_and_logs) {
  open_ok("{\"password\": \"pw\", \"delay_ms\": 100000}");
  struct request canceled, other;
  start(&canceled, POPKIT_REQ_AUTH_VERIFY_PLAIN, "slowpoke", "pw");
  start(&other, POPKIT_REQ_AUTH_LOOKUP, "slowcoach", NULL);
  ck_assert_int_eq(canceled.call.done, 0);

  harness_cancel(&h, &canceled.call);
  ck_assert_int_eq(canceled.call.done, 1);
  ck_assert_int_eq(canceled.out->result, POPKIT_TEMPFAIL);
  ck_assert_str_eq(canceled.out->log_text, "canceled");
  ck_assert_msg(strstr(h.logs, "slow_auth: request canceled") != NULL, "logged: %s",
                h.logs);
  ck_assert_int_eq(other.call.done, 0);

  /* Canceling the other one too leaves the loop with nothing to wait for:
   * uv_run returns at once instead of after 100 s. */
  harness_cancel(&h, &other.call);
  uint64_t started = uv_hrtime();
  uv_run(&h.loop, UV_RUN_DEFAULT);
  ck_assert_uint_lt((uv_hrtime() - started) / 1000000u, 5000);
  ck_assert_int_eq(other.call.done, 1);
  ck_assert_int_eq(other.out->result, POPKIT_TEMPFAIL);
  done(&canceled);
  done(&other);
}
END_TEST

START_TEST(cancel_of_an_answered_request_does_nothing) {
  open_ok("{\"password\": \"pw\", \"delay_ms\": 0}");
  struct request r;
  start(&r, POPKIT_REQ_AUTH_VERIFY_PLAIN, "slowpoke", "pw");
  ck_assert_int_eq(r.call.done, 1);
  /* A second completion would abort the harness. */
  harness_cancel(&h, &r.call);
  ck_assert_int_eq(r.out->result, POPKIT_OK);
  done(&r);
}
END_TEST

int main(void) {
  Suite *suite = suite_create("slow_auth");
  TCase *tc = tcase_create("slow_auth");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, descriptor_declares_auth_and_config_keys);
  tcase_add_test(tc, create_refuses_a_negative_delay);
  tcase_add_test(tc, create_refuses_a_missing_password);
  tcase_add_test(tc, delay_defaults_to_zero);
  tcase_add_test(tc, other_users_are_not_found_at_once);
  tcase_add_test(tc, zero_delay_completes_inside_the_call);
  tcase_add_test(tc, slowdown_users_stand_for_an_unreachable_backend);
  tcase_add_test(tc, delayed_answers_come_from_the_loop_after_the_delay);
  tcase_add_test(tc, cancel_completes_with_tempfail_and_logs);
  tcase_add_test(tc, cancel_of_an_answered_request_does_nothing);
  suite_add_tcase(suite, tc);
  int failed = check_run(suite);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
