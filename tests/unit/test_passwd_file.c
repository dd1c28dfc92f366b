/*
 * passwd-file.so, driven through the module harness (whose host checks
 * passwords with the core's password_verify): schemes, the file format,
 * unknown users, and reloading when the file changes.
 */
/* nftw() is an XSI function. */
#define _XOPEN_SOURCE 700
#define _DEFAULT_SOURCE

#include <check.h>
#include <crypt.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check_run.h"
#include "module_harness.h"
#include "password.h"
#include "system_crypt.h"

/* One base directory for the whole run, made and removed by the parent
 * process, so that it is cleaned up even after a test fails (Check skips a
 * checked teardown then); each test gets its own subdirectory in it. */
static char base_dir[128];
static char dir[256];
static char users_path[PATH_MAX];
static struct harness h;
static struct harness_result *res;
/* Every rewrite gets its own explicit mtime, so a test never depends on
 * the file system's timestamp granularity. */
static time_t next_mtime = 1600000000;

static void make_base_dir(void) {
  snprintf(base_dir, sizeof base_dir, "/tmp/popkit-passwd-file-XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(base_dir));
}

static int remove_entry(const char *path, const struct stat *st, int flag,
                        struct FTW *ftw) {
  return remove(path);
}

static void remove_base_dir(void) {
  nftw(base_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void setup(void) {
  snprintf(dir, sizeof dir, "%s/test-XXXXXX", base_dir);
  ck_assert_ptr_nonnull(mkdtemp(dir));
  snprintf(users_path, sizeof users_path, "%s/users", dir);
  res = calloc(1, sizeof *res);
  ck_assert_ptr_nonnull(res);
  memset(&h, 0, sizeof h);
}

static void teardown(void) {
  if (h.dl != NULL)
    harness_close(&h);
  free(res);
}

static void write_at(const char *path, const char *content) {
  FILE *f = fopen(path, "w");
  ck_assert_ptr_nonnull(f);
  size_t len = strlen(content);
  ck_assert_uint_eq(fwrite(content, 1, len, f), len);
  ck_assert_int_eq(fclose(f), 0);
}

static void set_new_mtime(const char *path) {
  struct timespec times[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_sec = next_mtime++}};
  ck_assert_int_eq(utimensat(AT_FDCWD, path, times, 0), 0);
}

/* Rewrites the users file in place, as an editor that truncates does. */
static void rewrite_users(const char *content) {
  write_at(users_path, content);
  set_new_mtime(users_path);
}

static void open_module_at(const char *path) {
  char config[PATH_MAX + 64];
  char error[512] = "";
  snprintf(config, sizeof config, "{\"module\": \"passwd-file\", \"path\": \"%s\"}",
           path);
  int rc = harness_open(&h, MODULE_PATH, config, dir, error, sizeof error);
  ck_assert_msg(rc == 0, "create failed: %s", error);
}

static void open_users(const char *content) {
  write_at(users_path, content);
  set_new_mtime(users_path);
  open_module_at(users_path);
}

static enum popkit_result verify(const char *user, const char *password) {
  return harness_auth(&h, POPKIT_REQ_AUTH_VERIFY_PLAIN, user, password, res);
}

static enum popkit_result lookup(const char *user) {
  return harness_auth(&h, POPKIT_REQ_AUTH_LOOKUP, user, NULL, res);
}

static enum popkit_result credential(const char *user) {
  return harness_auth(&h, POPKIT_REQ_AUTH_GET_CREDENTIAL, user, NULL, res);
}

static size_t count_in_logs(const char *needle) {
  size_t n = 0;
  for (const char *p = h.logs; (p = strstr(p, needle)) != NULL; p++)
    n++;
  return n;
}

static void assert_verifies(const char *user, const char *password) {
  ck_assert_int_eq(verify(user, password), POPKIT_OK);
  ck_assert_str_eq(res->identity, user);
}

/* ---- descriptor --------------------------------------------------------- */

START_TEST(descriptor_declares_a_blocking_auth_module) {
  open_users("alice:{PLAIN}a\n");
  const struct popkit_module_descriptor *d = h.descriptor;
  ck_assert_str_eq(d->name, "passwd-file");
  ck_assert_uint_eq(d->roles, POPKIT_ROLE_AUTH);
  ck_assert_uint_eq(d->flags & POPKIT_MODULE_BLOCKING, POPKIT_MODULE_BLOCKING);
  ck_assert_str_eq(d->config_keys[0].name, "path");
  ck_assert_uint_eq(d->config_keys[0].type, POPKIT_CONFIG_PATH);
  ck_assert_uint_ne(d->config_keys[0].required, 0);
  ck_assert_ptr_null(d->config_keys[1].name);
  ck_assert_ptr_nonnull(d->auth);
  ck_assert_ptr_null(d->store);
}
END_TEST

/* ---- schemes ------------------------------------------------------------ */

static const struct {
  const char *prefix;
  unsigned long count; /* the cheapest cost, to keep the test fast */
} schemes[] = {
    {"$y$", 1}, {"$2b$", 4}, {"$2y$", 4}, {"$6$", 1000}, {"$5$", 1000},
};

START_TEST(each_crypt_scheme_accepts_the_right_password_only) {
  char hash[CRYPT_OUTPUT_SIZE];
  system_crypt(schemes[_i].prefix, schemes[_i].count, "correct horse", hash, sizeof hash);
  char content[1024];
  snprintf(content, sizeof content, "bob:{PLAIN}b\nalice:%s\n", hash);
  open_users(content);

  assert_verifies("alice", "correct horse");
  ck_assert_int_eq(verify("alice", "correct hors"), POPKIT_FAIL);
  ck_assert_int_eq(verify("alice", "correct horse "), POPKIT_FAIL);
  ck_assert_int_eq(verify("alice", ""), POPKIT_FAIL);
  ck_assert_str_eq(res->identity, "");
  /* The log text names the line and never the hash. */
  ck_assert_ptr_nonnull(strstr(res->log_text, "users:2"));
  ck_assert_ptr_null(strstr(res->log_text, hash));
  ck_assert_ptr_null(strstr(h.logs, hash));
  ck_assert_ptr_null(strstr(h.logs, "correct horse"));
}
END_TEST

START_TEST(published_test_vectors_verify) {
  open_users("sha512:$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/"
             "O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1\n"
             "sha256:$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5\n"
             "bcrypt:$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW\n");
  assert_verifies("sha512", "Hello world!");
  assert_verifies("sha256", "Hello world!");
  assert_verifies("bcrypt", "U*U");
  ck_assert_int_eq(verify("sha512", "Hello world"), POPKIT_FAIL);
  ck_assert_int_eq(verify("bcrypt", "U*V"), POPKIT_FAIL);
}
END_TEST

START_TEST(plain_scheme_compares_the_whole_password) {
  open_users("alice:{PLAIN}secret\nbob:{plain}lower case scheme\n");
  assert_verifies("alice", "secret");
  ck_assert_int_eq(verify("alice", "secre"), POPKIT_FAIL);
  ck_assert_int_eq(verify("alice", "secrets"), POPKIT_FAIL);
  ck_assert_int_eq(verify("alice", "SECRET"), POPKIT_FAIL);
  ck_assert_int_eq(verify("alice", ""), POPKIT_FAIL);
  assert_verifies("bob", "lower case scheme");
}
END_TEST

START_TEST(dovecot_crypt_prefixes_verify) {
  char sha512[CRYPT_OUTPUT_SIZE], bcrypt[CRYPT_OUTPUT_SIZE];
  system_crypt("$6$", 1000, "pw six", sha512, sizeof sha512);
  system_crypt("$2y$", 4, "pw blf", bcrypt, sizeof bcrypt);
  char content[2048];
  snprintf(content, sizeof content,
           "crypt:{CRYPT}%s\nsha:{SHA512-CRYPT}%s\nblf:{BLF-CRYPT}%s\n", sha512, sha512,
           bcrypt);
  open_users(content);
  assert_verifies("crypt", "pw six");
  assert_verifies("sha", "pw six");
  assert_verifies("blf", "pw blf");
  ck_assert_int_eq(verify("crypt", "pw blf"), POPKIT_FAIL);
  ck_assert_int_eq(verify("blf", "pw six"), POPKIT_FAIL);
}
END_TEST

START_TEST(unknown_scheme_and_locked_hashes_fail) {
  char hash[CRYPT_OUTPUT_SIZE];
  system_crypt("$6$", 1000, "pw", hash, sizeof hash);
  char content[2048];
  snprintf(content, sizeof content,
           "ssha:{SSHA}c2VjcmV0c2FsdA==\n"
           "bang:!\n"
           "star:*\n"
           "locked:!%s\n"
           "empty:\n"
           "unclosed:{PLAIN secret\n",
           hash);
  open_users(content);
  ck_assert_int_eq(verify("ssha", "secret"), POPKIT_FAIL);
  ck_assert_ptr_nonnull(strstr(res->log_text, "users:1"));
  ck_assert_ptr_null(strstr(res->log_text, "c2VjcmV0c2FsdA"));
  ck_assert_int_eq(verify("bang", "!"), POPKIT_FAIL);
  ck_assert_int_eq(verify("star", "*"), POPKIT_FAIL);
  ck_assert_int_eq(verify("locked", "pw"), POPKIT_FAIL);
  ck_assert_ptr_nonnull(strstr(res->log_text, "users:4"));
  ck_assert_ptr_null(strstr(res->log_text, hash));
  ck_assert_int_eq(verify("empty", ""), POPKIT_FAIL);
  ck_assert_int_eq(verify("unclosed", "secret"), POPKIT_FAIL);
  /* A locked user still exists: the auth chain must not move on. */
  ck_assert_int_eq(lookup("locked"), POPKIT_OK);
}
END_TEST

START_TEST(password_with_colons_and_spaces) {
  char hash[CRYPT_OUTPUT_SIZE];
  system_crypt("$y$", 1, " pa:ss wo:rd ", hash, sizeof hash);
  char content[1024];
  snprintf(content, sizeof content, "alice:%s\nbob:{PLAIN}with  spaces \n", hash);
  open_users(content);
  assert_verifies("alice", " pa:ss wo:rd ");
  ck_assert_int_eq(verify("alice", " pa:ss wo:rd"), POPKIT_FAIL);
  ck_assert_int_eq(verify("alice", " pa"), POPKIT_FAIL);
  assert_verifies("bob", "with  spaces ");
  ck_assert_int_eq(verify("bob", "with  spaces"), POPKIT_FAIL);
}
END_TEST

/* ---- file format -------------------------------------------------------- */

START_TEST(comments_blank_lines_and_crlf) {
  char hash[CRYPT_OUTPUT_SIZE];
  system_crypt("$6$", 1000, "b1", hash, sizeof hash);
  char content[2048];
  snprintf(content, sizeof content,
           "# users of example.org\r\n"
           "   # indented:comment\n"
           "\n"
           " \t \r\n"
           "alice:{PLAIN}a1\r\n"
           "bob:%s\r\n"
           "carol:{PLAIN}c1",
           hash);
  open_users(content);
  assert_verifies("alice", "a1");
  ck_assert_int_eq(verify("alice", "a1\r"), POPKIT_FAIL);
  assert_verifies("bob", "b1");
  assert_verifies("carol", "c1");
  ck_assert_int_eq(credential("alice"), POPKIT_OK);
  ck_assert_str_eq(res->credential, "{PLAIN}a1");
  ck_assert_int_eq(lookup("   # indented"), POPKIT_NOT_FOUND);
  ck_assert_ptr_null(strstr(h.logs, "skipped"));
  ck_assert_ptr_nonnull(strstr(h.logs, "3 users"));
}
END_TEST

START_TEST(malformed_lines_are_skipped_with_a_warning) {
  size_t long_len = 70000;
  char *content = malloc(long_len + 1024);
  ck_assert_ptr_nonnull(content);
  char *p = content;
  p += sprintf(p, "alice:{PLAIN}a1\n"
                  "no colon here\n"
                  ":{PLAIN}orphan\n"
                  "bob:{PLAIN}b1\n");
  memset(p, 'x', long_len);
  p += long_len;
  p += sprintf(p, ":{PLAIN}toolong\ncarol:{PLAIN}c1\n");
  open_users(content);
  free(content);

  assert_verifies("alice", "a1");
  assert_verifies("bob", "b1");
  assert_verifies("carol", "c1");
  ck_assert_int_eq(lookup(""), POPKIT_NOT_FOUND);
  ck_assert_int_eq(lookup("no colon here"), POPKIT_NOT_FOUND);
  ck_assert_ptr_nonnull(strstr(h.logs, "users:2: no ':'"));
  ck_assert_ptr_nonnull(strstr(h.logs, "users:3: empty user"));
  ck_assert_ptr_nonnull(strstr(h.logs, "users:5: line longer"));
  ck_assert_ptr_null(strstr(h.logs, "orphan"));
  ck_assert_ptr_null(strstr(h.logs, "toolong"));
  ck_assert_ptr_nonnull(strstr(h.logs, "3 users"));
}
END_TEST

START_TEST(a_line_of_64_kib_is_read) {
  /* The longest line accepted: a user name that fills 64 KiB. */
  const char *tail = ":{PLAIN}pw";
  size_t user_len = 65536 - strlen(tail);
  char *user = malloc(user_len + 1);
  ck_assert_ptr_nonnull(user);
  memset(user, 'u', user_len);
  user[user_len] = '\0';
  char *content = malloc(user_len + 64);
  ck_assert_ptr_nonnull(content);
  sprintf(content, "%s%s\n", user, tail);
  open_users(content);
  ck_assert_int_eq(verify(user, "pw"), POPKIT_OK);
  ck_assert_ptr_null(strstr(h.logs, "skipped"));
  free(user);
  free(content);
}
END_TEST

START_TEST(duplicate_user_first_wins) {
  open_users("dave:{PLAIN}first\n# again:\ndave:{PLAIN}second\n");
  assert_verifies("dave", "first");
  ck_assert_int_eq(verify("dave", "second"), POPKIT_FAIL);
  ck_assert_ptr_nonnull(strstr(h.logs, "users:3: duplicate user, line 1 wins"));
  ck_assert_ptr_null(strstr(h.logs, "second"));
}
END_TEST

START_TEST(dovecot_extra_fields_are_ignored) {
  open_users("erin:{PLAIN}e1:1000:1000::/home/erin:/bin/sh:userdb_quota=1G\n");
  assert_verifies("erin", "e1");
  ck_assert_int_eq(credential("erin"), POPKIT_OK);
  ck_assert_str_eq(res->credential, "{PLAIN}e1");
}
END_TEST

START_TEST(quotes_and_utf8_in_user_names) {
  open_users("o'brien:{PLAIN}irish\n"
             "zo\xc3\xab@example.org:{PLAIN}umlaut\n"
             "\xe7\x94\xa8\xe6\x88\xb7:{PLAIN}cjk\n");
  assert_verifies("o'brien", "irish");
  assert_verifies("zo\xc3\xab@example.org", "umlaut");
  assert_verifies("\xe7\x94\xa8\xe6\x88\xb7", "cjk");
  ck_assert_int_eq(lookup("o'brien"), POPKIT_OK);
  ck_assert_str_eq(res->identity, "o'brien");
  /* Bytes, not characters: the decomposed spelling is another name. */
  ck_assert_int_eq(lookup("zoe\xcc\x88@example.org"), POPKIT_NOT_FOUND);
}
END_TEST

/* ---- unknown users and credentials -------------------------------------- */

static void assert_unknown_everywhere(const char *user) {
  ck_assert_int_eq(lookup(user), POPKIT_NOT_FOUND);
  ck_assert_str_eq(res->identity, "");
  ck_assert_int_eq(verify(user, "whatever"), POPKIT_NOT_FOUND);
  ck_assert_str_eq(res->identity, "");
  ck_assert_int_eq(credential(user), POPKIT_NOT_FOUND);
  ck_assert_int_eq(res->credential_set, 0);
}

START_TEST(unknown_user_is_not_found_for_every_operation) {
  char hash[CRYPT_OUTPUT_SIZE];
  system_crypt("$2b$", 4, "whatever", hash, sizeof hash);
  char content[1024];
  snprintf(content, sizeof content, "alice:%s\nbob:{PLAIN}whatever\n", hash);
  open_users(content);
  assert_unknown_everywhere("mallory");
  assert_unknown_everywhere("Alice");
  assert_unknown_everywhere("alic");
  assert_unknown_everywhere("alice ");
  assert_unknown_everywhere("");
  assert_unknown_everywhere("alice:whatever");
}
END_TEST

START_TEST(unknown_user_without_a_usable_crypt_hash_in_the_file) {
  /* The stand-in falls back to another secret; the answer must not change. */
  open_users("locked:!\nplain:{PLAIN}whatever\n");
  assert_unknown_everywhere("mallory");
  harness_close(&h);
  open_users("");
  assert_unknown_everywhere("mallory");
}
END_TEST

START_TEST(credential_is_the_stored_string_exactly) {
  char yescrypt[CRYPT_OUTPUT_SIZE], sha512[CRYPT_OUTPUT_SIZE];
  system_crypt("$y$", 1, "pw", yescrypt, sizeof yescrypt);
  system_crypt("$6$", 1000, "pw", sha512, sizeof sha512);
  char content[2048];
  snprintf(content, sizeof content,
           "y:%s\nc:{CRYPT}%s\np:{PLAIN}secret\nl:!\nx:{SSHA}abc\n", yescrypt, sha512);
  open_users(content);
  char expected[CRYPT_OUTPUT_SIZE + 16];
  ck_assert_int_eq(credential("y"), POPKIT_OK);
  ck_assert_str_eq(res->credential, yescrypt);
  ck_assert_str_eq(res->identity, "y");
  ck_assert_int_eq(credential("c"), POPKIT_OK);
  snprintf(expected, sizeof expected, "{CRYPT}%s", sha512);
  ck_assert_str_eq(res->credential, expected);
  ck_assert_int_eq(credential("p"), POPKIT_OK);
  ck_assert_str_eq(res->credential, "{PLAIN}secret");
  ck_assert_int_eq(credential("l"), POPKIT_OK);
  ck_assert_str_eq(res->credential, "!");
  ck_assert_int_eq(credential("x"), POPKIT_OK);
  ck_assert_str_eq(res->credential, "{SSHA}abc");
}
END_TEST

/* ---- SCRAM secrets ------------------------------------------------------ */

/* RFC 7677's example credential (password "pencil"), as Dovecot writes it. */
static const char scram_pencil[] = "{SCRAM-SHA-256}4096,W22ZaJ0SNY7soEsUEjb6gQ==,"
                                   "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=,"
                                   "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

START_TEST(scram_user_logs_in_with_user_pass) {
  char *made = NULL;
  ck_assert_int_eq(password_make(PASSWORD_SCRAM_SHA_256, "correct horse", 0, &made), 0);
  char content[1024];
  snprintf(content, sizeof content, "alice:%s\nbob:%s\n", scram_pencil, made);
  open_users(content);
  assert_verifies("alice", "pencil");
  ck_assert_int_eq(verify("alice", "pencil "), POPKIT_FAIL);
  ck_assert_int_eq(verify("alice", "Pencil"), POPKIT_FAIL);
  ck_assert_int_eq(verify("alice", ""), POPKIT_FAIL);
  ck_assert_str_eq(res->identity, "");
  ck_assert_ptr_nonnull(strstr(res->log_text, "wrong password"));
  ck_assert_ptr_nonnull(strstr(res->log_text, "users:1"));
  assert_verifies("bob", "correct horse");
  ck_assert_int_eq(verify("bob", "pencil"), POPKIT_FAIL);
  /* Neither the keys nor a password reach the log. */
  ck_assert_ptr_null(strstr(h.logs, "W22ZaJ0SNY7soEsUEjb6gQ"));
  ck_assert_ptr_null(strstr(h.logs, "pencil"));
  free(made);
}
END_TEST

START_TEST(scram_credential_is_handed_over_unchanged) {
  char content[1024];
  snprintf(content, sizeof content, "alice:%s:1000:1000::/home/alice\n", scram_pencil);
  open_users(content);
  ck_assert_int_eq(credential("alice"), POPKIT_OK);
  ck_assert_int_eq(res->credential_set, 1);
  ck_assert_str_eq(res->credential, scram_pencil);
  ck_assert_str_eq(res->identity, "alice");
}
END_TEST

START_TEST(malformed_scram_secret_locks_the_user) {
  open_users("alice:{SCRAM-SHA-256}4096,not base64,x,y\n");
  ck_assert_int_eq(verify("alice", "pencil"), POPKIT_FAIL);
  ck_assert_ptr_nonnull(strstr(res->log_text, "locked or of an unknown scheme"));
  ck_assert_int_eq(lookup("alice"), POPKIT_OK);
}
END_TEST

/* ---- what an answer costs ------------------------------------------------ */

/* Every secret the module asked the host to check, in order. */
static char checked[8][256];
static size_t checked_count;

static int counting_verify(const char *stored, const char *password) {
  if (checked_count < 8)
    snprintf(checked[checked_count], sizeof checked[0], "%s", stored);
  checked_count++;
  return password_verify(stored, password);
}

/* Opens the users file, then wraps the host's password check to record
 * what it is asked (the module reads the table at each call). */
static void open_users_counting(const char *content) {
  open_users(content);
  h.host.password_verify = counting_verify;
  checked_count = 0;
}

START_TEST(unknown_and_locked_users_cost_one_check_like_known_ones) {
  char content[1024];
  snprintf(content, sizeof content, "locked:!\nodd:{SSHA}abc\nalice:%s\nbob:{PLAIN}b\n",
           scram_pencil);
  open_users_counting(content);

  ck_assert_int_eq(verify("alice", "wrong"), POPKIT_FAIL);
  ck_assert_uint_eq(checked_count, 1);
  ck_assert_str_eq(checked[0], scram_pencil);

  /* An unknown user: one check, against the first usable secret of the
   * file (alice's, since the lines before it are locked). */
  checked_count = 0;
  ck_assert_int_eq(verify("mallory", "pencil"), POPKIT_NOT_FOUND);
  ck_assert_uint_eq(checked_count, 1);
  ck_assert_str_eq(checked[0], scram_pencil);
  /* ...whose outcome is thrown away: the right password of the stand-in
   * opens nothing. */
  ck_assert_str_eq(res->identity, "");

  /* A locked user: its own check is refused at once, so the stand-in's
   * is spent as well. */
  checked_count = 0;
  ck_assert_int_eq(verify("odd", "pencil"), POPKIT_FAIL);
  ck_assert_uint_eq(checked_count, 2);
  ck_assert_str_eq(checked[0], "{SSHA}abc");
  ck_assert_str_eq(checked[1], scram_pencil);
}
END_TEST

START_TEST(stand_in_follows_the_file_when_it_changes) {
  open_users_counting("alice:{PLAIN}a1\n");
  ck_assert_int_eq(verify("mallory", "x"), POPKIT_NOT_FOUND);
  ck_assert_str_eq(checked[0], "{PLAIN}a1");
  char content[1024];
  snprintf(content, sizeof content, "carol:%s\nalice:{PLAIN}a1\n", scram_pencil);
  rewrite_users(content);
  checked_count = 0;
  ck_assert_int_eq(verify("mallory", "x"), POPKIT_NOT_FOUND);
  /* The reload probes carol's secret once to find it usable; then the
   * unknown user's password is checked against it. */
  ck_assert_uint_eq(checked_count, 2);
  ck_assert_str_eq(checked[1], scram_pencil);
}
END_TEST

/* ---- create ------------------------------------------------------------- */

START_TEST(host_without_password_verify_is_refused) {
  /* An ABI 1.0 host table ends before password_verify. */
  write_at(users_path, "alice:{PLAIN}a1\n");
  char config[PATH_MAX + 64], error[512] = "";
  snprintf(config, sizeof config, "{\"module\": \"passwd-file\", \"path\": \"%s\"}",
           users_path);
  uint32_t old_size = (uint32_t)offsetof(struct popkit_host, password_verify);
  ck_assert_int_eq(
      harness_open_host_size(&h, MODULE_PATH, config, dir, old_size, error, sizeof error),
      -EINVAL);
  ck_assert_ptr_nonnull(strstr(error, "ABI 1.1"));
  ck_assert_ptr_null(h.instance);
  /* The descriptor says 1.1 or later, which popkitd's loader checks before
   * this. */
  ck_assert_uint_eq(h.descriptor->abi_major, 1);
  ck_assert_uint_ge(h.descriptor->abi_minor, 1);
}
END_TEST

START_TEST(missing_file_is_an_error_naming_the_path) {
  char config[PATH_MAX + 64], error[512] = "", expected[PATH_MAX + 128];
  snprintf(config, sizeof config, "{\"module\": \"passwd-file\", \"path\": \"%s/nope\"}",
           dir);
  ck_assert_int_eq(harness_open(&h, MODULE_PATH, config, dir, error, sizeof error),
                   -ENOENT);
  snprintf(expected, sizeof expected,
           "path: cannot read %s/nope: No such file or directory", dir);
  ck_assert_str_eq(error, expected);
}
END_TEST

START_TEST(directory_instead_of_a_file_is_an_error) {
  char config[PATH_MAX + 64], error[512] = "";
  snprintf(config, sizeof config, "{\"module\": \"passwd-file\", \"path\": \"%s\"}", dir);
  ck_assert_int_eq(harness_open(&h, MODULE_PATH, config, dir, error, sizeof error),
                   -EISDIR);
  ck_assert_ptr_nonnull(strstr(error, "Is a directory"));
  ck_assert_ptr_nonnull(strstr(error, dir));
}
END_TEST

START_TEST(relative_path_resolves_against_the_config_directory) {
  write_at(users_path, "alice:{PLAIN}a1\n");
  char error[512] = "";
  ck_assert_int_eq(
      harness_open(&h, MODULE_PATH, "{\"path\": \"users\"}", dir, error, sizeof error),
      0);
  assert_verifies("alice", "a1");
}
END_TEST

START_TEST(many_users) {
  enum { USERS = 100000 };
  char *content = malloc((size_t)USERS * 40);
  ck_assert_ptr_nonnull(content);
  char *p = content;
  for (int i = 0; i < USERS; i++)
    p += sprintf(p, "user%d:{PLAIN}pw%d\n", i, i);
  open_users(content);
  free(content);
  assert_verifies("user0", "pw0");
  assert_verifies("user54321", "pw54321");
  assert_verifies("user99999", "pw99999");
  ck_assert_int_eq(verify("user54321", "pw12345"), POPKIT_FAIL);
  ck_assert_int_eq(lookup("user100000"), POPKIT_NOT_FOUND);
  ck_assert_ptr_nonnull(strstr(h.logs, "100000 users"));
}
END_TEST

/* ---- reload ------------------------------------------------------------- */

START_TEST(reload_sees_an_added_user) {
  open_users("alice:{PLAIN}a1\n");
  ck_assert_int_eq(lookup("bob"), POPKIT_NOT_FOUND);
  rewrite_users("alice:{PLAIN}a1\nbob:{PLAIN}b1\n");
  assert_verifies("bob", "b1");
  assert_verifies("alice", "a1");
}
END_TEST

START_TEST(reload_sees_a_changed_password_of_the_same_length) {
  open_users("alice:{PLAIN}old1\n");
  assert_verifies("alice", "old1");
  /* Same size and inode: only the mtime tells the versions apart. */
  rewrite_users("alice:{PLAIN}new1\n");
  assert_verifies("alice", "new1");
  ck_assert_int_eq(verify("alice", "old1"), POPKIT_FAIL);
}
END_TEST

START_TEST(reload_sees_a_file_replaced_by_rename) {
  open_users("alice:{PLAIN}a1\n");
  assert_verifies("alice", "a1");
  char new_path[PATH_MAX + 8];
  snprintf(new_path, sizeof new_path, "%s.new", users_path);
  write_at(new_path, "alice:{PLAIN}a2\n");
  /* Same size and same mtime as the old version: the inode differs. */
  struct stat old;
  ck_assert_int_eq(stat(users_path, &old), 0);
  struct timespec times[2] = {old.st_atim, old.st_mtim};
  ck_assert_int_eq(utimensat(AT_FDCWD, new_path, times, 0), 0);
  ck_assert_int_eq(rename(new_path, users_path), 0);
  assert_verifies("alice", "a2");
  ck_assert_int_eq(verify("alice", "a1"), POPKIT_FAIL);
  ck_assert_uint_eq(count_in_logs("reloaded"), 1);
}
END_TEST

START_TEST(unchanged_file_is_not_read_again) {
  open_users("alice:{PLAIN}a1\n");
  for (int i = 0; i < 5; i++)
    assert_verifies("alice", "a1");
  ck_assert_uint_eq(count_in_logs("reloaded"), 0);
}
END_TEST

START_TEST(deleted_file_keeps_the_old_users) {
  open_users("alice:{PLAIN}a1\n");
  ck_assert_int_eq(unlink(users_path), 0);
  assert_verifies("alice", "a1");
  ck_assert_int_eq(lookup("alice"), POPKIT_OK);
  ck_assert_int_eq(credential("alice"), POPKIT_OK);
  ck_assert_str_eq(res->credential, "{PLAIN}a1");
  /* One warning for the change, not one per operation. */
  ck_assert_uint_eq(count_in_logs("cannot read"), 1);
  ck_assert_ptr_nonnull(strstr(h.logs, "No such file or directory"));
  /* When the file comes back, its new content counts. */
  rewrite_users("bob:{PLAIN}b1\n");
  assert_verifies("bob", "b1");
  ck_assert_int_eq(lookup("alice"), POPKIT_NOT_FOUND);
}
END_TEST

START_TEST(file_with_only_bad_lines_after_reload_still_loads) {
  /* A reload that reads the file is taken as it is: the administrator may
   * empty the file on purpose. Warnings name the new version's lines. */
  open_users("alice:{PLAIN}a1\n");
  rewrite_users("# nobody\nbroken line\n");
  ck_assert_int_eq(lookup("alice"), POPKIT_NOT_FOUND);
  ck_assert_ptr_nonnull(strstr(h.logs, "users:2: no ':'"));
}
END_TEST

/* ---- concurrency -------------------------------------------------------- */

struct worker_args {
  int failures;
  int rounds;
};

static void *verify_worker(void *arg) {
  struct worker_args *w = arg;
  struct harness_result *out = calloc(1, sizeof *out);
  for (int i = 0; i < w->rounds; i++) {
    if (harness_auth(&h, POPKIT_REQ_AUTH_VERIFY_PLAIN, "alice", "a1", out) != POPKIT_OK)
      w->failures++;
    if (harness_auth(&h, POPKIT_REQ_AUTH_VERIFY_PLAIN, "carol", "c1", out) != POPKIT_OK)
      w->failures++;
  }
  free(out);
  return NULL;
}

START_TEST(concurrent_operations_while_the_file_is_replaced) {
  char hash[CRYPT_OUTPUT_SIZE];
  system_crypt("$5$", 1000, "c1", hash, sizeof hash);
  char content[4096];
  snprintf(content, sizeof content, "alice:{PLAIN}a1\ncarol:%s\n", hash);
  open_users(content);
  enum { THREADS = 4 };
  pthread_t threads[THREADS];
  struct worker_args args[THREADS];
  for (int i = 0; i < THREADS; i++) {
    args[i] = (struct worker_args){.failures = 0, .rounds = 50};
    ck_assert_int_eq(pthread_create(&threads[i], NULL, verify_worker, &args[i]), 0);
  }
  /* Every version keeps alice and carol; only the other users change. */
  char new_path[PATH_MAX + 8];
  snprintf(new_path, sizeof new_path, "%s.new", users_path);
  for (int version = 0; version < 30; version++) {
    char *p = content;
    p += sprintf(p, "alice:{PLAIN}a1\n");
    for (int i = 0; i < version; i++)
      p += sprintf(p, "user%d:{PLAIN}x\n", i);
    sprintf(p, "carol:%s\n", hash);
    write_at(new_path, content);
    ck_assert_int_eq(rename(new_path, users_path), 0);
    usleep(2000);
  }
  for (int i = 0; i < THREADS; i++) {
    ck_assert_int_eq(pthread_join(threads[i], NULL), 0);
    ck_assert_int_eq(args[i].failures, 0);
  }
  assert_verifies("user28", "x");
}
END_TEST

int main(void) {
  Suite *s = suite_create("passwd-file");
  TCase *tc = tcase_create("passwd-file");
  tcase_add_unchecked_fixture(tc, make_base_dir, remove_base_dir);
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, descriptor_declares_a_blocking_auth_module);
  tcase_add_loop_test(tc, each_crypt_scheme_accepts_the_right_password_only, 0,
                      (int)(sizeof schemes / sizeof schemes[0]));
  tcase_add_test(tc, published_test_vectors_verify);
  tcase_add_test(tc, plain_scheme_compares_the_whole_password);
  tcase_add_test(tc, dovecot_crypt_prefixes_verify);
  tcase_add_test(tc, unknown_scheme_and_locked_hashes_fail);
  tcase_add_test(tc, password_with_colons_and_spaces);
  tcase_add_test(tc, comments_blank_lines_and_crlf);
  tcase_add_test(tc, malformed_lines_are_skipped_with_a_warning);
  tcase_add_test(tc, a_line_of_64_kib_is_read);
  tcase_add_test(tc, duplicate_user_first_wins);
  tcase_add_test(tc, dovecot_extra_fields_are_ignored);
  tcase_add_test(tc, quotes_and_utf8_in_user_names);
  tcase_add_test(tc, unknown_user_is_not_found_for_every_operation);
  tcase_add_test(tc, unknown_user_without_a_usable_crypt_hash_in_the_file);
  tcase_add_test(tc, credential_is_the_stored_string_exactly);
  tcase_add_test(tc, scram_user_logs_in_with_user_pass);
  tcase_add_test(tc, scram_credential_is_handed_over_unchanged);
  tcase_add_test(tc, malformed_scram_secret_locks_the_user);
  tcase_add_test(tc, unknown_and_locked_users_cost_one_check_like_known_ones);
  tcase_add_test(tc, stand_in_follows_the_file_when_it_changes);
  tcase_add_test(tc, host_without_password_verify_is_refused);
  tcase_add_test(tc, missing_file_is_an_error_naming_the_path);
  tcase_add_test(tc, directory_instead_of_a_file_is_an_error);
  tcase_add_test(tc, relative_path_resolves_against_the_config_directory);
  tcase_add_test(tc, many_users);
  tcase_add_test(tc, reload_sees_an_added_user);
  tcase_add_test(tc, reload_sees_a_changed_password_of_the_same_length);
  tcase_add_test(tc, reload_sees_a_file_replaced_by_rename);
  tcase_add_test(tc, unchanged_file_is_not_read_again);
  tcase_add_test(tc, deleted_file_keeps_the_old_users);
  tcase_add_test(tc, file_with_only_bad_lines_after_reload_still_loads);
  tcase_add_test(tc, concurrent_operations_while_the_file_is_replaced);
  suite_add_tcase(s, tc);
  int failed = check_run(s);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
