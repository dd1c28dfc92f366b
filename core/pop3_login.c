/*
 * The login flow every way in shares (USER/PASS, APOP, AUTH): the
 * address's penalty, the auth chain, the per-user cap, then the store's
 * open. Failures answer with RFC 2449/3206 response codes; a failure that
 * is the client's is penalised per address (login_guard.h), and the -ERR is
 * held back by a timer, never by sleeping a worker.
 */
#include <gnutls/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "password.h"
#include "pop3_session.h"

static uint64_t now_ms(void) {
  return uv_hrtime() / 1000000;
}

static void forget_secret(struct session *s) {
  if (s->login_secret != NULL) {
    explicit_bzero(s->login_secret, strlen(s->login_secret));
    free(s->login_secret);
    s->login_secret = NULL;
  }
}

static void end_sasl(struct session *s) {
  if (s->sasl != NULL) {
    sasl_free(s->sasl);
    free(s->sasl);
    s->sasl = NULL;
  }
  free(s->login_identity);
  s->login_identity = NULL;
}

void login_free(struct session *s) {
  forget_secret(s);
  end_sasl(s);
  if (s->user_counted != NULL) {
    login_guard_user_leave(s->env->guard, s->user_counted);
    free(s->user_counted);
    s->user_counted = NULL;
  }
}

void login_reset(struct session *s) {
  forget_secret(s);
  end_sasl(s);
  session_set_user(s, NULL);
  s->waiting = WAIT_NONE;
  s->state = SESSION_AUTHORIZATION;
}

/* ---- Failure ------------------------------------------------------------ */

static void send_delayed_reply(struct session *s) {
  s->state = SESSION_AUTHORIZATION;
  /* Counted as a bad command: a guesser meets max_bad_commands too. */
  session_error(s, "%s", s->delayed_reply);
}

void login_failed(struct session *s, enum popkit_result result, const char *log_text) {
  const char *why = log_text != NULL ? log_text : result_name(result);
  uint64_t delay = 0;
  switch (result) {
  case POPKIT_TEMPFAIL:
    session_log(s, POPKIT_LOG_WARNING, "login failed: backend unavailable: %s", why);
    snprintf(s->delayed_reply, sizeof s->delayed_reply,
             "[SYS/TEMP] Temporary authentication failure, try again later.");
    break;
  case POPKIT_PERMFAIL:
    session_log(s, POPKIT_LOG_ERROR, "login failed: backend error: %s", why);
    snprintf(s->delayed_reply, sizeof s->delayed_reply,
             "[SYS/PERM] Authentication backend error.");
    break;
  default:
    delay = login_guard_failed(s->env->guard, &s->addr, now_ms());
    /* The line fail2ban matches: "auth failed ... ip=ADDR" (README). */
    session_log(s, POPKIT_LOG_WARNING, "auth failed: %s", why);
    snprintf(s->delayed_reply, sizeof s->delayed_reply, "[AUTH] Authentication failed.");
    break;
  }
  login_reset(s);
  if (delay > 0 && !s->closing) {
    s->state = SESSION_AUTH_WAIT;
    s->waiting = WAIT_BEFORE_REPLY;
    s->io->wait(s->io_ctx, delay);
    return;
  }
  session_error(s, "%s", s->delayed_reply);
}

/* ---- APOP --------------------------------------------------------------- */

