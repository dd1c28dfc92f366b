/*
 * One client connection of popbench: TCP on the loop, and GnuTLS when the
 * caller starts it (at connect for implicit TLS, after "+OK" to STLS).
 *
 * Reads land in one buffer shared by every connection of the process:
 * each read is consumed by its callback before the loop reads again, so a
 * held session costs only its struct and TLS state, whatever the number
 * of sessions. Writes go out with uv_try_write; what the socket does not
 * take is copied and queued, in order.
 *
 * Every failure closes the connection and is reported once through
 * failed(); closed() then says the struct may be reused.
 */
#ifndef POPBENCH_CONN_H
#define POPBENCH_CONN_H

#include <gnutls/gnutls.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <uv.h>

struct conn;

struct conn_events {
  void (*connected)(struct conn *c); /* TCP is up */
  void (*secured)(struct conn *c);   /* the TLS handshake is done, verified */
  void (*data)(struct conn *c, const char *data, size_t len); /* plaintext */
  void (*eof)(struct conn *c); /* the server closed (EOF or close_notify) */
  void (*failed)(struct conn *c, const char *what, const char *detail);
  void (*closed)(struct conn *c); /* the handle is closed */
};

enum conn_state {
  CONN_CLOSED,  /* not in use */
  CONN_OPEN,    /* connecting or connected */
  CONN_CLOSING, /* uv_close called, closed() to come */
};

struct conn {
  uv_tcp_t tcp;
  uv_connect_t connect_req;
  const struct conn_events *events;
  enum conn_state state;
  unsigned writes_queued;
  /* TLS: the session (NULL in clear), whether the handshake is running,
   * and the ciphertext GnuTLS pulls from (a window onto the read buffer). */
  gnutls_session_t tls;
  bool handshaking;
  bool starved; /* the pull function ran out of ciphertext */
  const char *window;
  size_t window_len;
  /* What verifying the server's certificate found wrong (GnuTLS's
   * gnutls_certificate_status_t bits), for the error message. */
  unsigned verify_status;
};

/* Loads the CA certificates the server is verified against, for a server
 * reached as host (an address: its certificate must name it). Returns 0
 * or -EINVAL with the reason in error. */
int conn_tls_setup(const char *cafile, const char *host, char *error, size_t error_size);
void conn_tls_cleanup(void);

/* Starts connecting c (which must be CONN_CLOSED) to addr. */
void conn_open(struct conn *c, uv_loop_t *loop, const struct sockaddr *addr,
               const struct conn_events *events);

/* Starts the TLS handshake on a connected c; secured() follows. */
void conn_start_tls(struct conn *c);

/* Sends bytes (through TLS once it is on). A failure closes c and is
 * reported through failed(). */
void conn_send(struct conn *c, const void *data, size_t len);

/* Closes c; no callback but closed() follows. */
void conn_close(struct conn *c);

/* "TLS1.3 AES-256-GCM" after the handshake, into out. */
void conn_tls_describe(const struct conn *c, char *out, size_t out_size);

#endif
