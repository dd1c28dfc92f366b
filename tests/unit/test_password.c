/* Tests for core/password.c: every stored form popkitd reads, and every
 * secret popkit-passwd makes. */
#include <check.h>
#include <crypt.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_run.h"
#include "password.h"
#include "scram.h"
#include "system_crypt.h"

#define MATCH POPKIT_PASSWORD_MATCH
#define MISMATCH POPKIT_PASSWORD_MISMATCH
#define UNUSABLE POPKIT_PASSWORD_UNUSABLE

/* RFC 7677's example (password "pencil", its salt and iteration count),
 * with StoredKey and ServerKey worked out by Python's hashlib: the form
 * Dovecot writes. */
static const char rfc7677_credential[] = "{SCRAM-SHA-256}4096,W22ZaJ0SNY7soEsUEjb6gQ==,"
                                         "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=,"
                                         "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

/* ---- Verifying known secrets ------------------------------------------- */

START_TEST(published_crypt_vectors_verify_bare_and_with_dovecot_prefixes) {
  /* The SHA-crypt specification's and OpenBSD's bcrypt test vectors. */
  static const struct {
    const char *hash, *password;
  } vectors[] = {
      {"$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLi"
       "BFdcbYEdFCoEOfaS35inz1",
       "Hello world!"},
      {"$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5", "Hello world!"},
      {"$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnC"
       "M/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v.",
       "Hello world!"},
      {"$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW", "U*U"},
  };
  static const char *const prefixes[] = {"", "{CRYPT}", "{crypt}", "{SHA512-CRYPT}",
                                         "{Blf-Crypt}"};
  for (size_t v = 0; v < sizeof vectors / sizeof vectors[0]; v++) {
    for (size_t p = 0; p < sizeof prefixes / sizeof prefixes[0]; p++) {
      char stored[256];
      snprintf(stored, sizeof stored, "%s%s", prefixes[p], vectors[v].hash);
      ck_assert_int_eq(password_verify(stored, vectors[v].password), MATCH);
      ck_assert_int_eq(password_verify(stored, "Hello world"), MISMATCH);
      ck_assert_int_eq(password_verify(stored, ""), MISMATCH);
    }
  }
}
END_TEST

static const struct {
  const char *prefix;  /* crypt_gensalt's */
  unsigned long count; /* the cheapest cost, to keep the test fast */
  const char *label;   /* the Dovecot name that may stand in front */
} system_schemes[] = {
    {"$y$", 1, "{YESCRYPT}"},        {"$2b$", 4, "{BLF-CRYPT}"},
    {"$2y$", 4, "{BLF-CRYPT}"},      {"$6$", 1000, "{SHA512-CRYPT}"},
    {"$5$", 1000, "{SHA256-CRYPT}"}, {"$1$", 0, "{MD5-CRYPT}"},
};

START_TEST(hashes_of_the_system_crypt_verify) {
  char hash[CRYPT_OUTPUT_SIZE], stored[CRYPT_OUTPUT_SIZE + 32];
  system_crypt(system_schemes[_i].prefix, system_schemes[_i].count, " pa:ss wo:rd ", hash,
               sizeof hash);
  ck_assert_int_eq(password_verify(hash, " pa:ss wo:rd "), MATCH);
  ck_assert_int_eq(password_verify(hash, " pa:ss wo:rd"), MISMATCH);
  ck_assert_int_eq(password_verify(hash, "pa:ss wo:rd "), MISMATCH);
  snprintf(stored, sizeof stored, "%s%s", system_schemes[_i].label, hash);
  ck_assert_int_eq(password_verify(stored, " pa:ss wo:rd "), MATCH);
  ck_assert_int_eq(password_verify(stored, "x"), MISMATCH);
}
END_TEST

