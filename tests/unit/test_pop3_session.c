/* Tests for core/pop3_session.c and core/pop3_commands.c: the POP3 state
 * machine driven line by line, with no socket, over the real passwd-file
 * and maildir modules of the build tree. */
#include <arpa/inet.h>
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
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
#include "pop3_session.h"

struct fixture {
  char dir[64];
  struct config *config;
  uv_loop_t loop;
  struct chain chain;
  struct session_env env;
  struct login_guard *guard;
};

struct test_conn {
  struct session s;
  char *out; /* everything the session wrote */
  size_t out_len;
  bool paused;
  bool close_requested;
  bool released;
  bool tls_started;   /* io->start_tls was called */
  uint64_t wait_ms;   /* io->wait asked for this; settle() ends the wait */
  uint64_t waited_ms; /* all waits so far */
  uint64_t last_wait_ms;
};

static struct fixture fx;

static void write_file(const char *path, const char *data) {
  FILE *f = fopen(path, "w");
  ck_assert_msg(f != NULL, "%s: %s", path, strerror(errno));
  fputs(data, f);
  fclose(f);
}

static void add_message(const char *user, const char *name, const char *body) {
  char path[256];
  snprintf(path, sizeof path, "%s/mail/%s", fx.dir, user);
  mkdir(path, 0700);
  snprintf(path, sizeof path, "%s/mail/%s/new", fx.dir, user);
  mkdir(path, 0700);
  snprintf(path, sizeof path, "%s/mail/%s/cur", fx.dir, user);
  mkdir(path, 0700);
  snprintf(path, sizeof path, "%s/mail/%s/tmp", fx.dir, user);
  mkdir(path, 0700);
  snprintf(path, sizeof path, "%s/mail/%s/new/%s", fx.dir, user, name);
  write_file(path, body);
}

static int count_messages(const char *user) {
  int n = 0;
  const char *subs[] = {"new", "cur"};
  for (int i = 0; i < 2; i++) {
    char path[256];
    snprintf(path, sizeof path, "%s/mail/%s/%s", fx.dir, user, subs[i]);
    DIR *d = opendir(path);
    if (d == NULL)
      continue;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
      if (e->d_name[0] != '.')
        n++;
    closedir(d);
  }
  return n;
}

static bool apop_enabled;
/* Extra keys for "limits" of the next setup(), e.g. ", \"x\": 1". */
static const char *extra_limits = "";

