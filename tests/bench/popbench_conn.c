#include "popbench_conn.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Large reads keep the per-read cost small next to the bytes: on loopback
 * a RETR stream fills this in one read. One buffer serves every
 * connection (see the header). */
#define READ_BUFFER_BYTES (256 * 1024)
/* Plaintext out of GnuTLS: a record is at most 16 KiB. */
#define PLAIN_BUFFER_BYTES (64 * 1024)

static char read_buffer[READ_BUFFER_BYTES];
static char plain_buffer[PLAIN_BUFFER_BYTES];

#define TLS_PRIORITIES                                                                   \
  "NORMAL:-GROUP-ALL:+GROUP-X25519:+GROUP-SECP256R1:+GROUP-SECP384R1:+GROUP-SECP521R1:"  \
  "-CIPHER-ALL:+AES-128-GCM:+CHACHA20-POLY1305:+AES-256-GCM:+AES-128-CCM:+AES-256-CCM:"  \
  "+AES-128-CBC:+AES-256-CBC"

static gnutls_certificate_credentials_t tls_credentials;
static gnutls_priority_t tls_priorities;
static char tls_server_name[64];
/* The server certificate (DER) of the first handshake whose chain and name
 * verified. A later handshake that presents the same bytes is not verified
 * again: nothing about a certificate changes between sessions of one run,
 * and verifying costs the load generator about a fifth of a handshake, CPU
 * the server under test then lacks on a small machine. GnuTLS still checks
 * at every handshake that the server holds the certificate's key (TLS
 * 1.3's CertificateVerify). */
static gnutls_datum_t verified_certificate;

struct write_req {
  uv_write_t req;
  struct conn *conn;
  size_t len;
  char data[];
};

/* ---- TLS setup ---------------------------------------------------------- */

int conn_tls_setup(const char *cafile, const char *host, char *error, size_t error_size) {
  int rc = gnutls_certificate_allocate_credentials(&tls_credentials);
  if (rc < 0) {
    snprintf(error, error_size, "TLS: %s", gnutls_strerror(rc));
    return -EINVAL;
  }
  rc = gnutls_certificate_set_x509_trust_file(tls_credentials, cafile,
                                              GNUTLS_X509_FMT_PEM);
  if (rc <= 0) {
    snprintf(error, error_size, "--cafile %s: %s", cafile,
             rc == 0 ? "no PEM certificate in it" : gnutls_strerror(rc));
    conn_tls_cleanup();
    return -EINVAL;
  }
  /* GnuTLS's defaults, except for two orders, where this client does what
   * NSS (Thunderbird, Firefox) and Chrome do: X25519 comes first (GnuTLS
   * alone puts P-256 first), and so does AES-128-GCM (TLS 1.3's
   * TLS_AES_128_GCM_SHA256, where GnuTLS and OpenSSL put AES-256 first). Both
   * servers follow the client's order, so both get the same suite. */
  rc = gnutls_priority_init(&tls_priorities, TLS_PRIORITIES, NULL);
  if (rc < 0) {
    snprintf(error, error_size, "TLS priorities: %s", gnutls_strerror(rc));
    conn_tls_cleanup();
    return -EINVAL;
  }
  snprintf(tls_server_name, sizeof tls_server_name, "%s", host);
  return 0;
}

void conn_tls_cleanup(void) {
  free(verified_certificate.data);
  verified_certificate.data = NULL;
  verified_certificate.size = 0;
  if (tls_credentials != NULL)
    gnutls_certificate_free_credentials(tls_credentials);
  if (tls_priorities != NULL)
    gnutls_priority_deinit(tls_priorities);
  tls_credentials = NULL;
  tls_priorities = NULL;
}

/* ---- Closing and failing ------------------------------------------------ */

static void on_closed(uv_handle_t *h) {
  struct conn *c = h->data;
  if (c->tls != NULL)
    gnutls_deinit(c->tls);
  c->tls = NULL;
  c->handshaking = false;
  c->state = CONN_CLOSED;
  c->events->closed(c);
}