static bool apop_digest_matches(const struct session *s, const char *credential,
                                const char *digest) {
  const char *secret = password_plain_secret(credential);
  if (secret == NULL)
    return false;
  size_t ts_len = strlen(s->apop_timestamp);
  size_t secret_len = strlen(secret);
  char *text = malloc(ts_len + secret_len + 1);
  if (text == NULL)
    return false;
  memcpy(text, s->apop_timestamp, ts_len);
  memcpy(text + ts_len, secret, secret_len);
  unsigned char md5[16];
  int rc = gnutls_hash_fast(GNUTLS_DIG_MD5, text, ts_len + secret_len, md5);
  explicit_bzero(text, ts_len + secret_len);
  free(text);
  if (rc < 0 || strlen(digest) != 32)
    return false;
  static const char hex[] = "0123456789abcdef";
  unsigned char diff = 0;
  for (size_t i = 0; i < 16; i++) {
    char hi = digest[2 * i] | 0x20, lo = digest[2 * i + 1] | 0x20;
    diff |=
        (unsigned char)(hi ^ hex[md5[i] >> 4]) | (unsigned char)(lo ^ hex[md5[i] & 15]);
  }
  return diff == 0;
}

/* ---- The auth chain ----------------------------------------------------- */

static void on_auth_done(struct core_request *req) {
  struct session *s = req->data;
  s->pending = NULL;
  if (s->finishing) {
    core_request_free(req);
    session_maybe_release(s);
    return;
  }
  if (req->canceled) {
    session_log(s, POPKIT_LOG_INFO, "login abandoned: the client left");
    core_request_free(req);
    login_reset(s);
    session_pump(s);
    return;
  }
  enum popkit_result result = req->result == POPKIT_NOT_FOUND ? POPKIT_FAIL : req->result;
  const char *identity =
      req->identity != NULL && req->identity[0] != '\0' ? req->identity : s->user;
  if (s->sasl != NULL && (result == POPKIT_OK || result == POPKIT_FAIL)) {
    /* SCRAM: the credential feeds the exchange, which goes on; without
     * one (no such user) it goes on with decoy keys and fails at the
     * proof, so the exchange does not tell who exists. */
    pop3_auth_credential(s, result == POPKIT_OK ? req->credential : NULL, identity);
    core_request_free(req);
    session_pump(s);
    return;
  }
  if (result == POPKIT_OK && s->login_kind == POPKIT_REQ_AUTH_GET_CREDENTIAL) {
    /* APOP: the chain handed back the credential; the check is ours. */
    if (req->credential == NULL ||
        !apop_digest_matches(s, req->credential, s->login_secret)) {
      result = POPKIT_FAIL;
      free(req->log_text);
      req->log_text =
          strdup(req->credential != NULL && password_plain_secret(req->credential) == NULL
                     ? "APOP needs a {PLAIN} credential"
                     : "APOP digest mismatch");
    }
  }
  if (result != POPKIT_OK)
    login_failed(s, result, req->log_text);
  else
    login_succeeded(s, identity);
  core_request_free(req);
  session_pump(s);
}

static void submit_attempt(struct session *s) {
  const char *password =
      s->login_kind == POPKIT_REQ_AUTH_VERIFY_PLAIN ? s->login_secret : NULL;
  struct core_request *req = chain_auth(s->env->chain, s->login_kind, s->user, password,
                                        s->client_ip, s->id, on_auth_done, s);
  if (req == NULL) {
    login_failed(s, POPKIT_TEMPFAIL, "out of memory");
    return;
  }
  /* The chain copied the password; the APOP digest is still needed. */
  if (s->login_kind == POPKIT_REQ_AUTH_VERIFY_PLAIN)
    forget_secret(s);
  s->pending = req;
  s->state = SESSION_AUTH_WAIT;
}

void login_begin(struct session *s, enum popkit_request_kind kind, const char *user,
                 const char *secret) {
  session_set_user(s, user);
  forget_secret(s);
  s->login_kind = kind;
  if (secret != NULL && (s->login_secret = strdup(secret)) == NULL) {
    login_failed(s, POPKIT_TEMPFAIL, "out of memory");
    return;
  }
  s->state = SESSION_AUTH_WAIT;
  uint64_t penalty = login_guard_delay_ms(s->env->guard, &s->addr, now_ms());
  if (penalty > 0) {
    s->waiting = WAIT_BEFORE_ATTEMPT;
    s->io->wait(s->io_ctx, penalty);
    return;
  }
  submit_attempt(s);
}

