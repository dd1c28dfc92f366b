#include "conn.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "worker.h"

/* A queued write: plain writes point into the session's output blocks
 * (released when done); TLS records are the connection's own copy, which
 * follows the struct. */
struct write_req {
  uv_write_t req;
  struct conn *conn;
  size_t len;
  bool owns_data;
  char data[];
};

/* Output blocks handed to one writev. */
#define WRITE_BATCH 16

static void on_handle_closed(uv_handle_t *h);
static void flush_output(void *ctx);
static void update_reading(struct conn *c);
static void drive_tls(struct conn *c);

static void close_handles(struct conn *c) {
  if (c->state == CONN_CLOSED)
    return;
  c->state = CONN_CLOSED;
  uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
  uv_close((uv_handle_t *)&c->timer, on_handle_closed);
  uv_close((uv_handle_t *)&c->delay_timer, on_handle_closed);
}

void conn_abort(struct conn *c) {
  close_handles(c);
}

static void on_handle_closed(uv_handle_t *h) {
  struct conn *c = h->data;
  if (--c->handles_open > 0)
    return;
  /* Every handle is gone; outstanding writes were canceled before this
   * callback, so the session alone decides when the memory goes. */
  session_finish(&c->session);
}

static size_t high_water(const struct conn *c) {
  return c->worker->config->limits.output_buffer_bytes;
}

/* ---- session_io --------------------------------------------------------- */

static void io_pause_input(void *ctx) {
  struct conn *c = ctx;
  c->input_wanted = false;
  update_reading(c);
}

static void io_resume_input(void *ctx) {
  struct conn *c = ctx;
  c->input_wanted = true;
  /* Under TLS, records already received may hold the next commands: no
   * socket event will announce them. */
  if (c->tls_state == CONN_TLS_ON)
    drive_tls(c);
  update_reading(c);
}

static void maybe_finish_close(struct conn *c) {
  if (c->state != CONN_CLOSING || c->write_queued != 0 ||
      outbuf_pending(&c->session.out) != 0)
    return;
  if (c->tls_state == CONN_TLS_ON && !c->tls_bye_sent) {
    /* close_notify tells the client the last reply is complete. */
    c->tls_bye_sent = true;
    tls_session_bye(c->tls);
    if (c->write_queued != 0)
      return; /* on_write comes back here */
  }
  close_handles(c);
}

static void io_close(void *ctx) {
  struct conn *c = ctx;
  if (c->state != CONN_OPEN)
    return;
  c->input_wanted = false;
  c->state = CONN_CLOSING;
  update_reading(c);
  flush_output(c);
  maybe_finish_close(c);
}

static void io_release(void *ctx) {
  struct conn *c = ctx;
  struct worker *w = c->worker;
  if (c->addr_counted)
    login_guard_disconnect(w->env.guard, &c->session.addr);
  tls_session_free(c->tls);
  session_free(&c->session);
  worker_conn_removed(w, c);
  free(c);
}

static void begin_tls(struct conn *c);

static void io_start_tls(void *ctx) {
  struct conn *c = ctx;
  if (c->state != CONN_OPEN)
    return;
  /* Nothing more is read as plaintext: the next bytes are the client's
   * handshake. "+OK" must leave in clear before the first TLS record. */
  c->tls_state = CONN_TLS_STARTING;
  update_reading(c);
  flush_output(c);
  if (c->write_queued == 0)
    begin_tls(c);
}

static void on_delay_over(uv_timer_t *t) {
  struct conn *c = t->data;
  session_wait_over(&c->session);
}

static void io_wait(void *ctx, uint64_t ms) {
  struct conn *c = ctx;
  uv_timer_start(&c->delay_timer, on_delay_over, ms, 0);
}

static const struct session_io conn_io = {
    .flush = flush_output,
    .pause_input = io_pause_input,
    .resume_input = io_resume_input,
    .close = io_close,
    .release = io_release,
    .start_tls = io_start_tls,
    .wait = io_wait,
};

