/*
 * Tests for core/tls.c: the server side of TLS, driven against a GnuTLS
 * client made here, with both directions in memory. The server's push
 * appends to `to_client`, which the client's pull reads; the client's push
 * appends to `to_server`, which the test hands to the server through
 * tls_session_input(), as a connection's read buffer would be.
 *
 * The certificate is a fresh self-signed one, made with openssl once per
 * run in a temporary directory.
 */
#include <check.h>
#include <errno.h>
#include <gnutls/gnutls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check_run.h"
#include "config.h"
#include "tls.h"

static char dir[] = "/tmp/popkit-test-tls-XXXXXX";
static char cert_file[256], key_file[256], other_key_file[256], truncated_file[256],
    missing_file[256];
static char error[1024];

/* ---- Certificates (once per run, in the parent) ------------------------- */

static void run(const char *command) {
  int rc = system(command);
  ck_assert_msg(rc == 0, "failed (%d): %s", rc, command);
}

static void make_certificates(void) {
  ck_assert_ptr_nonnull(mkdtemp(dir));
  snprintf(cert_file, sizeof cert_file, "%s/cert.pem", dir);
  snprintf(key_file, sizeof key_file, "%s/key.pem", dir);
  snprintf(other_key_file, sizeof other_key_file, "%s/other-key.pem", dir);
  snprintf(truncated_file, sizeof truncated_file, "%s/truncated.pem", dir);
  snprintf(missing_file, sizeof missing_file, "%s/missing.pem", dir);
  char command[2048];
  snprintf(command, sizeof command,
           "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
           "-keyout %s -out %s -days 2 -subj /CN=localhost >/dev/null 2>&1",
           key_file, cert_file);
  run(command);
  snprintf(command, sizeof command,
           "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 "
           "-out %s >/dev/null 2>&1",
           other_key_file);
  run(command);
  snprintf(command, sizeof command, "head -c 100 %s > %s", cert_file, truncated_file);
  run(command);
}

static void remove_certificates(void) {
  unlink(cert_file);
  unlink(key_file);
  unlink(other_key_file);
  unlink(truncated_file);
  rmdir(dir);
}

/* ---- Configs and contexts ----------------------------------------------- */

/* A minimal valid config with the given TLS files (priorities may be NULL). */
static struct config *make_config(const char *cert, const char *key,
                                  const char *priorities) {
  char text[2048], prio[256] = "";
  if (priorities != NULL)
    snprintf(prio, sizeof prio, ", \"priorities\": \"%s\"", priorities);
  snprintf(text, sizeof text,
           "{\"listen\": [{\"address\": \"127.0.0.1\", \"port\": 995, \"tls\": "
           "\"implicit\"}],"
           " \"tls\": {\"certificate\": \"%s\", \"key\": \"%s\"%s},"
           " \"auth\": [{\"module\": \"passwd-file\", \"path\": \"users\"}],"
           " \"store\": {\"module\": \"maildir\", \"path\": \"mail/%%u\"}}",
           cert, key, prio);
  struct config *config = NULL;
  int rc = config_load_string(text, "test.json", dir, &config, error, sizeof error);
  ck_assert_msg(rc == 0, "config refused (%d): %s", rc, error);
  return config;
}

/* A context from the test certificate that must load. */
static struct tls_context *make_context(void) {
  struct config *config = make_config(cert_file, key_file, NULL);
  struct tls_context *ctx = NULL;
  error[0] = '\0';
  int rc = tls_context_new(config, &ctx, error, sizeof error);
  ck_assert_msg(rc == 0, "tls_context_new (%d): %s", rc, error);
  ck_assert_ptr_nonnull(ctx);
  config_free(config);
  return ctx;
}

