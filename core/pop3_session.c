#include "pop3_session.h"

#include <arpa/inet.h>
#include <errno.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

/* Raw bytes asked of the store per READ. Each READ is a system call, and
 * through the thread pool (a blocking store without read_nowait, or a
 * message's first chunk) two thread switches, so one asks for much at a
 * time; 64 KiB and its encoding still fit a core's L2 cache (128 KiB
 * measured slower). */
#define RAW_CHUNK (64 * 1024)
/* TOP usually wants the header and a few lines. */
#define RAW_CHUNK_TOP (8 * 1024)

static size_t raw_size(const struct session *s) {
  return s->send_top ? RAW_CHUNK_TOP : RAW_CHUNK;
}

static void send_more(struct session *s);

/* ---- Logging and replies ------------------------------------------------ */

void session_log(const struct session *s, enum popkit_log_level level, const char *fmt,
                 ...) {
  char prefix[256];
  if (s->user_log[0] != '\0')
    snprintf(prefix, sizeof prefix,
             "conn=%llu ip=%s user=\"%s\": ", (unsigned long long)s->id, s->client_ip,
             s->user_log);
  else
    snprintf(prefix, sizeof prefix, "conn=%llu ip=%s: ", (unsigned long long)s->id,
             s->client_ip);
  va_list ap;
  va_start(ap, fmt);
  log_vmsg(level, prefix, fmt, ap);
  va_end(ap);
}

static void vreply(struct session *s, const char *status, const char *fmt, va_list ap) {
  char line[512];
  int n = vsnprintf(line, sizeof line, fmt, ap);
  if (n < 0)
    n = 0;
  if ((size_t)n >= sizeof line)
    n = sizeof line - 1;
  outbuf_append(&s->out, status, strlen(status));
  if (n > 0) {
    outbuf_append_literal(&s->out, " ");
    outbuf_append(&s->out, line, (size_t)n);
  }
  outbuf_append_literal(&s->out, "\r\n");
}

void session_reply(struct session *s, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vreply(s, "+OK", fmt, ap);
  va_end(ap);
  s->bad_commands = 0;
}

void session_error(struct session *s, const char *fmt, ...) {
  if (++s->bad_commands >= s->env->config->limits.max_bad_commands) {
    /* This answer replaces the one the command would have had: the client
     * is either broken or probing, and either way the session ends. */
    outbuf_append_literal(&s->out, "-ERR Too many bad commands, closing connection.\r\n");
    session_logout(s, "too many bad commands");
    return;
  }
  va_list ap;
  va_start(ap, fmt);
  vreply(s, "-ERR", fmt, ap);
  va_end(ap);
}

void session_set_user(struct session *s, const char *user) {
  free(s->user);
  s->user = user != NULL ? strdup(user) : NULL;
  if (user == NULL)
    s->user_log[0] = '\0';
  else
    log_escape(s->user_log, sizeof s->user_log, user);
}

/* ---- Lifecycle ---------------------------------------------------------- */

static bool address_is_loopback(const struct sockaddr *sa) {
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
    return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
  }
  if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr))
      return true;
    return IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr) && in6->sin6_addr.s6_addr[12] == 127;
  }
  return false;
}

int session_init(struct session *s, const struct session_env *env,
                 const struct session_io *io, void *io_ctx, uint64_t id,
                 const struct sockaddr *peer) {
  memset(s, 0, sizeof *s);
  s->state = SESSION_AUTHORIZATION;
  s->env = env;
  s->io = io;
  s->io_ctx = io_ctx;
  s->id = id;
  outbuf_init(&s->out);
  strcpy(s->client_ip, "unknown");
  if (peer != NULL) {
    if (peer->sa_family == AF_INET)
      inet_ntop(AF_INET, &((const struct sockaddr_in *)peer)->sin_addr, s->client_ip,
                sizeof s->client_ip);
    else if (peer->sa_family == AF_INET6)
      inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)peer)->sin6_addr, s->client_ip,
                sizeof s->client_ip);
    s->loopback = address_is_loopback(peer);
    guard_addr_init(env->guard, peer, &s->addr);
  }
  return line_parser_init(&s->parser, env->config->limits.max_line_bytes);
}