static void setup(void) {
  strcpy(fx.dir, "/tmp/popkit-session-XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(fx.dir));
  char path[128];
  snprintf(path, sizeof path, "%s/mail", fx.dir);
  mkdir(path, 0700);
  snprintf(path, sizeof path, "%s/users", fx.dir);
  write_file(path, "ana:{PLAIN}secret\nbob:{PLAIN}bobpw\n");
  add_message("ana", "1000.a.host", "Subject: one\n\nHello\n.\n..\n.x\n");
  add_message("ana", "1001.b.host", "Subject: two\n\nno final newline");
  add_message("ana", "1002.c.host", "Subject: three\r\n\r\nalready crlf\r\n");

  const char *modules = getenv("POPKIT_BUILD_MODULES_DIR");
  ck_assert_ptr_nonnull(modules);
  char text[2048];
  snprintf(text, sizeof text,
           "{\"hostname\": \"test.local\", \"modules_dir\": \"%s\", \"workers\": 1,"
           " \"listen\": [{\"address\": \"127.0.0.1\", \"port\": 1100}],"
           " \"auth\": [{\"module\": \"passwd-file\", \"path\": \"users\"}],"
           " \"store\": {\"module\": \"maildir\", \"path\": \"mail/%%u\"},"
           " \"limits\": {\"max_line_bytes\": 512, \"max_bad_commands\": 5%s},"
           " \"apop\": %s}",
           modules, extra_limits, apop_enabled ? "true" : "false");
  char error[1024];
  int rc = config_load_string(text, "test.json", fx.dir, &fx.config, error, sizeof error);
  ck_assert_msg(rc == 0, "config: %s", error);
  uv_loop_init(&fx.loop);
  rc = chain_init(&fx.chain, &fx.loop, fx.config, 0, error, sizeof error);
  ck_assert_msg(rc == 0, "chain: %s", error);
  fx.env.config = fx.config;
  fx.env.chain = &fx.chain;
  ck_assert_int_eq(login_guard_new(&fx.config->limits, &fx.guard), 0);
  fx.env.guard = fx.guard;
}

static void setup_apop(void) {
  apop_enabled = true;
  setup();
}

static void teardown(void) {
  chain_close(&fx.chain);
  login_guard_free(fx.guard);
  uv_run(&fx.loop, UV_RUN_DEFAULT);
  ck_assert_int_eq(uv_loop_close(&fx.loop), 0);
  config_free(fx.config);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", fx.dir);
  ck_assert_int_eq(system(cmd), 0);
}

/* ---- The fake connection ------------------------------------------------ */

static void io_flush(void *ctx) {}
static void io_pause(void *ctx) {
  ((struct test_conn *)ctx)->paused = true;
}
static void io_resume(void *ctx) {
  ((struct test_conn *)ctx)->paused = false;
}
static void io_close(void *ctx) {
  ((struct test_conn *)ctx)->close_requested = true;
}
static void io_release(void *ctx) {
  ((struct test_conn *)ctx)->released = true;
}
static void io_start_tls(void *ctx) {
  ((struct test_conn *)ctx)->tls_started = true;
}
static void io_wait(void *ctx, uint64_t ms) {
  ((struct test_conn *)ctx)->wait_ms = ms;
}
static const struct session_io test_io = {
    .flush = io_flush,
    .pause_input = io_pause,
    .resume_input = io_resume,
    .close = io_close,
    .release = io_release,
    .start_tls = io_start_tls,
    .wait = io_wait,
};

/* Takes everything queued, as a socket that reads at once would. */
static void drain(struct test_conn *c) {
  const char *data;
  size_t n;
  while ((n = outbuf_take(&c->s.out, &data)) > 0) {
    c->out = realloc(c->out, c->out_len + n + 1);
    memcpy(c->out + c->out_len, data, n);
    c->out_len += n;
    c->out[c->out_len] = '\0';
    outbuf_release(&c->s.out, n);
  }
}

static bool busy(const struct test_conn *c) {
  return c->s.pending != NULL || c->s.state == SESSION_SENDING ||
         c->s.waiting != WAIT_NONE;
}

/* Runs the loop and drains output until the session waits for input. */
static void settle(struct test_conn *c) {
  for (;;) {
    uv_run(&fx.loop, UV_RUN_NOWAIT);
    drain(c);
    if (c->s.state == SESSION_SENDING && c->s.pending == NULL)
      session_output_drained(&c->s);
    if (c->s.waiting != WAIT_NONE && c->wait_ms > 0) {
      /* Time passes at once: the test reads how long it would have been. */
      c->waited_ms += c->wait_ms;
      c->last_wait_ms = c->wait_ms;
      c->wait_ms = 0;
      session_wait_over(&c->s);
    }
    if (!busy(c))
      break;
  }
  drain(c);
}

static void conn_open(struct test_conn *c, const char *peer_ip) {
  memset(c, 0, sizeof *c);
  struct sockaddr_in sin = {.sin_family = AF_INET};
  inet_pton(AF_INET, peer_ip, &sin.sin_addr);
  ck_assert_int_eq(session_init(&c->s, &fx.env, &test_io, c, 1, (struct sockaddr *)&sin),
                   0);
  session_start(&c->s);
  settle(c);
}

static void conn_free(struct test_conn *c) {
  if (!c->released) {
    session_finish(&c->s);
    settle(c);
    while (!c->released)
      uv_run(&fx.loop, UV_RUN_ONCE);
  }
  session_free(&c->s);
  free(c->out);
}

/* Sends input and returns what the server answered to it. */
static const char *say(struct test_conn *c, const char *input) {
  size_t before = c->out_len;
  size_t len = strlen(input);
  while (len > 0) {
    size_t space;
    char *dst = session_input_space(&c->s, &space);
    ck_assert_uint_gt(space, 0);
    size_t n = len < space ? len : space;
    memcpy(dst, input, n);
    session_input_received(&c->s, n);
    settle(c);
    input += n;
    len -= n;
  }
  settle(c);
  return c->out != NULL ? c->out + before : "";
}

static void login(struct test_conn *c) {
  ck_assert_str_eq(say(c, "USER ana\r\n"), "+OK Send PASS.\r\n");
  const char *r = say(c, "PASS secret\r\n");
  ck_assert_msg(strncmp(r, "+OK", 3) == 0, "login: %s", r);
  ck_assert_int_eq(c->s.state, SESSION_TRANSACTION);
}

/* ---- Tests -------------------------------------------------------------- */

START_TEST(greeting_and_capa) {
  struct test_conn c;
  conn_open(&c, "127.0.0.1");
  ck_assert_str_eq(c.out, "+OK popkit ready.\r\n");
  const char *r = say(&c, "CAPA\r\n");
  ck_assert(strncmp(r, "+OK", 3) == 0);
  const char *want[] = {"\r\nTOP\r\n",          "\r\nUSER\r\n",
                        "\r\nUIDL\r\n",         "\r\nPIPELINING\r\n",
                        "\r\nRESP-CODES\r\n",   "\r\nAUTH-RESP-CODE\r\n",
                        "\r\nEXPIRE NEVER\r\n", "\r\nIMPLEMENTATION popkit"};
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
    ck_assert_msg(strstr(r, want[i]) != NULL, "CAPA lacks %s", want[i]);
  ck_assert(strstr(r, "\r\n.\r\n") != NULL);
  conn_free(&c);
}
END_TEST

START_TEST(non_loopback_refuses_plaintext) {
  struct test_conn c;
  conn_open(&c, "192.0.2.7");
  const char *r = say(&c, "CAPA\r\n");
  ck_assert(strstr(r, "\r\nUSER\r\n") == NULL);
  r = say(&c, "USER ana\r\n");
  ck_assert_msg(strncmp(r, "-ERR [AUTH]", 11) == 0, "%s", r);
  r = say(&c, "PASS secret\r\n");
  ck_assert(strncmp(r, "-ERR", 4) == 0);
  ck_assert_int_eq(c.s.state, SESSION_AUTHORIZATION);
  conn_free(&c);
}
END_TEST

START_TEST(wrong_password_and_unknown_user) {
  struct test_conn c;
  conn_open(&c, "127.0.0.1");
  say(&c, "USER ana\r\n");
  const char *r = say(&c, "PASS wrong\r\n");
  ck_assert_str_eq(r, "-ERR [AUTH] Authentication failed.\r\n");
  say(&c, "USER nobody\r\n");
  r = say(&c, "PASS x\r\n");
  ck_assert_str_eq(r, "-ERR [AUTH] Authentication failed.\r\n");
  r = say(&c, "PASS secret\r\n");
  ck_assert_msg(strncmp(r, "-ERR", 4) == 0, "PASS without USER after a failure: %s", r);
  login(&c);
  conn_free(&c);
}
END_TEST

START_TEST(stat_list_uidl_retr_top) {
  struct test_conn c;
  conn_open(&c, "127.0.0.1");
  login(&c);
  /* Sizes of the CRLF forms: 34, 34 (a final CRLF added), 32. */
  ck_assert_str_eq(say(&c, "STAT\r\n"), "+OK 3 100\r\n");
  ck_assert_str_eq(say(&c, "LIST\r\n"),
                   "+OK 3 messages (100 octets)\r\n1 34\r\n2 34\r\n3 32\r\n.\r\n");
  ck_assert_str_eq(say(&c, "LIST 2\r\n"), "+OK 2 34\r\n");
  ck_assert_str_eq(say(&c, "UIDL 1\r\n"), "+OK 1 1000.a.host\r\n");
  const char *r = say(&c, "UIDL\r\n");
  ck_assert_str_eq(r,
                   "+OK Unique-ID listing follows.\r\n1 1000.a.host\r\n2 1001.b.host\r\n"
                   "3 1002.c.host\r\n.\r\n");
  ck_assert_str_eq(
      say(&c, "RETR 1\r\n"),
      "+OK 34 octets\r\nSubject: one\r\n\r\nHello\r\n..\r\n...\r\n..x\r\n.\r\n");
  ck_assert_str_eq(say(&c, "RETR 2\r\n"),
                   "+OK 34 octets\r\nSubject: two\r\n\r\nno final newline\r\n.\r\n");
  ck_assert_str_eq(say(&c, "TOP 1 0\r\n"),
                   "+OK Top of message follows.\r\nSubject: one\r\n\r\n.\r\n");
  ck_assert_str_eq(
      say(&c, "top 1 2\r\n"),
      "+OK Top of message follows.\r\nSubject: one\r\n\r\nHello\r\n..\r\n.\r\n");
  conn_free(&c);
}
END_TEST

/* A message the store cannot read (here: its file went away after the
 * listing) gets an -ERR before any +OK, and the session goes on. */
START_TEST(unreadable_message_gets_err_and_session_goes_on) {
  struct test_conn c;
  conn_open(&c, "127.0.0.1");
  login(&c);
  char command[512];
  snprintf(command, sizeof command,
           "rm -f %s/mail/ana/new/1000.a.host* %s/mail/ana/cur/1000.a.host*", fx.dir,
           fx.dir);
  ck_assert_int_eq(system(command), 0);
  const char *r = say(&c, "RETR 1\r\n");
  ck_assert_msg(strncmp(r, "-ERR [SYS/", 10) == 0, "RETR of a vanished message: %s", r);
  r = say(&c, "TOP 1 0\r\n");
  ck_assert_msg(strncmp(r, "-ERR [SYS/", 10) == 0, "TOP of a vanished message: %s", r);
  ck_assert_str_eq(say(&c, "RETR 2\r\n"),
                   "+OK 34 octets\r\nSubject: two\r\n\r\nno final newline\r\n.\r\n");
  conn_free(&c);
}
END_TEST

START_TEST(bad_arguments) {
  struct test_conn c;
  conn_open(&c, "127.0.0.1");
  login(&c);
  const char *bad[] = {"RETR\r\n",
                       "RETR 0\r\n",
                       "RETR -1\r\n",
                       "RETR abc\r\n",
                       "RETR 1x\r\n",
                       "RETR 4\r\n",
                       "RETR 99999999999999999999999\r\n",
                       "RETR 18446744073709551616\r\n",
                       "TOP 1\r\n",
                       "TOP 1 -1\r\n",
                       "TOP 1 x\r\n",
                       "LIST 1 2\r\n",
                       "DELE\r\n",
                       "STAT 1\r\n",
                       "XYZZY\r\n",
                       "USER ana\r\n",
                       "\r\n"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    c.s.bad_commands = 0; /* this test is about each answer, not the limit */
    const char *r = say(&c, bad[i]);
    ck_assert_msg(strncmp(r, "-ERR ", 5) == 0, "%s got %s", bad[i], r);
    ck_assert_int_eq(c.s.state, SESSION_TRANSACTION);
  }
  ck_assert_str_eq(say(&c, "DELE 2\r\n"), "+OK Message 2 marked to be deleted.\r\n");
  const char *after_dele[] = {"DELE 2\r\n", "RETR 2\r\n", "LIST 2\r\n", "TOP 2 0\r\n",
                              "UIDL 2\r\n"};
  for (size_t i = 0; i < sizeof after_dele / sizeof after_dele[0]; i++) {
    c.s.bad_commands = 0;
    const char *r = say(&c, after_dele[i]);
    ck_assert_msg(strstr(r, "-ERR Message 2 is deleted.") == r, "%s got %s",
                  after_dele[i], r);
  }
  ck_assert_str_eq(say(&c, "STAT\r\n"), "+OK 2 66\r\n");
  ck_assert(strncmp(say(&c, "RSET\r\n"), "+OK", 3) == 0);
  ck_assert_str_eq(say(&c, "STAT\r\n"), "+OK 3 100\r\n");
  conn_free(&c);
}
END_TEST

START_TEST(commands_in_the_wrong_state) {
  struct test_conn c;
  conn_open(&c, "127.0.0.1");
  const char *before[] = {"STAT\r\n", "LIST\r\n", "RETR 1\r\n", "DELE 1\r\n", "NOOP\r\n"};
  for (size_t i = 0; i < sizeof before / sizeof before[0]; i++) {
    c.s.bad_commands = 0;
    ck_assert(strncmp(say(&c, before[i]), "-ERR", 4) == 0);
  }
  conn_free(&c);
}
END_TEST

START_TEST(too_many_bad_commands_close) {
  struct test_conn c;
  conn_open(&c, "127.0.0.1");
  for (int i = 0; i < 4; i++)
    ck_assert_str_eq(say(&c, "BOGUS\r\n"), "-ERR Unknown command.\r\n");
  ck_assert(!c.close_requested);
  ck_assert_str_eq(say(&c, "BOGUS\r\n"),
                   "-ERR Too many bad commands, closing connection.\r\n");
  ck_assert(c.close_requested);
  conn_free(&c);
}
END_TEST

START_TEST(good_command_resets_error_count) {
  struct test_conn c;
  conn_open(&c, "127.0.0.1");
  for (int round = 0; round < 3; round++) {
    for (int i = 0; i < 4; i++)
      say(&c, "BOGUS\r\n");
    ck_assert(strncmp(say(&c, "CAPA\r\n"), "+OK", 3) == 0);
  }
  ck_assert(!c.close_requested);
  conn_free(&c);
}
END_TEST

START_TEST(long_line_is_refused_and_session_goes_on) {
  struct test_conn c;
  conn_open(&c, "127.0.0.1");
  char line[2000];
  memset(line, 'A', sizeof line);
  memcpy(line + sizeof line - 3, "\r\n", 3);
  const char *r = say(&c, line);
  ck_assert_msg(strncmp(r, "-ERR Line too long", 18) == 0, "%s", r);
  ck_assert(strstr(r + 4, "-ERR") == NULL); /* reported once */
  ck_assert(strncmp(say(&c, "CAPA\r\n"), "+OK", 3) == 0);
  conn_free(&c);
}
END_TEST

START_TEST(pipelined_commands_answer_in_order) {
  struct test_conn c;
  conn_open(&c, "127.0.0.1");
  const char *r = say(&c, "USER ana\r\nPASS secret\r\nSTAT\r\nLIST 3\r\nNOOP\r\n");
  const char *stat = strstr(r, "+OK 3 100\r\n");
  const char *list = strstr(r, "+OK 3 32\r\n");
  const char *noop = strstr(r, "+OK Still here.\r\n");
  ck_assert(stat != NULL && list != NULL && noop != NULL);
  ck_assert(stat < list && list < noop);
  conn_free(&c);
}
END_TEST

START_TEST(quit_deletes_exactly_the_marked) {
  struct test_conn c;
  conn_open(&c, "127.0.0.1");
  login(&c);
  say(&c, "DELE 1\r\n");
  say(&c, "DELE 3\r\n");
  const char *r = say(&c, "QUIT\r\n");
  ck_assert_str_eq(r, "+OK Logging out, 2 messages deleted.\r\n");
  ck_assert(c.close_requested);
  ck_assert_int_eq(count_messages("ana"), 1);
  conn_free(&c);
  /* What is left is message 2. */
  conn_open(&c, "127.0.0.1");
  login(&c);
  ck_assert_str_eq(say(&c, "UIDL\r\n"),
                   "+OK Unique-ID listing follows.\r\n1 1001.b.host\r\n.\r\n");
  conn_free(&c);
}
END_TEST

START_TEST(dropped_connection_deletes_nothing) {
  struct test_conn c;
  conn_open(&c, "127.0.0.1");
  login(&c);
  say(&c, "DELE 1\r\n");
  say(&c, "DELE 2\r\n");
  conn_free(&c); /* the socket went away without QUIT */
  ck_assert_int_eq(count_messages("ana"), 3);
}
END_TEST

START_TEST(second_session_gets_in_use) {
  struct test_conn a, b;
  conn_open(&a, "127.0.0.1");
  login(&a);
  conn_open(&b, "127.0.0.1");
  say(&b, "USER ana\r\n");
  const char *r = say(&b, "PASS secret\r\n");
  ck_assert_msg(strncmp(r, "-ERR [IN-USE]", 13) == 0, "%s", r);
  ck_assert_int_eq(b.s.state, SESSION_AUTHORIZATION);
  say(&a, "QUIT\r\n");
  conn_free(&a);
  login(&b);
  conn_free(&b);
}
END_TEST

START_TEST(eof_after_quit_still_commits) {
  struct test_conn c;
  conn_open(&c, "127.0.0.1");
  /* A script that writes everything and shuts its side at once. */
  say(&c, "USER ana\r\nPASS secret\r\nDELE 2\r\nQUIT\r\n");
  session_input_eof(&c.s);
  settle(&c);
  ck_assert(strstr(c.out, "+OK Logging out, 1 messages deleted.") != NULL);
  conn_free(&c);
  ck_assert_int_eq(count_messages("ana"), 2);
}
END_TEST

START_TEST(retr_pauses_at_the_high_water_mark) {
  /* A 1 MB message and a client that reads nothing: output stops growing
   * near the high-water mark instead of holding the whole message. */
  char *big = malloc(1 << 20);
  for (size_t i = 0; i < (1 << 20); i++)
    big[i] = (i % 64 == 63) ? '\n' : 'x';
  big[(1 << 20) - 1] = '\0';
  add_message("bob", "2000.big.host", big);
  struct test_conn c;
  conn_open(&c, "127.0.0.1");
  say(&c, "USER bob\r\n");
  say(&c, "PASS bobpw\r\n");
  const char *in = "RETR 1\r\n";
  size_t space;
  memcpy(session_input_space(&c.s, &space), in, strlen(in));
  session_input_received(&c.s, strlen(in));
  size_t hwm = fx.config->limits.output_buffer_bytes;
  for (int i = 0; i < 200; i++) {
    uv_run(&fx.loop, UV_RUN_NOWAIT);
    ck_assert_uint_le(outbuf_pending(&c.s.out), hwm + OUTBUF_BLOCK_SIZE);
  }
  ck_assert_int_eq(c.s.state, SESSION_SENDING);
  settle(&c); /* now the client reads */
  ck_assert_int_eq(c.s.state, SESSION_TRANSACTION);
  ck_assert(c.out_len > (1 << 20));
  ck_assert(strcmp(c.out + c.out_len - 5, "\r\n.\r\n") == 0);
  conn_free(&c);
  free(big);
}
END_TEST

/* The APOP digest: MD5 of the greeting's timestamp and the secret. */
static void apop_digest(const char *greeting, const char *secret, char hex[33]) {
  const char *lt = strchr(greeting, '<');
  const char *gt = strchr(greeting, '>');
  ck_assert(lt != NULL && gt != NULL && lt < gt);
  char text[256];
  int n = snprintf(text, sizeof text, "%.*s%s", (int)(gt - lt + 1), lt, secret);
  unsigned char md5[16];
  ck_assert_int_eq(gnutls_hash_fast(GNUTLS_DIG_MD5, text, (size_t)n, md5), 0);
  for (int i = 0; i < 16; i++)
    sprintf(hex + 2 * i, "%02x", md5[i]);
}

START_TEST(apop_logs_in_with_the_digest) {
  struct test_conn c;
  conn_open(&c, "127.0.0.1");
  ck_assert_msg(strncmp(c.out, "+OK popkit ready. <", 19) == 0, "%s", c.out);
  char digest[33];
  apop_digest(c.out, "wrong", digest);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "APOP ana %s\r\n", digest);
  ck_assert_str_eq(say(&c, cmd), "-ERR [AUTH] Authentication failed.\r\n");
  apop_digest(c.out, "secret", digest);
  snprintf(cmd, sizeof cmd, "APOP ana %s\r\n", digest);
  const char *r = say(&c, cmd);
  ck_assert_msg(strncmp(r, "+OK", 3) == 0, "%s", r);
  ck_assert_int_eq(c.s.state, SESSION_TRANSACTION);
  conn_free(&c);
}
END_TEST