void conn_close(struct conn *c) {
  if (c->state != CONN_OPEN)
    return;
  c->state = CONN_CLOSING;
  uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void fail(struct conn *c, const char *what, const char *detail) {
  if (c->state != CONN_OPEN)
    return;
  conn_close(c);
  c->events->failed(c, what, detail);
}

/* ---- Writing ------------------------------------------------------------ */

static void on_write(uv_write_t *req, int status) {
  struct write_req *w = (struct write_req *)req;
  struct conn *c = w->conn;
  /* A queued copy may hold PASS. */
  explicit_bzero(w->data, w->len);
  free(w);
  c->writes_queued--;
  if (status < 0 && status != UV_ECANCELED)
    fail(c, "write", uv_strerror(status));
}

/* Bytes onto the socket: written now, or copied and queued behind what is
 * already queued. Returns 0 or a libuv error. */
static int write_raw(struct conn *c, const char *data, size_t len) {
  size_t done = 0;
  if (c->writes_queued == 0) {
    uv_buf_t buf = uv_buf_init((char *)data, (unsigned)len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &buf, 1);
    if (n < 0 && n != UV_EAGAIN)
      return n;
    done = n > 0 ? (size_t)n : 0;
    if (done == len)
      return 0;
  }
  size_t rest = len - done;
  struct write_req *w = malloc(sizeof *w + rest);
  if (w == NULL)
    return UV_ENOMEM;
  w->conn = c;
  w->len = rest;
  memcpy(w->data, data + done, rest);
  uv_buf_t buf = uv_buf_init(w->data, (unsigned)rest);
  int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, on_write);
  if (rc < 0) {
    explicit_bzero(w->data, rest);
    free(w);
    return rc;
  }
  c->writes_queued++;
  return 0;
}

void conn_send(struct conn *c, const void *data, size_t len) {
  if (c->state != CONN_OPEN)
    return;
  if (c->tls == NULL) {
    int rc = write_raw(c, data, len);
    if (rc < 0)
      fail(c, "write", uv_strerror(rc));
    return;
  }
  size_t done = 0;
  while (done < len && c->state == CONN_OPEN) {
    ssize_t n = gnutls_record_send(c->tls, (const char *)data + done, len - done);
    if (n == GNUTLS_E_INTERRUPTED)
      continue;
    if (n <= 0) {
      fail(c, "TLS send", gnutls_strerror(n < 0 ? (int)n : GNUTLS_E_INTERNAL_ERROR));
      return;
    }
    done += (size_t)n;
  }
}

/* ---- TLS transport ------------------------------------------------------ */

static ssize_t tls_pull(gnutls_transport_ptr_t ptr, void *buf, size_t size) {
  struct conn *c = ptr;
  if (c->window_len == 0) {
    c->starved = true;
    gnutls_transport_set_errno(c->tls, EAGAIN);
    return -1;
  }
  size_t n = size < c->window_len ? size : c->window_len;
  memcpy(buf, c->window, n);
  c->window += n;
  c->window_len -= n;
  return (ssize_t)n;
}

/* The push function takes every byte (what the socket refuses is queued),
 * so GnuTLS never has a half-sent record to resume. */
static ssize_t tls_push(gnutls_transport_ptr_t ptr, const void *data, size_t len) {
  struct conn *c = ptr;
  int rc = write_raw(c, data, len);
  if (rc < 0) {
    gnutls_transport_set_errno(c->tls, EPIPE);
    return -1;
  }
  return (ssize_t)len;
}

/* GnuTLS's verify callback: the certificate must chain to --cafile and
 * name the address dialed, unless it is byte for byte the one that did. */
static int verify_server_certificate(gnutls_session_t session) {
  struct conn *c = gnutls_transport_get_ptr(session);
  unsigned count = 0;
  const gnutls_datum_t *chain = gnutls_certificate_get_peers(session, &count);
  if (chain != NULL && count > 0 && verified_certificate.data != NULL &&
      chain[0].size == verified_certificate.size &&
      memcmp(chain[0].data, verified_certificate.data, chain[0].size) == 0)
    return 0;
  unsigned status = 0;
  int rc = gnutls_certificate_verify_peers3(session, tls_server_name, &status);
  if (rc < 0)
    return rc;
  if (status != 0) {
    c->verify_status = status;
    return GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR;
  }
  if (verified_certificate.data == NULL && count > 0) {
    verified_certificate.data = malloc(chain[0].size);
    if (verified_certificate.data != NULL) {
      memcpy(verified_certificate.data, chain[0].data, chain[0].size);
      verified_certificate.size = chain[0].size;
    }
  }
  return 0;
}

/* Why the handshake failed, in words: for a certificate, what was wrong
 * with it. */
static void handshake_failed(struct conn *c, int rc) {
  char detail[512];
  if (c->verify_status != 0) {
    gnutls_datum_t text = {NULL, 0};
    if (gnutls_certificate_verification_status_print(c->verify_status, GNUTLS_CRT_X509,
                                                     &text, 0) == 0) {
      snprintf(detail, sizeof detail, "%s (%s)", gnutls_strerror(rc), (char *)text.data);
      gnutls_free(text.data);
      fail(c, "TLS handshake", detail);
      return;
    }
  }
  fail(c, "TLS handshake", gnutls_strerror(rc));
}

/* Runs the handshake, then decrypts records, on the ciphertext of one read,
 * until GnuTLS has taken all of it. */