void session_start(struct session *s) {
  if (s->env->config->apop && s->env->chain->can_get_credential) {
    /* RFC 1939 section 7: a timestamp unique to this greeting. */
    uint64_t nonce = 0;
    gnutls_rnd(GNUTLS_RND_NONCE, &nonce, sizeof nonce);
    snprintf(s->apop_timestamp, sizeof s->apop_timestamp, "<%ld.%016llx@%s>",
             (long)getpid(), (unsigned long long)nonce, s->env->config->hostname);
    session_reply(s, "popkit ready. %s", s->apop_timestamp);
  } else {
    session_reply(s, "popkit ready.");
  }
  session_log(s, POPKIT_LOG_INFO, "connected");
  s->io->flush(s->io_ctx);
}

bool session_plaintext_allowed(const struct session *s) {
  switch (s->env->config->plaintext_auth) {
  case CONFIG_PLAINTEXT_ALWAYS:
    return true;
  case CONFIG_PLAINTEXT_TLS_ONLY:
    return s->secured;
  case CONFIG_PLAINTEXT_TLS_OR_LOOPBACK:
    return s->secured || s->loopback;
  }
  return false;
}

void session_tls_ready(struct session *s, const char *description) {
  s->secured = true;
  session_log(s, POPKIT_LOG_INFO, "TLS established: %s", description);
  if (s->tls_offered) {
    /* STLS: whatever the client said in clear is forgotten. */
    s->tls_offered = false;
    session_set_user(s, NULL);
    s->bad_commands = 0;
  }
  s->state = SESSION_AUTHORIZATION;
}

uint64_t session_timeout_ms(const struct session *s) {
  const struct config_limits *l = &s->env->config->limits;
  switch (s->state) {
  case SESSION_TLS_WAIT:
  case SESSION_AUTHORIZATION:
  case SESSION_SASL:
    return (uint64_t)l->login_timeout_s * 1000;
  case SESSION_TRANSACTION:
  case SESSION_SENDING:
    return (uint64_t)l->idle_timeout_s * 1000;
  default:
    return 0;
  }
}

void session_logout(struct session *s, const char *reason) {
  if (s->end_reason == NULL)
    s->end_reason = reason;
  s->state = SESSION_LOGOUT;
  if (!s->closing) {
    s->closing = true;
    s->io->close(s->io_ctx);
  }
}

void session_timed_out(struct session *s) {
  if (s->closing)
    return;
  outbuf_append_literal(&s->out, "-ERR Disconnected for inactivity.\r\n");
  session_logout(s, "inactivity timeout");
}

void session_shutdown(struct session *s) {
  if (s->closing)
    return;
  outbuf_append_literal(&s->out, "-ERR [SYS/TEMP] Server shutting down.\r\n");
  session_logout(s, "server shutting down");
}

void session_maybe_release(struct session *s) {
  if (s->released || !s->finishing || s->pending != NULL || s->mailbox != NULL)
    return;
  s->released = true;
  login_free(s);
  if (s->state != SESSION_LOGOUT || s->end_reason == NULL)
    s->end_reason = s->end_reason ? s->end_reason : "connection closed by client";
  session_log(s, POPKIT_LOG_INFO,
              "disconnected: %s (retrieved %llu messages, %llu octets; deleted %llu)",
              s->end_reason, (unsigned long long)s->retrieved,
              (unsigned long long)s->retrieved_octets, (unsigned long long)s->expunged);
  s->io->release(s->io_ctx);
}

static void on_close_done(struct core_request *req);

/* Unlocks the mailbox; what follows depends on why (see on_close_done). */
void session_close_mailbox(struct session *s) {
  struct core_request *req =
      chain_store_request(s->env->chain, POPKIT_REQ_STORE_CLOSE, s->id, on_close_done, s);
  if (req == NULL) {
    /* Without memory for the request the lock cannot be released cleanly;
     * the module's lock dies with the process. */
    session_log(s, POPKIT_LOG_ERROR, "out of memory closing the mailbox");
    s->mailbox = NULL;
    session_maybe_release(s);
    return;
  }
  req->pub.store.mailbox = s->mailbox;
  s->pending = req;
  s->state = SESSION_CLOSE_WAIT;
  chain_submit(req);
}