/* ---- Writing ------------------------------------------------------------ */

static void on_write(uv_write_t *req, int status) {
  struct write_req *wr = (struct write_req *)req;
  struct conn *c = wr->conn;
  c->write_queued -= wr->len;
  if (!wr->owns_data)
    outbuf_release(&c->session.out, wr->len);
  free(wr);
  if (c->state == CONN_CLOSED)
    return;
  if (status < 0) {
    session_log(&c->session, POPKIT_LOG_DEBUG, "write failed: %s", uv_strerror(status));
    close_handles(c);
    return;
  }
  c->last_activity = uv_now(c->tcp.loop);
  if (c->tls_state == CONN_TLS_STARTING && c->write_queued == 0) {
    begin_tls(c);
    return;
  }
  if (c->tls_state == CONN_TLS_ON)
    flush_output(c); /* encrypt what waited for room */
  if (c->state == CONN_CLOSING) {
    maybe_finish_close(c);
    return;
  }
  size_t waiting = outbuf_pending(&c->session.out) +
                   (c->tls_state == CONN_TLS_ON ? c->write_queued : 0);
  if (waiting <= high_water(c) / 2)
    session_output_drained(&c->session);
}

/* Writes what the socket takes now of bufs (total bytes in all), and
 * queues the rest. copy: the bytes are the caller's and go away after the
 * call (a TLS record); otherwise they are the session's output blocks,
 * released as they are written. */
static int write_bufs(struct conn *c, uv_buf_t *bufs, unsigned nbufs, size_t total,
                      bool copy) {
  if (c->write_queued == 0) {
    int n = uv_try_write((uv_stream_t *)&c->tcp, bufs, nbufs);
    if (n < 0 && n != UV_EAGAIN)
      return n;
    size_t written = n > 0 ? (size_t)n : 0;
    if (!copy)
      outbuf_release(&c->session.out, written);
    total -= written;
    while (written > 0) {
      size_t step = written < bufs->len ? written : bufs->len;
      bufs->base += step;
      bufs->len -= step;
      written -= step;
      if (bufs->len == 0) {
        bufs++;
        nbufs--;
      }
    }
  }
  if (total == 0)
    return 0;
  struct write_req *wr = malloc(sizeof *wr + (copy ? total : 0));
  if (wr == NULL)
    return UV_ENOMEM;
  wr->conn = c;
  wr->len = total;
  wr->owns_data = copy;
  uv_buf_t own;
  if (copy) {
    /* What the socket did not take, gathered into one buffer of ours. */
    size_t at = 0;
    for (unsigned i = 0; i < nbufs; i++) {
      memcpy(wr->data + at, bufs[i].base, bufs[i].len);
      at += bufs[i].len;
    }
    own = uv_buf_init(wr->data, (unsigned)total);
    bufs = &own;
    nbufs = 1;
  }
  /* uv_write copies the array of buffers, not the bytes. */
  int rc = uv_write(&wr->req, (uv_stream_t *)&c->tcp, bufs, nbufs, on_write);
  if (rc < 0) {
    free(wr);
    return rc;
  }
  c->write_queued += total;
  return 0;
}

/* A handshake flight or corked records: one writev for all of them. */
static int push_records(void *ctx, const struct iovec *iov, int count) {
  struct conn *c = ctx;
  if (c->state == CONN_CLOSED)
    return -EPIPE;
  uv_buf_t small[WRITE_BATCH];
  uv_buf_t *bufs = count <= WRITE_BATCH ? small : malloc((size_t)count * sizeof *bufs);
  if (bufs == NULL)
    return -EPIPE;
  size_t total = 0;
  for (int i = 0; i < count; i++) {
    bufs[i] = uv_buf_init(iov[i].iov_base, (unsigned)iov[i].iov_len);
    total += iov[i].iov_len;
  }
  int rc = write_bufs(c, bufs, (unsigned)count, total, true);
  if (bufs != small)
    free(bufs);
  return rc < 0 ? -EPIPE : 0;
}