START_TEST(apop_is_refused_when_not_enabled) {
  struct test_conn c;
  conn_open(&c, "127.0.0.1");
  ck_assert_str_eq(c.out, "+OK popkit ready.\r\n");
  ck_assert(
      strncmp(say(&c, "APOP ana 0123456789abcdef0123456789abcdef\r\n"), "-ERR", 4) == 0);
  conn_free(&c);
}
END_TEST

/* ---- TLS, AUTH and the login guard --------------------------------------- */

START_TEST(stls_drops_what_was_pipelined_in_clear) {
  struct test_conn c;
  conn_open(&c, "127.0.0.1");
  c.s.tls_offered = true;
  ck_assert(strstr(say(&c, "CAPA\r\n"), "\r\nSTLS\r\n") != NULL);
  ck_assert_str_eq(say(&c, "USER ana\r\nSTLS\r\nPASS secret\r\nCAPA\r\n"),
                   "+OK Send PASS.\r\n+OK Begin TLS negotiation now.\r\n");
  ck_assert(c.tls_started);
  ck_assert_int_eq(c.s.state, SESSION_TLS_WAIT);
  session_tls_ready(&c.s, "test");
  ck_assert(c.s.secured);
  ck_assert_int_eq(c.s.state, SESSION_AUTHORIZATION);
  /* USER from before TLS is forgotten (RFC 2595 section 4). */
  ck_assert_str_eq(say(&c, "PASS secret\r\n"), "-ERR Send USER first.\r\n");
  const char *capa = say(&c, "CAPA\r\n");
  ck_assert(strstr(capa, "STLS") == NULL);
  ck_assert_str_eq(say(&c, "STLS\r\n"), "-ERR TLS is already active.\r\n");
  conn_free(&c);
}
END_TEST