/* Loads a context that must fail; returns the error text. */
static const char *context_error(const char *cert, const char *key,
                                 const char *priorities) {
  struct config *config = make_config(cert, key, priorities);
  struct tls_context *ctx = NULL;
  error[0] = '\0';
  int rc = tls_context_new(config, &ctx, error, sizeof error);
  config_free(config);
  ck_assert_int_lt(rc, 0);
  ck_assert_ptr_null(ctx);
  ck_assert_msg(error[0] != '\0' && strchr(error, '\n') == NULL,
                "expected one line, got \"%s\"", error);
  return error;
}

/* ---- In-memory transport ------------------------------------------------- */

struct pipe {
  char *data;
  size_t len, off, cap;
};

static void pipe_append(struct pipe *p, const void *data, size_t len) {
  if (p->len + len > p->cap) {
    p->cap = (p->len + len) * 2;
    p->data = realloc(p->data, p->cap);
    ck_assert_ptr_nonnull(p->data);
  }
  memcpy(p->data + p->len, data, len);
  p->len += len;
}

/* Forgets what was read; poisons the bytes first, so that a session still
 * pointing into them would see garbage. */
static void pipe_clear(struct pipe *p) {
  if (p->data != NULL)
    memset(p->data, 0xEE, p->len);
  p->len = p->off = 0;
}

struct link {
  struct pipe to_client, to_server;
  gnutls_certificate_credentials_t client_cred;
  gnutls_session_t client;
  struct tls_session *server;
};

static int server_push(void *ctx, const void *data, size_t len) {
  struct link *l = ctx;
  pipe_append(&l->to_client, data, len);
  return 0;
}

static const struct tls_transport server_transport = {.push = server_push};

static ssize_t client_push(gnutls_transport_ptr_t ptr, const void *data, size_t len) {
  struct link *l = ptr;
  pipe_append(&l->to_server, data, len);
  return (ssize_t)len;
}

static ssize_t client_pull(gnutls_transport_ptr_t ptr, void *buf, size_t size) {
  struct link *l = ptr;
  size_t avail = l->to_client.len - l->to_client.off;
  if (avail == 0) {
    gnutls_transport_set_errno(l->client, EAGAIN);
    return -1;
  }
  size_t n = size < avail ? size : avail;
  memcpy(buf, l->to_client.data + l->to_client.off, n);
  l->to_client.off += n;
  if (l->to_client.off == l->to_client.len)
    pipe_clear(&l->to_client);
  return (ssize_t)n;
}

/* A server session on ctx and a client with the given priorities. */
static void link_open(struct link *l, struct tls_context *ctx,
                      const char *client_priorities) {
  memset(l, 0, sizeof *l);
  ck_assert_int_eq(tls_session_new(ctx, &server_transport, l, &l->server), 0);
  ck_assert_int_eq(gnutls_certificate_allocate_credentials(&l->client_cred), 0);
  ck_assert_int_eq(gnutls_init(&l->client, GNUTLS_CLIENT | GNUTLS_NONBLOCK), 0);
  const char *err_pos = NULL;
  int rc = gnutls_priority_set_direct(l->client, client_priorities, &err_pos);
  ck_assert_msg(rc == 0, "client priorities %s: %s", client_priorities,
                gnutls_strerror(rc));
  ck_assert_int_eq(
      gnutls_credentials_set(l->client, GNUTLS_CRD_CERTIFICATE, l->client_cred), 0);
  ck_assert_int_eq(gnutls_server_name_set(l->client, GNUTLS_NAME_DNS, "localhost", 9), 0);
  gnutls_transport_set_ptr(l->client, l);
  gnutls_transport_set_push_function(l->client, client_push);
  gnutls_transport_set_pull_function(l->client, client_pull);
}

static void link_close(struct link *l) {
  tls_session_free(l->server);
  gnutls_deinit(l->client);
  gnutls_certificate_free_credentials(l->client_cred);
  free(l->to_client.data);
  free(l->to_server.data);
}