/* What APOP and SCRAM read out of a kept password. */
START_TEST(plain_secret_is_found_in_any_case) {
  ck_assert_str_eq(password_plain_secret("{PLAIN}pencil"), "pencil");
  ck_assert_str_eq(password_plain_secret("{plain}pen:cil"), "pen:cil");
  ck_assert_str_eq(password_plain_secret("{PLAIN}"), "");
  ck_assert_ptr_null(password_plain_secret("{CRYPT}$6$salt$hash"));
  ck_assert_ptr_null(password_plain_secret("{SCRAM-SHA-256}4096,a,b,c"));
  ck_assert_ptr_null(password_plain_secret("pencil"));
  ck_assert_ptr_null(password_plain_secret("{PLAIN"));
}
END_TEST

START_TEST(plain_compares_the_whole_password) {
  ck_assert_int_eq(password_verify("{PLAIN}secret", "secret"), MATCH);
  ck_assert_int_eq(password_verify("{PLAIN}secret", "secre"), MISMATCH);
  ck_assert_int_eq(password_verify("{PLAIN}secret", "secrets"), MISMATCH);
  ck_assert_int_eq(password_verify("{PLAIN}secret", "SECRET"), MISMATCH);
  ck_assert_int_eq(password_verify("{PLAIN}secret", ""), MISMATCH);
  ck_assert_int_eq(password_verify("{PLAIN}with  spaces ", "with  spaces "), MATCH);
  ck_assert_int_eq(password_verify("{PLAIN}with  spaces ", "with  spaces"), MISMATCH);
  /* Braces after the scheme are part of the password. */
  ck_assert_int_eq(password_verify("{PLAIN}{x}", "{x}"), MATCH);
  /* An empty {PLAIN} password is a password like any other. */
  ck_assert_int_eq(password_verify("{PLAIN}", ""), MATCH);
  ck_assert_int_eq(password_verify("{PLAIN}", "x"), MISMATCH);
}
END_TEST

START_TEST(scram_credential_checks_a_plaintext_password) {
  ck_assert_int_eq(password_verify(rfc7677_credential, "pencil"), MATCH);
  ck_assert_int_eq(password_verify(rfc7677_credential, "pencil "), MISMATCH);
  ck_assert_int_eq(password_verify(rfc7677_credential, "Pencil"), MISMATCH);
  ck_assert_int_eq(password_verify(rfc7677_credential, ""), MISMATCH);
}
END_TEST

START_TEST(scheme_names_are_case_insensitive) {
  ck_assert_int_eq(password_verify("{plain}pw", "pw"), MATCH);
  ck_assert_int_eq(password_verify("{Plain}pw", "pw"), MATCH);
  char lower[sizeof rfc7677_credential];
  memcpy(lower, rfc7677_credential, sizeof lower);
  memcpy(lower, "{scram-sha-256}", strlen("{scram-sha-256}"));
  ck_assert_int_eq(password_verify(lower, "pencil"), MATCH);
  char hash[CRYPT_OUTPUT_SIZE], stored[CRYPT_OUTPUT_SIZE + 32];
  system_crypt("$5$", 1000, "pw", hash, sizeof hash);
  snprintf(stored, sizeof stored, "{sha256-CRYPT}%s", hash);
  ck_assert_int_eq(password_verify(stored, "pw"), MATCH);
  snprintf(stored, sizeof stored, "{Yescrypt}%s", hash);
  ck_assert_int_eq(password_verify(stored, "pw"), MATCH);
}
END_TEST

