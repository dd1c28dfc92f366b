#include "tls.h"

#include <errno.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tls_context {
  atomic_uint refs;
  gnutls_certificate_credentials_t credentials;
  gnutls_priority_t priorities;
  /* Session tickets (RFC 5077, TLS 1.3 resumption) let a client that polls
   * every few minutes skip the certificate signature. The key lives as
   * long as the generation: a reload also rotates it. */
  gnutls_datum_t ticket_key;
};

struct tls_session {
  gnutls_session_t session;
  struct tls_context *ctx;
  const struct tls_transport *transport;
  void *transport_ctx;
  /* Ciphertext being offered to GnuTLS: the caller's window, then what was
   * left of an earlier one (stash). */
  const char *window;
  size_t window_len;
  char *stash;
  size_t stash_len, stash_off;
  int last_error; /* GnuTLS code of the last failure */
  bool starved;   /* pull ran out of ciphertext since the flag was cleared */
};

/* ---- Contexts ----------------------------------------------------------- */

/* Loads a PEM chain and key into cred. Returns 0 or a GnuTLS error, with
 * *culprit_r naming the file at fault (NULL when the two do not match).
 * This is gnutls_certificate_set_x509_key_file2 done by hand: that call
 * leaks its buffers on a truncated PEM file in GnuTLS 3.7, which a SIGHUP
 * with a half-copied certificate would repeat at every reload. */
static int load_pair(gnutls_certificate_credentials_t cred, const char *cert_file,
                     const char *key_file, const char **culprit_r) {
  gnutls_datum_t cert_pem = {NULL, 0}, key_pem = {NULL, 0};
  gnutls_x509_crt_t *chain = NULL;
  unsigned chain_len = 0;
  gnutls_x509_privkey_t key = NULL;
  int rc;
  *culprit_r = cert_file;
  if ((rc = gnutls_load_file(cert_file, &cert_pem)) < 0 ||
      (rc = gnutls_x509_crt_list_import2(&chain, &chain_len, &cert_pem,
                                         GNUTLS_X509_FMT_PEM, 0)) < 0)
    goto out;
  *culprit_r = key_file;
  if ((rc = gnutls_load_file(key_file, &key_pem)) < 0 ||
      (rc = gnutls_x509_privkey_init(&key)) < 0 ||
      (rc = gnutls_x509_privkey_import2(key, &key_pem, GNUTLS_X509_FMT_PEM, NULL, 0)) < 0)
    goto out;
  *culprit_r = NULL;
  /* Copies the chain and the key. */
  rc = gnutls_certificate_set_x509_key(cred, chain, chain_len, key);
out:
  for (unsigned i = 0; i < chain_len; i++)
    gnutls_x509_crt_deinit(chain[i]);
  gnutls_free(chain);
  if (key != NULL)
    gnutls_x509_privkey_deinit(key);
  gnutls_free(cert_pem.data);
  if (key_pem.data != NULL) {
    gnutls_memset(key_pem.data, 0, key_pem.size);
    gnutls_free(key_pem.data);
  }
  return rc;
}

int tls_context_new(const struct config *config, struct tls_context **ctx_r, char *error,
                    size_t error_size) {
  struct tls_context *ctx = calloc(1, sizeof *ctx);
  if (ctx == NULL) {
    snprintf(error, error_size, "TLS: out of memory");
    return -ENOMEM;
  }
  atomic_init(&ctx->refs, 1);
  const char *priorities =
      config->tls.priorities != NULL ? config->tls.priorities : TLS_DEFAULT_PRIORITIES;
  const char *where = NULL;
  int rc = gnutls_certificate_allocate_credentials(&ctx->credentials);
  if (rc < 0) {
    snprintf(error, error_size, "TLS: %s", gnutls_strerror(rc));
    goto fail;
  }
  const char *culprit = NULL;
  rc = load_pair(ctx->credentials, config->tls.certificate, config->tls.key, &culprit);
  if (rc < 0) {
    if (culprit != NULL)
      snprintf(error, error_size, "%s: $.tls: loading %s: %s", config->file, culprit,
               gnutls_strerror(rc));
    else
      snprintf(error, error_size, "%s: $.tls: %s and %s: %s", config->file,
               config->tls.certificate, config->tls.key, gnutls_strerror(rc));
    goto fail;
  }
  rc = gnutls_priority_init(&ctx->priorities, priorities, &where);
  if (rc < 0) {
    snprintf(error, error_size, "%s: $.tls.priorities: %s at \"%.40s\"", config->file,
             gnutls_strerror(rc), where != NULL ? where : priorities);
    goto fail;
  }
  rc = gnutls_session_ticket_key_generate(&ctx->ticket_key);
  if (rc < 0) {
    snprintf(error, error_size, "TLS: session ticket key: %s", gnutls_strerror(rc));
    goto fail;
  }
  *ctx_r = ctx;
  return 0;
fail:
  tls_context_unref(ctx);
  return rc == GNUTLS_E_MEMORY_ERROR ? -ENOMEM : -EINVAL;
}