void session_finish(struct session *s) {
  s->finishing = true;
  s->closing = true;
  if (s->pending != NULL) {
    chain_cancel(s->pending);
    return; /* its callback carries on */
  }
  if (s->mailbox != NULL) {
    session_close_mailbox(s);
    return;
  }
  session_maybe_release(s);
}

void session_free(struct session *s) {
  login_free(s);
  line_parser_free(&s->parser);
  outbuf_free(&s->out);
  listing_free(&s->listing);
  free(s->raw);
  free(s->user);
  s->raw = NULL;
  s->user = NULL;
}

/* ---- Input -------------------------------------------------------------- */

char *session_input_space(struct session *s, size_t *size_r) {
  return line_buffer_space(&s->parser, size_r);
}

void session_input_received(struct session *s, size_t n) {
  line_buffer_received(&s->parser, n);
  session_pump(s);
}

void session_input_eof(struct session *s) {
  s->input_closed = true;
  /* A login in flight with nothing queued behind it can only be followed
   * by the end of the session, so the backend may stop working on it. A
   * QUIT in progress, a RETR being read, or commands still queued (a script
   * that wrote "...DELE 1\r\nQUIT\r\n" and closed) run to the end. */
  if (s->pending != NULL && !line_parser_has_input(&s->parser) &&
      (s->state == SESSION_AUTH_WAIT || s->state == SESSION_OPEN_WAIT))
    chain_cancel(s->pending);
  /* The same for a login waiting out its address's penalty: it is dropped
   * before it starts (nobody is there to use the mailbox it would lock),
   * and a held-back -ERR has nobody to read it; the session ends now and
   * frees its connection slot. */
  if (s->waiting != WAIT_NONE && !line_parser_has_input(&s->parser)) {
    session_log(s, POPKIT_LOG_INFO, "login abandoned: the client left");
    login_reset(s);
  }
  session_pump(s);
}

static bool ready_for_command(const struct session *s) {
  if (s->closing || s->pending != NULL)
    return false;
  if (s->state != SESSION_AUTHORIZATION && s->state != SESSION_TRANSACTION &&
      s->state != SESSION_SASL)
    return false;
  /* Pipelined commands wait while the client is not reading our replies. */
  return outbuf_pending(&s->out) < s->env->config->limits.output_buffer_bytes;
}

/* Runs every complete command the state allows, then decides whether the
 * connection should keep reading. */
void session_pump(struct session *s) {
  while (ready_for_command(s)) {
    char *line;
    size_t len;
    enum line_result r = line_parser_next(&s->parser, &line, &len);
    if (r == LINE_NEED_MORE) {
      if (s->input_closed)
        session_logout(s, "connection closed by client");
      break;
    }
    if (s->state == SESSION_SASL)
      pop3_auth_line(s, line, r == LINE_TOO_LONG);
    else if (r == LINE_TOO_LONG)
      session_error(s, "Line too long (the limit is %zu octets).",
                    s->env->config->limits.max_line_bytes);
    else
      pop3_dispatch(s, line, len);
  }
  if (s->out.failed && !s->closing) {
    session_log(s, POPKIT_LOG_ERROR, "out of memory for output");
    session_logout(s, "out of memory");
  }
  if (!s->closing && !s->input_closed) {
    size_t space;
    line_buffer_space(&s->parser, &space);
    if (space == 0)
      s->io->pause_input(s->io_ctx);
    else
      s->io->resume_input(s->io_ctx);
  }
  s->io->flush(s->io_ctx);
}

void session_output_drained(struct session *s) {
  if (s->state == SESSION_SENDING && s->pending == NULL && !s->closing) {
    send_more(s);
    return;
  }
  session_pump(s);
}

/* ---- Multi-line replies ------------------------------------------------- */

static void on_read_done(struct core_request *req);

static void end_sending(struct session *s) {
  s->sender = SEND_NONE;
  s->state = SESSION_TRANSACTION;
  free(s->raw);
  s->raw = NULL;
}

