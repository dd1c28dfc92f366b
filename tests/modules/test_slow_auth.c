/*
 * Tests of slow_auth.so, the asynchronous auth module popkitd's integration
 * tests rely on. The module is loaded through the real loader and driven on
 * a real libuv loop by a small host defined here, which records what the
 * module completes and logs.
 */
#include <check.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "../unit/check_run.h"
#include "loader.h"
#include "popkit/module.h"

/* The module's settings, as the host hands them out. */
struct test_config {
  const char *password;
  int has_delay;
  int64_t delay_ms;
};

/* One request and what the module answered to it. */
struct call {
  struct popkit_auth_request req; /* first: the host gets &req.base back */
  int completions;
  enum popkit_result result;
  char log_text[256];
  char identity[256];
  char credential[256];
};

static char logged[4096];

static void host_log(struct popkit_module_handle *self, const struct popkit_request *req,
                     enum popkit_log_level level, const char *fmt, ...) {
  size_t used = strlen(logged);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(logged + used, sizeof logged - used, fmt, ap);
  va_end(ap);
  used = strlen(logged);
  snprintf(logged + used, sizeof logged - used, "\n");
}

static void host_complete(struct popkit_request *req, enum popkit_result result,
                          const char *log_text) {
  struct call *call = (struct call *)req;
  ck_assert_uint_eq(req->magic, POPKIT_REQUEST_MAGIC);
  call->completions++;
  call->result = result;
  snprintf(call->log_text, sizeof call->log_text, "%s", log_text ? log_text : "");
}

static int host_set_identity(struct popkit_auth_request *req, const char *identity) {
  struct call *call = (struct call *)req;
  snprintf(call->identity, sizeof call->identity, "%s", identity);
  return 0;
}

static int host_set_credential(struct popkit_auth_request *req, const char *credential) {
  struct call *call = (struct call *)req;
  snprintf(call->credential, sizeof call->credential, "%s", credential);
  return 0;
}

static int host_add_message(struct popkit_store_request *req, const char *uid,
                            uint64_t size) {
  return -EINVAL;
}

static const char *host_config_string(const struct popkit_config_object *cfg,
                                      const char *key) {
  const struct test_config *config = (const struct test_config *)cfg;
  return strcmp(key, "password") == 0 ? config->password : NULL;
}

static const char *host_config_path(const struct popkit_config_object *cfg,
                                    const char *key) {
  return NULL;
}

static int64_t host_config_integer(const struct popkit_config_object *cfg,
                                   const char *key, int64_t fallback) {
  const struct test_config *config = (const struct test_config *)cfg;
  if (strcmp(key, "delay_ms") == 0 && config->has_delay)
    return config->delay_ms;
  return fallback;
}

static int host_config_boolean(const struct popkit_config_object *cfg, const char *key,
                               int fallback) {
  return fallback;
}

static const struct popkit_host host = {
    .struct_size = sizeof(struct popkit_host),
    .abi_major = POPKIT_ABI_MAJOR,
    .abi_minor = POPKIT_ABI_MINOR,
    .log = host_log,
    .complete = host_complete,
    .auth_set_identity = host_set_identity,
    .auth_set_credential = host_set_credential,
    .store_add_message = host_add_message,
    .config_string = host_config_string,
    .config_path = host_config_path,
    .config_integer = host_config_integer,
    .config_boolean = host_config_boolean,
};

static const struct popkit_module_descriptor *module;
static uv_loop_t loop;

static void setup(void) {
  const char *dir = getenv("POPKIT_TEST_MODULES_DIR");
  ck_assert_msg(dir != NULL, "POPKIT_TEST_MODULES_DIR is not set");
  char path[4096];
  snprintf(path, sizeof path, "%s/slow_auth.so", dir);
  struct loaded_module *loaded;
  char error[1024] = "";
  int rc = loader_load_path(path, &loaded, error, sizeof error);
  ck_assert_msg(rc == 0, "loading slow_auth: %s", error);
  module = loaded->descriptor;
  ck_assert_int_eq(uv_loop_init(&loop), 0);
  logged[0] = '\0';
}

static void teardown(void) {
  /* Every test ends with a loop that has nothing left: no timer leaked. */
  uv_run(&loop, UV_RUN_DEFAULT);
  ck_assert_int_eq(uv_loop_close(&loop), 0);
  loader_unload_all();
}

