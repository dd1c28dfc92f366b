/*
 * Tests of core/chain.c: the auth list and the store, driven on a libuv loop
 * the way core/deliver.c drives them, over the real passwd-file and maildir
 * modules and the test decorator (tests/modules/decorator.c), which takes
 * every path of host->pass_to_next: answering alone, passing on, completing
 * later from a timer, nesting, wrapping mailbox handles, cancel.
 *
 * Each test writes its config file into a fresh directory whose modules/
 * links the build's modules and the test modules together, since a config
 * names one modules_dir.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "chain.h"
#include "check_run.h"
#include "config.h"
#include "loader.h"
#include "nowait_reads.h"
#include "popkit/crlf.h"

/* Module objects of the configs below. */
#define PASSWD_A "{\"module\": \"passwd-file\", \"path\": \"users-a\"}"
#define PASSWD_B "{\"module\": \"passwd-file\", \"path\": \"users-b\"}"
#define MAILDIR "{\"module\": \"maildir\", \"path\": \"mail/%u\"}"
/* good_auth (tests/modules/good_auth.c) knows "alice" and has no
 * get_credential; users-alice gives "alice" a secret of its own. */
#define GOOD_AUTH "{\"module\": \"good_auth\"}"
#define PASSWD_ALICE "{\"module\": \"passwd-file\", \"path\": \"users-alice\"}"
#define DECORATE(next) "{\"module\": \"decorator\", \"next\": " next "}"
#define DECORATE_LATE(late_ms, next)                                                     \
  "{\"module\": \"decorator\", \"late_ms\": " POPKIT_STRINGIFY(                          \
      late_ms) ", \"next\": " next "}"

/* What the decorator adds and how long "late" waits by default
 * (tests/modules/decorator.c). */
#define SUFFIX "+d"
#define LATE_DEFAULT_MS 20
#define LATE_MS 30

#define MAX_LISTING 8

struct fixture {
  char dir[PATH_MAX];
  char config_path[PATH_MAX + 16];
  uv_loop_t loop;
  struct config *config;
  struct chain chain;
  bool chain_open;
};

static struct fixture fx;

/* What a request's callback saw. */
struct outcome {
  int calls;
  uint32_t kind; /* of the request, as the callback saw it */
  enum popkit_result result;
  char identity[256];
  char credential[256];
  char log_text[512];
  uint64_t done_ns;
  void *mailbox;
  size_t length;
  size_t count;
  char uids[MAX_LISTING][71];
  uint64_t sizes[MAX_LISTING];
};

struct message {
  const char *name; /* file name in new/, and so the unique id */
  const char *body;
};

static const struct message ana_messages[] = {
    {"1000.a.host", "Subject: one\n\nHello\n.\n"},
    {"1001.b.host", "Subject: two\r\n\r\nno final newline"},
};

/* ---- Fixture ------------------------------------------------------------ */

