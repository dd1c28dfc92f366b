/*
 * What the maildir tests share (test_maildir.c, test_maildir_index.c): each
 * test gets a directory of its own (at() names paths in it) and the maildir
 * module through the synchronous harness (h; res holds the result of the
 * last call), and helpers build maildirs and call the module.
 */
#ifndef POPKIT_TEST_MAILDIR_FIXTURE_H
#define POPKIT_TEST_MAILDIR_FIXTURE_H

#include <check.h>
#include <stddef.h>
#include <stdint.h>

#include "module_harness.h"

extern char tmp[256];              /* this test's own directory */
extern struct harness h;           /* the loaded module */
extern struct harness_result *res; /* result of the last call */

/* A path under the test's directory, built like printf. */
const char *at(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Files and directories; each asserts it worked. */
void make_dir(const char *path);
void make_maildir(const char *path); /* with new/, cur/ and tmp/ */
void write_file(const char *path, const char *data, size_t len);
char *read_file(const char *path, size_t *len_r); /* malloc'd, or NULL */
int exists(const char *path);
int is_dir(const char *path);
/* The entries of a directory other than "." and "..": their count, and the
 * first. */
int count_entries(const char *path);
const char *first_entry(const char *path);

/* The CRLF-form size by the rules of popkit/crlf.h, computed byte by byte
 * here, so the module is checked against an independent reading. */
uint64_t expected_size(const char *data, size_t len);

/* The module: loaded with a path template, a mailbox opened, closed,
 * expunged; snapshot opens, copies the listing and closes; listed says
 * whether the last listing holds a uid. */
int load(const char *template, char *error, size_t error_size);
void load_ok(const char *template);
enum popkit_result open_box(const char *identity, void **mailbox_r);
void *open_ok(const char *identity);
void close_box(void *mailbox);
enum popkit_result expunge(void *mailbox, const uint64_t *indexes, size_t n);
void snapshot(const char *identity, struct harness_result *copy);
int listed(const char *uid);

/* Messages as MTAs write them, and two maildirs for bob under root/: one
 * as an MTA leaves it (with things that are no messages), and three plain
 * messages. */
extern const char msg_a[], msg_b[], msg_c[], msg_d[], msg_e[];
void write_mta_maildir(void);
void write_three(void);

/* The tests of a suite, in groups: one TCase per group, each test in its
 * own directory. */
struct maildir_test_group {
  const char *name;
  const TTest *test;
};
void maildir_fixture_add(Suite *s, const struct maildir_test_group *groups, size_t count);

/* Runs the suite under a directory of its own, removed afterwards. */
int maildir_fixture_main(Suite *s);

#endif