static int create(const char *password, int has_delay, int64_t delay_ms,
                  void **instance_r, char *error, size_t error_size) {
  static struct test_config config;
  config = (struct test_config){password, has_delay, delay_ms};
  struct popkit_module_args args = {
      .struct_size = sizeof args,
      .worker_id = 0,
      .host = &host,
      .self = NULL,
      .config = (const struct popkit_config_object *)&config,
      .loop = &loop,
  };
  return module->create(&args, instance_r, error, error_size);
}

static void *create_ok(const char *password, int64_t delay_ms) {
  void *instance = NULL;
  char error[256] = "";
  int rc = create(password, 1, delay_ms, &instance, error, sizeof error);
  ck_assert_msg(rc == 0, "create failed: %s", error);
  return instance;
}

static void start(void *instance, struct call *call, enum popkit_request_kind kind,
                  const char *user, const char *password) {
  memset(call, 0, sizeof *call);
  call->req.base.magic = POPKIT_REQUEST_MAGIC;
  call->req.base.kind = kind;
  call->req.user = user;
  call->req.password = password;
  call->req.client_address = "";
  switch (kind) {
  case POPKIT_REQ_AUTH_LOOKUP:
    module->auth->lookup(instance, &call->req);
    break;
  case POPKIT_REQ_AUTH_VERIFY_PLAIN:
    module->auth->verify_plain(instance, &call->req);
    break;
  default:
    module->auth->get_credential(instance, &call->req);
    break;
  }
}

START_TEST(descriptor_declares_auth_and_config_keys) {
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
  void *instance = NULL;
  char error[256] = "";
  ck_assert_int_lt(create("pw", 1, -5, &instance, error, sizeof error), 0);
  ck_assert_msg(strstr(error, "delay_ms") != NULL, "error names no key: %s", error);
  ck_assert_msg(strstr(error, "-5") != NULL, "error hides the value: %s", error);
}
END_TEST

START_TEST(create_refuses_a_missing_password) {
  void *instance = NULL;
  char error[256] = "";
  ck_assert_int_lt(create(NULL, 0, 0, &instance, error, sizeof error), 0);
  ck_assert_msg(strstr(error, "password") != NULL, "error names no key: %s", error);
}
END_TEST

START_TEST(delay_defaults_to_zero) {
  void *instance = NULL;
  char error[256] = "";
  ck_assert_int_eq(create("pw", 0, 0, &instance, error, sizeof error), 0);
  struct call call;
  start(instance, &call, POPKIT_REQ_AUTH_VERIFY_PLAIN, "slowpoke", "pw");
  ck_assert_int_eq(call.completions, 1);
  ck_assert_int_eq(call.result, POPKIT_OK);
  module->destroy(instance);
}
END_TEST

START_TEST(other_users_are_not_found_at_once) {
  void *instance = create_ok("pw", 10000);
  struct call call;
  start(instance, &call, POPKIT_REQ_AUTH_VERIFY_PLAIN, "alice", "pw");
  ck_assert_int_eq(call.completions, 1);
  ck_assert_int_eq(call.result, POPKIT_NOT_FOUND);
  start(instance, &call, POPKIT_REQ_AUTH_LOOKUP, "slo", NULL);
  ck_assert_int_eq(call.completions, 1);
  ck_assert_int_eq(call.result, POPKIT_NOT_FOUND);
  module->destroy(instance);
}
END_TEST

START_TEST(zero_delay_completes_inside_the_call) {
  void *instance = create_ok("s3cret", 0);
  struct call call;
  start(instance, &call, POPKIT_REQ_AUTH_VERIFY_PLAIN, "slow1", "s3cret");
  ck_assert_int_eq(call.completions, 1);
  ck_assert_int_eq(call.result, POPKIT_OK);
  ck_assert_str_eq(call.identity, "slow1");

  start(instance, &call, POPKIT_REQ_AUTH_VERIFY_PLAIN, "slow1", "wrong");
  ck_assert_int_eq(call.completions, 1);
  ck_assert_int_eq(call.result, POPKIT_FAIL);

  start(instance, &call, POPKIT_REQ_AUTH_LOOKUP, "slow2", NULL);
  ck_assert_int_eq(call.completions, 1);
  ck_assert_int_eq(call.result, POPKIT_OK);
  ck_assert_str_eq(call.identity, "slow2");

  start(instance, &call, POPKIT_REQ_AUTH_GET_CREDENTIAL, "slow3", NULL);
  ck_assert_int_eq(call.completions, 1);
  ck_assert_int_eq(call.result, POPKIT_OK);
  ck_assert_str_eq(call.credential, "{PLAIN}s3cret");
  ck_assert_str_eq(call.identity, "slow3");
  module->destroy(instance);
}
END_TEST

