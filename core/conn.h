/*
 * A client connection: the TCP handle, its timers, TLS when the listener
 * or STLS asks for it, and the write path of one session.
 *
 * Plain output is written from the session's block queue with uv_try_write
 * first and queued with uv_write only for what the socket would not take.
 * Under TLS the blocks are encrypted into records that the connection
 * queues itself, and blocks are encrypted only while less than the
 * high-water mark of ciphertext waits, so memory stays bounded either way.
 * The session is told to produce more once what waits falls under half the
 * high-water mark.
 */
#ifndef POPKIT_CORE_CONN_H
#define POPKIT_CORE_CONN_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "pop3_session.h"
#include "tls.h"

struct worker;

enum conn_state {
  CONN_OPEN,    /* reading and writing */
  CONN_CLOSING, /* the session asked to close: flushing what is queued */
  CONN_CLOSED   /* handles closing or closed; waiting for the session */
};

enum conn_tls {
  CONN_TLS_OFF,       /* plain POP3 */
  CONN_TLS_STARTING,  /* STLS answered: waiting for "+OK" to leave in clear */
  CONN_TLS_HANDSHAKE, /* bytes on the wire are TLS; handshake running */
  CONN_TLS_ON
};

struct conn {
  uv_tcp_t tcp;
  uv_timer_t timer;       /* inactivity */
  uv_timer_t delay_timer; /* a login waiting out its address's penalty */
  enum conn_state state;
  struct worker *worker;
  struct conn *prev, *next; /* the worker's list */
  uint64_t last_activity;   /* uv_now() of the last byte in or out */
  unsigned handles_open;
  size_t write_queued; /* bytes handed to uv_write and not yet done */
  bool input_wanted;   /* the session wants input (its buffer has room) */
  bool reading;        /* uv_read_start is in effect */
  bool peer_eof;       /* the client shut down its side */
  bool addr_counted;   /* login_guard_connect succeeded for session.addr */

  enum conn_tls tls_state;
  bool implicit_tls; /* the listener speaks TLS from the first byte */
  bool tls_driving;  /* inside drive_tls(): calls from below just note */
  bool tls_again;    /*   that it should loop once more */
  bool tls_bye_sent;
  struct tls_session *tls;

  struct session session;
};

/* Accepts a pending connection on `server` (listener number `listener`
 * of the config) for the worker. Returns 0 or a negative libuv error. */
int conn_accept(struct worker *w, uv_stream_t *server, size_t listener);

/* Closes the connection at once (shutdown grace over, or write error). */
void conn_abort(struct conn *c);

#endif