START_TEST(locked_and_unknown_secrets_are_unusable) {
  char hash[CRYPT_OUTPUT_SIZE], locked[CRYPT_OUTPUT_SIZE + 8];
  system_crypt("$6$", 1000, "pw", hash, sizeof hash);
  snprintf(locked, sizeof locked, "!%s", hash);
  const char *const unusable[] = {
      "!",
      "*",
      "",
      "*LK*",
      "!!",
      locked,
      "{SSHA}c2VjcmV0c2FsdA==", /* a scheme popkitd does not read */
      "{PLAIN secret",          /* no closing brace */
      "{}secret",
      "{CRYPT}",
      "{CRYPT}!",
      "{SHA512-CRYPT}*",
      "{SCRAM-SHA-256}garbage", /* malformed credentials */
      "{SCRAM-SHA-256}0,W22ZaJ0SNY7soEsUEjb6gQ==,"
      "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=,"
      "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
      "{SCRAM-SHA-256}4096,W22ZaJ0SNY7soEsUEjb6gQ==,WG5d8oPm3Otc,wfPLwcE6nTWh",
      "{SCRAM-SHA-1}4096,W22ZaJ0SNY7soEsUEjb6gQ==,WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpc=,"
      "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmf=",
  };
  const char *const passwords[] = {"pw", "", "!", "*", "secret", "pencil", "garbage"};
  for (size_t i = 0; i < sizeof unusable / sizeof unusable[0]; i++) {
    for (size_t p = 0; p < sizeof passwords / sizeof passwords[0]; p++)
      ck_assert_msg(password_verify(unusable[i], passwords[p]) == UNUSABLE,
                    "\"%s\" with password \"%s\" is not UNUSABLE", unusable[i],
                    passwords[p]);
  }
}
END_TEST

START_TEST(overlong_password_mismatches_a_crypt_hash) {
  /* libxcrypt refuses such a phrase; that says the password is wrong, not
   * that the hash is broken. */
  char hash[CRYPT_OUTPUT_SIZE];
  system_crypt("$6$", 1000, "pw", hash, sizeof hash);
  char *longer = malloc(CRYPT_MAX_PASSPHRASE_SIZE + 1);
  ck_assert_ptr_nonnull(longer);
  memset(longer, 'p', CRYPT_MAX_PASSPHRASE_SIZE);
  longer[CRYPT_MAX_PASSPHRASE_SIZE] = '\0';
  ck_assert_int_eq(password_verify(hash, longer), MISMATCH);
  free(longer);
}
END_TEST

/* ---- Scheme names ------------------------------------------------------ */

START_TEST(scheme_lookup_knows_dovecot_names_in_any_case) {
  static const struct {
    const char *name;
    enum password_scheme scheme;
  } names[] = {
      {"SCRAM-SHA-256", PASSWORD_SCRAM_SHA_256},
      {"scram-sha-256", PASSWORD_SCRAM_SHA_256},
      {"CRYPT", PASSWORD_YESCRYPT},
      {"crypt", PASSWORD_YESCRYPT},
      {"YESCRYPT", PASSWORD_YESCRYPT},
      {"BLF-CRYPT", PASSWORD_BLF_CRYPT},
      {"blf-crypt", PASSWORD_BLF_CRYPT},
      {"SHA512-CRYPT", PASSWORD_SHA512_CRYPT},
      {"Sha512-Crypt", PASSWORD_SHA512_CRYPT},
      {"SHA256-CRYPT", PASSWORD_SHA256_CRYPT},
      {"PLAIN", PASSWORD_PLAIN},
      {"plain", PASSWORD_PLAIN},
  };
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    enum password_scheme scheme = (enum password_scheme) - 1;
    ck_assert_int_eq(password_scheme_lookup(names[i].name, &scheme), 0);
    ck_assert_msg(scheme == names[i].scheme, "%s", names[i].name);
  }
  static const char *const unknown[] = {"",        "SSHA",        "MD5-CRYPT", "PLAIN ",
                                        "{PLAIN}", "SCRAM-SHA-1", "SHA512"};
  for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
    enum password_scheme scheme;
    ck_assert_int_eq(password_scheme_lookup(unknown[i], &scheme), -EINVAL);
  }
}
END_TEST

/* ---- Making secrets ---------------------------------------------------- */

static const struct {
  enum password_scheme scheme;
  unsigned long cheap_cost; /* keeps the test fast */
  const char *start;        /* what the secret made with cheap_cost starts with */
} made[] = {
    {PASSWORD_SCRAM_SHA_256, 4096, "{SCRAM-SHA-256}4096,"},
    {PASSWORD_YESCRYPT, 1, "{CRYPT}$y$j75$"},
    {PASSWORD_BLF_CRYPT, 4, "{BLF-CRYPT}$2b$04$"},
    {PASSWORD_SHA512_CRYPT, 1000, "{SHA512-CRYPT}$6$rounds=1000$"},
    {PASSWORD_SHA256_CRYPT, 1000, "{SHA256-CRYPT}$5$rounds=1000$"},
    {PASSWORD_PLAIN, 0, "{PLAIN}"},
};