static const char *at(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static const char *at(const char *fmt, ...) {
  static char paths[4][PATH_MAX + 256];
  static int next;
  char *path = paths[next++ % 4];
  int used = snprintf(path, PATH_MAX + 256, "%s/", fx.dir);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(path + used, (size_t)(PATH_MAX + 256 - used), fmt, ap);
  va_end(ap);
  return path;
}

static void write_file(const char *path, const char *data) {
  FILE *f = fopen(path, "w");
  ck_assert_msg(f != NULL, "%s: %s", path, strerror(errno));
  fputs(data, f);
  ck_assert_int_eq(fclose(f), 0);
}

static void make_dir(const char *path) {
  ck_assert_msg(mkdir(path, 0700) == 0, "mkdir %s: %s", path, strerror(errno));
}

static void link_module(const char *env, const char *name) {
  const char *dir = getenv(env);
  ck_assert_msg(dir != NULL && dir[0] != '\0', "%s is not set", env);
  char target[PATH_MAX];
  snprintf(target, sizeof target, "%s/%s.so", dir, name);
  ck_assert_msg(symlink(target, at("modules/%s.so", name)) == 0, "symlink %s: %s", target,
                strerror(errno));
}

static void setup(void) {
  memset(&fx, 0, sizeof fx);
  snprintf(fx.dir, sizeof fx.dir, "%s/test_chain.XXXXXX",
           getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp");
  ck_assert_ptr_nonnull(mkdtemp(fx.dir));
  make_dir(at("modules"));
  link_module("POPKIT_BUILD_MODULES_DIR", "passwd-file");
  link_module("POPKIT_BUILD_MODULES_DIR", "maildir");
  link_module("POPKIT_TEST_MODULES_DIR", "decorator");
  link_module("POPKIT_TEST_MODULES_DIR", "good_auth");
  link_module("POPKIT_TEST_MODULES_DIR", "careless_store");
  write_file(at("users-a"), "ana:{PLAIN}secret\nlate:{PLAIN}latepw\n");
  write_file(at("users-b"), "bob:{PLAIN}bobpw\n");
  write_file(at("users-alice"), "alice:{PLAIN}passwd-file-secret\nbob:{PLAIN}bobpw\n");
  make_dir(at("mail"));
  make_dir(at("mail/ana"));
  const char *subdirs[] = {"new", "cur", "tmp"};
  for (size_t i = 0; i < 3; i++)
    make_dir(at("mail/ana/%s", subdirs[i]));
  for (size_t i = 0; i < sizeof ana_messages / sizeof ana_messages[0]; i++)
    write_file(at("mail/ana/new/%s", ana_messages[i].name), ana_messages[i].body);
  ck_assert_int_eq(uv_loop_init(&fx.loop), 0);
}

static int remove_entry(const char *path, const struct stat *st, int flag,
                        struct FTW *ftw) {
  return remove(path);
}

static void teardown(void) {
  if (fx.chain_open)
    chain_close(&fx.chain);
  /* Every test ends with nothing in flight: the loop runs dry and closes. */
  uv_run(&fx.loop, UV_RUN_DEFAULT);
  ck_assert_int_eq(uv_loop_close(&fx.loop), 0);
  config_free(fx.config);
  loader_unload_all();
  nftw(fx.dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Writes the config file with this auth list and store, loads it and
 * builds the chain. Returns 0, or the code with the message in error. */
static int try_chain(const char *auth, const char *store, char *error,
                     size_t error_size) {
  /* A refused chain closed its idle handle: the close must finish before
   * the next chain_init reuses the memory. */
  uv_run(&fx.loop, UV_RUN_DEFAULT);
  config_free(fx.config);
  fx.config = NULL;
  snprintf(fx.config_path, sizeof fx.config_path, "%s/popkit.json", fx.dir);
  char text[4096];
  int n = snprintf(text, sizeof text,
                   "{\"hostname\": \"test.local\", \"modules_dir\": \"modules\","
                   " \"workers\": 1, \"listen\": [{\"address\": \"127.0.0.1\","
                   " \"port\": 1100}], \"auth\": %s, \"store\": %s}\n",
                   auth, store);
  ck_assert_int_lt(n, (int)sizeof text);
  write_file(fx.config_path, text);
  int rc = config_load(fx.config_path, &fx.config, error, error_size);
  if (rc < 0)
    return rc;
  rc = chain_init(&fx.chain, &fx.loop, fx.config, 0, error, error_size);
  fx.chain_open = rc == 0;
  return rc;
}

static void open_chain(const char *auth, const char *store) {
  char error[1024] = "";
  int rc = try_chain(auth, store, error, sizeof error);
  ck_assert_msg(rc == 0, "chain: %s", error);
}

/* ---- Requests ----------------------------------------------------------- */

static void record(struct core_request *req) {
  struct outcome *o = req->data;
  o->calls++;
  o->done_ns = uv_hrtime();
  o->kind = req->pub.base.kind;
  o->result = req->result;
  snprintf(o->identity, sizeof o->identity, "%s", req->identity ? req->identity : "");
  snprintf(o->credential, sizeof o->credential, "%s",
           req->credential ? req->credential : "");
  snprintf(o->log_text, sizeof o->log_text, "%s", req->log_text ? req->log_text : "");
  o->mailbox = req->pub.store.mailbox;
  o->length = req->pub.store.length;
  o->count = req->listing.count;
  for (size_t i = 0; i < req->listing.count && i < MAX_LISTING; i++) {
    snprintf(o->uids[i], sizeof o->uids[i], "%s",
             req->listing.uids + req->listing.entries[i].uid_off);
    o->sizes[i] = req->listing.entries[i].size;
  }
}

static struct core_request *auth_start(enum popkit_request_kind kind, const char *user,
                                       const char *password, struct outcome *o) {
  memset(o, 0, sizeof *o);
  struct core_request *req =
      chain_auth(&fx.chain, kind, user, password, "127.0.0.1", 1, record, o);
  ck_assert_ptr_nonnull(req);
  return req;
}

/* Runs the loop until nothing is left to do, so a second callback would be
 * counted, and checks there was exactly one. */
static void finish(struct core_request *req, struct outcome *o) {
  uv_run(&fx.loop, UV_RUN_DEFAULT);
  ck_assert_int_eq(o->calls, 1);
  core_request_free(req);
}

static enum popkit_result auth(enum popkit_request_kind kind, const char *user,
                               const char *password, struct outcome *o) {
  finish(auth_start(kind, user, password, o), o);
  return o->result;
}

static enum popkit_result verify(const char *user, const char *password,
                                 struct outcome *o) {
  return auth(POPKIT_REQ_AUTH_VERIFY_PLAIN, user, password, o);
}

/* One store call, as core/deliver.c makes it: the fields go under the
 * header the chain gave the request; the handle comes back in fields. */
static enum popkit_result store(enum popkit_request_kind kind,
                                struct popkit_store_request *fields, struct outcome *o) {
  memset(o, 0, sizeof *o);
  struct core_request *req = chain_store_request(&fx.chain, kind, 1, record, o);
  ck_assert_ptr_nonnull(req);
  fields->base = req->pub.base;
  req->pub.store = *fields;
  chain_submit(req);
  finish(req, o);
  fields->mailbox = o->mailbox;
  fields->length = o->length;
  return o->result;
}

static void *open_mailbox(const char *identity, struct outcome *o) {
  struct popkit_store_request f = {.identity = identity};
  enum popkit_result r = store(POPKIT_REQ_STORE_OPEN, &f, o);
  ck_assert_msg(r == POPKIT_OK, "OPEN %s: %s (%s)", identity, result_name(r),
                o->log_text);
  ck_assert_ptr_nonnull(f.mailbox);
  return f.mailbox;
}

static void close_mailbox(void *mailbox) {
  struct outcome o;
  struct popkit_store_request f = {.mailbox = mailbox};
  ck_assert_int_eq(store(POPKIT_REQ_STORE_CLOSE, &f, &o), POPKIT_OK);
}

/* Reads message `index` whole, in small pieces so that several READs go
 * through the decorator. Returns a malloc'ed, NUL-terminated copy. */
static char *read_message(void *mailbox, uint64_t index) {
  char *data = calloc(1, 1);
  size_t size = 0;
  for (;;) {
    char piece[7];
    struct outcome o;
    struct popkit_store_request f = {.mailbox = mailbox,
                                     .index = index,
                                     .offset = size,
                                     .buffer = piece,
                                     .buffer_size = sizeof piece};
    enum popkit_result r = store(POPKIT_REQ_STORE_READ, &f, &o);
    ck_assert_msg(r == POPKIT_OK, "READ %llu at %zu: %s (%s)", (unsigned long long)index,
                  size, result_name(r), o.log_text);
    ck_assert_ptr_eq(f.mailbox, mailbox);
    if (f.length == 0)
      break;
    ck_assert_uint_le(f.length, sizeof piece);
    data = realloc(data, size + f.length + 1);
    ck_assert_ptr_nonnull(data);
    memcpy(data + size, piece, f.length);
    size += f.length;
    data[size] = '\0';
  }
  return data;
}

static uint64_t crlf_size(const char *body) {
  struct popkit_crlf_size s;
  memset(&s, 0, sizeof s);
  popkit_crlf_size_feed(&s, body, strlen(body));
  return popkit_crlf_size_finish(&s);
}

/* The index of uid in the listing o holds, or -1. */
static int listing_index(const struct outcome *o, const char *uid) {
  for (size_t i = 0; i < o->count && i < MAX_LISTING; i++)
    if (strcmp(o->uids[i], uid) == 0)
      return (int)i;
  return -1;
}

static int files_in(const char *path) {
  int n = 0;
  DIR *d = opendir(path);
  ck_assert_msg(d != NULL, "%s: %s", path, strerror(errno));
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.')
      n++;
  closedir(d);
  return n;
}

static void assert_contains(const char *text, const char *part) {
  ck_assert_msg(strstr(text, part) != NULL, "\"%s\" is not in: %s", part, text);
}

/* ---- A decorator over a blocking auth module ---------------------------- */

START_TEST(decorator_passes_password_checks_to_next) {
  open_chain("[" DECORATE(PASSWD_A) "]", MAILDIR);
  struct outcome o;
  ck_assert_int_eq(verify("ana", "secret", &o), POPKIT_OK);
  ck_assert_str_eq(o.identity, "ana" SUFFIX);

  ck_assert_int_eq(verify("ana", "wrong", &o), POPKIT_FAIL);
  /* next's log text reaches the log through the decorator's done. */
  assert_contains(o.log_text, "wrong password");

  ck_assert_int_eq(verify("nobody", "secret", &o), POPKIT_NOT_FOUND);
  ck_assert_str_eq(o.identity, "");
}
END_TEST

START_TEST(decorator_reads_next_outputs) {
  open_chain("[" DECORATE(PASSWD_A) "]", MAILDIR);
  struct outcome o;
  ck_assert_int_eq(auth(POPKIT_REQ_AUTH_LOOKUP, "ana", NULL, &o), POPKIT_OK);
  ck_assert_str_eq(o.identity, "ana" SUFFIX);
  /* The decorator completes GET_CREDENTIAL only if auth_credential shows
   * what next set; the credential itself passes through unchanged. */
  ck_assert_int_eq(auth(POPKIT_REQ_AUTH_GET_CREDENTIAL, "ana", NULL, &o), POPKIT_OK);
  ck_assert_str_eq(o.credential, "{PLAIN}secret");
  ck_assert_str_eq(o.identity, "ana" SUFFIX);
  ck_assert(fx.chain.can_get_credential);
}
END_TEST

START_TEST(decorator_answers_alone) {
  open_chain("[" DECORATE(PASSWD_A) "]", MAILDIR);
  struct outcome o;
  /* next does not know "answered": had it been asked, the answer would be
   * NOT_FOUND. */
  ck_assert_int_eq(verify("answered", "anything", &o), POPKIT_OK);
  ck_assert_str_eq(o.identity, "by-decorator");
  ck_assert_str_eq(o.log_text, "");
}
END_TEST

START_TEST(decorator_completes_later_from_a_timer) {
  open_chain("[" DECORATE_LATE(LATE_MS, PASSWD_A) "]", MAILDIR);
  struct outcome o;
  uint64_t start = uv_hrtime();
  ck_assert_int_eq(verify("late", "latepw", &o), POPKIT_OK);
  ck_assert_str_eq(o.identity, "late" SUFFIX);
  /* libuv's clock counts whole milliseconds: allow one of rounding. */
  uint64_t elapsed_ms = (o.done_ns - start) / 1000000;
  ck_assert_msg(elapsed_ms >= LATE_MS - 1, "answered after %llu ms, the timer is %d ms",
                (unsigned long long)elapsed_ms, LATE_MS);
  ck_assert_int_eq(verify("late", "wrong", &o), POPKIT_FAIL);
  assert_contains(o.log_text, "wrong password");
}
END_TEST

/* ---- Lists and nesting -------------------------------------------------- */

START_TEST(list_moves_on_only_past_the_decorator) {
  open_chain("[" DECORATE(PASSWD_A) ", " PASSWD_B "]", MAILDIR);
  struct outcome o;
  /* bob is NOT_FOUND in A, which the decorator hears and completes with;
   * only then does the list move on to B, which answers alone. */
  ck_assert_int_eq(verify("bob", "bobpw", &o), POPKIT_OK);
  ck_assert_str_eq(o.identity, "bob");
  ck_assert_int_eq(verify("bob", "wrong", &o), POPKIT_FAIL);
  ck_assert_int_eq(verify("ana", "secret", &o), POPKIT_OK);
  ck_assert_str_eq(o.identity, "ana" SUFFIX);
  ck_assert_int_eq(verify("nobody", "x", &o), POPKIT_NOT_FOUND);
}
END_TEST

START_TEST(list_reaches_a_decorator_after_not_found) {
  open_chain("[" PASSWD_B ", " DECORATE(PASSWD_A) "]", MAILDIR);
  struct outcome o;
  ck_assert_int_eq(verify("ana", "secret", &o), POPKIT_OK);
  ck_assert_str_eq(o.identity, "ana" SUFFIX);
  ck_assert_int_eq(verify("bob", "bobpw", &o), POPKIT_OK);
  ck_assert_str_eq(o.identity, "bob");
}
END_TEST

START_TEST(nested_decorators_each_hear_next) {
  open_chain("[" DECORATE(DECORATE(PASSWD_A)) "]", MAILDIR);
  struct outcome o;
  ck_assert_int_eq(verify("ana", "secret", &o), POPKIT_OK);
  ck_assert_str_eq(o.identity, "ana" SUFFIX SUFFIX);
  ck_assert_int_eq(verify("ana", "wrong", &o), POPKIT_FAIL);
  /* The outer decorator answers "answered" before the inner one sees it. */
  ck_assert_int_eq(verify("answered", "x", &o), POPKIT_OK);
  ck_assert_str_eq(o.identity, "by-decorator");
  /* Both wait for their own timer: the inner one's answer comes late, and
   * the outer one waits again. */
  uint64_t start = uv_hrtime();
  ck_assert_int_eq(verify("late", "latepw", &o), POPKIT_OK);
  ck_assert_str_eq(o.identity, "late" SUFFIX SUFFIX);
  ck_assert_uint_ge((o.done_ns - start) / 1000000, 2 * LATE_DEFAULT_MS - 1);
}
END_TEST

START_TEST(four_decorators_nest) {
  open_chain("[" DECORATE(DECORATE(DECORATE(DECORATE(PASSWD_A)))) "]", MAILDIR);
  struct outcome o;
  ck_assert_int_eq(verify("ana", "secret", &o), POPKIT_OK);
  ck_assert_str_eq(o.identity, "ana" SUFFIX SUFFIX SUFFIX SUFFIX);
}
END_TEST

/* ---- Store -------------------------------------------------------------- */

START_TEST(store_decorator_wraps_the_mailbox) {
  open_chain("[" PASSWD_A "]", DECORATE(MAILDIR));
  struct outcome o;
  void *mailbox = open_mailbox("ana", &o);
  const size_t n = sizeof ana_messages / sizeof ana_messages[0];
  ck_assert_uint_eq(o.count, n);
  int where[2];
  for (size_t i = 0; i < n; i++) {
    where[i] = listing_index(&o, ana_messages[i].name);
    ck_assert_msg(where[i] >= 0, "%s is not listed", ana_messages[i].name);
    ck_assert_uint_eq(o.sizes[where[i]], crlf_size(ana_messages[i].body));
  }
  for (size_t i = 0; i < n; i++) {
    char *data = read_message(mailbox, (uint64_t)where[i]);
    ck_assert_str_eq(data, ana_messages[i].body);
    free(data);
  }

  uint64_t gone = (uint64_t)where[0];
  struct popkit_store_request f = {
      .mailbox = mailbox, .indexes = &gone, .index_count = 1};
  ck_assert_int_eq(store(POPKIT_REQ_STORE_EXPUNGE, &f, &o), POPKIT_OK);
  ck_assert_ptr_eq(f.mailbox, mailbox);
  close_mailbox(mailbox);

  /* The lock went with CLOSE (a second OPEN is not IN_USE), and the
   * deletion is on disk. */
  mailbox = open_mailbox("ana", &o);
  ck_assert_uint_eq(o.count, n - 1);
  ck_assert_int_eq(listing_index(&o, ana_messages[0].name), -1);
  ck_assert_int_ge(listing_index(&o, ana_messages[1].name), 0);
  close_mailbox(mailbox);
}
END_TEST

START_TEST(store_decorator_passes_failures_on) {
  open_chain("[" PASSWD_A "]", DECORATE(MAILDIR));
  struct outcome o;
  void *mailbox = open_mailbox("ana", &o);
  /* A second session on the same mailbox: next's IN_USE comes through. */
  struct popkit_store_request f = {.identity = "ana"};
  ck_assert_int_eq(store(POPKIT_REQ_STORE_OPEN, &f, &o), POPKIT_IN_USE);
  /* Reading past the listing is next's error, not a broken handle. */
  char piece[16];
  struct popkit_store_request r = {
      .mailbox = mailbox, .index = 99, .buffer = piece, .buffer_size = sizeof piece};
  enum popkit_result result = store(POPKIT_REQ_STORE_READ, &r, &o);
  ck_assert_int_ne(result, POPKIT_OK);
  ck_assert_ptr_eq(r.mailbox, mailbox);
  close_mailbox(mailbox);
}
END_TEST

/* A mailbox the decorator will not use is closed at next with a request
 * of the decorator's own (host->next_request): a second OPEN meets the
 * refusal again, not next's lock. */
START_TEST(store_decorator_closes_what_it_refuses) {
  open_chain("[" PASSWD_A "]", DECORATE(MAILDIR));
  struct outcome o;
  for (int attempt = 0; attempt < 2; attempt++) {
    struct popkit_store_request f = {.identity = "refused"};
    ck_assert_int_eq(store(POPKIT_REQ_STORE_OPEN, &f, &o), POPKIT_PERMFAIL);
    ck_assert_str_eq(o.log_text, "decorator: refused");
    ck_assert_ptr_null(f.mailbox);
  }
  /* Other mailboxes are not affected. */
  close_mailbox(open_mailbox("ana", &o));
}
END_TEST

START_TEST(store_decorator_delivers) {
  open_chain("[" PASSWD_A "]", DECORATE(MAILDIR));
  const char *message = "Subject: delivered\n\nthrough the decorator\nin pieces\n";
  struct outcome o;
  struct popkit_store_request f = {.identity = "ana"};
  ck_assert_int_eq(store(POPKIT_REQ_STORE_APPEND_BEGIN, &f, &o), POPKIT_OK);
  void *delivery = f.mailbox;
  ck_assert_ptr_nonnull(delivery);
  size_t size = strlen(message);
  for (size_t done = 0; done < size; done += 10) {
    struct popkit_store_request w = {.mailbox = delivery,
                                     .data = message + done,
                                     .data_size = size - done < 10 ? size - done : 10};
    ck_assert_int_eq(store(POPKIT_REQ_STORE_APPEND_WRITE, &w, &o), POPKIT_OK);
    ck_assert_ptr_eq(w.mailbox, delivery);
  }
  struct popkit_store_request fin = {.mailbox = delivery, .commit = 1};
  ck_assert_int_eq(store(POPKIT_REQ_STORE_APPEND_FINISH, &fin, &o), POPKIT_OK);

  ck_assert_int_eq(files_in(at("mail/ana/new")), 3);
  ck_assert_int_eq(files_in(at("mail/ana/tmp")), 0);
  void *mailbox = open_mailbox("ana", &o);
  ck_assert_uint_eq(o.count, 3);
  int found = -1;
  for (size_t i = 0; i < o.count; i++)
    if (listing_index(&o, ana_messages[0].name) != (int)i &&
        listing_index(&o, ana_messages[1].name) != (int)i)
      found = (int)i;
  ck_assert_int_ge(found, 0);
  ck_assert_uint_eq(o.sizes[found], crlf_size(message));
  char *data = read_message(mailbox, (uint64_t)found);
  ck_assert_str_eq(data, message);
  free(data);
  close_mailbox(mailbox);
}
END_TEST

START_TEST(store_decorator_aborts_a_delivery) {
  open_chain("[" PASSWD_A "]", DECORATE(MAILDIR));
  struct outcome o;
  struct popkit_store_request f = {.identity = "ana"};
  ck_assert_int_eq(store(POPKIT_REQ_STORE_APPEND_BEGIN, &f, &o), POPKIT_OK);
  struct popkit_store_request w = {.mailbox = f.mailbox, .data = "x\n", .data_size = 2};
  ck_assert_int_eq(store(POPKIT_REQ_STORE_APPEND_WRITE, &w, &o), POPKIT_OK);
  struct popkit_store_request fin = {.mailbox = f.mailbox, .commit = 0};
  ck_assert_int_eq(store(POPKIT_REQ_STORE_APPEND_FINISH, &fin, &o), POPKIT_OK);
  ck_assert_int_eq(files_in(at("mail/ana/new")), 2);
  ck_assert_int_eq(files_in(at("mail/ana/tmp")), 0);
}
END_TEST

/* ---- Cancel ------------------------------------------------------------- */

START_TEST(cancel_while_blocking_next_works) {
  open_chain("[" DECORATE(PASSWD_A) "]", MAILDIR);
  enum { N = 16 };
  struct outcome o[N];
  struct core_request *req[N];
  for (int i = 0; i < N; i++) {
    req[i] = auth_start(POPKIT_REQ_AUTH_VERIFY_PLAIN, "ana", "secret", &o[i]);
    /* The request is with passwd-file on the thread pool, not with the
     * decorator. */
    ck_assert_uint_eq(req[i]->depth, 1);
    chain_cancel(req[i]);
  }
  uv_run(&fx.loop, UV_RUN_DEFAULT);
  for (int i = 0; i < N; i++) {
    ck_assert_msg(o[i].calls == 1, "request %d: %d callbacks", i, o[i].calls);
    /* Canceled before it ran, or it ran to the end: never both. */
    if (o[i].result == POPKIT_OK)
      ck_assert_str_eq(o[i].identity, "ana" SUFFIX);
    else
      ck_assert_int_eq(o[i].result, POPKIT_TEMPFAIL);
    core_request_free(req[i]);
  }
}
END_TEST

START_TEST(cancel_while_the_decorator_waits) {
  /* A timer of ten seconds: the answer must come from the cancel. */
  open_chain("[" DECORATE_LATE(10000, PASSWD_A) "]", MAILDIR);
  struct outcome o;
  uint64_t start = uv_hrtime();
  struct core_request *req =
      auth_start(POPKIT_REQ_AUTH_VERIFY_PLAIN, "late", "latepw", &o);
  /* Until next is done and the request is the decorator's again. */
  while (req->depth != 0)
    uv_run(&fx.loop, UV_RUN_ONCE);
  ck_assert_int_eq(o.calls, 0);
  chain_cancel(req);
  finish(req, &o);
  ck_assert_int_eq(o.result, POPKIT_TEMPFAIL);
  ck_assert_str_eq(o.log_text, "decorator: canceled");
  ck_assert_uint_lt((uv_hrtime() - start) / 1000000, 5000);
}
END_TEST

/* ---- GET_CREDENTIAL at a module without get_credential ------------------ */

/* What GET_CREDENTIAL answers for a user whom a module without
 * get_credential knows: FAIL, nothing handed out, and a log line that says
 * why. Had the list moved on, the passwd-file after it would have answered
 * OK with its own secret for the same user. */
/* ---- A blocking store's READ on the loop thread (ABI 1.3) -------------- */

/* More than any pool libuv would start (its default is 4 threads), so that
 * every pool thread waits while they are queued. */
#define POOL_BLOCKERS 128

static uv_sem_t pool_release;

static void wait_for_release(uv_work_t *work) {
  (void)work;
  uv_sem_wait(&pool_release);
}

static void released(uv_work_t *work, int status) {
  (void)work;
  (void)status;
}

static struct core_request *read_start(void *mailbox, uint64_t index, uint64_t offset,
                                       char *buffer, size_t size, struct outcome *o) {
  memset(o, 0, sizeof *o);
  struct core_request *req =
      chain_store_request(&fx.chain, POPKIT_REQ_STORE_READ, 1, record, o);
  ck_assert_ptr_nonnull(req);
  struct popkit_store_request f = {.base = req->pub.base,
                                   .mailbox = mailbox,
                                   .index = index,
                                   .offset = offset,
                                   .buffer = buffer,
                                   .buffer_size = size};
  req->pub.store = f;
  chain_submit(req);
  return req;
}

/* With every pool thread held, a READ of the message the last READ opened
 * is still answered (from the page cache, by maildir's read_nowait), on a
 * later loop turn and never inside chain_submit; a READ that must open a
 * file waits for the pool. */
static void reads_while_the_pool_is_held(const char *store_config) {
  open_chain("[" PASSWD_A "]", store_config);
  struct outcome o;
  void *mailbox = open_mailbox("ana", &o);
  int first = listing_index(&o, ana_messages[0].name);
  int second = listing_index(&o, ana_messages[1].name);
  ck_assert(first >= 0 && second >= 0);
  bool served_on_loop =
      nowait_reads_supported(at("mail/ana/new/%s", ana_messages[first].name));
  char piece[4];
  struct popkit_store_request f = {
      .mailbox = mailbox, .index = (uint64_t)first, .buffer = piece, .buffer_size = 4};
  ck_assert_int_eq(store(POPKIT_REQ_STORE_READ, &f, &o), POPKIT_OK);
  ck_assert_uint_eq(f.length, 4);

  ck_assert_int_eq(uv_sem_init(&pool_release, 0), 0);
  uv_work_t blockers[POOL_BLOCKERS];
  for (int i = 0; i < POOL_BLOCKERS; i++)
    ck_assert_int_eq(uv_queue_work(&fx.loop, &blockers[i], wait_for_release, released),
                     0);

  struct outcome next, other;
  char next_piece[4], other_piece[8];
  struct core_request *next_req =
      read_start(mailbox, (uint64_t)first, 4, next_piece, sizeof next_piece, &next);
  ck_assert_int_eq(next.calls, 0);
  struct core_request *other_req =
      read_start(mailbox, (uint64_t)second, 0, other_piece, sizeof other_piece, &other);
  for (int turn = 0; turn < 3; turn++)
    uv_run(&fx.loop, UV_RUN_NOWAIT);
  /* Where the file system cannot read without waiting, both wait. */
  ck_assert_int_eq(next.calls, (served_on_loop ? 1 : 0));
  ck_assert_int_eq(other.calls, 0);

  for (int i = 0; i < POOL_BLOCKERS; i++)
    uv_sem_post(&pool_release);
  uv_run(&fx.loop, UV_RUN_DEFAULT);
  uv_sem_destroy(&pool_release);
  ck_assert_int_eq(next.calls, 1);
  ck_assert_int_eq(next.result, POPKIT_OK);
  ck_assert_uint_eq(next.length, 4);
  ck_assert_mem_eq(next_piece, ana_messages[first].body + 4, 4);
  ck_assert_int_eq(other.calls, 1);
  ck_assert_int_eq(other.result, POPKIT_OK);
  ck_assert_uint_eq(other.length, 8);
  ck_assert_mem_eq(other_piece, ana_messages[second].body, 8);
  core_request_free(next_req);
  core_request_free(other_req);
  close_mailbox(mailbox);
}

START_TEST(blocking_store_reads_without_the_pool) {
  reads_while_the_pool_is_held(MAILDIR);
}
END_TEST

START_TEST(blocking_store_reads_without_the_pool_behind_a_decorator) {
  reads_while_the_pool_is_held(DECORATE(MAILDIR));
}
END_TEST

/* A read_nowait that says it served a READ but never completed it: the
 * core ends the READ in TEMPFAIL with the reason rather than wait forever. */
START_TEST(read_nowait_that_does_not_complete_is_tempfail) {
  open_chain("[" PASSWD_A "]", "{\"module\": \"careless_store\"}");
  struct outcome o;
  void *mailbox = open_mailbox("ana", &o);
  char piece[8];
  struct popkit_store_request f = {
      .mailbox = mailbox, .index = 0, .buffer = piece, .buffer_size = sizeof piece};
  ck_assert_int_eq(store(POPKIT_REQ_STORE_READ, &f, &o), POPKIT_TEMPFAIL);
  ck_assert_str_eq(o.log_text, "read_nowait returned 1 without completing the request");
  close_mailbox(mailbox);
}
END_TEST

static void assert_refused_for_credential(const struct outcome *o) {
  ck_assert_int_eq(o->result, POPKIT_FAIL);
  ck_assert_uint_eq(o->kind, POPKIT_REQ_AUTH_GET_CREDENTIAL);
  ck_assert_str_eq(o->credential, "");
  ck_assert_str_eq(o->identity, "");
  assert_contains(o->log_text, "good_auth");
  assert_contains(o->log_text, "cannot hand back credentials");
  assert_contains(o->log_text, "only a password login works");
}

START_TEST(credential_of_a_user_known_where_none_is_handed_back_fails) {
  open_chain("[" GOOD_AUTH ", " PASSWD_ALICE "]", MAILDIR);
  ck_assert(fx.chain.can_get_credential);
  struct outcome o;
  auth(POPKIT_REQ_AUTH_GET_CREDENTIAL, "alice", NULL, &o);
  assert_refused_for_credential(&o);
  /* USER/PASS decides alice the same way: good_auth's FAIL stops the list
   * before passwd-file's secret is tried. */
  ck_assert_int_eq(verify("alice", "passwd-file-secret", &o), POPKIT_FAIL);
  ck_assert_int_eq(verify("alice", "secret", &o), POPKIT_OK);
}
END_TEST

START_TEST(credential_of_a_user_unknown_there_comes_from_the_next_module) {
  open_chain("[" GOOD_AUTH ", " PASSWD_ALICE "]", MAILDIR);
  struct outcome o;
  ck_assert_int_eq(auth(POPKIT_REQ_AUTH_GET_CREDENTIAL, "bob", NULL, &o), POPKIT_OK);
  ck_assert_uint_eq(o.kind, POPKIT_REQ_AUTH_GET_CREDENTIAL);
  ck_assert_str_eq(o.credential, "{PLAIN}bobpw");
  ck_assert_str_eq(o.identity, "bob");
  ck_assert_int_eq(auth(POPKIT_REQ_AUTH_GET_CREDENTIAL, "nobody", NULL, &o),
                   POPKIT_NOT_FOUND);
  ck_assert_uint_eq(o.kind, POPKIT_REQ_AUTH_GET_CREDENTIAL);
}
END_TEST

START_TEST(credential_rule_holds_behind_a_decorator) {
  /* The decorator hands GET_CREDENTIAL on to good_auth; it hears FAIL, not
   * good_auth's OK to a LOOKUP (which it would complete OK with the
   * identity "alice+d"). */
  open_chain("[" DECORATE(GOOD_AUTH) ", " PASSWD_ALICE "]", MAILDIR);
  struct outcome o;
  auth(POPKIT_REQ_AUTH_GET_CREDENTIAL, "alice", NULL, &o);
  assert_refused_for_credential(&o);
  ck_assert_int_eq(auth(POPKIT_REQ_AUTH_GET_CREDENTIAL, "bob", NULL, &o), POPKIT_OK);
  ck_assert_str_eq(o.credential, "{PLAIN}bobpw");
  ck_assert_str_eq(o.identity, "bob");
}
END_TEST

START_TEST(credential_rule_holds_for_a_blocking_module) {
  open_chain("[" GOOD_AUTH ", " PASSWD_ALICE "]", MAILDIR);
  /* No test module is blocking without get_credential; good_auth keeps no
   * state, so the core may run it on the thread pool as it would run one
   * that declares POPKIT_MODULE_BLOCKING. */
  fx.chain.auth[0]->blocking = true;
  struct outcome o;
  struct core_request *req =
      auth_start(POPKIT_REQ_AUTH_GET_CREDENTIAL, "alice", NULL, &o);
  /* On the thread pool: still working after chain_auth returned. */
  ck_assert(req->in_call);
  finish(req, &o);
  assert_refused_for_credential(&o);
  ck_assert_int_eq(auth(POPKIT_REQ_AUTH_GET_CREDENTIAL, "bob", NULL, &o), POPKIT_OK);
  ck_assert_str_eq(o.credential, "{PLAIN}bobpw");

  /* Canceled before or while it runs: TEMPFAIL or the answer, always as a
   * GET_CREDENTIAL, and never passwd-file's secret. */
  enum { N = 16 };
  struct outcome many[N];
  struct core_request *reqs[N];
  for (int i = 0; i < N; i++) {
    reqs[i] = auth_start(POPKIT_REQ_AUTH_GET_CREDENTIAL, "alice", NULL, &many[i]);
    chain_cancel(reqs[i]);
  }
  uv_run(&fx.loop, UV_RUN_DEFAULT);
  for (int i = 0; i < N; i++) {
    ck_assert_msg(many[i].calls == 1, "request %d: %d callbacks", i, many[i].calls);
    if (many[i].result == POPKIT_TEMPFAIL) {
      ck_assert_uint_eq(many[i].kind, POPKIT_REQ_AUTH_GET_CREDENTIAL);
      ck_assert_str_eq(many[i].credential, "");
    } else {
      assert_refused_for_credential(&many[i]);
    }
    core_request_free(reqs[i]);
  }
}
END_TEST

/* ---- What a chain claims ------------------------------------------------ */

START_TEST(credentials_are_claimed_only_when_next_has_them) {
  /* good_auth has no get_credential, and the decorator in front of it
   * cannot make one up: GET_CREDENTIAL hands back no credential for anyone,
   * so the chain must not claim credentials (popkitd would offer SCRAM and
   * APOP that fail for every user, and --check-config would accept "apop":
   * true). */
  open_chain("[" DECORATE(GOOD_AUTH) "]", MAILDIR);
  struct outcome o;
  ck_assert_int_eq(auth(POPKIT_REQ_AUTH_GET_CREDENTIAL, "alice", NULL, &o), POPKIT_FAIL);
  ck_assert_str_eq(o.credential, "");
  ck_assert_int_eq(auth(POPKIT_REQ_AUTH_GET_CREDENTIAL, "bob", NULL, &o),
                   POPKIT_NOT_FOUND);
  ck_assert_msg(!fx.chain.can_get_credential,
                "the chain claims credentials although no module can hand them back");
}
END_TEST

/* ---- Config errors ------------------------------------------------------ */

/* Builds the chain from a config that must be refused, and checks the one
 * line names the file and every part. */
static void expect_refusal(const char *auth, const char *store, ...) {
  char error[1024] = "";
  int rc = try_chain(auth, store, error, sizeof error);
  ck_assert_msg(rc < 0, "the config was accepted");
  ck_assert_ptr_null(strchr(error, '\n'));
  assert_contains(error, fx.config_path);
  va_list ap;
  va_start(ap, store);
  const char *part;
  while ((part = va_arg(ap, const char *)) != NULL)
    assert_contains(error, part);
  va_end(ap);
}

START_TEST(refuses_decorator_without_next) {
  expect_refusal("[{\"module\": \"decorator\"}]", MAILDIR,
                 ": $.auth[0]: module decorator is a decorator and needs \"next\"", NULL);
  expect_refusal("[" PASSWD_A "]", "{\"module\": \"decorator\", \"late_ms\": 5}",
                 ": $.store: module decorator is a decorator and needs \"next\"", NULL);
}
END_TEST

START_TEST(refuses_next_on_a_module_that_is_no_decorator) {
  expect_refusal(
      "[" PASSWD_A ", {\"module\": \"passwd-file\", \"path\": \"users-b\","
      " \"next\": " PASSWD_A "}]",
      MAILDIR, ": $.auth[1].next: module passwd-file does not take a next module", NULL);
  /* The same below a decorator: the path says how deep. */
  expect_refusal("[" DECORATE("{\"module\": \"passwd-file\", \"path\": \"users-a\","
                              " \"next\": " PASSWD_B "}") "]",
                 MAILDIR,
                 ": $.auth[0].next.next: module passwd-file does not take a next module",
                 NULL);
}
END_TEST

START_TEST(refuses_next_of_the_wrong_role) {
  expect_refusal("[" DECORATE(MAILDIR) "]", MAILDIR,
                 ": $.auth[0].next: module maildir cannot be used here: it is not an "
                 "auth module",
                 NULL);
}
END_TEST

START_TEST(refuses_nesting_deeper_than_four) {
  expect_refusal("[" DECORATE(DECORATE(DECORATE(DECORATE(DECORATE(PASSWD_A))))) "]",
                 MAILDIR, ": $.auth[0].next.next.next.next.next: decorators nest 4 deep",
                 NULL);
  expect_refusal("[" PASSWD_A "]",
                 DECORATE(DECORATE(DECORATE(DECORATE(DECORATE(MAILDIR))))),
                 ": $.store.next.next.next.next.next: decorators nest 4 deep", NULL);
}
END_TEST

START_TEST(refuses_a_decorator_key_error_with_its_path) {
  expect_refusal(
      "[" DECORATE("{\"module\": \"decorator\", \"late_ms\": -1, \"next\": " PASSWD_A
                   "}") "]",
      MAILDIR, ": $.auth[0].next: module decorator: late_ms: must be 0 to", NULL);
}
END_TEST

int main(void) {
  Suite *suite = suite_create("chain");

  TCase *tc = check_tcase(suite, "auth decorator", setup, teardown);
  tcase_add_test(tc, decorator_passes_password_checks_to_next);
  tcase_add_test(tc, decorator_reads_next_outputs);
  tcase_add_test(tc, decorator_answers_alone);
  tcase_add_test(tc, decorator_completes_later_from_a_timer);

  tc = check_tcase(suite, "lists and nesting", setup, teardown);
  tcase_add_test(tc, list_moves_on_only_past_the_decorator);
  tcase_add_test(tc, list_reaches_a_decorator_after_not_found);
  tcase_add_test(tc, nested_decorators_each_hear_next);
  tcase_add_test(tc, four_decorators_nest);

  tc = check_tcase(suite, "store decorator", setup, teardown);
  tcase_add_test(tc, store_decorator_wraps_the_mailbox);
  tcase_add_test(tc, store_decorator_passes_failures_on);
  tcase_add_test(tc, store_decorator_closes_what_it_refuses);
  tcase_add_test(tc, store_decorator_delivers);
  tcase_add_test(tc, store_decorator_aborts_a_delivery);

  tc = check_tcase(suite, "reads without the pool", setup, teardown);
  tcase_add_test(tc, blocking_store_reads_without_the_pool);
  tcase_add_test(tc, blocking_store_reads_without_the_pool_behind_a_decorator);
  tcase_add_test(tc, read_nowait_that_does_not_complete_is_tempfail);

  tc = check_tcase(suite, "cancel", setup, teardown);
  tcase_add_test(tc, cancel_while_blocking_next_works);
  tcase_add_test(tc, cancel_while_the_decorator_waits);

  tc = check_tcase(suite, "credential without get_credential", setup, teardown);
  tcase_add_test(tc, credential_of_a_user_known_where_none_is_handed_back_fails);
  tcase_add_test(tc, credential_of_a_user_unknown_there_comes_from_the_next_module);
  tcase_add_test(tc, credential_rule_holds_behind_a_decorator);
  tcase_add_test(tc, credential_rule_holds_for_a_blocking_module);

  tc = check_tcase(suite, "claims", setup, teardown);
  tcase_add_test(tc, credentials_are_claimed_only_when_next_has_them);

  tc = check_tcase(suite, "config errors", setup, teardown);
  tcase_add_test(tc, refuses_decorator_without_next);
  tcase_add_test(tc, refuses_next_on_a_module_that_is_no_decorator);
  tcase_add_test(tc, refuses_next_of_the_wrong_role);
  tcase_add_test(tc, refuses_nesting_deeper_than_four);
  tcase_add_test(tc, refuses_a_decorator_key_error_with_its_path);

  int failed = check_run(suite);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