static void drive_tls(struct conn *c) {
  if (c->handshaking) {
    int rc;
    do {
      c->starved = false;
      rc = gnutls_handshake(c->tls);
    } while (rc < 0 && ((rc == GNUTLS_E_AGAIN && !c->starved) ||
                        (rc != GNUTLS_E_AGAIN && !gnutls_error_is_fatal(rc))));
    if (rc == GNUTLS_E_AGAIN)
      return;
    if (rc < 0) {
      handshake_failed(c, rc);
      return;
    }
    c->handshaking = false;
    c->events->secured(c);
  }
  while (c->state == CONN_OPEN) {
    c->starved = false;
    ssize_t n = gnutls_record_recv(c->tls, plain_buffer, sizeof plain_buffer);
    if (n > 0) {
      c->events->data(c, plain_buffer, (size_t)n);
    } else if (n == 0) {
      c->events->eof(c);
      return;
    } else if (n == GNUTLS_E_AGAIN) {
      /* Not starved: a post-handshake message (a TLS 1.3 ticket) was
       * handled and records may wait behind it. */
      if (c->starved)
        return;
    } else if (gnutls_error_is_fatal((int)n)) {
      fail(c, "TLS receive", gnutls_strerror((int)n));
      return;
    }
  }
}

void conn_start_tls(struct conn *c) {
  if (c->state != CONN_OPEN)
    return;
  /* One key share (X25519), as OpenSSL's clients send: GnuTLS's default of
   * two costs a key the server does not use at every handshake, CPU the
   * server being measured would lose on a small machine. */
  int rc = gnutls_init(&c->tls, GNUTLS_CLIENT | GNUTLS_NONBLOCK | GNUTLS_KEY_SHARE_TOP);
  if (rc < 0) {
    c->tls = NULL;
    fail(c, "TLS", gnutls_strerror(rc));
    return;
  }
  if ((rc = gnutls_priority_set(c->tls, tls_priorities)) < 0 ||
      (rc = gnutls_credentials_set(c->tls, GNUTLS_CRD_CERTIFICATE, tls_credentials)) <
          0) {
    fail(c, "TLS", gnutls_strerror(rc));
    return;
  }
  /* No session data is ever set: each connection is a full handshake. */
  c->verify_status = 0;
  gnutls_session_set_verify_function(c->tls, verify_server_certificate);
  gnutls_handshake_set_timeout(c->tls, 0);
  gnutls_transport_set_ptr(c->tls, c);
  gnutls_transport_set_pull_function(c->tls, tls_pull);
  gnutls_transport_set_push_function(c->tls, tls_push);
  c->handshaking = true;
  c->window = NULL;
  c->window_len = 0;
  drive_tls(c); /* sends the ClientHello */
}

void conn_tls_describe(const struct conn *c, char *out, size_t out_size) {
  if (c->tls == NULL) {
    snprintf(out, out_size, "no TLS");
    return;
  }
  const char *version = gnutls_protocol_get_name(gnutls_protocol_get_version(c->tls));
  const char *cipher = gnutls_cipher_get_name(gnutls_cipher_get(c->tls));
  const char *group = gnutls_group_get_name(gnutls_group_get(c->tls));
  snprintf(out, out_size, "%s %s %s%s", version != NULL ? version : "TLS",
           cipher != NULL ? cipher : "?", group != NULL ? group : "?",
           gnutls_session_is_resumed(c->tls) ? " resumed" : "");
}

/* ---- Reading and connecting --------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  *buf = uv_buf_init(read_buffer, sizeof read_buffer);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  struct conn *c = stream->data;
  if (c->state != CONN_OPEN || nread == 0)
    return;
  if (nread == UV_EOF) {
    if (c->handshaking)
      fail(c, "TLS handshake", "the server closed the connection");
    else
      c->events->eof(c);
    return;
  }
  if (nread < 0) {
    fail(c, "read", uv_strerror((int)nread));
    return;
  }
  if (c->tls == NULL) {
    c->events->data(c, buf->base, (size_t)nread);
    return;
  }
  c->window = buf->base;
  c->window_len = (size_t)nread;
  drive_tls(c);
  /* The read buffer is reused by the next read, of any connection. */
  c->window = NULL;
  c->window_len = 0;
}

static void on_connect(uv_connect_t *req, int status) {
  struct conn *c = req->data;
  if (c->state != CONN_OPEN)
    return;
  if (status < 0) {
    fail(c, "connect", uv_strerror(status));
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  int rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
  if (rc < 0) {
    fail(c, "read", uv_strerror(rc));
    return;
  }
  c->events->connected(c);
}

void conn_open(struct conn *c, uv_loop_t *loop, const struct sockaddr *addr,
               const struct conn_events *events) {
  c->events = events;
  c->tls = NULL;
  c->handshaking = false;
  c->writes_queued = 0;
  uv_tcp_init(loop, &c->tcp);
  c->tcp.data = c;
  c->connect_req.data = c;
  c->state = CONN_OPEN;
  int rc = uv_tcp_connect(&c->connect_req, &c->tcp, addr, on_connect);
  if (rc < 0)
    fail(c, "connect", uv_strerror(rc));
}