START_TEST(every_scheme_round_trips) {
  static const char *const passwords[] = {"correct horse", " pa:ss wo:rd ",
                                          "Gr\xc3\xbc\xc3\x9f"
                                          "e",
                                          "x"};
  for (size_t p = 0; p < sizeof passwords / sizeof passwords[0]; p++) {
    if (made[_i].scheme == PASSWORD_PLAIN && strchr(passwords[p], ':') != NULL)
      continue; /* refused, see plain_refuses_what_a_line_cannot_carry */
    char *stored = NULL;
    ck_assert_int_eq(
        password_make(made[_i].scheme, passwords[p], made[_i].cheap_cost, &stored), 0);
    ck_assert_msg(strncmp(stored, made[_i].start, strlen(made[_i].start)) == 0,
                  "\"%s\" does not start with \"%s\"", stored, made[_i].start);
    /* A passwd-file line must be able to carry it. */
    ck_assert_ptr_null(strpbrk(stored, ":\r\n"));
    ck_assert_int_eq(password_verify(stored, passwords[p]), MATCH);
    ck_assert_int_eq(password_verify(stored, "wrong"), MISMATCH);
    ck_assert_int_eq(password_verify(stored, ""), MISMATCH);
    free(stored);
  }
}
END_TEST

START_TEST(salts_are_fresh_every_time) {
  for (size_t i = 0; i < sizeof made / sizeof made[0]; i++) {
    if (made[i].scheme == PASSWORD_PLAIN)
      continue; /* nothing to salt */
    char *first = NULL, *second = NULL;
    ck_assert_int_eq(password_make(made[i].scheme, "same", made[i].cheap_cost, &first),
                     0);
    ck_assert_int_eq(password_make(made[i].scheme, "same", made[i].cheap_cost, &second),
                     0);
    ck_assert_str_ne(first, second);
    free(first);
    free(second);
  }
}
END_TEST

START_TEST(default_costs_are_the_documented_ones) {
  static const struct {
    enum password_scheme scheme;
    const char *start;
  } defaults[] = {
      {PASSWORD_SCRAM_SHA_256, "{SCRAM-SHA-256}4096,"},
      {PASSWORD_YESCRYPT, "{CRYPT}$y$j9T$"}, /* libxcrypt's cost 5 */
      {PASSWORD_BLF_CRYPT, "{BLF-CRYPT}$2b$10$"},
      /* 5000 rounds are the SHA-crypt default, which the string omits. */
      {PASSWORD_SHA512_CRYPT, "{SHA512-CRYPT}$6$"},
      {PASSWORD_SHA256_CRYPT, "{SHA256-CRYPT}$5$"},
  };
  for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++) {
    char *stored = NULL;
    ck_assert_int_eq(password_make(defaults[i].scheme, "pw", 0, &stored), 0);
    ck_assert_msg(strncmp(stored, defaults[i].start, strlen(defaults[i].start)) == 0,
                  "\"%s\" does not start with \"%s\"", stored, defaults[i].start);
    ck_assert_ptr_null(strstr(stored, "rounds="));
    ck_assert_int_eq(password_verify(stored, "pw"), MATCH);
    free(stored);
  }
}
END_TEST

