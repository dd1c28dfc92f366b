/*
 * Tests of the maildir store module, driven through the synchronous module
 * harness against real directories under /tmp: a maildir as an MTA writes
 * it, unique ids and sizes, the size cache, READ, the lock, expunge and its
 * crash recovery, delivery, path containment for hostile user names, and
 * the listing index.
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
#include "module_harness.h"

static char base_dir[128];         /* all tests' directories, removed by main */
static char tmp[256];              /* this test's temporary directory */
static struct harness h;           /* the loaded module */
static struct harness_result *res; /* result of the last call */

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
static const char *at(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static const char *at(const char *fmt, ...) {
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

static void make_dir(const char *path) {
  ck_assert_msg(mkdir(path, 0700) == 0 || errno == EEXIST, "mkdir %s: %s", path,
                strerror(errno));
}

static void make_maildir(const char *path) {
  char sub[4096];
  make_dir(path);
  const char *subdirs[] = {"new", "cur", "tmp"};
  for (int i = 0; i < 3; i++) {
    snprintf(sub, sizeof sub, "%s/%s", path, subdirs[i]);
    make_dir(sub);
  }
}

static void write_file(const char *path, const char *data, size_t len) {
  FILE *f = fopen(path, "wb");
  ck_assert_msg(f != NULL, "fopen %s: %s", path, strerror(errno));
  ck_assert_uint_eq(fwrite(data, 1, len, f), len);
  ck_assert_int_eq(fclose(f), 0);
}

static char *read_file(const char *path, size_t *len_r) {
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

static int exists(const char *path) {
  struct stat st;
  return lstat(path, &st) == 0;
}

static int is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Counts the entries of a directory other than "." and "..". */
static int count_entries(const char *path) {
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
static const char *first_entry(const char *path) {
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
static uint64_t expected_size(const char *data, size_t len) {
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

static int load(const char *template, char *error, size_t error_size) {
  json_t *config = json_pack("{s:s}", "path", template);
  char *text = json_dumps(config, 0);
  int rc = harness_open(&h, MODULE_PATH, text, "/", error, error_size);
  free(text);
  json_decref(config);
  return rc;
}

static void load_ok(const char *template) {
  char error[512] = "";
  int rc = load(template, error, sizeof error);
  ck_assert_msg(rc == 0, "create with %s: %d %s", template, rc, error);
}

static enum popkit_result open_box(const char *identity, void **mailbox_r) {
  struct popkit_store_request req = {0};
  req.identity = identity;
  enum popkit_result r = harness_store(&h, POPKIT_REQ_STORE_OPEN, &req, res);
  *mailbox_r = r == POPKIT_OK ? req.mailbox : NULL;
  return r;
}

static void *open_ok(const char *identity) {
  void *mailbox;
  enum popkit_result r = open_box(identity, &mailbox);
  ck_assert_msg(r == POPKIT_OK, "open %s: %d %s", identity, r, res->log_text);
  ck_assert_ptr_nonnull(mailbox);
  ck_assert(!res->bad_uid_seen);
  return mailbox;
}

static void close_box(void *mailbox) {
  struct popkit_store_request req = {0};
  struct harness_result *out = calloc(1, sizeof *out);
  req.mailbox = mailbox;
  ck_assert_int_eq(harness_store(&h, POPKIT_REQ_STORE_CLOSE, &req, out), POPKIT_OK);
  free(out);
}

static enum popkit_result expunge(void *mailbox, const uint64_t *indexes, size_t n) {
  struct popkit_store_request req = {0};
  req.mailbox = mailbox;
  req.indexes = indexes;
  req.index_count = n;
  return harness_store(&h, POPKIT_REQ_STORE_EXPUNGE, &req, res);
}

/* Opens, keeps a copy of the listing in *copy, closes. */
static void snapshot(const char *identity, struct harness_result *copy) {
  void *mailbox = open_ok(identity);
  memcpy(copy, res, sizeof *copy);
  close_box(mailbox);
}

static int listed(const char *uid) {
  for (size_t i = 0; i < res->message_count; i++) {
    if (strcmp(res->uids[i], uid) == 0)
      return 1;
  }
  return 0;
}

/* ---- Config ------------------------------------------------------------- */

START_TEST(unknown_escape_is_named) {
  char error[512] = "";
  ck_assert_int_eq(load("/var/mail/%x", error, sizeof error), -EINVAL);
  const char *want = "path: unknown escape %x in \"/var/mail/%x\"";
  ck_assert_msg(strncmp(error, want, strlen(want)) == 0, "error: %s", error);
}
END_TEST

START_TEST(template_without_user_is_refused) {
  const char *shared[] = {"/var/mail/shared", "/var/mail/%d", "/var/mail/%%u"};
  for (int i = 0; i < 3; i++) {
    char error[512] = "";
    ck_assert_int_eq(load(shared[i], error, sizeof error), -EINVAL);
    ck_assert_msg(strncmp(error, "path: ", 6) == 0 && strstr(error, "%u") != NULL,
                  "%s: %s", shared[i], error);
    harness_close(&h);
  }
  char error[512] = "";
  ck_assert_int_eq(load("/var/mail/%u%", error, sizeof error), -EINVAL);
  ck_assert_msg(strncmp(error, "path: ", 6) == 0, "%s", error);
}
END_TEST

START_TEST(template_escapes_expand) {
  make_dir(at("root"));
  load_ok(at("root/%%d/%%n/100%%%%"));
  close_box(open_ok("bob@example.com"));
  ck_assert(is_dir(at("root/example.com/bob/100%%/new")));
  ck_assert(is_dir(at("root/example.com/bob/100%%/cur")));
  ck_assert(is_dir(at("root/example.com/bob/100%%/tmp")));
  /* The local part ends at the last '@'. */
  close_box(open_ok("a@b@c"));
  ck_assert(is_dir(at("root/c/a@b/100%%/cur")));
  /* Without a domain, %d would fold into the domain directory level. */
  void *mailbox;
  ck_assert_int_eq(open_box("bob", &mailbox), POPKIT_PERMFAIL);
  ck_assert_str_ne(res->log_text, "");
  ck_assert(!exists(at("root/bob")));
  harness_close(&h);

  load_ok(at("root/%%u"));
  close_box(open_ok("carol@example.com"));
  ck_assert(is_dir(at("root/carol@example.com/new")));
}
END_TEST

START_TEST(missing_root_and_empty_identity) {
  load_ok(at("nowhere/%%u"));
  void *mailbox;
  ck_assert_int_eq(open_box("bob", &mailbox), POPKIT_PERMFAIL);
  ck_assert_msg(strstr(res->log_text, at("nowhere")) != NULL, "log: %s", res->log_text);
  ck_assert(!exists(at("nowhere")));
  make_dir(at("nowhere"));
  ck_assert_int_eq(open_box("", &mailbox), POPKIT_PERMFAIL);
  ck_assert_str_ne(res->log_text, "");
  ck_assert_int_eq(count_entries(at("nowhere")), 0);
}
END_TEST

/* ---- Listing ------------------------------------------------------------ */

static const char msg_a[] = "Subject: a\n\nfirst body\n";
static const char msg_b[] = "Subject: b\r\n\r\nmixed\nends without newline";
static const char msg_c[] = "Subject: c\n\nhas a W= size in its name\n";
static const char msg_d[] = "Subject: d\n\nhas an S= size in its name\n\n";
static const char msg_e[] = "Subject: e\r\n\r\nwritten with CRLF\r\n";

/* A maildir as an MTA leaves it, in bob's directory under root/. */
static void write_mta_maildir(void) {
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

START_TEST(lists_mta_maildir) {
  write_mta_maildir();
  load_ok(at("root/%%u"));
  void *mailbox = open_ok("bob");
  ck_assert_uint_eq(res->message_count, 5);
  /* Ordered by the leading timestamp; uids are the base names. */
  ck_assert_str_eq(res->uids[0], "1000000001.M1P10.mta");
  ck_assert_str_eq(res->uids[2], "1000000003.M3P10.mta");
  ck_assert_str_eq(res->uids[3], "1000000004.M4P10.mta,W=999");
  ck_assert_str_eq(res->uids[4], "1000000005.M5P10.mta");
  char uid_d[128];
  snprintf(uid_d, sizeof uid_d, "1000000002.M2P10.mta,S=%zu", strlen(msg_d));
  ck_assert_str_eq(res->uids[1], uid_d);
  ck_assert_uint_eq(res->sizes[0], expected_size(msg_b, strlen(msg_b)));
  ck_assert_uint_eq(res->sizes[1], expected_size(msg_d, strlen(msg_d)));
  ck_assert_uint_eq(res->sizes[2], expected_size(msg_a, strlen(msg_a)));
  ck_assert_uint_eq(res->sizes[3], 999); /* ",W=" is trusted as it is */
  ck_assert_uint_eq(res->sizes[4], strlen(msg_e));
  ck_assert_uint_eq(expected_size(msg_a, strlen(msg_a)), strlen(msg_a) + 3);

  /* READ gives the raw bytes back, LF line ends and all. */
  char *data;
  size_t len;
  ck_assert_int_eq(harness_read_all(&h, mailbox, 2, 5, &data, &len), POPKIT_OK);
  ck_assert_uint_eq(len, strlen(msg_a));
  ck_assert_mem_eq(data, msg_a, len);
  free(data);
  close_box(mailbox);
}
END_TEST

START_TEST(uids_stable_across_rename_and_flags) {
  write_mta_maildir();
  load_ok(at("root/%%u"));
  struct harness_result *before = malloc(sizeof *before);
  snapshot("bob", before);
  /* A mail reader moves a message to cur/ and changes flags of another. */
  ck_assert_int_eq(rename(at("root/bob/new/1000000003.M3P10.mta"),
                          at("root/bob/cur/1000000003.M3P10.mta:2,S")),
                   0);
  ck_assert_int_eq(rename(at("root/bob/cur/1000000001.M1P10.mta:2,S"),
                          at("root/bob/cur/1000000001.M1P10.mta:2,FRS")),
                   0);
  close_box(open_ok("bob"));
  ck_assert_uint_eq(res->message_count, before->message_count);
  for (size_t i = 0; i < before->message_count; i++) {
    ck_assert_str_eq(res->uids[i], before->uids[i]);
    ck_assert_uint_eq(res->sizes[i], before->sizes[i]);
  }
  free(before);
}
END_TEST

START_TEST(unusable_names_get_hashed_uids) {
  make_dir(at("root"));
  make_maildir(at("root/bob"));
  char long_name[128];
  memset(long_name, 'x', 71);
  long_name[71] = '\0';
  write_file(at("root/bob/new/%s", long_name), "a\n", 2);
  write_file(at("root/bob/new/1000000005 spaced"), "b\n", 2);
  write_file(at("root/bob/cur/1000000006.zo\xc3\xab:2,S"), "c\n", 2);
  memset(long_name, 'y', 70);
  long_name[70] = '\0';
  write_file(at("root/bob/new/%s", long_name), "d\n", 2);
  load_ok(at("root/%%u"));
  close_box(open_ok("bob"));
  ck_assert_uint_eq(res->message_count, 4);
  /* FNV-1a-128 of the base names, computed outside popkit. These values
   * must never change: clients remember uids across releases. */
  ck_assert(listed("Hbde532d67920afc07a21c56055128e4f"));
  ck_assert(listed("H33952449e0a525bf324817a7a01a1cdf"));
  ck_assert(listed("H336a9a65b4d4933f994e9fca680edf39"));
  ck_assert(listed(long_name)); /* 70 characters fit as they are */
}
END_TEST

START_TEST(duplicate_base_is_listed_once) {
  make_dir(at("root"));
  make_maildir(at("root/bob"));
  write_file(at("root/bob/new/1000000001.M1P1.mta"), "a\n", 2);
  write_file(at("root/bob/cur/1000000001.M1P1.mta:2,S"), "a\n", 2);
  write_file(at("root/bob/new/1000000002.M2P1.mta"), "b\n", 2);
  load_ok(at("root/%%u"));
  void *mailbox = open_ok("bob");
  ck_assert_uint_eq(res->message_count, 2);
  ck_assert_str_eq(res->uids[0], "1000000001.M1P1.mta");
  ck_assert_msg(strstr(h.logs, "same unique id") != NULL, "logs: %s", h.logs);
  /* Deleting the message deletes both copies, so it cannot come back. */
  uint64_t first = 0;
  ck_assert_int_eq(expunge(mailbox, &first, 1), POPKIT_OK);
  close_box(mailbox);
  ck_assert(!exists(at("root/bob/new/1000000001.M1P1.mta")));
  ck_assert(!exists(at("root/bob/cur/1000000001.M1P1.mta:2,S")));
  close_box(open_ok("bob"));
  ck_assert_uint_eq(res->message_count, 1);
}
END_TEST

/* ---- Size cache --------------------------------------------------------- */

START_TEST(size_cache_is_used_while_raw_size_matches) {
  make_dir(at("root"));
  make_maildir(at("root/bob"));
  write_file(at("root/bob/new/1000000001.M1P1.mta"), msg_a, strlen(msg_a));
  write_file(at("root/bob/new/1000000002.M2P1.mta,W=77"), msg_c, strlen(msg_c));
  load_ok(at("root/%%u"));
  close_box(open_ok("bob"));
  uint64_t real = expected_size(msg_a, strlen(msg_a));
  ck_assert_uint_eq(res->sizes[0], real);

  /* One line, for the message whose name does not carry its size. */
  char *cache = read_file(at("root/bob/popkit-sizes"), NULL);
  ck_assert_ptr_nonnull(cache);
  char want[256];
  snprintf(want, sizeof want, "1000000001.M1P1.mta %zu %llu\n", strlen(msg_a),
           (unsigned long long)real);
  ck_assert_str_eq(cache, want);
  free(cache);

  /* Same raw size: the cached number is believed, not recomputed. */
  snprintf(want, sizeof want, "1000000001.M1P1.mta %zu 12345\n", strlen(msg_a));
  write_file(at("root/bob/popkit-sizes"), want, strlen(want));
  /* Only a scan reads the size cache: no listing index may answer, however
   * long this test takes (the index needs directories 2 s old). */
  unlink(at("root/bob/popkit-index"));
  close_box(open_ok("bob"));
  ck_assert_uint_eq(res->sizes[0], 12345);
  ck_assert_uint_eq(res->sizes[1], 77);

  /* A raw size that does not match the file: recomputed and rewritten. */
  snprintf(want, sizeof want, "1000000001.M1P1.mta %zu 12345\n", strlen(msg_a) + 1);
  write_file(at("root/bob/popkit-sizes"), want, strlen(want));
  unlink(at("root/bob/popkit-index"));
  close_box(open_ok("bob"));
  ck_assert_uint_eq(res->sizes[0], real);
  cache = read_file(at("root/bob/popkit-sizes"), NULL);
  snprintf(want, sizeof want, "1000000001.M1P1.mta %zu %llu\n", strlen(msg_a),
           (unsigned long long)real);
  ck_assert_str_eq(cache, want);
  free(cache);
}
END_TEST

START_TEST(bad_size_cache_lines_are_skipped) {
  make_dir(at("root"));
  make_maildir(at("root/bob"));
  write_file(at("root/bob/new/1000000001.M1P1.mta"), msg_a, strlen(msg_a));
  const char garbage[] = "no numbers here\n1000000001.M1P1.mta x 5\n\n\x01\x02 1\ntorn";
  write_file(at("root/bob/popkit-sizes"), garbage, strlen(garbage));
  load_ok(at("root/%%u"));
  close_box(open_ok("bob"));
  ck_assert_uint_eq(res->message_count, 1);
  ck_assert_uint_eq(res->sizes[0], expected_size(msg_a, strlen(msg_a)));
  ck_assert_msg(strstr(h.logs, "popkit-sizes line 1") != NULL, "logs: %s", h.logs);
  char *cache = read_file(at("root/bob/popkit-sizes"), NULL);
  ck_assert(strncmp(cache, "1000000001.M1P1.mta ", 20) == 0);
  ck_assert_ptr_null(strstr(cache, "torn"));
  free(cache);
}
END_TEST

/* ---- READ --------------------------------------------------------------- */

START_TEST(reads_large_message_in_chunks) {
  make_dir(at("root"));
  make_maildir(at("root/bob"));
  size_t len = 5 * 1024 * 1024;
  char *big = malloc(len);
  for (size_t i = 0; i < len; i++)
    big[i] = i % 61 == 60 ? '\n' : (char)('A' + (i * 7) % 26);
  write_file(at("root/bob/cur/1000000001.big:2,S"), big, len);
  load_ok(at("root/%%u"));
  void *mailbox = open_ok("bob");
  ck_assert_uint_eq(res->sizes[0], expected_size(big, len));
  char *data;
  size_t got;
  ck_assert_int_eq(harness_read_all(&h, mailbox, 0, 4096, &data, &got), POPKIT_OK);
  ck_assert_uint_eq(got, len);
  ck_assert(memcmp(data, big, len) == 0);
  free(data);
  free(big);
  close_box(mailbox);
}
END_TEST

START_TEST(read_follows_renamed_message) {
  make_dir(at("root"));
  make_maildir(at("root/bob"));
  write_file(at("root/bob/new/1000000001.M1P1.mta"), msg_a, strlen(msg_a));
  write_file(at("root/bob/new/1000000002.M2P1.mta"), msg_b, strlen(msg_b));
  load_ok(at("root/%%u"));
  void *mailbox = open_ok("bob");
  /* Another agent moves the first message while the session is open. */
  ck_assert_int_eq(rename(at("root/bob/new/1000000001.M1P1.mta"),
                          at("root/bob/cur/1000000001.M1P1.mta:2,S")),
                   0);
  char *data;
  size_t len;
  ck_assert_int_eq(harness_read_all(&h, mailbox, 0, 4096, &data, &len), POPKIT_OK);
  ck_assert_uint_eq(len, strlen(msg_a));
  ck_assert_mem_eq(data, msg_a, len);
  free(data);
  /* A message that is really gone is an error with a reason in the log. */
  ck_assert_int_eq(unlink(at("root/bob/new/1000000002.M2P1.mta")), 0);
  struct popkit_store_request req = {0};
  char buffer[64];
  req.mailbox = mailbox;
  req.index = 1;
  req.buffer = buffer;
  req.buffer_size = sizeof buffer;
  ck_assert_int_eq(harness_store(&h, POPKIT_REQ_STORE_READ, &req, res), POPKIT_PERMFAIL);
  ck_assert_msg(strstr(res->log_text, "1000000002.M2P1.mta") != NULL, "log: %s",
                res->log_text);
  close_box(mailbox);
}
END_TEST

/* ---- Lock --------------------------------------------------------------- */

START_TEST(second_session_gets_in_use) {
  make_dir(at("root"));
  load_ok(at("root/%%u"));
  void *first = open_ok("bob");
  void *second;
  ck_assert_int_eq(open_box("bob", &second), POPKIT_IN_USE);
  ck_assert_str_ne(res->log_text, "");
  /* Another user is not affected. */
  close_box(open_ok("alice"));
  close_box(first);
  close_box(open_ok("bob"));
}
END_TEST

START_TEST(lock_held_by_another_process) {
  make_dir(at("root"));
  load_ok(at("root/%%u"));
  close_box(open_ok("bob")); /* creates the maildir and its lock file */
  int ready[2];
  ck_assert_int_eq(pipe(ready), 0);
  pid_t child = fork();
  ck_assert_int_ge(child, 0);
  if (child == 0) {
    int fd = open(at("root/bob/popkit.lock"), O_RDWR);
    if (fd < 0 || flock(fd, LOCK_EX) != 0)
      _exit(1);
    if (write(ready[1], "x", 1) != 1)
      _exit(1);
    pause();
    _exit(0);
  }
  char byte;
  ck_assert_int_eq(read(ready[0], &byte, 1), 1);
  void *mailbox;
  ck_assert_int_eq(open_box("bob", &mailbox), POPKIT_IN_USE);
  kill(child, SIGKILL);
  waitpid(child, NULL, 0);
  close(ready[0]);
  close(ready[1]);
  close_box(open_ok("bob"));
}
END_TEST

/* ---- Expunge ------------------------------------------------------------ */

static void write_three(void) {
  make_dir(at("root"));
  make_maildir(at("root/bob"));
  write_file(at("root/bob/new/1000000001.M1P1.mta"), "one\n", 4);
  write_file(at("root/bob/cur/1000000002.M2P1.mta:2,S"), "two\n", 4);
  write_file(at("root/bob/new/1000000003.M3P1.mta"), "three\n", 6);
}

START_TEST(expunge_two_of_three) {
  write_three();
  load_ok(at("root/%%u"));
  void *mailbox = open_ok("bob");
  uint64_t doomed[] = {2, 0};
  ck_assert_int_eq(expunge(mailbox, doomed, 2), POPKIT_OK);
  close_box(mailbox);
  ck_assert_int_eq(count_entries(at("root/bob/new")), 0);
  ck_assert_int_eq(count_entries(at("root/bob/cur")), 1);
  ck_assert(!exists(at("root/bob/popkit-expunge")));
  ck_assert(!exists(at("root/bob/popkit-expunge.tmp")));
  close_box(open_ok("bob"));
  ck_assert_uint_eq(res->message_count, 1);
  ck_assert_str_eq(res->uids[0], "1000000002.M2P1.mta");
}
END_TEST

START_TEST(expunge_out_of_range_deletes_nothing) {
  write_three();
  load_ok(at("root/%%u"));
  void *mailbox = open_ok("bob");
  uint64_t doomed[] = {0, 3};
  ck_assert_int_ne(expunge(mailbox, doomed, 2), POPKIT_OK);
  close_box(mailbox);
  close_box(open_ok("bob"));
  ck_assert_uint_eq(res->message_count, 3);
}
END_TEST

START_TEST(journal_write_failure_deletes_nothing) {
  write_three();
  load_ok(at("root/%%u"));
  void *mailbox = open_ok("bob");
  /* A directory where the journal must be written makes writing it fail
   * (for root too, unlike a read-only mode). */
  make_dir(at("root/bob/popkit-expunge.tmp"));
  uint64_t doomed[] = {0, 1};
  ck_assert_int_eq(expunge(mailbox, doomed, 2), POPKIT_TEMPFAIL);
  ck_assert_str_ne(res->log_text, "");
  close_box(mailbox);
  ck_assert(!exists(at("root/bob/popkit-expunge")));
  ck_assert_int_eq(rmdir(at("root/bob/popkit-expunge.tmp")), 0);
  close_box(open_ok("bob"));
  ck_assert_uint_eq(res->message_count, 3);
}
END_TEST

START_TEST(journal_left_by_crash_is_finished_on_open) {
  write_three();
  /* A file a damaged journal must not reach. */
  write_file(at("root/bob/outside"), "keep\n", 5);
  /* The second message was flagged by another agent after the journal was
   * written: it is found again by its base name. */
  ck_assert_int_eq(rename(at("root/bob/cur/1000000002.M2P1.mta:2,S"),
                          at("root/bob/cur/1000000002.M2P1.mta:2,RS")),
                   0);
  static const char journal[] = "new/1000000001.M1P1.mta\0"
                                "cur/1000000002.M2P1.mta:2,S\0"
                                "new/../outside\0"
                                "tmp/whatever\0";
  write_file(at("root/bob/popkit-expunge"), journal, sizeof journal - 1);
  load_ok(at("root/%%u"));
  close_box(open_ok("bob"));
  ck_assert_uint_eq(res->message_count, 1);
  ck_assert_str_eq(res->uids[0], "1000000003.M3P1.mta");
  ck_assert(!exists(at("root/bob/popkit-expunge")));
  ck_assert(exists(at("root/bob/outside")));
  ck_assert_int_eq(count_entries(at("root/bob/cur")), 0);
}
END_TEST

START_TEST(uncommitted_journal_deletes_nothing) {
  write_three();
  static const char journal[] = "new/1000000001.M1P1.mta\0new/1000000003.M3P1.mta\0";
  write_file(at("root/bob/popkit-expunge.tmp"), journal, sizeof journal - 1);
  load_ok(at("root/%%u"));
  close_box(open_ok("bob"));
  ck_assert_uint_eq(res->message_count, 3);
  ck_assert(!exists(at("root/bob/popkit-expunge.tmp")));
}
END_TEST

/* ---- Delivery ----------------------------------------------------------- */

START_TEST(delivery_round_trip) {
  make_dir(at("root"));
  load_ok(at("root/%%u"));
  static const char message[] = "From: a@example.com\nSubject: hi\n\nline 1\nline 2\n";
  size_t len = strlen(message);
  ck_assert_int_eq(harness_deliver(&h, "newuser", message, len, 7), POPKIT_OK);
  ck_assert_int_eq(count_entries(at("root/newuser/tmp")), 0);
  ck_assert_int_eq(count_entries(at("root/newuser/new")), 1);
  const char *name = first_entry(at("root/newuser/new"));
  char suffix[64];
  snprintf(suffix, sizeof suffix, ",S=%zu,W=%llu", len,
           (unsigned long long)expected_size(message, len));
  ck_assert_msg(strlen(name) > strlen(suffix) &&
                    strcmp(name + strlen(name) - strlen(suffix), suffix) == 0,
                "name %s", name);
  ck_assert_ptr_nonnull(strstr(name, ".M"));
  ck_assert_ptr_null(strchr(name, ':'));

  void *mailbox = open_ok("newuser");
  ck_assert_uint_eq(res->message_count, 1);
  ck_assert_uint_eq(res->sizes[0], expected_size(message, len));
  char *data;
  size_t got;
  ck_assert_int_eq(harness_read_all(&h, mailbox, 0, 10, &data, &got), POPKIT_OK);
  ck_assert_uint_eq(got, len);
  ck_assert_mem_eq(data, message, len);
  free(data);
  close_box(mailbox);

  /* A second delivery gets another unique name. */
  ck_assert_int_eq(harness_deliver(&h, "newuser", "x", 1, 1), POPKIT_OK);
  ck_assert_int_eq(count_entries(at("root/newuser/new")), 2);
}
END_TEST

START_TEST(delivery_without_commit_leaves_nothing) {
  make_dir(at("root"));
  load_ok(at("root/%%u"));
  struct popkit_store_request req = {0};
  req.identity = "bob";
  ck_assert_int_eq(harness_store(&h, POPKIT_REQ_STORE_APPEND_BEGIN, &req, res),
                   POPKIT_OK);
  void *delivery = req.mailbox;
  ck_assert_int_eq(count_entries(at("root/bob/tmp")), 1);
  struct popkit_store_request w = {0};
  w.mailbox = delivery;
  w.data = "half a message\n";
  w.data_size = 15;
  ck_assert_int_eq(harness_store(&h, POPKIT_REQ_STORE_APPEND_WRITE, &w, res), POPKIT_OK);
  struct popkit_store_request f = {0};
  f.mailbox = delivery;
  f.commit = 0;
  ck_assert_int_eq(harness_store(&h, POPKIT_REQ_STORE_APPEND_FINISH, &f, res), POPKIT_OK);
  ck_assert_int_eq(count_entries(at("root/bob/tmp")), 0);
  ck_assert_int_eq(count_entries(at("root/bob/new")), 0);
}
END_TEST

START_TEST(delivery_to_missing_root_is_tempfail) {
  load_ok(at("absent/%%u"));
  ck_assert_int_eq(harness_deliver(&h, "bob", "x\n", 2, 2), POPKIT_TEMPFAIL);
  ck_assert(!exists(at("absent")));
}
END_TEST

/* ---- Path containment --------------------------------------------------- */

START_TEST(hostile_names_stay_under_root) {
  make_dir(at("root"));
  /* Decoys where a naive expansion of root/%u would lead. */
  make_maildir(at("x"));
  write_file(at("x/new/1.decoy"), "decoy\n", 6); /* "../x" */
  make_maildir(at("root"));
  write_file(at("root/new/1.decoy"), "decoy\n", 6); /* "/" */
  make_maildir(at("b"));
  write_file(at("b/new/1.decoy"), "decoy\n", 6); /* "a/../../b" */
  make_maildir(tmp);
  write_file(at("new/1.decoy"), "decoy\n", 6); /* ".." */
  int outside_before = count_entries(tmp);
  int root_before = count_entries(at("root"));

  static const struct {
    const char *user;
    const char *dir; /* its directory under root/ */
  } users[] = {
      {"../x", "%2E.%2Fx"},
      {"/", "%2F"},
      {"..", "%2E."},
      {".", "%2E"},
      {"a/../../b", "a%2F..%2F..%2Fb"},
      {"o'brien", "o'brien"},
      {"zo\xc3\xab", "zo\xc3\xab"},
      {"%2F", "%252F"},
      {".hidden", "%2Ehidden"},
      {"back\\slash", "back%5Cslash"},
      {"line\nbreak", "line%0Abreak"},
  };
  size_t n = sizeof users / sizeof users[0];
  load_ok(at("root/%%u"));
  for (size_t i = 0; i < n; i++) {
    void *mailbox = open_ok(users[i].user);
    ck_assert_msg(res->message_count == 0, "%s sees %zu messages", users[i].dir,
                  res->message_count);
    close_box(mailbox);
    ck_assert_msg(is_dir(at("root/%s/new", users[i].dir)), "no root/%s", users[i].dir);
  }
  /* Each user got one directory of its own, and nothing appeared outside
   * the root. */
  ck_assert_int_eq(count_entries(at("root")), root_before + (int)n);
  ck_assert_int_eq(count_entries(tmp), outside_before);
  ck_assert_int_eq(count_entries(at("x/new")), 1);
  ck_assert_int_eq(count_entries(at("b/new")), 1);

  /* Delivery goes to the same contained directory. */
  ck_assert_int_eq(harness_deliver(&h, "../x", "hello\n", 6, 6), POPKIT_OK);
  ck_assert_int_eq(count_entries(at("x/new")), 1);
  ck_assert_int_eq(count_entries(at("root/%%2E.%%2Fx/new")), 1);
  close_box(open_ok("../x"));
  ck_assert_uint_eq(res->message_count, 1);

  ck_assert_int_eq(harness_deliver(&h, "o'brien", "hi\n", 3, 3), POPKIT_OK);
  void *mailbox = open_ok("o'brien");
  ck_assert_uint_eq(res->message_count, 1);
  char *data;
  size_t len;
  ck_assert_int_eq(harness_read_all(&h, mailbox, 0, 64, &data, &len), POPKIT_OK);
  ck_assert_str_eq(data, "hi\n");
  free(data);
  close_box(mailbox);
}
END_TEST

START_TEST(arbitrary_bytes_stay_under_root) {
  make_dir(at("root"));
  load_ok(at("root/%%d/%%n"));
  /* The local part holds every byte but '@' and NUL, "/../.." included;
   * the domain starts with "../" and holds every byte with the high bit
   * set. */
  char user[600];
  size_t used = 0;
  for (int c = 1; c < 128; c++) {
    if (c != '@')
      user[used++] = (char)c;
  }
  memcpy(user + used, "/../..@../", 10);
  used += 10;
  for (int c = 128; c < 256; c++)
    user[used++] = (char)c;
  user[used] = '\0';
  int outside_before = count_entries(tmp);
  close_box(open_ok(user));
  ck_assert_int_eq(count_entries(tmp), outside_before);
  ck_assert_int_eq(count_entries(at("root")), 1);
  char domain_dir[512], local_dir[512];
  snprintf(domain_dir, sizeof domain_dir, "%s", first_entry(at("root")));
  ck_assert_int_eq(count_entries(at("root/%s", domain_dir)), 1);
  snprintf(local_dir, sizeof local_dir, "%s", first_entry(at("root/%s", domain_dir)));
  ck_assert(domain_dir[0] != '.' && local_dir[0] != '.');
  ck_assert(is_dir(at("root/%s/%s/new", domain_dir, local_dir)));

  /* A name too long for one directory entry is refused, not truncated. */
  char long_user[400];
  memset(long_user, 'b', sizeof long_user - 1);
  long_user[sizeof long_user - 1] = '\0';
  memcpy(long_user, "a@", 2);
  void *mailbox;
  ck_assert_int_eq(open_box(long_user, &mailbox), POPKIT_PERMFAIL);
  ck_assert_str_ne(res->log_text, "");
  ck_assert_int_eq(count_entries(at("root")), 1);
}
END_TEST

/* ---- Listing index ------------------------------------------------------ */

/* Sets the mtime of a directory to seconds ago, as if nothing had changed
 * in it since. Every call gives another mtime, as any change would. */
static void age(const char *path, int seconds) {
  struct timespec times[2];
  ck_assert_int_eq(clock_gettime(CLOCK_REALTIME, &times[0]), 0);
  times[0].tv_sec -= seconds;
  times[1] = times[0];
  ck_assert_msg(utimensat(AT_FDCWD, path, times, 0) == 0, "utimensat %s: %s", path,
                strerror(errno));
}

/* Ages new/ and cur/ of root/bob by seconds, opens the mailbox once (a scan
 * of settled directories writes the index) and checks the index is there. */
static void settle_and_index(int seconds) {
  age(at("root/bob/new"), seconds);
  age(at("root/bob/cur"), seconds);
  close_box(open_ok("bob"));
  ck_assert(exists(at("root/bob/popkit-index")));
}

/* Adds a file to a directory and gives the directory back its mtime: a
 * second change within one tick of the file system's clock, which leaves
 * the mtime as it was. Only a readdir can see such a file, so whether a
 * listing holds it tells a scan from the index. */
static void sneak_in(const char *dir, const char *name, const char *data) {
  struct stat st;
  ck_assert_int_eq(stat(dir, &st), 0);
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  write_file(path, data, strlen(data));
  struct timespec times[2] = {st.st_atim, st.st_mtim};
  ck_assert_int_eq(utimensat(AT_FDCWD, dir, times, 0), 0);
}

/* The same for removing a file. */
static void sneak_out(const char *path) {
  char dir[4096];
  snprintf(dir, sizeof dir, "%s", path);
  *strrchr(dir, '/') = '\0';
  struct stat st;
  ck_assert_int_eq(stat(dir, &st), 0);
  ck_assert_int_eq(unlink(path), 0);
  struct timespec times[2] = {st.st_atim, st.st_mtim};
  ck_assert_int_eq(utimensat(AT_FDCWD, dir, times, 0), 0);
}

static void assert_same_listing(const struct harness_result *a,
                                const struct harness_result *b) {
  ck_assert_uint_eq(a->message_count, b->message_count);
  for (size_t i = 0; i < a->message_count; i++) {
    ck_assert_str_eq(a->uids[i], b->uids[i]);
    ck_assert_uint_eq(a->sizes[i], b->sizes[i]);
  }
}

START_TEST(index_serves_unchanged_mailbox) {
  write_mta_maildir();
  age(at("root/bob/new"), 10);
  age(at("root/bob/cur"), 10);
  load_ok(at("root/%%u"));
  struct harness_result *scanned = malloc(sizeof *scanned);
  snapshot("bob", scanned);
  ck_assert_uint_eq(scanned->message_count, 5);
  ck_assert(exists(at("root/bob/popkit-index")));

  sneak_in(at("root/bob/cur"), "1000000009.M9P10.mta:2,S", "sneaked\n");
  void *mailbox = open_ok("bob");
  /* The same listing, without the file only a readdir would have seen. */
  assert_same_listing(res, scanned);
  ck_assert(!listed("1000000009.M9P10.mta"));
  char *data;
  size_t len;
  ck_assert_int_eq(harness_read_all(&h, mailbox, 2, 5, &data, &len), POPKIT_OK);
  ck_assert_uint_eq(len, strlen(msg_a));
  ck_assert_mem_eq(data, msg_a, len);
  free(data);
  close_box(mailbox);

  /* Once cur/ has another mtime, the mailbox is scanned again. */
  age(at("root/bob/cur"), 5);
  close_box(open_ok("bob"));
  ck_assert_uint_eq(res->message_count, 6);
  ck_assert(listed("1000000009.M9P10.mta"));
  /* The same for new/, and for an mtime that moved by a nanosecond. */
  sneak_in(at("root/bob/new"), "1000000010.M10P10.mta", "sneaked\n");
  close_box(open_ok("bob"));
  ck_assert_uint_eq(res->message_count, 6);
  age(at("root/bob/new"), 6);
  close_box(open_ok("bob"));
  ck_assert_uint_eq(res->message_count, 7);
  sneak_in(at("root/bob/new"), "1000000011.M11P10.mta", "sneaked\n");
  struct stat st;
  ck_assert_int_eq(stat(at("root/bob/new"), &st), 0);
  struct timespec times[2] = {st.st_atim, st.st_mtim};
  times[1].tv_nsec = times[1].tv_nsec == 0 ? 1 : times[1].tv_nsec - 1;
  ck_assert_int_eq(utimensat(AT_FDCWD, at("root/bob/new"), times, 0), 0);
  close_box(open_ok("bob"));
  ck_assert_uint_eq(res->message_count, 8);
  free(scanned);
}
END_TEST

START_TEST(index_is_dropped_after_changes) {
  write_three();
  load_ok(at("root/%%u"));

  /* A delivery to new/; the file sneaked into cur/ shows that the open
   * scanned both directories. */
  settle_and_index(20);
  sneak_in(at("root/bob/cur"), "1000000010.M10P1.mta:2,S", "decoy\n");
  close_box(open_ok("bob"));
  ck_assert_uint_eq(res->message_count, 3);
  ck_assert_int_eq(harness_deliver(&h, "bob", "delivered\n", 10, 10), POPKIT_OK);
  close_box(open_ok("bob"));
  ck_assert_uint_eq(res->message_count, 5);
  ck_assert(listed("1000000010.M10P1.mta"));

  /* A mail reader changes the flags of a message in cur/. */
  settle_and_index(30);
  sneak_in(at("root/bob/new"), "1000000011.M11P1.mta", "decoy\n");
  close_box(open_ok("bob"));
  ck_assert_uint_eq(res->message_count, 5);
  ck_assert_int_eq(rename(at("root/bob/cur/1000000002.M2P1.mta:2,S"),
                          at("root/bob/cur/1000000002.M2P1.mta:2,FS")),
                   0);
  close_box(open_ok("bob"));
  ck_assert_uint_eq(res->message_count, 6);
  ck_assert(listed("1000000011.M11P1.mta"));
  ck_assert(listed("1000000002.M2P1.mta"));

  /* Another agent deletes a message from cur/. */
  settle_and_index(40);
  sneak_in(at("root/bob/new"), "1000000012.M12P1.mta", "decoy\n");
  close_box(open_ok("bob"));
  ck_assert_uint_eq(res->message_count, 6);
  ck_assert_int_eq(unlink(at("root/bob/cur/1000000002.M2P1.mta:2,FS")), 0);
  close_box(open_ok("bob"));
  ck_assert_uint_eq(res->message_count, 6);
  ck_assert(listed("1000000012.M12P1.mta"));
  ck_assert(!listed("1000000002.M2P1.mta"));
}
END_TEST

START_TEST(recent_mtime_is_not_trusted) {
  write_three();
  /* new/ and cur/ changed just now: the index cannot tell a second change
   * within the same tick from none. */
  age(at("root/bob/new"), 0);
  age(at("root/bob/cur"), 0);
  load_ok(at("root/%%u"));
  close_box(open_ok("bob"));
  ck_assert_uint_eq(res->message_count, 3);
  ck_assert(!exists(at("root/bob/popkit-index")));
  sneak_in(at("root/bob/cur"), "1000000004.M4P1.mta:2,S", "same tick\n");
  close_box(open_ok("bob"));
  ck_assert_uint_eq(res->message_count, 4);
  ck_assert(listed("1000000004.M4P1.mta"));

  /* An index that a settled mailbox left behind goes too, once a change
   * makes it stale. */
  settle_and_index(10);
  ck_assert_int_eq(harness_deliver(&h, "bob", "new\n", 4, 4), POPKIT_OK);
  close_box(open_ok("bob"));
  ck_assert_uint_eq(res->message_count, 5);
  ck_assert(!exists(at("root/bob/popkit-index")));
}
END_TEST

/* Replaces the first occurrence of from in the index text by to, which may
 * have another length. */
static char *edit(const char *text, size_t len, const char *from, size_t from_len,
                  const char *to, size_t to_len, size_t *len_r) {
  const char *at_from = memmem(text, len, from, from_len);
  ck_assert_msg(at_from != NULL, "the index holds no \"%s\"", from);
  size_t before = (size_t)(at_from - text);
  char *out = malloc(len - from_len + to_len + 1);
  memcpy(out, text, before);
  memcpy(out + before, to, to_len);
  memcpy(out + before + to_len, at_from + from_len, len - before - from_len);
  *len_r = len - from_len + to_len;
  return out;
}

START_TEST(damaged_index_is_ignored_and_rewritten) {
  make_dir(at("root"));
  make_maildir(at("root/bob"));
  write_file(at("root/bob/new/1000000001.M1P1.mta"), "one\n", 4);
  write_file(at("root/bob/cur/1000000002.M2P1.mta,W=7:2,S"), "two\n", 4);
  write_file(at("root/bob/new/1000000002.M2P1.mta,W=7"), "two\n", 4);
  write_file(at("root/bob/new/1000000003.M3P1.mta"), "three\n", 6);
  load_ok(at("root/%%u"));
  settle_and_index(10);
  struct harness_result *scanned = malloc(sizeof *scanned);
  memcpy(scanned, res, sizeof *scanned);
  size_t good_len;
  char *good = read_file(at("root/bob/popkit-index"), &good_len);
  ck_assert_ptr_nonnull(good);
  ck_assert_msg(strstr(good, "count 3 1\n") != NULL, "index: %s", good);

  /* Each damage alone, in an index that is otherwise good and whose
   * mtimes match: every one must make the open scan and rewrite it. */
  static const struct {
    const char *from, *to;
    size_t to_len; /* 0: strlen(to) */
  } damage[] = {
      {"popkit-index 1\n", "popkit-index 2\n", 0},
      {"count 3 1\n", "count 4 1\n", 0},
      {"count 3 1\n", "count 2 1\n", 0},
      {"count 3 1\n", "count 3 0\n", 0},
      {"count 3 1\n", "count 3 2\n", 0},
      {"count 3 1\n", "count 1000000000000 1\n", 0},
      {"end\n", "", 0},
      {"end\n", "end\nmore\n", 0},
      /* A size that is no number. */
      {"new 4 5 0 19 1000000001", "new 4 x 0 19 1000000001", 0},
      /* A name that would leave new/, one holding NUL, a hidden one. */
      {"19 1000000003.M3P1.mta\n", "19 1000000003/../passw\n", 0},
      {"19 1000000003.M3P1.mta\n", "19 1000000003\0M3P1.mta\n", 23},
      {"19 1000000001.M1P1.mta\n", "19 .000000001.M1P1.mta\n", 0},
      /* A name length that runs past the record, or stops short of it. */
      {"19 1000000003.M3P1.mta\n", "20 1000000003.M3P1.mta\n", 0},
      {"19 1000000003.M3P1.mta\n", "18 1000000003.M3P1.mta\n", 0},
      /* ",W=" in the name and the size disagree. */
      {"cur 4 7 1 27 1000000002", "cur 4 8 1 27 1000000002", 0},
      {"cur 4 7 1 27 1000000002", "cur 4 7 0 27 1000000002", 0},
      /* Out of order, by a name's leading timestamp. */
      {"19 1000000003.M3P1.mta\n", "19 0000000003.M3P1.mta\n", 0},
      /* A duplicate of no listed message, of another one, or the listed
       * file itself. */
      {"new 1 23 1000000002", "new 5 23 1000000002", 0},
      {"new 1 23 1000000002", "new 2 23 1000000002", 0},
      {"new 1 23 1000000002.M2P1.mta,W=7\n", "cur 1 27 1000000002.M2P1.mta,W=7:2,S\n", 0},
  };
  for (size_t i = 0; i < sizeof damage / sizeof damage[0]; i++) {
    size_t to_len = damage[i].to_len ? damage[i].to_len : strlen(damage[i].to);
    size_t bad_len;
    char *bad = edit(good, good_len, damage[i].from, strlen(damage[i].from), damage[i].to,
                     to_len, &bad_len);
    write_file(at("root/bob/popkit-index"), bad, bad_len);
    free(bad);
    h.logs[0] = '\0';
    void *mailbox = open_ok("bob");
    assert_same_listing(res, scanned);
    ck_assert_msg(strstr(h.logs, "popkit-index is damaged") != NULL, "damage %zu: %s", i,
                  h.logs);
    size_t now_len;
    char *now = read_file(at("root/bob/popkit-index"), &now_len);
    ck_assert_msg(now_len == good_len && memcmp(now, good, good_len) == 0,
                  "damage %zu left: %s", i, now);
    free(now);
    close_box(mailbox);
  }
  /* A good index is read without a word in the log. */
  h.logs[0] = '\0';
  close_box(open_ok("bob"));
  ck_assert_str_eq(h.logs, "");
  free(good);
  free(scanned);
}
END_TEST

START_TEST(index_naming_a_vanished_file) {
  write_three();
  load_ok(at("root/%%u"));
  settle_and_index(10);
  sneak_out(at("root/bob/new/1000000001.M1P1.mta"));
  void *mailbox = open_ok("bob");
  ck_assert_uint_eq(res->message_count, 3);
  /* As with a file removed after a scan: READ fails cleanly, others work. */
  struct popkit_store_request req = {0};
  char buffer[64];
  req.mailbox = mailbox;
  req.index = 0;
  req.buffer = buffer;
  req.buffer_size = sizeof buffer;
  ck_assert_int_eq(harness_store(&h, POPKIT_REQ_STORE_READ, &req, res), POPKIT_PERMFAIL);
  ck_assert_msg(strstr(res->log_text, "gone") != NULL, "log: %s", res->log_text);
  char *data;
  size_t len;
  ck_assert_int_eq(harness_read_all(&h, mailbox, 1, 64, &data, &len), POPKIT_OK);
  ck_assert_str_eq(data, "two\n");
  free(data);
  /* Deleting it with another message deletes the other one. */
  uint64_t doomed[] = {0, 2};
  ck_assert_int_eq(expunge(mailbox, doomed, 2), POPKIT_OK);
  close_box(mailbox);
  ck_assert_int_eq(count_entries(at("root/bob/new")), 0);
  ck_assert(exists(at("root/bob/cur/1000000002.M2P1.mta:2,S")));
}
END_TEST

START_TEST(expunge_after_index_open) {
  make_dir(at("root"));
  make_maildir(at("root/bob"));
  write_file(at("root/bob/new/1000000001.M1P1.mta"), "one\n", 4);
  write_file(at("root/bob/cur/1000000001.M1P1.mta:2,S"), "one\n", 4);
  write_file(at("root/bob/new/1000000002.M2P1.mta"), "two\n", 4);
  write_file(at("root/bob/cur/1000000003.M3P1.mta:2,S"), "three\n", 6);
  load_ok(at("root/%%u"));
  settle_and_index(10);
  sneak_in(at("root/bob/cur"), "1000000004.M4P1.mta:2,S", "four\n");
  void *mailbox = open_ok("bob");
  ck_assert_uint_eq(res->message_count, 3); /* from the index */
  ck_assert_str_eq(res->uids[0], "1000000001.M1P1.mta");
  ck_assert_str_eq(res->uids[2], "1000000003.M3P1.mta");
  uint64_t doomed[] = {0, 2};
  ck_assert_int_eq(expunge(mailbox, doomed, 2), POPKIT_OK);
  close_box(mailbox);
  /* Both copies of the first message went, and nothing unlisted did. */
  ck_assert(!exists(at("root/bob/new/1000000001.M1P1.mta")));
  ck_assert(!exists(at("root/bob/cur/1000000001.M1P1.mta:2,S")));
  ck_assert(!exists(at("root/bob/cur/1000000003.M3P1.mta:2,S")));
  ck_assert(exists(at("root/bob/new/1000000002.M2P1.mta")));
  ck_assert(exists(at("root/bob/cur/1000000004.M4P1.mta:2,S")));
  close_box(open_ok("bob"));
  ck_assert_uint_eq(res->message_count, 2);
  ck_assert_str_eq(res->uids[0], "1000000002.M2P1.mta");
  ck_assert_str_eq(res->uids[1], "1000000004.M4P1.mta");
}
END_TEST

START_TEST(index_keeps_sizes_and_odd_names) {
  make_dir(at("root"));
  make_maildir(at("root/bob"));
  write_file(at("root/bob/new/1000000001.M1P1.mta"), msg_a, strlen(msg_a));
  write_file(at("root/bob/new/1000000002.M2P1.mta,W=77"), msg_c, strlen(msg_c));
  write_file(at("root/bob/new/1000000003.M3P1.mta"), msg_b, strlen(msg_b));
  write_file(at("root/bob/cur/1000000004 line\nbreak:2,S"), msg_e, strlen(msg_e));
  char long_name[128];
  memset(long_name, 'x', 71);
  snprintf(long_name + 71, sizeof long_name - 71, ":2,S");
  write_file(at("root/bob/cur/%s", long_name), "long\n", 5);
  char cache[128];
  snprintf(cache, sizeof cache, "1000000001.M1P1.mta %zu 12345\n", strlen(msg_a));
  write_file(at("root/bob/popkit-sizes"), cache, strlen(cache));
  load_ok(at("root/%%u"));
  settle_and_index(10);
  struct harness_result *scanned = malloc(sizeof *scanned);
  memcpy(scanned, res, sizeof *scanned);
  ck_assert_uint_eq(scanned->message_count, 5);
  ck_assert_uint_eq(scanned->sizes[0], 6);     /* "long\n" */
  ck_assert_uint_eq(scanned->sizes[1], 12345); /* from the size cache */
  ck_assert_uint_eq(scanned->sizes[2], 77);    /* from ",W=" */
  ck_assert_uint_eq(scanned->sizes[3], expected_size(msg_b, strlen(msg_b)));
  ck_assert_uint_eq(scanned->sizes[4], strlen(msg_e));

  /* The size cache now says otherwise, but only a scan would read it. */
  snprintf(cache, sizeof cache, "1000000001.M1P1.mta %zu 54321\n", strlen(msg_a));
  write_file(at("root/bob/popkit-sizes"), cache, strlen(cache));
  sneak_in(at("root/bob/new"), "1000000009.M9P1.mta", "decoy\n");
  void *mailbox = open_ok("bob");
  assert_same_listing(res, scanned);
  char *data;
  size_t len;
  ck_assert_int_eq(harness_read_all(&h, mailbox, 4, 7, &data, &len), POPKIT_OK);
  ck_assert_uint_eq(len, strlen(msg_e));
  ck_assert_mem_eq(data, msg_e, len);
  free(data);
  ck_assert_int_eq(harness_read_all(&h, mailbox, 0, 7, &data, &len), POPKIT_OK);
  ck_assert_str_eq(data, "long\n");
  free(data);
  close_box(mailbox);
  free(scanned);
}
END_TEST

START_TEST(index_write_failure_is_only_logged) {
  write_three();
  load_ok(at("root/%%u"));
  /* A directory where the index's temporary file goes makes writing it
   * fail, for root too. */
  make_dir(at("root/bob/popkit-index.tmp"));
  age(at("root/bob/new"), 10);
  age(at("root/bob/cur"), 10);
  h.logs[0] = '\0';
  close_box(open_ok("bob"));
  ck_assert_uint_eq(res->message_count, 3);
  ck_assert(!exists(at("root/bob/popkit-index")));
  ck_assert_msg(strstr(h.logs, "cannot write the listing index") != NULL, "logs: %s",
                h.logs);
  ck_assert_int_eq(rmdir(at("root/bob/popkit-index.tmp")), 0);
  close_box(open_ok("bob"));
  ck_assert(exists(at("root/bob/popkit-index")));
}
END_TEST

/* ---- Suite -------------------------------------------------------------- */

static Suite *maildir_suite(void) {
  Suite *s = suite_create("maildir");
  struct {
    const char *name;
    const TTest *test;
  } groups[] = {
      {"config", unknown_escape_is_named},
      {"config", template_without_user_is_refused},
      {"config", template_escapes_expand},
      {"config", missing_root_and_empty_identity},
      {"list", lists_mta_maildir},
      {"list", uids_stable_across_rename_and_flags},
      {"list", unusable_names_get_hashed_uids},
      {"list", duplicate_base_is_listed_once},
      {"sizes", size_cache_is_used_while_raw_size_matches},
      {"sizes", bad_size_cache_lines_are_skipped},
      {"read", reads_large_message_in_chunks},
      {"read", read_follows_renamed_message},
      {"lock", second_session_gets_in_use},
      {"lock", lock_held_by_another_process},
      {"expunge", expunge_two_of_three},
      {"expunge", expunge_out_of_range_deletes_nothing},
      {"expunge", journal_write_failure_deletes_nothing},
      {"expunge", journal_left_by_crash_is_finished_on_open},
      {"expunge", uncommitted_journal_deletes_nothing},
      {"deliver", delivery_round_trip},
      {"deliver", delivery_without_commit_leaves_nothing},
      {"deliver", delivery_to_missing_root_is_tempfail},
      {"containment", hostile_names_stay_under_root},
      {"containment", arbitrary_bytes_stay_under_root},
      {"index", index_serves_unchanged_mailbox},
      {"index", index_is_dropped_after_changes},
      {"index", recent_mtime_is_not_trusted},
      {"index", damaged_index_is_ignored_and_rewritten},
      {"index", index_naming_a_vanished_file},
      {"index", expunge_after_index_open},
      {"index", index_keeps_sizes_and_odd_names},
      {"index", index_write_failure_is_only_logged},
  };
  TCase *tc = NULL;
  const char *current_group = "";
  for (size_t i = 0; i < sizeof groups / sizeof groups[0]; i++) {
    if (strcmp(groups[i].name, current_group) != 0) {
      current_group = groups[i].name;
      tc = tcase_create(current_group);
      tcase_add_checked_fixture(tc, setup, teardown);
      tcase_set_timeout(tc, 120);
      suite_add_tcase(s, tc);
    }
    tcase_add_test(tc, groups[i].test);
  }
  return s;
}

int main(void) {
  /* Every test makes its own directory under this one; removing it here
   * also cleans up after a test whose failure skipped its teardown. */
  snprintf(base_dir, sizeof base_dir, "/tmp/popkit-test-maildir-XXXXXX");
  if (mkdtemp(base_dir) == NULL) {
    perror("mkdtemp");
    return EXIT_FAILURE;
  }
  int failed = check_run(maildir_suite());
  nftw(base_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
