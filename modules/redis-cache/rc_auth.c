#include "rc_auth.h"

#include <gnutls/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rc_module.h"
#include "rc_pass.h"

#define MAC_BYTES 32
#define MAX_IDENTITY 255 /* longer identities are not cached */

/* A VERIFY_PLAIN while the cache and then maybe next work on it. */
struct auth_call {
  struct rc_module *m;
  struct popkit_auth_request *req;
  char key[160];
  size_t key_length;
  char stale_identity[256]; /* a success older than ttl_s, or "" */
};

/* HMAC-SHA256(secret, label NUL user NUL password [block]): the entry's
 * key ("key") and the keystream that hides the identity in its value
 * ("identity", one byte of block number per 32 bytes). */
static int mac_of(const struct rc_module *m, const struct popkit_auth_request *req,
                  const char *label, int block, unsigned char mac[MAC_BYTES]) {
  size_t label_length = strlen(label), user_length = strlen(req->user);
  size_t password_length = strlen(req->password);
  size_t size = label_length + 1 + user_length + 1 + password_length + 1;
  unsigned char *data = malloc(size);
  if (data == NULL)
    return -1;
  size_t n = 0;
  memcpy(data, label, label_length + 1);
  n += label_length + 1;
  memcpy(data + n, req->user, user_length + 1);
  n += user_length + 1;
  memcpy(data + n, req->password, password_length);
  n += password_length;
  if (block >= 0)
    data[n++] = (unsigned char)block;
  int rc = gnutls_hmac_fast(GNUTLS_MAC_SHA256, m->secret, m->secret_size, data, n, mac);
  explicit_bzero(data, size);
  free(data);
  return rc < 0 ? -1 : 0;
}

/* Hides or shows an identity of length bytes in place: only someone with
 * the secret, the user name and the password can read it, so a value in
 * Redis names nobody. */
static int crypt_identity(const struct rc_module *m,
                          const struct popkit_auth_request *req, unsigned char *identity,
                          size_t length) {
  unsigned char stream[MAC_BYTES];
  for (size_t i = 0; i < length; i++) {
    if (i % MAC_BYTES == 0 &&
        mac_of(m, req, "identity", (int)(i / MAC_BYTES), stream) < 0)
      return -1;
    identity[i] ^= stream[i % MAC_BYTES];
  }
  explicit_bzero(stream, sizeof stream);
  return 0;
}

/* Reads the hex of a hidden identity back into identity (NUL-ended). */
static int show_identity(const struct rc_module *m, const struct popkit_auth_request *req,
                         const char *hex, char identity[MAX_IDENTITY + 1]) {
  size_t length = strlen(hex) / 2;
  if (strlen(hex) % 2 != 0 || length == 0 || length > MAX_IDENTITY)
    return -1;
  for (size_t i = 0; i < length; i++) {
    unsigned byte;
    if (sscanf(hex + 2 * i, "%2x", &byte) != 1)
      return -1;
    identity[i] = (char)byte;
  }
  if (crypt_identity(m, req, (unsigned char *)identity, length) < 0)
    return -1;
  identity[length] = '\0';
  /* A NUL inside means a value that is not this user's: a miss. */
  return strlen(identity) == length ? 0 : -1;
}

/* prefix + "auth:" + hex(HMAC-SHA256(secret, "key" NUL user NUL password)). */
static int make_key(struct rc_module *m, const struct popkit_auth_request *req, char *key,
                    size_t size, size_t *length_r) {
  unsigned char mac[MAC_BYTES];
  if (mac_of(m, req, "key", -1, mac) < 0)
    return -1;
  int n = snprintf(key, size, "%sauth:", m->key_prefix);
  if (n < 0 || (size_t)n + 2 * MAC_BYTES + 1 > size)
    return -1;
  for (size_t i = 0; i < MAC_BYTES; i++)
    snprintf(key + n + 2 * i, 3, "%02x", mac[i]);
  *length_r = (size_t)n + 2 * MAC_BYTES;
  return 0;
}

static void finish(struct auth_call *call, enum popkit_result result, const char *text) {
  struct popkit_auth_request *req = call->req;
  const struct popkit_host *host = call->m->host;
  free(call);
  host->complete(&req->base, result, text);
}

/* ---- Storing what next said --------------------------------------------- */

static void store(struct auth_call *call, enum popkit_result result) {
  struct rc_module *m = call->m;
  char value[64 + 2 * MAX_IDENTITY];
  unsigned ttl;
  long long now = (long long)time(NULL);
  const char *identity = m->host->auth_identity(call->req);
  if (identity == NULL)
    identity = call->req->user;
  if (result == POPKIT_OK) {
    unsigned char hidden[MAX_IDENTITY];
    size_t length = strlen(identity);
    if (length == 0 || length > MAX_IDENTITY)
      return; /* not cached: next answers again next time */
    memcpy(hidden, identity, length);
    if (crypt_identity(m, call->req, hidden, length) < 0)
      return;
    int n = snprintf(value, sizeof value, "ok %lld ", now);
    for (size_t i = 0; i < length; i++)
      n += snprintf(value + n, sizeof value - (size_t)n, "%02x", hidden[i]);
    ttl = m->stale_ttl_s;
  } else if (result == POPKIT_FAIL || result == POPKIT_NOT_FOUND) {
    snprintf(value, sizeof value, "%s %lld", result == POPKIT_FAIL ? "fail" : "nf", now);
    ttl = m->negative_ttl_s;
  } else {
    return; /* a backend that is away says nothing about the password */
  }
  char ttl_text[16];
  snprintf(ttl_text, sizeof ttl_text, "%u", ttl);
  const char *argv[] = {"SET", call->key, value, "EX", ttl_text};
  size_t lengths[] = {3, call->key_length, strlen(value), 2, strlen(ttl_text)};
  rc_redis_command(m->redis, NULL, NULL, 5, argv, lengths);
}

