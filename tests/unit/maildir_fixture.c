/*
 * What the maildir tests share (test_maildir.c, test_maildir_index.c): a
 * directory per test under one per run, the module loaded through the
 * synchronous harness, and small helpers to build maildirs and call the
 * module.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check_run.h"
#include "maildir_fixture.h"

static char base_dir[128]; /* all tests' directories, removed by main */
char tmp[256];
struct harness h;
struct harness_result *res;

/* ---- Fixture and helpers ------------------------------------------------ */

static int remove_entry(const char *path, const struct stat *st, int flag,
                        struct FTW *ftw) {
  return remove(path);
}

static void setup(void) {
  snprintf(tmp, sizeof tmp, "%s/test-XXXXXX", base_dir);
  ck_assert_ptr_nonnull(mkdtemp(tmp));
  res = calloc(1, sizeof *res);
  ck_assert_ptr_nonnull(res);
  memset(&h, 0, sizeof h);
}

static void teardown(void) {
  if (h.dl != NULL)
    harness_close(&h);
  free(res);
  nftw(tmp, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Returns a path under the test directory, built like printf. */
const char *at(const char *fmt, ...) {
  static char paths[8][4096];
  static int next;
  char *path = paths[next++ % 8];
  int used = snprintf(path, 4096, "%s/", tmp);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(path + used, 4096 - (size_t)used, fmt, ap);
  va_end(ap);
  return path;
}

void make_dir(const char *path) {
  ck_assert_msg(mkdir(path, 0700) == 0 || errno == EEXIST, "mkdir %s: %s", path,
                strerror(errno));
}

void make_maildir(const char *path) {
  char sub[4096];
  make_dir(path);
  const char *subdirs[] = {"new", "cur", "tmp"};
  for (int i = 0; i < 3; i++) {
    snprintf(sub, sizeof sub, "%s/%s", path, subdirs[i]);
    make_dir(sub);
  }
}

void write_file(const char *path, const char *data, size_t len) {
  FILE *f = fopen(path, "wb");
  ck_assert_msg(f != NULL, "fopen %s: %s", path, strerror(errno));
  ck_assert_uint_eq(fwrite(data, 1, len, f), len);
  ck_assert_int_eq(fclose(f), 0);
}

char *read_file(const char *path, size_t *len_r) {
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return NULL;
  char *data = NULL;
  size_t len = 0, cap = 0;
  for (;;) {
    if (len == cap) {
      cap = cap ? cap * 2 : 4096;
      data = realloc(data, cap + 1);
    }
    size_t n = fread(data + len, 1, cap - len, f);
    if (n == 0)
      break;
    len += n;
  }
  fclose(f);
  data[len] = '\0';
  if (len_r != NULL)
    *len_r = len;
  return data;
}

int exists(const char *path) {
  struct stat st;
  return lstat(path, &st) == 0;
}

int is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Counts the entries of a directory other than "." and "..". */
int count_entries(const char *path) {
  DIR *d = opendir(path);
  ck_assert_msg(d != NULL, "opendir %s: %s", path, strerror(errno));
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
  closedir(d);
  return n;
}

/* The first entry of a directory, other than "." and "..". */
const char *first_entry(const char *path) {
  static char name[512];
  DIR *d = opendir(path);
  ck_assert_ptr_nonnull(d);
  struct dirent *e;
  name[0] = '\0';
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
      snprintf(name, sizeof name, "%s", e->d_name);
      break;
    }
  }
  closedir(d);
  return name;
}

/* The CRLF-form size by the rules of popkit/crlf.h, computed byte by byte
 * here without the header, so that the module is checked against an
 * independent reading of the rules. */
uint64_t expected_size(const char *data, size_t len) {
  uint64_t size = 0;
  for (size_t i = 0; i < len; i++) {
    if (data[i] == '\n' && (i == 0 || data[i - 1] != '\r'))
      size += 2;
    else
      size += 1;
  }
  if (len > 0 && data[len - 1] != '\n')
    size += 2;
  return size;
}

int load(const char *template, char *error, size_t error_size) {
  json_t *config = json_pack("{s:s}", "path", template);
  char *text = json_dumps(config, 0);
  int rc = harness_open(&h, MODULE_PATH, text, "/", error, error_size);
  free(text);
  json_decref(config);
  return rc;
}

void load_ok(const char *template) {
  char error[512] = "";
  int rc = load(template, error, sizeof error);
  ck_assert_msg(rc == 0, "create with %s: %d %s", template, rc, error);
}

enum popkit_result open_box(const char *identity, void **mailbox_r) {
  struct popkit_store_request req = {0};
  req.identity = identity;
  enum popkit_result r = harness_store(&h, POPKIT_REQ_STORE_OPEN, &req, res);
  *mailbox_r = r == POPKIT_OK ? req.mailbox : NULL;
  return r;
}

