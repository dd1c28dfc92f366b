#include "conn.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "worker.h"

struct write_req {
  uv_write_t req;
  struct conn *conn;
  size_t len;
};

static void on_handle_closed(uv_handle_t *h);
static void flush_output(void *ctx);

static void close_handles(struct conn *c) {
  if (c->state == CONN_CLOSED)
    return;
  c->state = CONN_CLOSED;
  uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
  uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

void conn_abort(struct conn *c) {
  close_handles(c);
}

static void on_handle_closed(uv_handle_t *h) {
  struct conn *c = h->data;
  if (--c->handles_open > 0)
    return;
  /* Both handles are gone; outstanding writes were canceled before this
   * callback, so the session alone decides when the memory goes. */
  session_finish(&c->session);
}

/* ---- session_io --------------------------------------------------------- */

static void io_pause_input(void *ctx) {
  struct conn *c = ctx;
  if (c->reading && c->state == CONN_OPEN) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = false;
  }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

static void io_resume_input(void *ctx) {
  struct conn *c = ctx;
  if (!c->reading && c->state == CONN_OPEN && !c->session.input_closed) {
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
      c->reading = true;
  }
}

static void maybe_finish_close(struct conn *c) {
  if (c->state == CONN_CLOSING && c->write_queued == 0 &&
      outbuf_pending(&c->session.out) == 0)
    close_handles(c);
}

static void io_close(void *ctx) {
  struct conn *c = ctx;
  if (c->state != CONN_OPEN)
    return;
  io_pause_input(c);
  c->state = CONN_CLOSING;
  flush_output(c);
  maybe_finish_close(c);
}

static void io_release(void *ctx) {
  struct conn *c = ctx;
  struct worker *w = c->worker;
  session_free(&c->session);
  worker_conn_removed(w, c);
  free(c);
}

static const struct session_io conn_io = {
    .flush = flush_output,
    .pause_input = io_pause_input,
    .resume_input = io_resume_input,
    .close = io_close,
    .release = io_release,
};

/* ---- Writing ------------------------------------------------------------ */

static void on_write(uv_write_t *req, int status) {
  struct write_req *wr = (struct write_req *)req;
  struct conn *c = wr->conn;
  c->write_queued -= wr->len;
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
  if (c->state == CONN_CLOSING) {
    maybe_finish_close(c);
    return;
  }
  size_t low_water = c->worker->config->limits.output_buffer_bytes / 2;
  if (outbuf_pending(&c->session.out) <= low_water)
    session_output_drained(&c->session);
}

static void flush_output(void *ctx) {
  struct conn *c = ctx;
  if (c->state == CONN_CLOSED)
    return;
  const char *data;
  size_t len;
  while ((len = outbuf_take(&c->session.out, &data)) > 0) {
    uv_buf_t buf = uv_buf_init((char *)data, (unsigned)len);
    /* Most replies fit the socket buffer: write them now, without a
     * request allocation, and queue only what is left. */
    if (c->write_queued == 0) {
      int n = uv_try_write((uv_stream_t *)&c->tcp, &buf, 1);
      if (n > 0) {
        outbuf_release(&c->session.out, (size_t)n);
        if ((size_t)n == len)
          continue;
        buf.base += n;
        buf.len -= (unsigned)n;
      } else if (n < 0 && n != UV_EAGAIN) {
        close_handles(c);
        return;
      }
    }
    struct write_req *wr = malloc(sizeof *wr);
    if (wr == NULL) {
      close_handles(c);
      return;
    }
    wr->conn = c;
    wr->len = buf.len;
    if (uv_write(&wr->req, (uv_stream_t *)&c->tcp, &buf, 1, on_write) < 0) {
      free(wr);
      close_handles(c);
      return;
    }
    c->write_queued += buf.len;
  }
  c->last_activity = uv_now(c->tcp.loop);
}

/* ---- Reading ------------------------------------------------------------ */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  struct conn *c = h->data;
  size_t space;
  char *p = session_input_space(&c->session, &space);
  *buf = uv_buf_init(p, (unsigned)space);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  struct conn *c = stream->data;
  if (nread == UV_ENOBUFS) {
    /* The line buffer is full of commands waiting for their turn. */
    io_pause_input(c);
    return;
  }
  if (nread == UV_EOF) {
    io_pause_input(c);
    session_input_eof(&c->session);
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
  session_input_received(&c->session, (size_t)nread);
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
    session_timed_out(&c->session);
    flush_output(c);
    uv_timer_start(t, on_timer, 5000, 0); /* closing grace */
    return;
  }
  arm_timer(c, timeout - idle);
}

int conn_accept(struct worker *w, uv_stream_t *server) {
  struct conn *c = calloc(1, sizeof *c);
  if (c == NULL)
    return UV_ENOMEM;
  c->worker = w;
  uv_tcp_init(&w->loop, &c->tcp);
  uv_timer_init(&w->loop, &c->timer);
  c->tcp.data = c;
  c->timer.data = c;
  c->handles_open = 2;
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
  if (w->conn_count > w->config->limits.max_connections) {
    outbuf_append_literal(&c->session.out,
                          "-ERR [SYS/TEMP] Too many connections, try later.\r\n");
    session_log(&c->session, POPKIT_LOG_WARNING, "refused: max_connections reached");
    c->session.end_reason = "refused: too many connections";
    c->session.closing = true;
    io_close(c);
    return 0;
  }
  arm_timer(c, session_timeout_ms(&c->session));
  session_start(&c->session);
  io_resume_input(c);
  return 0;
}