START_TEST(plaintext_mechanisms_hidden_where_not_allowed) {
  struct test_conn c;
  conn_open(&c, "192.0.2.7");
  c.s.tls_offered = true;
  const char *capa = say(&c, "CAPA\r\n");
  ck_assert_msg(strstr(capa, "\r\nSASL SCRAM-SHA-256\r\n") != NULL, "%s", capa);
  ck_assert(strstr(capa, "USER") == NULL && strstr(capa, "PLAIN") == NULL);
  ck_assert_str_eq(say(&c, "AUTH PLAIN AGFuYQBzZWNyZXQ=\r\n"),
                   "-ERR [AUTH] Plaintext authentication is not allowed without TLS: "
                   "send STLS first.\r\n");
  ck_assert_str_eq(say(&c, "AUTH\r\n"),
                   "+OK Methods supported:\r\nSCRAM-SHA-256\r\n.\r\n");
  conn_free(&c);
}
END_TEST

START_TEST(auth_plain_with_and_without_initial_response) {
  struct test_conn c;
  conn_open(&c, "127.0.0.1");
  /* "\0ana\0wrong", then "\0ana\0secret" as a continuation. */
  ck_assert_str_eq(say(&c, "AUTH PLAIN AGFuYQB3cm9uZw==\r\n"),
                   "-ERR [AUTH] Authentication failed.\r\n");
  ck_assert_str_eq(say(&c, "AUTH PLAIN\r\n"), "+ \r\n");
  ck_assert_int_eq(c.s.state, SESSION_SASL);
  const char *r = say(&c, "AGFuYQBzZWNyZXQ=\r\n");
  ck_assert_msg(strncmp(r, "+OK Logged in", 13) == 0, "%s", r);
  ck_assert_int_eq(c.s.state, SESSION_TRANSACTION);
  conn_free(&c);
}
END_TEST