void tls_context_ref(struct tls_context *ctx) {
  atomic_fetch_add(&ctx->refs, 1);
}

void tls_context_unref(struct tls_context *ctx) {
  if (ctx == NULL || atomic_fetch_sub(&ctx->refs, 1) != 1)
    return;
  if (ctx->credentials != NULL)
    gnutls_certificate_free_credentials(ctx->credentials);
  if (ctx->priorities != NULL)
    gnutls_priority_deinit(ctx->priorities);
  if (ctx->ticket_key.data != NULL) {
    gnutls_memset(ctx->ticket_key.data, 0, ctx->ticket_key.size);
    gnutls_free(ctx->ticket_key.data);
  }
  free(ctx);
}

void tls_store_init(struct tls_store *store, struct tls_context *initial) {
  pthread_mutex_init(&store->lock, NULL);
  store->current = initial;
}

void tls_store_replace(struct tls_store *store, struct tls_context *ctx) {
  pthread_mutex_lock(&store->lock);
  struct tls_context *old = store->current;
  store->current = ctx;
  pthread_mutex_unlock(&store->lock);
  tls_context_unref(old);
}

struct tls_context *tls_store_acquire(struct tls_store *store) {
  pthread_mutex_lock(&store->lock);
  struct tls_context *ctx = store->current;
  if (ctx != NULL)
    tls_context_ref(ctx);
  pthread_mutex_unlock(&store->lock);
  return ctx;
}

void tls_store_destroy(struct tls_store *store) {
  tls_context_unref(store->current);
  store->current = NULL;
  pthread_mutex_destroy(&store->lock);
}

/* ---- Transport ---------------------------------------------------------- */

static ssize_t pull(gnutls_transport_ptr_t ptr, void *buf, size_t size) {
  struct tls_session *t = ptr;
  bool from_stash = t->stash_len > t->stash_off;
  const char *src = from_stash ? t->stash + t->stash_off : t->window;
  size_t avail = from_stash ? t->stash_len - t->stash_off : t->window_len;
  if (avail == 0) {
    t->starved = true;
    gnutls_transport_set_errno(t->session, EAGAIN);
    return -1;
  }
  size_t n = size < avail ? size : avail;
  memcpy(buf, src, n);
  if (from_stash) {
    t->stash_off += n;
  } else {
    t->window += n;
    t->window_len -= n;
  }
  return (ssize_t)n;
}

static ssize_t push(gnutls_transport_ptr_t ptr, const void *data, size_t len) {
  struct tls_session *t = ptr;
  int rc = t->transport->push(t->transport_ctx, data, len);
  if (rc < 0) {
    gnutls_transport_set_errno(t->session, -rc);
    return -1;
  }
  return (ssize_t)len;
}

static ssize_t vec_push(gnutls_transport_ptr_t ptr, const giovec_t *iov, int count) {
  struct tls_session *t = ptr;
  size_t total = 0;
  for (int i = 0; i < count; i++)
    total += iov[i].iov_len;
  /* giovec_t has struct iovec's layout (gnutls.h says so). */
  int rc = t->transport->push_vec(t->transport_ctx, (const struct iovec *)iov, count);
  if (rc < 0) {
    gnutls_transport_set_errno(t->session, -rc);
    return -1;
  }
  return (ssize_t)total;
}

/* ---- Sessions ----------------------------------------------------------- */

int tls_session_new(struct tls_context *ctx, const struct tls_transport *transport,
                    void *transport_ctx, struct tls_session **session_r) {
  struct tls_session *t = calloc(1, sizeof *t);
  if (t == NULL)
    return -ENOMEM;
  t->transport = transport;
  t->transport_ctx = transport_ctx;
  int rc = gnutls_init(&t->session, GNUTLS_SERVER | GNUTLS_NONBLOCK);
  if (rc < 0) {
    free(t);
    return rc == GNUTLS_E_MEMORY_ERROR ? -ENOMEM : -EPROTO;
  }
  tls_context_ref(ctx);
  t->ctx = ctx;
  if ((rc = gnutls_priority_set(t->session, ctx->priorities)) < 0 ||
      (rc = gnutls_credentials_set(t->session, GNUTLS_CRD_CERTIFICATE,
                                   ctx->credentials)) < 0 ||
      (rc = gnutls_session_ticket_enable_server(t->session, &ctx->ticket_key)) < 0) {
    tls_session_free(t);
    return rc == GNUTLS_E_MEMORY_ERROR ? -ENOMEM : -EPROTO;
  }
  gnutls_certificate_server_set_request(t->session, GNUTLS_CERT_IGNORE);
  /* The connection's login timer bounds the handshake; GnuTLS's own
   * timeout needs a blocking pull. */
  gnutls_handshake_set_timeout(t->session, 0);
  gnutls_transport_set_ptr(t->session, t);
  gnutls_transport_set_pull_function(t->session, pull);
  gnutls_transport_set_push_function(t->session, push);
  if (transport->push_vec != NULL)
    gnutls_transport_set_vec_push_function(t->session, vec_push);
  *session_r = t;
  return 0;
}