/* Offers the server what the client sent, runs `op`, keeps what is left. */
#define WITH_INPUT(l, op)                                                                \
  do {                                                                                   \
    tls_session_input((l)->server, (l)->to_server.data, (l)->to_server.len);             \
    op;                                                                                  \
    ck_assert_int_eq(tls_session_input_end((l)->server), 0);                             \
    pipe_clear(&(l)->to_server);                                                         \
  } while (0)

/* Runs both handshakes until both are done or one fails. Returns the
 * server's last result; *client_rc_r gets the client's. */
static int link_handshake(struct link *l, int *client_rc_r) {
  int crc = GNUTLS_E_AGAIN, src = -EAGAIN;
  for (int round = 0; round < 50 && (crc != 0 || src != 0); round++) {
    if (crc != 0) {
      crc = gnutls_handshake(l->client);
      if (crc < 0 && gnutls_error_is_fatal(crc))
        break;
    }
    if (src != 0) {
      WITH_INPUT(l, src = tls_session_handshake(l->server));
      if (src != 0 && src != -EAGAIN)
        break;
    }
  }
  if (client_rc_r != NULL)
    *client_rc_r = crc;
  return src;
}

static void link_handshake_ok(struct link *l) {
  int crc;
  int src = link_handshake(l, &crc);
  ck_assert_msg(crc == 0, "client handshake: %s", gnutls_strerror(crc));
  ck_assert_msg(src == 0, "server handshake (%d): %s", src, tls_session_error(l->server));
}

/* ---- Tests --------------------------------------------------------------- */

START_TEST(handshake_and_data_both_ways) {
  struct tls_context *ctx = make_context();
  struct link l;
  link_open(&l, ctx, "NORMAL");
  link_handshake_ok(&l);

  char desc[128];
  tls_session_describe(l.server, desc, sizeof desc);
  ck_assert_msg(strstr(desc, "TLS1.3") != NULL, "describe: %s", desc);

  /* 100 KB from the server, byte-exact at the client. */
  size_t total = 100 * 1024;
  char *data = malloc(total), *got = malloc(total);
  for (size_t i = 0; i < total; i++)
    data[i] = (char)(i * 7 + i / 251);
  ck_assert_int_eq(tls_session_send(l.server, data, total), (ssize_t)total);
  size_t seen = 0;
  while (seen < total) {
    ssize_t n = gnutls_record_recv(l.client, got + seen, total - seen);
    /* A session ticket from the server comes first: GnuTLS takes it and
     * says "again". */
    if (n == GNUTLS_E_AGAIN && l.to_client.len > l.to_client.off)
      continue;
    ck_assert_msg(n > 0, "client recv after %zu bytes: %s", seen,
                  gnutls_strerror((int)n));
    seen += (size_t)n;
  }
  ck_assert_int_eq(memcmp(got, data, total), 0);
  free(data);
  free(got);

  /* A command from the client. */
  ck_assert_int_eq(gnutls_record_send(l.client, "CAPA\r\n", 6), 6);
  char buf[64];
  ssize_t n;
  WITH_INPUT(&l, n = tls_session_recv(l.server, buf, sizeof buf));
  ck_assert_int_eq(n, 6);
  ck_assert_int_eq(memcmp(buf, "CAPA\r\n", 6), 0);
  WITH_INPUT(&l, n = tls_session_recv(l.server, buf, sizeof buf));
  ck_assert_int_eq(n, -EAGAIN);

  link_close(&l);
  tls_context_unref(ctx);
}
END_TEST

