/* Being written: replaced by the real tests of core/password.c. */
#include <check.h>
#include <stdlib.h>

#include "check_run.h"

START_TEST(placeholder) { ck_abort_msg("test_password is not written yet"); }
END_TEST

int main(void) {
  Suite *s = suite_create("password");
  TCase *tc = tcase_create("placeholder");
  tcase_add_test(tc, placeholder);
  suite_add_tcase(s, tc);
  return check_run(s) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
