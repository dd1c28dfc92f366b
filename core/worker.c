#include "worker.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "log.h"

#define LISTEN_BACKLOG 1024

static atomic_uint_fast64_t conn_ids = 0;

uint64_t worker_next_conn_id(void) {
  return (uint64_t)atomic_fetch_add(&conn_ids, 1) + 1;
}

static void on_connection(uv_stream_t *server, int status) {
  struct worker *w = server->data;
  if (status < 0) {
    log_warning("worker %u: accept: %s", w->id, uv_strerror(status));
    return;
  }
  int rc = conn_accept(w, server, (size_t)((uv_tcp_t *)server - w->listeners));
  if (rc < 0)
    log_warning("worker %u: accepting a connection: %s", w->id, uv_strerror(rc));
}

void worker_conn_added(struct worker *w, struct conn *c) {
  c->prev = NULL;
  c->next = w->conns;
  if (w->conns != NULL)
    w->conns->prev = c;
  w->conns = c;
  w->conn_count++;
}

static void close_worker_handles(struct worker *w);

static void on_drained(uv_timer_t *t) {
  close_worker_handles(t->data);
}

void worker_conn_removed(struct worker *w, struct conn *c) {
  if (c->prev != NULL)
    c->prev->next = c->next;
  else
    w->conns = c->next;
  if (c->next != NULL)
    c->next->prev = c->prev;
  w->conn_count--;
  if (w->draining && w->conn_count == 0) {
    /* Not now: this runs inside the last session's completion callback,
     * possibly with a module's own callback further up the stack, and
     * closing the worker destroys the module instances. */
    uv_timer_start(&w->shutdown_timer, on_drained, 0, 0);
  }
}

/* Everything the loop still holds, so uv_run() returns. */
static void close_worker_handles(struct worker *w) {
  if (!uv_is_closing((uv_handle_t *)&w->shutdown_timer))
    uv_close((uv_handle_t *)&w->shutdown_timer, NULL);
  if (!uv_is_closing((uv_handle_t *)&w->stop_async))
    uv_close((uv_handle_t *)&w->stop_async, NULL);
  chain_close(&w->chain);
}

static void on_grace_over(uv_timer_t *t) {
  struct worker *w = t->data;
  if (!w->grace_over) {
    w->grace_over = true;
    log_info("worker %u: shutdown grace period over, closing %zu sessions", w->id,
             w->conn_count);
    for (struct conn *c = w->conns; c != NULL; c = c->next)
      session_shutdown(&c->session);
    uv_timer_start(t, on_grace_over, 2000, 0);
    return;
  }
  /* Clients that did not read even their last line are cut off. Handles
   * close asynchronously, so the list stays intact while we walk it. */
  for (struct conn *c = w->conns; c != NULL; c = c->next)
    conn_abort(c);
}

static void on_stop(uv_async_t *a) {
  struct worker *w = a->data;
  if (w->draining)
    return;
  w->draining = true;
  for (size_t i = 0; i < w->listener_count; i++)
    uv_close((uv_handle_t *)&w->listeners[i], NULL);
  if (w->conn_count == 0) {
    close_worker_handles(w);
    return;
  }
  uv_timer_start(&w->shutdown_timer, on_grace_over,
                 (uint64_t)w->config->limits.shutdown_timeout_s * 1000, 0);
}

int worker_init(struct worker *w, unsigned id, const struct config *config,
                const struct worker_shared *shared, const int *fds, char *error,
                size_t error_size) {
  memset(w, 0, sizeof *w);
  w->id = id;
  w->config = config;
  int rc = uv_loop_init(&w->loop);
  if (rc < 0) {
    snprintf(error, error_size, "worker %u: %s", id, uv_strerror(rc));
    return rc;
  }
  rc = chain_init(&w->chain, &w->loop, config, id, error, error_size);
  if (rc < 0) {
    uv_run(&w->loop, UV_RUN_DEFAULT);
    uv_loop_close(&w->loop);
    return rc;
  }
  w->env.config = config;
  w->env.chain = &w->chain;
  w->env.guard = shared->guard;
  w->tls = shared->tls;
  w->tls_read_buffer = malloc(WORKER_TLS_READ_SIZE);
  if (w->tls_read_buffer == NULL) {
    snprintf(error, error_size, "worker %u: out of memory", id);
    return -ENOMEM;
  }
  uv_async_init(&w->loop, &w->stop_async, on_stop);
  w->stop_async.data = w;
  uv_timer_init(&w->loop, &w->shutdown_timer);
  w->shutdown_timer.data = w;
  w->listeners = calloc(config->listen_count, sizeof *w->listeners);
  if (w->listeners == NULL)
    return -ENOMEM;
  for (size_t i = 0; i < config->listen_count; i++) {
    uv_tcp_init(&w->loop, &w->listeners[i]);
    w->listeners[i].data = w;
    w->listener_count++;
    rc = uv_tcp_open(&w->listeners[i], fds[i]);
    if (rc == 0)
      rc = uv_listen((uv_stream_t *)&w->listeners[i], LISTEN_BACKLOG, on_connection);
    if (rc < 0) {
      snprintf(error, error_size, "worker %u: listen: %s", id, uv_strerror(rc));
      return rc;
    }
  }
  return 0;
}

static void worker_main(void *arg) {
  struct worker *w = arg;
  uv_run(&w->loop, UV_RUN_DEFAULT);
}

int worker_start(struct worker *w) {
  return uv_thread_create(&w->thread, worker_main, w);
}

void worker_request_stop(struct worker *w) {
  uv_async_send(&w->stop_async);
}

void worker_join(struct worker *w) {
  uv_thread_join(&w->thread);
  int rc = uv_loop_close(&w->loop);
  if (rc < 0)
    log_warning("worker %u: loop closed with handles still open", w->id);
  free(w->listeners);
  free(w->tls_read_buffer);
}