/* Appends LIST or UIDL lines until the high-water mark; true when done. */
static bool write_listing_lines(struct session *s) {
  const size_t hwm = s->env->config->limits.output_buffer_bytes;
  while (s->send_index < s->listing.count) {
    if (outbuf_pending(&s->out) >= hwm)
      return false;
    const struct listing_entry *e = &s->listing.entries[s->send_index++];
    if (e->deleted)
      continue;
    if (s->sender == SEND_LIST)
      outbuf_printf(&s->out, "%llu %llu\r\n", (unsigned long long)s->send_index,
                    (unsigned long long)e->size);
    else
      outbuf_printf(&s->out, "%llu %s\r\n", (unsigned long long)s->send_index,
                    s->listing.uids + e->uid_off);
  }
  outbuf_append_literal(&s->out, ".\r\n");
  return true;
}

static void request_chunk(struct session *s) {
  struct core_request *req =
      chain_store_request(s->env->chain, POPKIT_REQ_STORE_READ, s->id, on_read_done, s);
  if (req == NULL) {
    session_log(s, POPKIT_LOG_ERROR, "out of memory while sending a message");
    session_logout(s, "out of memory");
    return;
  }
  req->pub.store.mailbox = s->mailbox;
  req->pub.store.index = s->send_index;
  req->pub.store.offset = s->send_offset;
  req->pub.store.buffer = s->raw;
  req->pub.store.buffer_size = raw_size(s);
  s->pending = req;
  chain_submit(req);
}

/* Produces more of the current multi-line reply, or waits for the client
 * to read what is queued. */
static void send_more(struct session *s) {
  if (s->closing) {
    /* Timed out or shutting down mid-reply: nothing more goes out. */
    end_sending(s);
    return;
  }
  if (s->sender == SEND_LIST || s->sender == SEND_UIDL) {
    if (write_listing_lines(s)) {
      end_sending(s);
      session_pump(s);
      return;
    }
    s->io->flush(s->io_ctx); /* session_output_drained() resumes */
    return;
  }
  if (outbuf_pending(&s->out) >= s->env->config->limits.output_buffer_bytes) {
    s->io->flush(s->io_ctx);
    return;
  }
  request_chunk(s);
}

static void on_read_done(struct core_request *req) {
  struct session *s = req->data;
  s->pending = NULL;
  if (s->finishing) {
    core_request_free(req);
    end_sending(s);
    if (s->mailbox != NULL)
      session_close_mailbox(s);
    else
      session_maybe_release(s);
    return;
  }
  if (req->result != POPKIT_OK && s->reply_held) {
    /* Nothing is out yet: the command fails and the session goes on. */
    session_log(s, POPKIT_LOG_ERROR, "reading message %llu failed: %s: %s",
                (unsigned long long)s->send_index + 1, result_name(req->result),
                req->log_text ? req->log_text : "");
    bool temporary = req->result == POPKIT_TEMPFAIL;
    core_request_free(req);
    end_sending(s);
    /* Not session_error: the store failed, not the client. */
    if (temporary)
      outbuf_append_literal(
          &s->out,
          "-ERR [SYS/TEMP] The message cannot be read now, try again later.\r\n");
    else
      outbuf_append_literal(&s->out, "-ERR [SYS/PERM] The message cannot be read.\r\n");
    session_pump(s);
    return;
  }
  if (s->reply_held) {
    s->reply_held = false;
    if (s->send_top)
      session_reply(s, "Top of message follows.");
    else
      session_reply(s, "%llu octets",
                    (unsigned long long)s->listing.entries[s->send_index].size);
  }
  if (req->result != POPKIT_OK || req->pub.store.length > raw_size(s)) {
    /* The +OK line is out and part of the message may be too: no -ERR can
     * follow. Closing without the terminator tells the client the message
     * is incomplete; nothing is deleted. */
    session_log(s, POPKIT_LOG_ERROR, "reading message %llu failed: %s: %s",
                (unsigned long long)s->send_index + 1, result_name(req->result),
                req->log_text ? req->log_text : "store returned too many bytes");
    core_request_free(req);
    end_sending(s);
    session_logout(s, "store error while sending a message");
    return;
  }
  size_t n = req->pub.store.length;
  core_request_free(req);
  /* Each output block is filled to its end; the encoder takes what fits. */
  for (size_t done = 0; done < n && !s->encoder.done;) {
    size_t room;
    char *out = outbuf_reserve(&s->out, ENCODER_MIN_ROOM, &room);
    if (out == NULL) {
      session_logout(s, "out of memory");
      end_sending(s);
      return;
    }
    size_t taken;
    outbuf_commit(&s->out,
                  encoder_feed(&s->encoder, s->raw + done, n - done, out, room, &taken));
    done += taken;
  }
  s->send_offset += n;
  if (n == 0 || s->encoder.done) {
    char tail[ENCODER_FINISH_BOUND];
    outbuf_append(&s->out, tail, encoder_finish(&s->encoder, tail));
    s->retrieved++;
    s->retrieved_octets += s->listing.entries[s->send_index].size;
    end_sending(s);
    session_pump(s);
    return;
  }
  s->io->flush(s->io_ctx);
  send_more(s);
}

