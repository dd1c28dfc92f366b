/*
 * A worker: one thread with its own libuv loop, its own listening sockets
 * (SO_REUSEPORT lets the kernel spread connections over workers), its own
 * connections and its own instance of every module. Nothing on the path of
 * a command takes a lock.
 */
#ifndef POPKIT_CORE_WORKER_H
#define POPKIT_CORE_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "chain.h"
#include "config.h"
#include "pop3_session.h"
#include "tls.h"

struct conn;

/* What every worker shares with the others, owned by main. */
struct worker_shared {
  struct login_guard *guard;
  struct tls_store *tls; /* certificates; swapped by SIGHUP */
};

/* Ciphertext read buffer of a worker: TLS connections read into it and
 * decrypt at once, so an idle TLS connection has no read buffer. Big enough
 * for a full TLS record. */
#define WORKER_TLS_READ_SIZE (17 * 1024)

struct worker {
  unsigned id;
  uv_loop_t loop;
  uv_thread_t thread;
  const struct config *config;
  struct chain chain;
  struct session_env env;
  struct tls_store *tls;
  char *tls_read_buffer; /* WORKER_TLS_READ_SIZE bytes */
  uv_tcp_t *listeners;   /* one per config listen entry */
  size_t listener_count;
  uv_async_t stop_async;     /* the main thread asks for shutdown */
  uv_timer_t shutdown_timer; /* end of the grace period */
  struct conn *conns;
  size_t conn_count;
  bool draining;   /* stopped accepting; sessions finishing */
  bool grace_over; /* sessions were told the server is going down */
};

/* Sets the worker up on the calling (main) thread: loop, module instances,
 * and listeners over the already-bound sockets fds[0..listen_count-1].
 * Returns 0 or a negative code with the reason in error. */
int worker_init(struct worker *w, unsigned id, const struct config *config,
                const struct worker_shared *shared, const int *fds, char *error,
                size_t error_size);
/* Starts the worker's thread. */
int worker_start(struct worker *w);
/* From any thread: stop accepting and shut down gracefully. */
void worker_request_stop(struct worker *w);
/* Waits for the thread and frees the loop. */
void worker_join(struct worker *w);

/* For conn.c. */
void worker_conn_added(struct worker *w, struct conn *c);
void worker_conn_removed(struct worker *w, struct conn *c);
uint64_t worker_next_conn_id(void);

#endif
