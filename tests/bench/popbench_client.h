/*
 * One POP3 client of popbench: the dialogue of each mode, step by step,
 * over one connection, with every reply checked. What a run does with its
 * clients (how many, when they start again, when it ends) is popbench.c's.
 */
#ifndef POPBENCH_CLIENT_H
#define POPBENCH_CLIENT_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "popbench_conn.h"
#include "popbench_options.h"
#include "popbench_scan.h"
#include "popbench_stats.h"

enum client_step {
  STEP_IDLE,           /* no connection */
  STEP_CONNECT,        /* TCP connect in progress */
  STEP_HANDSHAKE,      /* implicit TLS: handshake before the banner */
  STEP_BANNER,         /* waiting for the greeting */
  STEP_CAPA,           /* CAPA sent, waiting for its status line */
  STEP_CAPA_LINES,     /* reading the capabilities, looking for STLS */
  STEP_STLS,           /* STLS sent */
  STEP_STLS_HANDSHAKE, /* handshake after "+OK" to STLS */
  STEP_USER,           /* USER sent */
  STEP_PASS,           /* PASS sent */
  STEP_STAT,           /* STAT sent */
  STEP_LIST,           /* LIST sent, waiting for its status line */
  STEP_LIST_LINES,     /* reading the scan listing */
  STEP_RETR,           /* RETR sent, waiting for its status line */
  STEP_RETR_BODY,      /* reading the message */
  STEP_HELD,           /* idle: logged in, nothing outstanding */
  STEP_NOOP,           /* idle: NOOP sent */
  STEP_QUIT,           /* QUIT sent */
  STEP_WAIT_CLOSE,     /* "+OK" to QUIT read, waiting for the server to close */
};

struct run;

struct listed_message {
  unsigned number;
  uint64_t size;
};

struct client {
  struct conn conn; /* first: the conn's callbacks find the client */
  struct run *run;
  long user; /* index of its user: slot j mod --users */
  enum client_step step;
  struct scanner scan;
  uint64_t started_ns; /* connect began */
  uint64_t sent_ns;    /* the RETR in flight was sent, or QUIT answered */
  bool stls_offered;
  bool quit_after_noop; /* idle: the hold ended while a NOOP was out */
  bool retired;         /* never to connect again */
  bool got_in;          /* idle: logged in and counted (set by the run) */
  /* retr: the listing, the message being retrieved and the next one (kept
   * across reconnections), and the bytes of the current one already added
   * to the run's total. */
  struct listed_message *messages;
  size_t n_messages, messages_room, current, next;
  uint64_t bytes_counted;
};

/* What a client tells its run. */
struct run_hooks {
  /* A completion: a session done (sessions), a message checked (retr) or a
   * login done (idle), with its latency. */
  void (*completed)(struct run *run, struct client *cl, uint64_t latency_ns);
  /* Message bytes received and checked so far (retr). */
  void (*bytes)(struct run *run, uint64_t bytes);
  void (*error)(struct run *run, const char *kind, const char *detail);
  /* The connection is closed: the client may start again. */
  void (*ended)(struct run *run, struct client *cl);
};

/* The settings every client of a run shares. */
struct client_env {
  const struct options *opt;
  uv_loop_t *loop;
  const struct run_hooks *hooks;
};

void client_set_env(const struct client_env *env);

/* Connects and runs the mode's dialogue from the start. */
void client_start(struct client *cl);
/* idle: sends NOOP if the session is held and quiet. */
void client_noop(struct client *cl);
/* idle: QUITs a held session (after its NOOP, if one is out). */
void client_quit(struct client *cl);
/* Closes the connection now, with no error counted unless the server
 * has been keeping it open after QUIT. */
void client_abort(struct client *cl);
/* Closes the connection and counts an error of kind. */
void client_fail(struct client *cl, const char *kind, const char *detail);
void client_free(struct client *cl);

const char *client_step_name(enum client_step step);

#endif