void tls_session_free(struct tls_session *t) {
  if (t == NULL)
    return;
  gnutls_deinit(t->session);
  tls_context_unref(t->ctx);
  free(t->stash);
  free(t);
}

void tls_session_input(struct tls_session *t, const char *data, size_t len) {
  t->window = data;
  t->window_len = len;
}

int tls_session_input_end(struct tls_session *t) {
  if (t->stash_off == t->stash_len) {
    free(t->stash);
    t->stash = NULL;
    t->stash_len = t->stash_off = 0;
  }
  if (t->window_len == 0)
    return 0;
  size_t kept = t->stash_len - t->stash_off;
  char *stash = malloc(kept + t->window_len);
  if (stash == NULL)
    return -ENOMEM;
  if (kept > 0)
    memcpy(stash, t->stash + t->stash_off, kept);
  memcpy(stash + kept, t->window, t->window_len);
  free(t->stash);
  t->stash = stash;
  t->stash_off = 0;
  t->stash_len = kept + t->window_len;
  t->window = NULL;
  t->window_len = 0;
  return 0;
}

bool tls_session_has_input(const struct tls_session *t) {
  return t->stash_len > t->stash_off || t->window_len > 0 ||
         gnutls_record_check_pending(t->session) > 0;
}

/* Maps a GnuTLS result to -EAGAIN, or -EPROTO with the code kept. */
static int failure(struct tls_session *t, int rc) {
  if (rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_INTERRUPTED)
    return -EAGAIN;
  t->last_error = rc;
  return -EPROTO;
}

int tls_session_handshake(struct tls_session *t) {
  int rc;
  do {
    rc = gnutls_handshake(t->session);
  } while (rc < 0 && rc != GNUTLS_E_AGAIN && !gnutls_error_is_fatal(rc));
  return rc == 0 ? 0 : failure(t, rc);
}

ssize_t tls_session_recv(struct tls_session *t, char *buf, size_t size) {
  for (;;) {
    t->starved = false;
    ssize_t n = gnutls_record_recv(t->session, buf, size);
    if (n >= 0)
      return n;
    if (n == GNUTLS_E_AGAIN && !t->starved)
      continue; /* a TLS 1.3 post-handshake message (KeyUpdate) was handled,
                   and records may wait behind it: not a lack of input */
    if (n == GNUTLS_E_REHANDSHAKE) {
      /* A TLS 1.2 client asks to renegotiate: POP3 has no use for it, and
       * refusing closes a door attacks have come through. */
      gnutls_alert_send(t->session, GNUTLS_AL_WARNING, GNUTLS_A_NO_RENEGOTIATION);
      continue;
    }
    if (n != GNUTLS_E_AGAIN && !gnutls_error_is_fatal((int)n))
      continue; /* a warning alert: read on */
    return failure(t, (int)n);
  }
}

ssize_t tls_session_send(struct tls_session *t, const char *data, size_t len) {
  size_t done = 0;
  /* The push function takes everything, so GnuTLS never reports EAGAIN
   * here; it may still cut the data into several records (a client's
   * record_size_limit), hence the loop. */
  while (done < len) {
    ssize_t n = gnutls_record_send(t->session, data + done, len - done);
    if (n == GNUTLS_E_INTERRUPTED)
      continue;
    if (n <= 0)
      return failure(t, n < 0 ? (int)n : GNUTLS_E_INTERNAL_ERROR);
    done += (size_t)n;
  }
  return (ssize_t)len;
}

void tls_session_cork(struct tls_session *t) {
  gnutls_record_cork(t->session);
}

int tls_session_uncork(struct tls_session *t) {
  for (;;) {
    int rc = gnutls_record_uncork(t->session, GNUTLS_RECORD_WAIT);
    if (rc >= 0)
      return 0;
    /* The push functions take everything, so there is no EAGAIN to wait
     * out; anything but an interruption is a failure. */
    if (rc != GNUTLS_E_INTERRUPTED) {
      t->last_error = rc;
      return -EPROTO;
    }
  }
}

void tls_session_bye(struct tls_session *t) {
  gnutls_bye(t->session, GNUTLS_SHUT_WR);
}

const char *tls_session_error(const struct tls_session *t) {
  return gnutls_strerror(t->last_error);
}

void tls_session_describe(const struct tls_session *t, char *out, size_t out_size) {
  const char *version = gnutls_protocol_get_name(gnutls_protocol_get_version(t->session));
  const char *cipher = gnutls_cipher_get_name(gnutls_cipher_get(t->session));
  snprintf(out, out_size, "%s with %s%s", version != NULL ? version : "TLS",
           cipher != NULL ? cipher : "an unknown cipher",
           gnutls_session_is_resumed(t->session) ? ", resumed" : "");
}