/* The TLS layer's way out, one record at a time. */
static int push_record(void *ctx, const void *data, size_t len) {
  struct iovec record = {.iov_base = (void *)data, .iov_len = len};
  return push_records(ctx, &record, 1);
}

static const struct tls_transport conn_transport = {.push = push_record,
                                                    .push_vec = push_records};

static void flush_output(void *ctx) {
  struct conn *c = ctx;
  if (c->state == CONN_CLOSED || c->tls_state == CONN_TLS_HANDSHAKE)
    return;
  const char *data;
  size_t len;
  if (c->tls_state == CONN_TLS_ON) {
    /* The records of one flush leave in one writev. */
    tls_session_cork(c->tls);
    bool failed = false;
    while (!failed && c->write_queued < high_water(c) &&
           (len = outbuf_take(&c->session.out, &data)) > 0) {
      failed = tls_session_send(c->tls, data, len) < 0;
      outbuf_release(&c->session.out, len);
    }
    if (tls_session_uncork(c->tls) < 0 || failed) {
      session_log(&c->session, POPKIT_LOG_DEBUG, "TLS write failed: %s",
                  tls_session_error(c->tls));
      close_handles(c);
      return;
    }
  } else {
    /* Several blocks per system call: a 1 MiB RETR is 64 blocks. */
    for (;;) {
      uv_buf_t bufs[WRITE_BATCH];
      unsigned n = 0;
      size_t total = 0;
      while (n < WRITE_BATCH && (len = outbuf_take(&c->session.out, &data)) > 0) {
        bufs[n++] = uv_buf_init((char *)data, (unsigned)len);
        total += len;
      }
      if (n == 0)
        break;
      if (write_bufs(c, bufs, n, total, false) < 0) {
        close_handles(c);
        return;
      }
    }
  }
  c->last_activity = uv_now(c->tcp.loop);
}

/* ---- Reading ------------------------------------------------------------ */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  struct conn *c = h->data;
  (void)suggested;
  if (c->tls_state != CONN_TLS_OFF) {
    /* Ciphertext goes to the worker's buffer and through GnuTLS at once;
     * an idle TLS connection holds no read buffer of its own. */
    *buf = uv_buf_init(c->worker->tls_read_buffer, WORKER_TLS_READ_SIZE);
    return;
  }
  size_t space;
  char *p = session_input_space(&c->session, &space);
  *buf = uv_buf_init(p, (unsigned)space);
}

static bool should_read(const struct conn *c) {
  if (c->state != CONN_OPEN || c->session.input_closed || c->peer_eof)
    return false;
  switch (c->tls_state) {
  case CONN_TLS_OFF:
    return c->input_wanted;
  case CONN_TLS_STARTING:
    return false;
  case CONN_TLS_HANDSHAKE:
    return true;
  case CONN_TLS_ON:
    /* Received records wait in the session until the line buffer has
     * room: reading more would only pile them up. */
    return c->input_wanted && !tls_session_has_input(c->tls);
  }
  return false;
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

static void update_reading(struct conn *c) {
  bool want = should_read(c);
  if (want && !c->reading) {
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
      c->reading = true;
  } else if (!want && c->reading) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = false;
  }
}

static void tls_failed(struct conn *c, const char *what) {
  session_log(&c->session, POPKIT_LOG_INFO, "%s: %s", what, tls_session_error(c->tls));
  c->session.end_reason = "TLS error";
  close_handles(c);
}

static void handshake_done(struct conn *c) {
  char description[128];
  tls_session_describe(c->tls, description, sizeof description);
  c->tls_state = CONN_TLS_ON;
  session_tls_ready(&c->session, description);
  if (c->implicit_tls)
    session_start(&c->session);
  c->input_wanted = true;
}

