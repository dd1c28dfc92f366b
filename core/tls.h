/*
 * TLS with GnuTLS, kept apart from sockets.
 *
 * A tls_context is one generation of certificates and policy (the chain and
 * key from PEM files, the priority string, the session-ticket key). Workers
 * take a reference for each new connection from the tls_store; SIGHUP puts
 * a new generation in the store, and running sessions finish on the one
 * they started with.
 *
 * A tls_session is one connection's TLS state. It never touches a socket:
 * ciphertext comes in through tls_session_input() (a window onto the
 * connection's read buffer, not copied) and goes out through the push
 * function of struct tls_transport, which must take every byte (the
 * connection queues what the socket will not take). Nothing here blocks:
 * the handshake and reads return -EAGAIN when they need more input.
 */
#ifndef POPKIT_CORE_TLS_H
#define POPKIT_CORE_TLS_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "config.h"

/* TLS 1.2 and 1.3 with GnuTLS's secure defaults, unless the config says
 * otherwise ($.tls.priorities). */
#define TLS_DEFAULT_PRIORITIES "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"

struct tls_context;

/* Loads the certificate chain and key named by config->tls. Returns 0, or
 * a negative code with a one-line reason (file and GnuTLS's words) in
 * error. */
int tls_context_new(const struct config *config, struct tls_context **ctx_r, char *error,
                    size_t error_size);
void tls_context_ref(struct tls_context *ctx);
void tls_context_unref(struct tls_context *ctx);

/* The current generation, shared by every worker. */
struct tls_store {
  pthread_mutex_t lock;
  struct tls_context *current; /* NULL when no listener speaks TLS */
};

void tls_store_init(struct tls_store *store, struct tls_context *initial);
/* Installs ctx (the store takes the caller's reference) and drops the
 * store's reference to the previous one. */
void tls_store_replace(struct tls_store *store, struct tls_context *ctx);
/* A new reference to the current generation, or NULL. */
struct tls_context *tls_store_acquire(struct tls_store *store);
void tls_store_destroy(struct tls_store *store);

/* ---- One connection ---------------------------------------------------- */

struct tls_transport {
  /* Sends ciphertext. Returns 0 once all of it is sent or queued, or a
   * negative errno when the connection is broken. */
  int (*push)(void *ctx, const void *data, size_t len);
  /* Optional: sends several records at once (a handshake flight, or what
   * a cork gathered), so they go out in one system call and one segment
   * instead of one each. Same contract as push. */
  int (*push_vec)(void *ctx, const struct iovec *iov, int count);
};

struct tls_session;

/* Returns 0 or -ENOMEM / -EPROTO. The session holds a reference to ctx. */
int tls_session_new(struct tls_context *ctx, const struct tls_transport *transport,
                    void *transport_ctx, struct tls_session **session_r);
void tls_session_free(struct tls_session *t);

/* Ciphertext that arrived. The bytes stay the caller's: after the calls
 * that consume them, tls_session_input_end() copies what GnuTLS did not
 * read yet (only when the reader stopped early, the line buffer being
 * full) into the session. Returns 0 or -ENOMEM. */
void tls_session_input(struct tls_session *t, const char *data, size_t len);
int tls_session_input_end(struct tls_session *t);
/* True when received ciphertext waits in the session (see above). */
bool tls_session_has_input(const struct tls_session *t);

/* Returns 0 when the handshake is done, -EAGAIN when it needs more input,
 * or -EPROTO (see tls_session_error()). */
int tls_session_handshake(struct tls_session *t);

/* Plaintext from the peer: > 0 bytes, 0 at the peer's close_notify,
 * -EAGAIN when more input is needed, or -EPROTO. */
ssize_t tls_session_recv(struct tls_session *t, char *buf, size_t size);

/* Encrypts data (as many records as it takes) and pushes the records.
 * Returns len or -EPROTO. */
ssize_t tls_session_send(struct tls_session *t, const char *data, size_t len);

/* Between cork and uncork, tls_session_send gathers records and uncork
 * pushes them together. Returns 0 or -EPROTO (see tls_session_error). */
void tls_session_cork(struct tls_session *t);
int tls_session_uncork(struct tls_session *t);

/* Sends close_notify. */
void tls_session_bye(struct tls_session *t);

/* GnuTLS's words for the last failure. */
const char *tls_session_error(const struct tls_session *t);
/* "TLS1.3 with AES-256-GCM", for the log line at handshake. */
void tls_session_describe(const struct tls_session *t, char *out, size_t out_size);

#endif