START_TEST(unread_input_is_kept_for_later) {
  struct tls_context *ctx = make_context();
  struct link l;
  link_open(&l, ctx, "NORMAL");
  link_handshake_ok(&l);

  static const char first[] = "USER alice\r\n", second[] = "PASS secret-password\r\n";
  char expected[sizeof first + sizeof second];
  snprintf(expected, sizeof expected, "%s%s", first, second);
  size_t expected_len = strlen(expected);
  ck_assert_int_eq(gnutls_record_send(l.client, first, strlen(first)), strlen(first));
  ck_assert_int_eq(gnutls_record_send(l.client, second, strlen(second)), strlen(second));

  /* Both records in one window, but the reader takes 4 bytes and stops (its
   * line buffer is full). input_end must copy the rest: pipe_clear poisons
   * the window's bytes. */
  char got[128];
  size_t seen = 0;
  ssize_t n;
  WITH_INPUT(&l, n = tls_session_recv(l.server, got, 4));
  ck_assert_int_eq(n, 4);
  seen += 4;
  ck_assert(tls_session_has_input(l.server));

  /* Later reads, with no new input, get every byte. */
  for (int i = 0; i < 100 && tls_session_has_input(l.server); i++) {
    n = tls_session_recv(l.server, got + seen,
                         sizeof got - seen < 5 ? sizeof got - seen : 5);
    ck_assert_msg(n > 0, "recv after %zu bytes: %zd", seen, n);
    seen += (size_t)n;
  }
  ck_assert_uint_eq(seen, expected_len);
  ck_assert_int_eq(memcmp(got, expected, expected_len), 0);
  ck_assert(!tls_session_has_input(l.server));
  ck_assert_int_eq(tls_session_recv(l.server, got, sizeof got), -EAGAIN);

  link_close(&l);
  tls_context_unref(ctx);
}
END_TEST

START_TEST(recv_returns_zero_at_close_notify) {
  struct tls_context *ctx = make_context();
  struct link l;
  link_open(&l, ctx, "NORMAL");
  link_handshake_ok(&l);

  ck_assert_int_eq(gnutls_bye(l.client, GNUTLS_SHUT_WR), 0);
  ck_assert_uint_gt(l.to_server.len, 0);
  char buf[64];
  ssize_t n;
  WITH_INPUT(&l, n = tls_session_recv(l.server, buf, sizeof buf));
  ck_assert_int_eq(n, 0);

  link_close(&l);
  tls_context_unref(ctx);
}
END_TEST

/* A TLS 1.3 KeyUpdate followed by a command in the same read: the command
 * comes out of one tls_session_recv, which does not stop at the handled
 * post-handshake message (the connection would wait for bytes it already
 * has). */
START_TEST(command_behind_a_key_update_is_read) {
  struct tls_context *ctx = make_context();
  struct link l;
  link_open(&l, ctx, "NORMAL");
  link_handshake_ok(&l);

  ck_assert_int_eq(gnutls_session_key_update(l.client, 0), 0);
  ck_assert_int_eq(gnutls_record_send(l.client, "STAT\r\n", 6), 6);
  char buf[64];
  ssize_t n;
  WITH_INPUT(&l, n = tls_session_recv(l.server, buf, sizeof buf));
  ck_assert_int_eq(n, 6);
  ck_assert(memcmp(buf, "STAT\r\n", 6) == 0);

  link_close(&l);
  tls_context_unref(ctx);
}
END_TEST

START_TEST(missing_certificate_is_named) {
  const char *e = context_error(missing_file, key_file, NULL);
  ck_assert_msg(strstr(e, missing_file) != NULL, "error: %s", e);
  ck_assert_msg(strstr(e, "test.json: $.tls") == e, "error: %s", e);
}
END_TEST

START_TEST(key_not_matching_certificate_fails) {
  const char *e = context_error(cert_file, other_key_file, NULL);
  ck_assert_msg(strstr(e, "test.json: $.tls") == e, "error: %s", e);
  ck_assert_msg(strstr(e, other_key_file) != NULL, "error: %s", e);
}
END_TEST

START_TEST(bad_priorities_fail) {
  const char *e = context_error(cert_file, key_file, "NORMAL:+NO-SUCH-THING");
  ck_assert_msg(strstr(e, "$.tls.priorities") != NULL, "error: %s", e);
}
END_TEST

START_TEST(truncated_certificate_is_named) {
  const char *e = context_error(truncated_file, key_file, NULL);
  ck_assert_msg(strstr(e, truncated_file) != NULL, "error: %s", e);
}
END_TEST

