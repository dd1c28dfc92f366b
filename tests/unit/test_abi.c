/*
 * Pins the module ABI of include/popkit/module.h: the size and the offset of
 * every member of every struct, and the value of every constant a module
 * compiles in. Modules built against one header run against popkitd built
 * against another, so any change here must be a conscious one: this test
 * fails until someone updates the numbers, and the header's rules then say
 * whether the change is a minor bump (appended at the end) or a major one.
 *
 * The numbers are those of LP64 (x86_64, aarch64, ...); on other data models
 * the test says so and checks nothing.
 */
#include <check.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_run.h"
#include "popkit/module.h"

#if UINTPTR_MAX == 0xffffffffffffffffu && ULONG_MAX == 0xffffffffffffffffu
#define ABI_PINNED_DATA_MODEL 1
#else
#define ABI_PINNED_DATA_MODEL 0
#endif

#if ABI_PINNED_DATA_MODEL
_Static_assert(sizeof(void *) == 8 && sizeof(size_t) == 8, "the pins are for LP64");

struct pin {
  const char *what;
  size_t actual;
  size_t expected;
};

#define SIZE(type, expected)                                                             \
  { "sizeof(struct " #type ")", sizeof(struct type), expected }
#define OFFSET(type, member, expected)                                                   \
  { "offsetof(struct " #type ", " #member ")", offsetof(struct type, member), expected }
#define MEMBER_SIZE(type, member, expected)                                              \
  { "sizeof(struct " #type ")." #member, sizeof(((struct type *)0)->member), expected }

/* Checks a table of pins and names every one that moved, so that one run
 * shows the whole extent of a change. */
static void check_pins(const struct pin *pins, size_t count) {
  char moved[4096] = "";
  for (size_t i = 0; i < count; i++) {
    if (pins[i].actual == pins[i].expected)
      continue;
    size_t used = strlen(moved);
    snprintf(moved + used, sizeof moved - used, "\n  %s is %zu, pinned at %zu",
             pins[i].what, pins[i].actual, pins[i].expected);
  }
  ck_assert_msg(moved[0] == '\0', "the module ABI changed:%s", moved);
}

#define CHECK_PINS(table) check_pins(table, sizeof table / sizeof table[0])

START_TEST(module_descriptor_layout) {
  static const struct pin pins[] = {
      SIZE(popkit_module_descriptor, 88),
      OFFSET(popkit_module_descriptor, magic, 0),
      MEMBER_SIZE(popkit_module_descriptor, magic, 4),
      OFFSET(popkit_module_descriptor, abi_major, 4),
      MEMBER_SIZE(popkit_module_descriptor, abi_major, 2),
      OFFSET(popkit_module_descriptor, abi_minor, 6),
      MEMBER_SIZE(popkit_module_descriptor, abi_minor, 2),
      OFFSET(popkit_module_descriptor, struct_size, 8),
      MEMBER_SIZE(popkit_module_descriptor, struct_size, 4),
      OFFSET(popkit_module_descriptor, reserved, 12),
      MEMBER_SIZE(popkit_module_descriptor, reserved, 4),
      OFFSET(popkit_module_descriptor, name, 16),
      MEMBER_SIZE(popkit_module_descriptor, name, 8),
      OFFSET(popkit_module_descriptor, build_signature, 24),
      MEMBER_SIZE(popkit_module_descriptor, build_signature, 8),
      OFFSET(popkit_module_descriptor, roles, 32),
      MEMBER_SIZE(popkit_module_descriptor, roles, 4),
      OFFSET(popkit_module_descriptor, flags, 36),
      MEMBER_SIZE(popkit_module_descriptor, flags, 4),
      OFFSET(popkit_module_descriptor, config_keys, 40),
      MEMBER_SIZE(popkit_module_descriptor, config_keys, 8),
      OFFSET(popkit_module_descriptor, create, 48),
      MEMBER_SIZE(popkit_module_descriptor, create, 8),
      OFFSET(popkit_module_descriptor, destroy, 56),
      MEMBER_SIZE(popkit_module_descriptor, destroy, 8),
      OFFSET(popkit_module_descriptor, auth, 64),
      MEMBER_SIZE(popkit_module_descriptor, auth, 8),
      OFFSET(popkit_module_descriptor, store, 72),
      MEMBER_SIZE(popkit_module_descriptor, store, 8),
      OFFSET(popkit_module_descriptor, cancel, 80),
      MEMBER_SIZE(popkit_module_descriptor, cancel, 8),
      {"POPKIT_MODULE_DESCRIPTOR_V1_SIZE", POPKIT_MODULE_DESCRIPTOR_V1_SIZE, 88},
  };
  CHECK_PINS(pins);
}
END_TEST

START_TEST(host_table_layout) {
  static const struct pin pins[] = {
      SIZE(popkit_host, 136),
      OFFSET(popkit_host, struct_size, 0),
      MEMBER_SIZE(popkit_host, struct_size, 4),
      OFFSET(popkit_host, abi_major, 4),
      MEMBER_SIZE(popkit_host, abi_major, 2),
      OFFSET(popkit_host, abi_minor, 6),
      MEMBER_SIZE(popkit_host, abi_minor, 2),
      OFFSET(popkit_host, log, 8),
      OFFSET(popkit_host, complete, 16),
      OFFSET(popkit_host, auth_set_identity, 24),
      OFFSET(popkit_host, auth_set_credential, 32),
      OFFSET(popkit_host, store_add_message, 40),
      OFFSET(popkit_host, config_string, 48),
      OFFSET(popkit_host, config_path, 56),
      OFFSET(popkit_host, config_integer, 64),
      OFFSET(popkit_host, config_boolean, 72),
      /* ABI 1.1 */
      OFFSET(popkit_host, password_verify, 80),
      MEMBER_SIZE(popkit_host, password_verify, 8),
      /* ABI 1.2 */
      OFFSET(popkit_host, pass_to_next, 88),
      OFFSET(popkit_host, auth_identity, 96),
      OFFSET(popkit_host, auth_credential, 104),
      OFFSET(popkit_host, store_message_count, 112),
      OFFSET(popkit_host, store_message, 120),
      OFFSET(popkit_host, next_request, 128),
      MEMBER_SIZE(popkit_host, next_request, 8),
  };
  CHECK_PINS(pins);
}
END_TEST

START_TEST(role_tables_layout) {
  static const struct pin pins[] = {
      SIZE(popkit_auth_ops, 32),
      OFFSET(popkit_auth_ops, struct_size, 0),
      MEMBER_SIZE(popkit_auth_ops, struct_size, 4),
      OFFSET(popkit_auth_ops, lookup, 8),
      OFFSET(popkit_auth_ops, verify_plain, 16),
      OFFSET(popkit_auth_ops, get_credential, 24),
      MEMBER_SIZE(popkit_auth_ops, get_credential, 8),

      SIZE(popkit_store_ops, 72),
      OFFSET(popkit_store_ops, struct_size, 0),
      MEMBER_SIZE(popkit_store_ops, struct_size, 4),
      OFFSET(popkit_store_ops, open, 8),
      OFFSET(popkit_store_ops, read, 16),
      OFFSET(popkit_store_ops, expunge, 24),
      OFFSET(popkit_store_ops, close, 32),
      OFFSET(popkit_store_ops, append_begin, 40),
      OFFSET(popkit_store_ops, append_write, 48),
      OFFSET(popkit_store_ops, append_finish, 56),
      MEMBER_SIZE(popkit_store_ops, append_finish, 8),
      OFFSET(popkit_store_ops, read_nowait, 64), /* ABI 1.3 */
      MEMBER_SIZE(popkit_store_ops, read_nowait, 8),
  };
  CHECK_PINS(pins);
}
END_TEST

START_TEST(request_layouts) {
  static const struct pin pins[] = {
      SIZE(popkit_request, 24),
      OFFSET(popkit_request, magic, 0),
      MEMBER_SIZE(popkit_request, magic, 4),
      OFFSET(popkit_request, kind, 4),
      MEMBER_SIZE(popkit_request, kind, 4),
      OFFSET(popkit_request, module_data, 8),
      MEMBER_SIZE(popkit_request, module_data, 8),
      OFFSET(popkit_request, session_id, 16),
      MEMBER_SIZE(popkit_request, session_id, 8),

      SIZE(popkit_auth_request, 48),
      OFFSET(popkit_auth_request, base, 0),
      MEMBER_SIZE(popkit_auth_request, base, 24),
      OFFSET(popkit_auth_request, user, 24),
      OFFSET(popkit_auth_request, password, 32),
      OFFSET(popkit_auth_request, client_address, 40),
      MEMBER_SIZE(popkit_auth_request, client_address, 8),

      SIZE(popkit_store_request, 120),
      OFFSET(popkit_store_request, base, 0),
      MEMBER_SIZE(popkit_store_request, base, 24),
      OFFSET(popkit_store_request, mailbox, 24),
      OFFSET(popkit_store_request, identity, 32),
      OFFSET(popkit_store_request, index, 40),
      MEMBER_SIZE(popkit_store_request, index, 8),
      OFFSET(popkit_store_request, offset, 48),
      MEMBER_SIZE(popkit_store_request, offset, 8),
      OFFSET(popkit_store_request, buffer, 56),
      OFFSET(popkit_store_request, buffer_size, 64),
      MEMBER_SIZE(popkit_store_request, buffer_size, 8),
      OFFSET(popkit_store_request, length, 72),
      MEMBER_SIZE(popkit_store_request, length, 8),
      OFFSET(popkit_store_request, indexes, 80),
      OFFSET(popkit_store_request, index_count, 88),
      MEMBER_SIZE(popkit_store_request, index_count, 8),
      OFFSET(popkit_store_request, data, 96),
      OFFSET(popkit_store_request, data_size, 104),
      MEMBER_SIZE(popkit_store_request, data_size, 8),
      OFFSET(popkit_store_request, commit, 112),
      MEMBER_SIZE(popkit_store_request, commit, 4),
  };
  CHECK_PINS(pins);
}
END_TEST

START_TEST(creation_and_config_layouts) {
  static const struct pin pins[] = {
      SIZE(popkit_module_args, 40),
      OFFSET(popkit_module_args, struct_size, 0),
      MEMBER_SIZE(popkit_module_args, struct_size, 4),
      OFFSET(popkit_module_args, worker_id, 4),
      MEMBER_SIZE(popkit_module_args, worker_id, 4),
      OFFSET(popkit_module_args, host, 8),
      OFFSET(popkit_module_args, self, 16),
      OFFSET(popkit_module_args, config, 24),
      OFFSET(popkit_module_args, loop, 32),
      MEMBER_SIZE(popkit_module_args, loop, 8),

      SIZE(popkit_config_key, 16),
      OFFSET(popkit_config_key, name, 0),
      MEMBER_SIZE(popkit_config_key, name, 8),
      OFFSET(popkit_config_key, type, 8),
      MEMBER_SIZE(popkit_config_key, type, 4),
      OFFSET(popkit_config_key, required, 12),
      MEMBER_SIZE(popkit_config_key, required, 4),
  };
  CHECK_PINS(pins);
}
END_TEST

/* Constants are compiled into modules just as layouts are. */
START_TEST(constants) {
  static const struct pin pins[] = {
      {"POPKIT_MODULE_MAGIC", POPKIT_MODULE_MAGIC, 0x444d4b50u},
      {"POPKIT_REQUEST_MAGIC", POPKIT_REQUEST_MAGIC, 0x51524b50u},
      {"POPKIT_ABI_MAJOR", POPKIT_ABI_MAJOR, 1},
      {"POPKIT_ABI_MINOR", POPKIT_ABI_MINOR, 3},
      {"POPKIT_OK", POPKIT_OK, 0},
      {"POPKIT_FAIL", POPKIT_FAIL, 1},
      {"POPKIT_NOT_FOUND", POPKIT_NOT_FOUND, 2},
      {"POPKIT_TEMPFAIL", POPKIT_TEMPFAIL, 3},
      {"POPKIT_PERMFAIL", POPKIT_PERMFAIL, 4},
      {"POPKIT_IN_USE", POPKIT_IN_USE, 5},
      {"POPKIT_PASSWORD_MATCH", POPKIT_PASSWORD_MATCH, 0},
      {"POPKIT_PASSWORD_MISMATCH", POPKIT_PASSWORD_MISMATCH, 1},
      {"POPKIT_PASSWORD_UNUSABLE", POPKIT_PASSWORD_UNUSABLE, 2},
      {"POPKIT_ROLE_AUTH", POPKIT_ROLE_AUTH, 1},
      {"POPKIT_ROLE_STORE", POPKIT_ROLE_STORE, 2},
      {"POPKIT_MODULE_BLOCKING", POPKIT_MODULE_BLOCKING, 1},
      {"POPKIT_MODULE_DECORATOR", POPKIT_MODULE_DECORATOR, 2},
      {"POPKIT_LOG_DEBUG", POPKIT_LOG_DEBUG, 0},
      {"POPKIT_LOG_INFO", POPKIT_LOG_INFO, 1},
      {"POPKIT_LOG_WARNING", POPKIT_LOG_WARNING, 2},
      {"POPKIT_LOG_ERROR", POPKIT_LOG_ERROR, 3},
      {"POPKIT_CONFIG_STRING", POPKIT_CONFIG_STRING, 1},
      {"POPKIT_CONFIG_INTEGER", POPKIT_CONFIG_INTEGER, 2},
      {"POPKIT_CONFIG_BOOLEAN", POPKIT_CONFIG_BOOLEAN, 3},
      {"POPKIT_CONFIG_PATH", POPKIT_CONFIG_PATH, 4},
      {"POPKIT_REQ_AUTH_LOOKUP", POPKIT_REQ_AUTH_LOOKUP, 1},
      {"POPKIT_REQ_AUTH_VERIFY_PLAIN", POPKIT_REQ_AUTH_VERIFY_PLAIN, 2},
      {"POPKIT_REQ_AUTH_GET_CREDENTIAL", POPKIT_REQ_AUTH_GET_CREDENTIAL, 3},
      {"POPKIT_REQ_STORE_OPEN", POPKIT_REQ_STORE_OPEN, 16},
      {"POPKIT_REQ_STORE_READ", POPKIT_REQ_STORE_READ, 17},
      {"POPKIT_REQ_STORE_EXPUNGE", POPKIT_REQ_STORE_EXPUNGE, 18},
      {"POPKIT_REQ_STORE_CLOSE", POPKIT_REQ_STORE_CLOSE, 19},
      {"POPKIT_REQ_STORE_APPEND_BEGIN", POPKIT_REQ_STORE_APPEND_BEGIN, 20},
      {"POPKIT_REQ_STORE_APPEND_WRITE", POPKIT_REQ_STORE_APPEND_WRITE, 21},
      {"POPKIT_REQ_STORE_APPEND_FINISH", POPKIT_REQ_STORE_APPEND_FINISH, 22},
  };
  CHECK_PINS(pins);
  ck_assert_str_eq(POPKIT_MODULE_SYMBOL, "popkit_module");
}
END_TEST

#endif /* ABI_PINNED_DATA_MODEL */

int main(void) {
#if ABI_PINNED_DATA_MODEL
  Suite *suite = suite_create("abi");
  TCase *tc = tcase_create("module.h v1");
  tcase_add_test(tc, module_descriptor_layout);
  tcase_add_test(tc, host_table_layout);
  tcase_add_test(tc, role_tables_layout);
  tcase_add_test(tc, request_layouts);
  tcase_add_test(tc, creation_and_config_layouts);
  tcase_add_test(tc, constants);
  suite_add_tcase(suite, tc);
  int failed = check_run(suite);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
#else
  printf("test_abi: the ABI pins are for LP64; this data model is not pinned, "
         "nothing checked\n");
  return EXIT_SUCCESS;
#endif
}
