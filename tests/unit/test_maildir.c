/* placeholder: being written; fails until then */
#include <check.h>
#include <stdlib.h>
START_TEST(not_written) { ck_abort_msg("test_maildir is not written yet"); }
END_TEST
int main(void) {
  Suite *s = suite_create("test_maildir");
  TCase *tc = tcase_create("placeholder");
  tcase_add_test(tc, not_written);
  suite_add_tcase(s, tc);
  SRunner *r = srunner_create(s);
  srunner_run_all(r, CK_NORMAL);
  int failed = srunner_ntests_failed(r);
  srunner_free(r);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