START_TEST(delayed_answers_come_from_the_loop_after_the_delay) {
  void *instance = create_ok("pw", 60);
  struct call good, bad, credential;
  uint64_t started = uv_hrtime();
  start(instance, &good, POPKIT_REQ_AUTH_VERIFY_PLAIN, "slowpoke", "pw");
  start(instance, &bad, POPKIT_REQ_AUTH_VERIFY_PLAIN, "slowpoke", "nope");
  start(instance, &credential, POPKIT_REQ_AUTH_GET_CREDENTIAL, "slowpoke", NULL);
  ck_assert_int_eq(good.completions + bad.completions + credential.completions, 0);

  uv_run(&loop, UV_RUN_DEFAULT);
  uint64_t elapsed_ms = (uv_hrtime() - started) / 1000000u;
  ck_assert_uint_ge(elapsed_ms, 55); /* the loop's clock rounds to a millisecond */
  ck_assert_int_eq(good.completions, 1);
  ck_assert_int_eq(good.result, POPKIT_OK);
  ck_assert_int_eq(bad.completions, 1);
  ck_assert_int_eq(bad.result, POPKIT_FAIL);
  ck_assert_int_eq(credential.completions, 1);
  ck_assert_str_eq(credential.credential, "{PLAIN}pw");
  module->destroy(instance);
}
END_TEST

START_TEST(cancel_completes_with_tempfail_and_logs) {
  void *instance = create_ok("pw", 100000);
  struct call canceled, other;
  start(instance, &canceled, POPKIT_REQ_AUTH_VERIFY_PLAIN, "slowpoke", "pw");
  start(instance, &other, POPKIT_REQ_AUTH_LOOKUP, "slowcoach", NULL);
  ck_assert_int_eq(canceled.completions, 0);

  module->cancel(instance, &canceled.req.base);
  ck_assert_int_eq(canceled.completions, 1);
  ck_assert_int_eq(canceled.result, POPKIT_TEMPFAIL);
  ck_assert_str_eq(canceled.log_text, "canceled");
  ck_assert_msg(strstr(logged, "slow_auth: request canceled") != NULL, "logged: %s",
                logged);
  ck_assert_int_eq(other.completions, 0);

  /* Canceling the other one too leaves the loop with nothing to wait for:
   * uv_run returns at once instead of after 100 s. */
  module->cancel(instance, &other.req.base);
  uint64_t started = uv_hrtime();
  uv_run(&loop, UV_RUN_DEFAULT);
  ck_assert_uint_lt((uv_hrtime() - started) / 1000000u, 5000);
  ck_assert_int_eq(canceled.completions, 1);
  ck_assert_int_eq(other.completions, 1);
  ck_assert_int_eq(other.result, POPKIT_TEMPFAIL);
  module->destroy(instance);
}
END_TEST

START_TEST(cancel_of_an_answered_request_does_nothing) {
  void *instance = create_ok("pw", 0);
  struct call call;
  start(instance, &call, POPKIT_REQ_AUTH_VERIFY_PLAIN, "slowpoke", "pw");
  ck_assert_int_eq(call.completions, 1);
  module->cancel(instance, &call.req.base);
  ck_assert_int_eq(call.completions, 1);
  ck_assert_int_eq(call.result, POPKIT_OK);
  module->destroy(instance);
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
  tcase_add_test(tc, delayed_answers_come_from_the_loop_after_the_delay);
  tcase_add_test(tc, cancel_completes_with_tempfail_and_logs);
  tcase_add_test(tc, cancel_of_an_answered_request_does_nothing);
  suite_add_tcase(suite, tc);
  int failed = check_run(suite);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