START_TEST(tls12_client_is_accepted) {
  struct tls_context *ctx = make_context();
  struct link l;
  link_open(&l, ctx, "NORMAL:-VERS-ALL:+VERS-TLS1.2");
  link_handshake_ok(&l);
  char desc[128];
  tls_session_describe(l.server, desc, sizeof desc);
  ck_assert_msg(strstr(desc, "TLS1.2") != NULL, "describe: %s", desc);

  /* Data flows on it too. */
  ck_assert_int_eq(gnutls_record_send(l.client, "STLS\r\n", 6), 6);
  char buf[64];
  ssize_t n;
  WITH_INPUT(&l, n = tls_session_recv(l.server, buf, sizeof buf));
  ck_assert_int_eq(n, 6);
  ck_assert_int_eq(memcmp(buf, "STLS\r\n", 6), 0);

  link_close(&l);
  tls_context_unref(ctx);
}
END_TEST

START_TEST(tls11_client_is_refused) {
  struct tls_context *ctx = make_context();
  struct link l;
  link_open(&l, ctx, "NORMAL:-VERS-ALL:+VERS-TLS1.1");
  int crc;
  int src = link_handshake(&l, &crc);
  ck_assert_int_eq(src, -EPROTO);
  const char *e = tls_session_error(l.server);
  ck_assert_ptr_nonnull(e);
  ck_assert_msg(e[0] != '\0', "empty error");
  ck_assert_int_ne(crc, 0);
  link_close(&l);
  tls_context_unref(ctx);
}
END_TEST

START_TEST(store_old_generation_lives_until_unref) {
  struct tls_store store;
  struct tls_context *first = make_context();
  tls_store_init(&store, first); /* the store takes this reference */

  struct tls_context *old = tls_store_acquire(&store);
  ck_assert_ptr_eq(old, first);

  struct tls_context *second = make_context();
  tls_store_replace(&store, second); /* as SIGHUP would */
  struct tls_context *now = tls_store_acquire(&store);
  ck_assert_ptr_eq(now, second);
  ck_assert_ptr_ne(now, old);

  /* A connection that took `old` before the reload still gets sessions. */
  struct link l;
  link_open(&l, old, "NORMAL");
  tls_context_unref(old); /* the session holds its own reference */
  link_handshake_ok(&l);
  ck_assert_int_eq(gnutls_record_send(l.client, "NOOP\r\n", 6), 6);
  char buf[64];
  ssize_t n;
  WITH_INPUT(&l, n = tls_session_recv(l.server, buf, sizeof buf));
  ck_assert_int_eq(n, 6);
  link_close(&l);

  /* And one on the new generation. */
  link_open(&l, now, "NORMAL");
  link_handshake_ok(&l);
  link_close(&l);

  tls_context_unref(now);
  tls_store_destroy(&store);
  ck_assert_ptr_null(store.current);
}
END_TEST

static Suite *tls_suite(void) {
  Suite *s = suite_create("tls");
  TCase *tc = tcase_create("core");
  tcase_add_unchecked_fixture(tc, make_certificates, remove_certificates);
  tcase_add_test(tc, handshake_and_data_both_ways);
  tcase_add_test(tc, unread_input_is_kept_for_later);
  tcase_add_test(tc, recv_returns_zero_at_close_notify);
  tcase_add_test(tc, command_behind_a_key_update_is_read);
  tcase_add_test(tc, missing_certificate_is_named);
  tcase_add_test(tc, key_not_matching_certificate_fails);
  tcase_add_test(tc, bad_priorities_fail);
  tcase_add_test(tc, truncated_certificate_is_named);
  tcase_add_test(tc, tls12_client_is_accepted);
  tcase_add_test(tc, tls11_client_is_refused);
  tcase_add_test(tc, store_old_generation_lives_until_unref);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return check_run(tls_suite()) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