START_TEST(scram_secret_is_a_dovecot_credential) {
  char *stored = NULL;
  ck_assert_int_eq(password_make(PASSWORD_SCRAM_SHA_256, "pencil", 5000, &stored), 0);
  struct scram_credential cred;
  ck_assert_int_eq(scram_credential_parse(stored, &cred), 0);
  ck_assert_uint_eq(cred.iterations, 5000);
  ck_assert_uint_eq(cred.salt_len, 16);
  /* The same salt and count give the same keys: the keys are those of the
   * password, not of anything else. */
  struct scram_credential again;
  ck_assert_int_eq(scram_derive("pencil", 6, cred.salt, cred.salt_len, 5000, &again), 0);
  ck_assert_int_eq(memcmp(again.stored_key, cred.stored_key, SCRAM_KEY_SIZE), 0);
  ck_assert_int_eq(memcmp(again.server_key, cred.server_key, SCRAM_KEY_SIZE), 0);
  free(stored);
}
END_TEST

START_TEST(bad_costs_are_refused) {
  static const struct {
    enum password_scheme scheme;
    unsigned long cost;
  } bad[] = {
      {PASSWORD_SCRAM_SHA_256, 1},
      {PASSWORD_SCRAM_SHA_256, 4095},
      {PASSWORD_SCRAM_SHA_256, 10000001},
      {PASSWORD_YESCRYPT, 12},
      {PASSWORD_YESCRYPT, 1000},
      {PASSWORD_BLF_CRYPT, 3},
      {PASSWORD_BLF_CRYPT, 32},
      {PASSWORD_SHA512_CRYPT, 999},
      {PASSWORD_SHA512_CRYPT, 1000000000},
      {PASSWORD_SHA256_CRYPT, 999},
      {PASSWORD_SHA256_CRYPT, 1},
      {PASSWORD_PLAIN, 1},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char *stored = NULL;
    ck_assert_msg(password_make(bad[i].scheme, "pw", bad[i].cost, &stored) == -EINVAL,
                  "scheme %d took cost %lu", (int)bad[i].scheme, bad[i].cost);
    ck_assert_ptr_null(stored);
  }
}
END_TEST

START_TEST(plain_refuses_what_a_line_cannot_carry) {
  static const char *const refused[] = {"a:b", ":", "line\nbreak", "cr\r", "\n"};
  for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
    char *stored = NULL;
    ck_assert_int_eq(password_make(PASSWORD_PLAIN, refused[i], 0, &stored), -EINVAL);
    ck_assert_ptr_null(stored);
  }
  /* Other schemes hash such passwords into a secret without them. */
  char *stored = NULL;
  ck_assert_int_eq(password_make(PASSWORD_SHA256_CRYPT, "a:b\nc", 1000, &stored), 0);
  ck_assert_int_eq(password_verify(stored, "a:b\nc"), MATCH);
  free(stored);
}
END_TEST

int main(void) {
  Suite *s = suite_create("password");
  TCase *verify = tcase_create("verify");
  tcase_add_test(verify, published_crypt_vectors_verify_bare_and_with_dovecot_prefixes);
  tcase_add_loop_test(verify, hashes_of_the_system_crypt_verify, 0,
                      (int)(sizeof system_schemes / sizeof system_schemes[0]));
  tcase_add_test(verify, plain_secret_is_found_in_any_case);
  tcase_add_test(verify, plain_compares_the_whole_password);
  tcase_add_test(verify, scram_credential_checks_a_plaintext_password);
  tcase_add_test(verify, scheme_names_are_case_insensitive);
  tcase_add_test(verify, locked_and_unknown_secrets_are_unusable);
  tcase_add_test(verify, overlong_password_mismatches_a_crypt_hash);
  suite_add_tcase(s, verify);
  TCase *make = tcase_create("make");
  tcase_set_timeout(make, 120);
  tcase_add_test(make, scheme_lookup_knows_dovecot_names_in_any_case);
  tcase_add_loop_test(make, every_scheme_round_trips, 0,
                      (int)(sizeof made / sizeof made[0]));
  tcase_add_test(make, salts_are_fresh_every_time);
  tcase_add_test(make, default_costs_are_the_documented_ones);
  tcase_add_test(make, scram_secret_is_a_dovecot_credential);
  tcase_add_test(make, bad_costs_are_refused);
  tcase_add_test(make, plain_refuses_what_a_line_cannot_carry);
  suite_add_tcase(s, make);
  return check_run(s) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