/* Runs the handshake and moves plaintext into the session while its line
 * buffer has room. Calls that arrive from below (a command resumed input)
 * only ask for one more round, so the stack does not grow with pipelined
 * commands. */
static void drive_tls(struct conn *c) {
  if (c->tls_driving) {
    c->tls_again = true;
    return;
  }
  c->tls_driving = true;
  do {
    c->tls_again = false;
    if (c->tls_state == CONN_TLS_HANDSHAKE) {
      int rc = tls_session_handshake(c->tls);
      if (rc == -EAGAIN)
        break;
      if (rc < 0) {
        tls_failed(c, "TLS handshake failed");
        break;
      }
      handshake_done(c);
    }
    while (c->state == CONN_OPEN && c->input_wanted && !c->session.input_closed) {
      size_t space;
      char *p = session_input_space(&c->session, &space);
      if (space == 0)
        break;
      ssize_t n = tls_session_recv(c->tls, p, space);
      if (n == -EAGAIN) {
        if (c->peer_eof)
          session_input_eof(&c->session);
        break;
      }
      if (n < 0) {
        tls_failed(c, "TLS read failed");
        break;
      }
      if (n == 0) {
        session_input_eof(&c->session); /* close_notify */
        break;
      }
      session_input_received(&c->session, (size_t)n);
    }
  } while (c->tls_again && c->state == CONN_OPEN);
  c->tls_driving = false;
}

static void begin_tls(struct conn *c) {
  struct tls_context *ctx = tls_store_acquire(c->worker->tls);
  int rc = ctx != NULL ? tls_session_new(ctx, &conn_transport, c, &c->tls) : -EPROTO;
  tls_context_unref(ctx);
  if (rc < 0) {
    session_log(&c->session, POPKIT_LOG_ERROR, "starting TLS: %s", strerror(-rc));
    close_handles(c);
    return;
  }
  c->tls_state = CONN_TLS_HANDSHAKE;
  update_reading(c);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  struct conn *c = stream->data;
  if (nread == UV_ENOBUFS) {
    /* The line buffer is full of commands waiting for their turn. */
    c->input_wanted = false;
    update_reading(c);
    return;
  }
  if (nread == UV_EOF) {
    c->peer_eof = true;
    update_reading(c);
    if (c->tls_state == CONN_TLS_ON)
      drive_tls(c); /* records still held are commands the client sent */
    else if (c->tls_state == CONN_TLS_OFF)
      session_input_eof(&c->session);
    else
      close_handles(c); /* gone in the middle of a handshake */
    return;
  }
  if (nread < 0) {
    session_log(&c->session, POPKIT_LOG_DEBUG, "read failed: %s",
                uv_strerror((int)nread));
    close_handles(c);
    return;
  }
  if (nread == 0)
    return;
  c->last_activity = uv_now(c->tcp.loop);
  if (c->state != CONN_OPEN)
    return;
  if (c->tls_state == CONN_TLS_OFF) {
    session_input_received(&c->session, (size_t)nread);
    return;
  }
  tls_session_input(c->tls, buf->base, (size_t)nread);
  drive_tls(c);
  if (c->state != CONN_CLOSED && tls_session_input_end(c->tls) < 0) {
    session_log(&c->session, POPKIT_LOG_ERROR, "out of memory for TLS input");
    close_handles(c);
    return;
  }
  update_reading(c);
}

/* ---- Inactivity --------------------------------------------------------- */

/* One timer per connection, re-armed lazily: activity only stamps
 * last_activity, and the timer checks it when it fires. It fires at least
 * every min(login, idle) timeout, so a session that changes state (login
 * done) is held to its new, possibly shorter, limit. */
static void on_timer(uv_timer_t *t);

static void arm_timer(struct conn *c, uint64_t delay_ms) {
  const struct config_limits *l = &c->worker->config->limits;
  uint64_t shortest =
      (uint64_t)(l->login_timeout_s < l->idle_timeout_s ? l->login_timeout_s
                                                        : l->idle_timeout_s) *
      1000;
  uv_timer_start(&c->timer, on_timer, delay_ms < shortest ? delay_ms : shortest, 0);
}