void *open_ok(const char *identity) {
  void *mailbox;
  enum popkit_result r = open_box(identity, &mailbox);
  ck_assert_msg(r == POPKIT_OK, "open %s: %d %s", identity, r, res->log_text);
  ck_assert_ptr_nonnull(mailbox);
  ck_assert(!res->bad_uid_seen);
  return mailbox;
}

void close_box(void *mailbox) {
  struct popkit_store_request req = {0};
  struct harness_result *out = calloc(1, sizeof *out);
  req.mailbox = mailbox;
  ck_assert_int_eq(harness_store(&h, POPKIT_REQ_STORE_CLOSE, &req, out), POPKIT_OK);
  free(out);
}

enum popkit_result expunge(void *mailbox, const uint64_t *indexes, size_t n) {
  struct popkit_store_request req = {0};
  req.mailbox = mailbox;
  req.indexes = indexes;
  req.index_count = n;
  return harness_store(&h, POPKIT_REQ_STORE_EXPUNGE, &req, res);
}

/* Opens, keeps a copy of the listing in *copy, closes. */
void snapshot(const char *identity, struct harness_result *copy) {
  void *mailbox = open_ok(identity);
  memcpy(copy, res, sizeof *copy);
  close_box(mailbox);
}

int listed(const char *uid) {
  for (size_t i = 0; i < res->message_count; i++) {
    if (strcmp(res->uids[i], uid) == 0)
      return 1;
  }
  return 0;
}

const char msg_a[] = "Subject: a\n\nfirst body\n";
const char msg_b[] = "Subject: b\r\n\r\nmixed\nends without newline";
const char msg_c[] = "Subject: c\n\nhas a W= size in its name\n";
const char msg_d[] = "Subject: d\n\nhas an S= size in its name\n\n";
const char msg_e[] = "Subject: e\r\n\r\nwritten with CRLF\r\n";

/* A maildir as an MTA leaves it, in bob's directory under root/. */
void write_mta_maildir(void) {
  char name[256];
  make_dir(at("root"));
  make_maildir(at("root/bob"));
  write_file(at("root/bob/new/1000000003.M3P10.mta"), msg_a, strlen(msg_a));
  write_file(at("root/bob/cur/1000000001.M1P10.mta:2,S"), msg_b, strlen(msg_b));
  write_file(at("root/bob/new/1000000004.M4P10.mta,W=999"), msg_c, strlen(msg_c));
  snprintf(name, sizeof name, "root/bob/cur/1000000002.M2P10.mta,S=%zu:2,RS",
           strlen(msg_d));
  write_file(at("%s", name), msg_d, strlen(msg_d));
  write_file(at("root/bob/cur/1000000005.M5P10.mta:2,"), msg_e, strlen(msg_e));
  /* Not messages: a hidden file, a directory, a symbolic link, a file in
   * tmp/. */
  write_file(at("root/bob/new/.hidden"), "x\n", 2);
  make_dir(at("root/bob/new/1000000006.dir"));
  ck_assert_int_eq(symlink("/etc/passwd", at("root/bob/cur/1000000007.link")), 0);
  write_file(at("root/bob/tmp/1000000008.M8P10.mta"), "y\n", 2);
}

void write_three(void) {
  make_dir(at("root"));
  make_maildir(at("root/bob"));
  write_file(at("root/bob/new/1000000001.M1P1.mta"), "one\n", 4);
  write_file(at("root/bob/cur/1000000002.M2P1.mta:2,S"), "two\n", 4);
  write_file(at("root/bob/new/1000000003.M3P1.mta"), "three\n", 6);
}

void maildir_fixture_add(Suite *s, const struct maildir_test_group *groups,
                         size_t count) {
  TCase *tc = NULL;
  const char *current_group = "";
  for (size_t i = 0; i < count; i++) {
    if (strcmp(groups[i].name, current_group) != 0) {
      current_group = groups[i].name;
      tc = tcase_create(current_group);
      tcase_add_checked_fixture(tc, setup, teardown);
      tcase_set_timeout(tc, 120);
      suite_add_tcase(s, tc);
    }
    tcase_add_test(tc, groups[i].test);
  }
}

int maildir_fixture_main(Suite *s) {
  /* Every test makes its own directory under this one; removing it here
   * also cleans up after a test whose failure skipped its teardown. */
  snprintf(base_dir, sizeof base_dir, "/tmp/popkit-test-maildir-XXXXXX");
  if (mkdtemp(base_dir) == NULL) {
    perror("mkdtemp");
    return EXIT_FAILURE;
  }
  int failed = check_run(s);
  nftw(base_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