void session_wait_over(struct session *s) {
  enum session_waiting what = s->waiting;
  s->waiting = WAIT_NONE;
  if (s->closing)
    return;
  if (what == WAIT_BEFORE_ATTEMPT)
    submit_attempt(s);
  else if (what == WAIT_BEFORE_REPLY)
    send_delayed_reply(s);
  session_pump(s);
}

/* ---- Success: the mailbox ----------------------------------------------- */

static void on_open_done(struct core_request *req) {
  struct session *s = req->data;
  s->pending = NULL;
  if (req->result == POPKIT_OK)
    s->mailbox = req->pub.store.mailbox;
  if (s->finishing || (req->canceled && req->result != POPKIT_OK)) {
    bool finishing = s->finishing;
    core_request_free(req);
    if (!finishing) {
      login_free(s);
      login_reset(s);
      session_pump(s);
    } else if (s->mailbox != NULL) {
      session_close_mailbox(s);
    } else {
      session_maybe_release(s);
    }
    return;
  }
  switch (req->result) {
  case POPKIT_OK:
    s->listing = req->listing;
    memset(&req->listing, 0, sizeof req->listing);
    s->live_count = s->listing.count;
    s->live_octets = 0;
    for (size_t i = 0; i < s->listing.count; i++)
      s->live_octets += s->listing.entries[i].size;
    s->state = SESSION_TRANSACTION;
    session_log(s, POPKIT_LOG_INFO, "logged in (%llu messages, %llu octets)",
                (unsigned long long)s->live_count, (unsigned long long)s->live_octets);
    session_reply(s, "Logged in, %llu messages (%llu octets).",
                  (unsigned long long)s->live_count, (unsigned long long)s->live_octets);
    break;
  case POPKIT_IN_USE:
    /* The store says which lock: its own, or a cache's across hosts. */
    session_log(s, POPKIT_LOG_INFO, "mailbox in use by another session%s%s",
                req->log_text != NULL ? ": " : "", req->log_text ? req->log_text : "");
    login_free(s);
    login_reset(s);
    session_error(s, "[IN-USE] Mailbox is locked by another POP3 session.");
    break;
  default:
    session_log(s, POPKIT_LOG_ERROR, "opening the mailbox failed: %s: %s",
                result_name(req->result), req->log_text ? req->log_text : "");
    login_free(s);
    login_reset(s);
    if (req->result == POPKIT_TEMPFAIL)
      session_error(s, "[SYS/TEMP] Mailbox temporarily unavailable, try again later.");
    else
      session_error(s, "[SYS/PERM] Mailbox cannot be opened.");
    break;
  }
  core_request_free(req);
  session_pump(s);
}

void login_succeeded(struct session *s, const char *identity) {
  forget_secret(s);
  end_sasl(s);
  login_guard_succeeded(s->env->guard, &s->addr);
  char *counted = strdup(identity);
  struct core_request *open =
      counted != NULL ? chain_store_request(s->env->chain, POPKIT_REQ_STORE_OPEN, s->id,
                                            on_open_done, s)
                      : NULL;
  char *identity_copy = open != NULL ? strdup(identity) : NULL;
  if (identity_copy == NULL) {
    core_request_free(open);
    free(counted);
    login_failed(s, POPKIT_TEMPFAIL, "out of memory");
    return;
  }
  if (login_guard_user_enter(s->env->guard, counted) < 0) {
    session_log(s, POPKIT_LOG_WARNING, "refused: max_sessions_per_user reached");
    free(counted);
    free(identity_copy);
    core_request_free(open);
    login_reset(s);
    session_error(s, "[IN-USE] Too many sessions for this user, try later.");
    return;
  }
  s->user_counted = counted;
  open->pub.store.identity = identity_copy;
  open->owned_string = identity_copy;
  s->pending = open;
  s->state = SESSION_OPEN_WAIT;
  chain_submit(open);
}