static void on_next_verified(void *instance, struct popkit_request *base,
                             enum popkit_result result, const char *log_text) {
  struct rc_module *m = instance;
  struct auth_call *call = base->module_data;
  base->module_data = NULL;
  bool stale = call->stale_identity[0] != '\0';
  if (result == POPKIT_TEMPFAIL && stale) {
    rc_stats_count(&m->stats, m->loop, &m->stats.stale_hits);
    rc_log(m, base, POPKIT_LOG_WARNING,
           "next is away (%s): a success cached within stale_ttl_s lets the user in",
           log_text != NULL ? log_text : "TEMPFAIL");
    if (m->host->auth_set_identity(call->req, call->stale_identity) < 0) {
      finish(call, POPKIT_TEMPFAIL, "out of memory");
      return;
    }
    finish(call, POPKIT_OK, NULL);
    return;
  }
  if (stale)
    rc_stats_count(&m->stats, m->loop, &m->stats.misses); /* next answered */
  if (call->key_length > 0)
    store(call, result);
  finish(call, result, log_text);
}

static void ask_next(struct auth_call *call) {
  call->req->base.module_data = call;
  call->m->host->pass_to_next(&call->req->base, on_next_verified);
}

/* ---- Reading the cache -------------------------------------------------- */

static void on_cached(void *data, redisReply *reply) {
  struct auth_call *call = data;
  struct rc_module *m = call->m;
  if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
    rc_stats_count(&m->stats, m->loop, &m->stats.fall_throughs);
    call->key_length = 0; /* Redis is not answering: do not write either */
    ask_next(call);
    return;
  }
  if (reply->type != REDIS_REPLY_STRING) {
    rc_stats_count(&m->stats, m->loop, &m->stats.misses);
    ask_next(call);
    return;
  }
  char kind[8];
  long long learnt = 0;
  int consumed = 0;
  const char *value = reply->str;
  if (sscanf(value, "%7s %lld%n", kind, &learnt, &consumed) != 2) {
    rc_stats_count(&m->stats, m->loop, &m->stats.misses);
    ask_next(call); /* not ours, or from another version: overwrite it */
    return;
  }
  long long age = (long long)time(NULL) - learnt;
  char identity[MAX_IDENTITY + 1];
  if (strcmp(kind, "ok") == 0 && value[consumed] == ' ' &&
      show_identity(m, call->req, value + consumed + 1, identity) == 0) {
    if (age >= 0 && age < (long long)m->ttl_s) {
      rc_stats_count(&m->stats, m->loop, &m->stats.hits);
      int rc = m->host->auth_set_identity(call->req, identity);
      finish(call, rc == 0 ? POPKIT_OK : POPKIT_TEMPFAIL,
             rc == 0 ? NULL : "out of memory");
      return;
    }
    /* Too old to trust while next answers; good enough if it does not.
     * Counted once next has said which it was. */
    snprintf(call->stale_identity, sizeof call->stale_identity, "%s", identity);
    ask_next(call);
    return;
  } else if (strcmp(kind, "fail") == 0 || strcmp(kind, "nf") == 0) {
    rc_stats_count(&m->stats, m->loop, &m->stats.hits);
    bool fail = kind[0] == 'f';
    finish(call, fail ? POPKIT_FAIL : POPKIT_NOT_FOUND,
           fail ? "wrong password (cached)" : "no such user (cached)");
    return;
  }
  rc_stats_count(&m->stats, m->loop, &m->stats.misses);
  ask_next(call);
}

static void rc_verify_plain(void *instance, struct popkit_auth_request *req) {
  struct rc_module *m = instance;
  struct auth_call *call = calloc(1, sizeof *call);
  if (call == NULL) {
    m->host->complete(&req->base, POPKIT_TEMPFAIL, "out of memory");
    return;
  }
  call->m = m;
  call->req = req;
  if (req->password == NULL ||
      make_key(m, req, call->key, sizeof call->key, &call->key_length) < 0) {
    call->key_length = 0;
    ask_next(call);
    return;
  }
  const char *argv[] = {"GET", call->key};
  size_t lengths[] = {3, call->key_length};
  if (rc_redis_command(m->redis, on_cached, call, 2, argv, lengths) < 0) {
    rc_stats_count(&m->stats, m->loop, &m->stats.fall_throughs);
    call->key_length = 0;
    ask_next(call);
  }
}

/* ---- Uncached ----------------------------------------------------------- */

static void pass_through(void *instance, struct popkit_auth_request *req) {
  rc_pass(instance, &req->base);
}

const struct popkit_auth_ops rc_auth_ops = {
    .struct_size = sizeof(struct popkit_auth_ops),
    .lookup = pass_through,
    .verify_plain = rc_verify_plain,
    .get_credential = pass_through,
};