static void on_timer(uv_timer_t *t) {
  struct conn *c = t->data;
  uint64_t now = uv_now(t->loop);
  if (c->state == CONN_CLOSING) {
    /* The client does not read its last reply: give up on it. */
    close_handles(c);
    return;
  }
  uint64_t timeout = session_timeout_ms(&c->session);
  if (timeout == 0) {
    /* Waiting on a backend: the client is not idle. */
    c->last_activity = now;
    arm_timer(c, 1000);
    return;
  }
  uint64_t idle = now - c->last_activity;
  if (idle >= timeout) {
    if (c->tls_state == CONN_TLS_HANDSHAKE || c->tls_state == CONN_TLS_STARTING) {
      /* No reply can be sent in the middle of a handshake. */
      c->session.end_reason = "TLS handshake timeout";
      close_handles(c);
      return;
    }
    session_timed_out(&c->session);
    flush_output(c);
    uv_timer_start(t, on_timer, 5000, 0); /* closing grace */
    return;
  }
  arm_timer(c, timeout - idle);
}

/* ---- Accepting ---------------------------------------------------------- */

/* Answers a connection that is over a limit and closes it. A refusal costs
 * no handshake: an implicit-TLS client sees the connection close instead
 * of a reply it could not read. */
static void refuse(struct conn *c, const char *reply, const char *why) {
  session_log(&c->session, POPKIT_LOG_WARNING, "refused: %s", why);
  if (!c->implicit_tls)
    outbuf_append(&c->session.out, reply, strlen(reply));
  c->session.end_reason = why;
  c->session.closing = true;
  io_close(c);
}

int conn_accept(struct worker *w, uv_stream_t *server, size_t listener) {
  struct conn *c = calloc(1, sizeof *c);
  if (c == NULL)
    return UV_ENOMEM;
  const struct config_listen *where = &w->config->listen[listener];
  c->worker = w;
  uv_tcp_init(&w->loop, &c->tcp);
  uv_timer_init(&w->loop, &c->timer);
  uv_timer_init(&w->loop, &c->delay_timer);
  c->tcp.data = c;
  c->timer.data = c;
  c->delay_timer.data = c;
  c->handles_open = 3;
  c->state = CONN_OPEN;
  int rc = uv_accept(server, (uv_stream_t *)&c->tcp);
  struct sockaddr_storage peer;
  int peer_len = sizeof peer;
  memset(&peer, 0, sizeof peer);
  if (rc == 0)
    rc = uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&peer, &peer_len);
  int init = session_init(&c->session, &w->env, &conn_io, c, worker_next_conn_id(),
                          (struct sockaddr *)&peer);
  worker_conn_added(w, c);
  if (rc < 0 || init < 0) {
    close_handles(c);
    return rc < 0 ? rc : UV_ENOMEM;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  c->last_activity = uv_now(&w->loop);
  c->implicit_tls = where->tls == CONFIG_TLS_IMPLICIT;
  c->session.tls_offered = where->tls == CONFIG_TLS_STARTTLS;
  if (w->conn_count > w->config->limits.max_connections) {
    refuse(c, "-ERR [SYS/TEMP] Too many connections, try later.\r\n",
           "max_connections reached");
    return 0;
  }
  if (login_guard_connect(w->env.guard, &c->session.addr) < 0) {
    refuse(c, "-ERR [SYS/TEMP] Too many connections from your address, try later.\r\n",
           "max_connections_per_ip reached");
    return 0;
  }
  c->addr_counted = true;
  arm_timer(c, session_timeout_ms(&c->session));
  c->input_wanted = true;
  if (c->implicit_tls) {
    c->session.state = SESSION_TLS_WAIT;
    begin_tls(c);
    return 0;
  }
  session_start(&c->session);
  update_reading(c);
  return 0;
}