START_TEST(auth_cancel_and_bad_base64) {
  struct test_conn c;
  conn_open(&c, "127.0.0.1");
  ck_assert_str_eq(say(&c, "AUTH LOGIN\r\n"), "+ VXNlcm5hbWU6\r\n");
  ck_assert_str_eq(say(&c, "*\r\n"), "-ERR Authentication canceled.\r\n");
  ck_assert_int_eq(c.s.state, SESSION_AUTHORIZATION);
  ck_assert_str_eq(say(&c, "AUTH PLAIN !!!!\r\n"), "-ERR Invalid base64 data.\r\n");
  ck_assert_str_eq(say(&c, "AUTH CRAM-MD5\r\n"),
                   "-ERR Unknown authentication mechanism.\r\n");
  ck_assert_int_eq(c.s.state, SESSION_AUTHORIZATION);
  ck_assert_ptr_null(c.s.sasl);
  conn_free(&c);
}
END_TEST

START_TEST(failed_logins_are_held_back_longer_each_time) {
  struct test_conn c;
  conn_open(&c, "127.0.0.1");
  say(&c, "USER ana\r\n");
  ck_assert_str_eq(say(&c, "PASS wrong\r\n"), "-ERR [AUTH] Authentication failed.\r\n");
  ck_assert_uint_eq(c.last_wait_ms, 100);
  say(&c, "USER ana\r\n");
  ck_assert_str_eq(say(&c, "PASS wrong\r\n"), "-ERR [AUTH] Authentication failed.\r\n");
  ck_assert_uint_eq(c.last_wait_ms, 200);
  say(&c, "USER nobody\r\n");
  ck_assert_str_eq(say(&c, "PASS wrong\r\n"), "-ERR [AUTH] Authentication failed.\r\n");
  ck_assert_uint_eq(c.last_wait_ms, 400);
  say(&c, "USER ana\r\n");
  ck_assert_str_eq(say(&c, "PASS wrong\r\n"), "-ERR [AUTH] Authentication failed.\r\n");
  ck_assert_uint_eq(c.last_wait_ms, 400); /* auth_failure_delay_max_ms */
  /* The fake clock does not move, so the right password also waits out the
   * last penalty before it is checked; then failures are forgotten. */
  login(&c);
  ck_assert_uint_ge(c.waited_ms, 100 + 200 + 400 + 400);
  conn_free(&c);
}
END_TEST