void session_begin_sending(struct session *s, enum session_sender what, uint64_t index,
                           bool top, uint64_t top_lines) {
  s->sender = what;
  s->send_index = index;
  s->send_offset = 0;
  s->state = SESSION_SENDING;
  if (what == SEND_MESSAGE) {
    s->send_top = top;
    s->raw = malloc(raw_size(s));
    if (s->raw == NULL) {
      session_logout(s, "out of memory");
      return;
    }
    encoder_init(&s->encoder, top, top_lines);
    s->reply_held = true;
  }
  send_more(s);
}

/* ---- UPDATE ------------------------------------------------------------- */

static void on_expunge_done(struct core_request *req) {
  struct session *s = req->data;
  s->pending = NULL;
  if (req->result == POPKIT_OK) {
    s->expunged = req->pub.store.index_count;
  } else {
    session_log(s, POPKIT_LOG_ERROR, "deleting messages failed, none deleted: %s: %s",
                result_name(req->result), req->log_text ? req->log_text : "");
    s->expunged = 0;
    s->end_reason = "QUIT, but deleting failed";
  }
  bool ok = req->result == POPKIT_OK;
  free((void *)req->pub.store.indexes);
  core_request_free(req);
  if (ok)
    snprintf(s->final_reply, sizeof s->final_reply,
             "+OK Logging out, %llu messages deleted.\r\n",
             (unsigned long long)s->expunged);
  else
    snprintf(s->final_reply, sizeof s->final_reply,
             "-ERR [SYS/TEMP] Deleting messages failed, none were deleted.\r\n");
  session_close_mailbox(s);
}

static void on_close_done(struct core_request *req) {
  struct session *s = req->data;
  s->pending = NULL;
  if (req->result != POPKIT_OK)
    session_log(s, POPKIT_LOG_WARNING, "closing the mailbox: %s: %s",
                result_name(req->result), req->log_text ? req->log_text : "");
  core_request_free(req);
  s->mailbox = NULL;
  if (s->finishing) {
    session_maybe_release(s);
    return;
  }
  /* QUIT: the reply goes out only now, so the mailbox is free for the
   * client's next session by the time it reads it. */
  outbuf_append(&s->out, s->final_reply, strlen(s->final_reply));
  s->state = SESSION_LOGOUT;
  session_logout(s, s->end_reason ? s->end_reason : "QUIT");
}

void session_begin_update(struct session *s) {
  size_t count = 0;
  for (size_t i = 0; i < s->listing.count; i++)
    count += s->listing.entries[i].deleted;
  s->end_reason = "QUIT";
  if (count == 0) {
    snprintf(s->final_reply, sizeof s->final_reply, "+OK Logging out.\r\n");
    session_close_mailbox(s);
    return;
  }
  uint64_t *indexes = malloc(count * sizeof *indexes);
  struct core_request *req =
      indexes != NULL ? chain_store_request(s->env->chain, POPKIT_REQ_STORE_EXPUNGE,
                                            s->id, on_expunge_done, s)
                      : NULL;
  if (req == NULL) {
    free(indexes);
    snprintf(s->final_reply, sizeof s->final_reply,
             "-ERR [SYS/TEMP] Deleting messages failed, none were deleted.\r\n");
    session_close_mailbox(s);
    return;
  }
  size_t n = 0;
  for (size_t i = 0; i < s->listing.count; i++)
    if (s->listing.entries[i].deleted)
      indexes[n++] = i;
  req->pub.store.mailbox = s->mailbox;
  req->pub.store.indexes = indexes;
  req->pub.store.index_count = n;
  s->pending = req;
  s->state = SESSION_EXPUNGE_WAIT;
  chain_submit(req);
}
