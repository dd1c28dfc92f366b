/*
 * Tests of the maildir store module, driven through the synchronous module
 * harness against real directories under /tmp: a maildir as an MTA writes
 * it, unique ids and sizes, the size cache, READ, the lock, expunge and its
 * crash recovery, delivery and path containment for hostile user names.
 * The listing index has test_maildir_index.c.
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
#include "nowait_reads.h"

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

START_TEST(read_nowait_serves_an_open_message_from_the_page_cache) {
  make_dir(at("root"));
  make_maildir(at("root/bob"));
  write_file(at("root/bob/new/1000000001.M1P1.mta"), msg_a, strlen(msg_a));
  write_file(at("root/bob/new/1000000002.M2P1.mta"), msg_b, strlen(msg_b));
  bool supported = nowait_reads_supported(at("root/bob/new/1000000001.M1P1.mta"));
  load_ok(at("root/%%u"));
  void *mailbox = open_ok("bob");
  char data[4096] = "";
  char chunk[16];
  struct popkit_store_request req = {
      .mailbox = mailbox, .index = 0, .buffer = chunk, .buffer_size = sizeof chunk};
  /* Opening a message may wait for the disk: the first READ is not served
   * on the loop thread. */
  ck_assert_int_eq(harness_read_nowait(&h, &req, res), 0);
  ck_assert_int_eq(harness_store(&h, POPKIT_REQ_STORE_READ, &req, res), POPKIT_OK);
  size_t got = req.length;
  memcpy(data, chunk, got);
  /* The rest was just written, so the page cache holds it: every READ to
   * the end (length 0) is served without the pool. */
  for (;;) {
    req.offset = got;
    if (!supported) {
      ck_assert_int_eq(harness_read_nowait(&h, &req, res), 0);
      ck_assert_int_eq(harness_store(&h, POPKIT_REQ_STORE_READ, &req, res), POPKIT_OK);
    } else {
      ck_assert_int_eq(harness_read_nowait(&h, &req, res), 1);
      ck_assert_int_eq(res->result, POPKIT_OK);
    }
    if (req.length == 0)
      break;
    ck_assert_uint_le(got + req.length, strlen(msg_a));
    memcpy(data + got, chunk, req.length);
    got += req.length;
  }
  ck_assert_uint_eq(got, strlen(msg_a));
  ck_assert_mem_eq(data, msg_a, got);
  /* Another message is not open yet, and an index outside the listing is
   * left to read, which says why in the log. */
  req.index = 1;
  req.offset = 0;
  ck_assert_int_eq(harness_read_nowait(&h, &req, res), 0);
  req.index = 99;
  ck_assert_int_eq(harness_read_nowait(&h, &req, res), 0);
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

/* ---- Suite -------------------------------------------------------------- */

static Suite *maildir_suite(void) {
  Suite *s = suite_create("maildir");
  const struct maildir_test_group groups[] = {
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
      {"read", read_nowait_serves_an_open_message_from_the_page_cache},
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
  };
  maildir_fixture_add(s, groups, sizeof groups / sizeof groups[0]);
  return s;
}

int main(void) {
  return maildir_fixture_main(maildir_suite());
}
