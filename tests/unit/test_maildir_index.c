/*
 * Tests of the maildir module's listing index (popkit-index,
 * modules/maildir/maildir_index.c): when an open may trust it, what makes
 * it stale, damaged indexes, and that what it lists can be read and
 * deleted as a scan's listing can.
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

#include "maildir_fixture.h"

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

static Suite *maildir_index_suite(void) {
  Suite *s = suite_create("maildir_index");
  const struct maildir_test_group groups[] = {
      {"index", index_serves_unchanged_mailbox},
      {"index", index_is_dropped_after_changes},
      {"index", recent_mtime_is_not_trusted},
      {"index", damaged_index_is_ignored_and_rewritten},
      {"index", index_naming_a_vanished_file},
      {"index", expunge_after_index_open},
      {"index", index_keeps_sizes_and_odd_names},
      {"index", index_write_failure_is_only_logged},
  };
  maildir_fixture_add(s, groups, sizeof groups / sizeof groups[0]);
  return s;
}

int main(void) {
  return maildir_fixture_main(maildir_index_suite());
}
