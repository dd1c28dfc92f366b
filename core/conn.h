/*
 * A client connection: the TCP handle, the inactivity timer and the write
 * path of one session. Output is written with uv_try_write first and queued
 * with uv_write only for what the socket would not take, and the session is
 * told to produce more once the queue falls under half the high-water mark.
 */
#ifndef POPKIT_CORE_CONN_H
#define POPKIT_CORE_CONN_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "pop3_session.h"

struct worker;

enum conn_state {
  CONN_OPEN,    /* reading and writing */
  CONN_CLOSING, /* the session asked to close: flushing what is queued */
  CONN_CLOSED   /* handles closing or closed; waiting for the session */
};

struct conn {
  uv_tcp_t tcp;
  uv_timer_t timer;
  enum conn_state state;
  struct worker *worker;
  struct conn *prev, *next; /* the worker's list */
  uint64_t last_activity;   /* uv_now() of the last byte in or out */
  unsigned handles_open;
  size_t write_queued; /* bytes handed to uv_write and not yet done */
  bool reading;
  struct session session;
};

/* Accepts a pending connection on `server` for the worker. Returns 0 or a
 * negative libuv error. */
int conn_accept(struct worker *w, uv_stream_t *server);

/* Closes the connection at once (shutdown grace over, or write error). */
void conn_abort(struct conn *c);

#endif
