/* Runs a Check suite the way every popkit test does, and returns how many
 * of its tests failed. */
#ifndef POPKIT_TEST_CHECK_RUN_H
#define POPKIT_TEST_CHECK_RUN_H

#include <check.h>

static inline int check_run(Suite *suite) {
  SRunner *runner = srunner_create(suite);
  srunner_run_all(runner, CK_NORMAL);
  int failed = srunner_ntests_failed(runner);
  srunner_free(runner);
  return failed;
}

/* A test case of suite with a checked fixture. */
static inline TCase *check_tcase(Suite *suite, const char *name, SFun setup,
                                 SFun teardown) {
  TCase *tc = tcase_create(name);
  tcase_add_checked_fixture(tc, setup, teardown);
  suite_add_tcase(suite, tc);
  return tc;
}

#endif
