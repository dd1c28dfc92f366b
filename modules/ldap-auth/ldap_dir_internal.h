/*
 * What the parts of the directory layer share: ldap_op.c (operations),
 * ldap_conn.c (one connection: opened on the thread pool, then driven by
 * the loop) and ldap_dir.c (the queue, dispatching, deadlines and the
 * backoff). Nothing outside them includes this.
 */
#ifndef POPKIT_LDAP_DIR_INTERNAL_H
#define POPKIT_LDAP_DIR_INTERNAL_H

#include <ldap.h>
#include <stdbool.h>

#include "ldap_dir.h"

/* The first delay before connecting again after a failure; it doubles up
 * to reconnect_max_ms. */
#define RECONNECT_FIRST_MS 100u
/* Searches in flight on the search connection at once; more wait. */
#define SEARCHES_IN_FLIGHT 64u

enum conn_state {
  CONN_CONNECTING, /* opened on the thread pool */
  CONN_UP,         /* watched; operations go out on it */
  CONN_CLOSED      /* dropped; its handles are closing */
};

struct ldap_conn {
  struct ldap_dir *dir;
  struct ldap_conn *prev, *next;
  enum conn_state state;
  bool for_binds;
  LDAP *ld;
  int fd; /* libldap's socket, valid while up */
  uv_work_t connect_work;
  uv_poll_t poll;
  int open_handles;
  char connect_error[420]; /* from the thread pool */
  struct ldap_op *ops;     /* sent, awaiting their result */
  unsigned op_count;
};

struct ldap_dir {
  uv_loop_t *loop;
  const struct popkit_host *host;
  struct popkit_module_handle *self;
  char *uri, *ca_file, *bind_dn, *bind_password;
  bool starttls, tls_verify;
  unsigned timeout_ms, bind_connections, reconnect_max_ms;
  bool started; /* the timers exist (made on the loop's thread) */
  bool destroying;
  struct ldap_conn *conns; /* every connection not yet freed */
  struct ldap_op *queue_head, *queue_tail;
  uv_timer_t kick;     /* dispatches on the next loop turn */
  uv_timer_t retry;    /* the next connect after a failure */
  uv_timer_t deadline; /* the earliest operation's deadline */
  int open_handles;
  bool down;           /* nothing up, and the last connect failed */
  bool loss_logged;    /* a lost connection was logged since the last connect */
  unsigned failures;   /* connects failed in a row */
  uint64_t connect_at; /* no connect before this uv_now() */
  char last_error[420];
  char down_text[460];
};

#define dir_log(dir, level, ...) (dir)->host->log((dir)->self, NULL, level, __VA_ARGS__)

/* ---- ldap_op.c ---- */

/* Frees a string after wiping it: passwords. */
void ldap_wipe_free(char *s);
/* strdup that keeps NULL as NULL; false when out of memory. */
bool ldap_copy_string(char **to, const char *from);
void ldap_op_free(struct ldap_op *op);
/* Runs op's done with the answer and frees op. */
void ldap_op_finish(struct ldap_op *op, int code, bool unreachable, const char *text);
/* Takes op out of a list through op->prev/next (tail may be NULL). */
void ldap_op_unlink(struct ldap_op **head, struct ldap_op **tail, struct ldap_op *op);

/* ---- ldap_conn.c ---- */

/* Opens a connection on the thread pool; the directory hears of it
 * through ldap_dir_connected or ldap_dir_connect_failed. */
void ldap_conn_open(struct ldap_dir *dir, bool for_binds);
/* Sends op on an up connection; if the connection turns out broken, op
 * goes back to the queue with the connection's others. */
void ldap_conn_send(struct ldap_conn *conn, struct ldap_op *op);
/* Takes a sent op off its connection (it is the caller's to finish). */
void ldap_conn_take(struct ldap_conn *conn, struct ldap_op *op);
/* Takes a sent search off its connection and tells the server to drop it
 * (a bind cannot be abandoned: RFC 4511 4.11). */
void ldap_conn_abandon(struct ldap_conn *conn, struct ldap_op *op);
/* Drops an up connection; its operations are the caller's to move first. */
void ldap_conn_close(struct ldap_conn *conn);

/* ---- ldap_dir.c ---- */

/* Puts op in the queue, at its end or (an operation sent once more) at
 * its front. */
void ldap_dir_queue(struct ldap_dir *dir, struct ldap_op *op, bool front);
/* Dispatches on the next loop turn. */
void ldap_dir_kick(struct ldap_dir *dir);
void ldap_dir_connected(struct ldap_dir *dir);
void ldap_dir_connect_failed(struct ldap_dir *dir, const char *why);
/* Frees a directory being destroyed once its last handle is closed. */
void ldap_dir_maybe_free(struct ldap_dir *dir);

#endif