START_TEST(sessions_per_user_are_capped) {
  struct test_conn a, b;
  conn_open(&a, "127.0.0.1");
  login(&a);
  conn_open(&b, "127.0.0.1");
  say(&b, "USER ana\r\n");
  ck_assert_str_eq(say(&b, "PASS secret\r\n"),
                   "-ERR [IN-USE] Too many sessions for this user, try later.\r\n");
  ck_assert_int_eq(b.s.state, SESSION_AUTHORIZATION);
  ck_assert_str_eq(say(&a, "QUIT\r\n"), "+OK Logging out.\r\n");
  conn_free(&a);
  login(&b);
  conn_free(&b);
}
END_TEST

static void setup_guard(void) {
  extra_limits = ", \"exempt_loopback\": false, \"auth_failure_delay_ms\": 100,"
                 " \"auth_failure_delay_max_ms\": 400, \"max_sessions_per_user\": 1";
  setup();
}

int main(void) {
  Suite *s = suite_create("pop3_session");
  TCase *tc = tcase_create("session");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, greeting_and_capa);
  tcase_add_test(tc, non_loopback_refuses_plaintext);
  tcase_add_test(tc, wrong_password_and_unknown_user);
  tcase_add_test(tc, stat_list_uidl_retr_top);
  tcase_add_test(tc, unreadable_message_gets_err_and_session_goes_on);
  tcase_add_test(tc, bad_arguments);
  tcase_add_test(tc, commands_in_the_wrong_state);
  tcase_add_test(tc, too_many_bad_commands_close);
  tcase_add_test(tc, good_command_resets_error_count);
  tcase_add_test(tc, long_line_is_refused_and_session_goes_on);
  tcase_add_test(tc, pipelined_commands_answer_in_order);
  tcase_add_test(tc, quit_deletes_exactly_the_marked);
  tcase_add_test(tc, dropped_connection_deletes_nothing);
  tcase_add_test(tc, second_session_gets_in_use);
  tcase_add_test(tc, eof_after_quit_still_commits);
  tcase_add_test(tc, retr_pauses_at_the_high_water_mark);
  tcase_add_test(tc, apop_is_refused_when_not_enabled);
  suite_add_tcase(s, tc);
  TCase *apop = tcase_create("apop");
  tcase_add_checked_fixture(apop, setup_apop, teardown);
  tcase_add_test(apop, apop_logs_in_with_the_digest);
  suite_add_tcase(s, apop);
  TCase *tls = tcase_create("tls_and_auth");
  tcase_add_checked_fixture(tls, setup, teardown);
  tcase_add_test(tls, stls_drops_what_was_pipelined_in_clear);
  tcase_add_test(tls, plaintext_mechanisms_hidden_where_not_allowed);
  tcase_add_test(tls, auth_plain_with_and_without_initial_response);
  tcase_add_test(tls, auth_cancel_and_bad_base64);
  suite_add_tcase(s, tls);
  TCase *guard = tcase_create("login_guard");
  tcase_add_checked_fixture(guard, setup_guard, teardown);
  tcase_add_test(guard, failed_logins_are_held_back_longer_each_time);
  tcase_add_test(guard, sessions_per_user_are_capped);
  suite_add_tcase(s, guard);
  int failed = check_run(s);
  loader_unload_all();
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
