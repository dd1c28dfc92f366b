/*
 * The directory of one worker: the queue of operations, which connection
 * each goes on, deadlines, and what happens when the server is away (see
 * ldap_dir.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ldap_dir_internal.h"

static void dispatch(struct ldap_dir *dir);
static void on_kick(uv_timer_t *timer);
static void on_retry(uv_timer_t *timer);
static void on_deadline(uv_timer_t *timer);

/* ---- The queue ---------------------------------------------------------- */

void ldap_dir_queue(struct ldap_dir *dir, struct ldap_op *op, bool front) {
  op->conn = NULL;
  if (front) {
    op->prev = NULL;
    op->next = dir->queue_head;
    if (dir->queue_head != NULL)
      dir->queue_head->prev = op;
    else
      dir->queue_tail = op;
    dir->queue_head = op;
  } else {
    op->next = NULL;
    op->prev = dir->queue_tail;
    if (dir->queue_tail != NULL)
      dir->queue_tail->next = op;
    else
      dir->queue_head = op;
    dir->queue_tail = op;
  }
}

/* Dispatching waits for the next loop turn: never inside a caller, which
 * a failure would call back into, and never recursively. */
void ldap_dir_kick(struct ldap_dir *dir) {
  if (!dir->destroying)
    uv_timer_start(&dir->kick, on_kick, 0, 0);
}

/* ---- Connects and the backoff ------------------------------------------- */

void ldap_dir_maybe_free(struct ldap_dir *dir) {
  if (dir->destroying && dir->conns == NULL && dir->open_handles == 0) {
    free(dir->uri);
    free(dir->ca_file);
    free(dir->bind_dn);
    ldap_wipe_free(dir->bind_password);
    free(dir);
  }
}

static bool anything_up(const struct ldap_dir *dir) {
  for (const struct ldap_conn *c = dir->conns; c != NULL; c = c->next)
    if (c->state != CONN_CLOSED)
      return true;
  return false;
}

void ldap_dir_connected(struct ldap_dir *dir) {
  dir->loss_logged = false;
  dir->failures = 0;
  dir->connect_at = 0;
  uv_timer_stop(&dir->retry);
  if (dir->down) {
    dir->down = false;
    dir_log(dir, POPKIT_LOG_INFO, "the directory %s is reachable again", dir->uri);
  }
}

void ldap_dir_connect_failed(struct ldap_dir *dir, const char *why) {
  snprintf(dir->last_error, sizeof dir->last_error, "%s", why);
  dir->failures++;
  uint64_t delay = RECONNECT_FIRST_MS;
  for (unsigned i = 1; i < dir->failures && delay < dir->reconnect_max_ms; i++)
    delay *= 2;
  if (delay > dir->reconnect_max_ms)
    delay = dir->reconnect_max_ms;
  dir->connect_at = uv_now(dir->loop) + delay;
  uv_timer_start(&dir->retry, on_retry, delay, 0);
  bool some_up = false;
  for (const struct ldap_conn *c = dir->conns; c != NULL; c = c->next)
    some_up |= c->state == CONN_UP;
  if (some_up) {
    dir_log(dir, POPKIT_LOG_WARNING, "cannot open one more connection to %s: %s",
            dir->uri, why);
    return;
  }
  if (!dir->down)
    dir_log(dir, POPKIT_LOG_WARNING,
            "the directory %s is unreachable: %s; trying again in the background",
            dir->uri, why);
  else
    dir_log(dir, POPKIT_LOG_DEBUG, "the directory is still unreachable: %s", why);
  dir->down = true;
}

static void on_retry(uv_timer_t *timer) {
  struct ldap_dir *dir = timer->data;
  /* While down, keep trying whether or not anyone waits, so the first
   * login after slapd comes back already finds it up. */
  if (dir->down && !anything_up(dir))
    ldap_conn_open(dir, false);
  else
    dispatch(dir);
}

/* ---- Dispatching -------------------------------------------------------- */

static struct ldap_conn *free_conn(struct ldap_dir *dir, enum ldap_op_kind kind) {
  for (struct ldap_conn *c = dir->conns; c != NULL; c = c->next) {
    if (c->state != CONN_UP || c->for_binds != (kind == LDAP_OP_BIND))
      continue;
    if (c->op_count < (kind == LDAP_OP_BIND ? 1u : SEARCHES_IN_FLIGHT))
      return c;
  }
  return NULL;
}

static unsigned count_conns(const struct ldap_dir *dir, bool for_binds,
                            enum conn_state state) {
  unsigned n = 0;
  for (const struct ldap_conn *c = dir->conns; c != NULL; c = c->next)
    if (c->for_binds == for_binds && c->state == state)
      n++;
  return n;
}

/* Opens what the waiting operations need: the search connection, and a
 * bind connection per waiting bind up to bind_connections. */
static void open_what_is_needed(struct ldap_dir *dir) {
  unsigned searches = 0, binds = 0;
  for (struct ldap_op *op = dir->queue_head; op != NULL; op = op->next) {
    if (op->kind == LDAP_OP_BIND)
      binds++;
    else
      searches++;
  }
  if (dir->down || uv_now(dir->loop) < dir->connect_at)
    return;
  if (searches > 0 && count_conns(dir, false, CONN_UP) == 0 &&
      count_conns(dir, false, CONN_CONNECTING) == 0)
    ldap_conn_open(dir, false);
  unsigned connecting = count_conns(dir, true, CONN_CONNECTING);
  unsigned open = connecting + count_conns(dir, true, CONN_UP);
  while (binds > connecting && open < dir->bind_connections) {
    ldap_conn_open(dir, true);
    connecting++;
    open++;
  }
}

static void arm_deadline(struct ldap_dir *dir) {
  uint64_t earliest = UINT64_MAX;
  for (struct ldap_op *op = dir->queue_head; op != NULL; op = op->next)
    if (op->deadline_ms < earliest)
      earliest = op->deadline_ms;
  for (struct ldap_conn *c = dir->conns; c != NULL; c = c->next)
    for (struct ldap_op *op = c->ops; op != NULL; op = op->next)
      if (op->deadline_ms < earliest)
        earliest = op->deadline_ms;
  uint64_t now = uv_now(dir->loop);
  if (earliest != UINT64_MAX)
    uv_timer_start(&dir->deadline, on_deadline, earliest > now ? earliest - now : 0, 0);
  else
    uv_timer_stop(&dir->deadline);
}

/* The first queued operation that can go now, or must end now, with the
 * connection it goes on (NULL: it ends). */
static struct ldap_op *next_ready(struct ldap_dir *dir, struct ldap_conn **conn_r) {
  for (struct ldap_op *op = dir->queue_head; op != NULL; op = op->next) {
    *conn_r = NULL;
    if (op->canceled || dir->down || (*conn_r = free_conn(dir, op->kind)) != NULL)
      return op;
  }
  return NULL;
}

static void dispatch(struct ldap_dir *dir) {
  struct ldap_op *op;
  struct ldap_conn *conn;
  /* A done may queue more, or break a connection: the queue is searched
   * afresh each time. */
  while (!dir->destroying && (op = next_ready(dir, &conn)) != NULL) {
    ldap_op_unlink(&dir->queue_head, &dir->queue_tail, op);
    if (conn != NULL) {
      ldap_conn_send(conn, op);
    } else if (op->canceled) {
      ldap_op_finish(op, LDAP_USER_CANCELLED, false, "canceled");
    } else {
      snprintf(dir->down_text, sizeof dir->down_text, "the directory is unreachable: %s",
               dir->last_error);
      ldap_op_finish(op, LDAP_SERVER_DOWN, true, dir->down_text);
    }
  }
  if (dir->destroying)
    return;
  open_what_is_needed(dir);
  arm_deadline(dir);
}

static void on_kick(uv_timer_t *timer) {
  dispatch(timer->data);
}

/* The first operation past its deadline, queued or sent. */
static struct ldap_op *late_op(struct ldap_dir *dir, uint64_t now) {
  for (struct ldap_op *op = dir->queue_head; op != NULL; op = op->next)
    if (op->deadline_ms <= now)
      return op;
  for (struct ldap_conn *c = dir->conns; c != NULL; c = c->next)
    for (struct ldap_op *op = c->ops; op != NULL; op = op->next)
      if (op->deadline_ms <= now)
        return op;
  return NULL;
}

static void on_deadline(uv_timer_t *timer) {
  struct ldap_dir *dir = timer->data;
  uint64_t now = uv_now(dir->loop);
  char text[128];
  struct ldap_op *op;
  while ((op = late_op(dir, now)) != NULL) {
    struct ldap_conn *conn = op->conn;
    if (conn == NULL) {
      ldap_op_unlink(&dir->queue_head, &dir->queue_tail, op);
      snprintf(text, sizeof text, "no connection to the directory within %u ms",
               dir->timeout_ms);
    } else {
      snprintf(text, sizeof text, "no answer from the directory within %u ms",
               dir->timeout_ms);
      if (op->kind == LDAP_OP_SEARCH) {
        ldap_conn_abandon(conn, op);
      } else {
        ldap_conn_take(conn, op);
        /* A bind cannot be abandoned (RFC 4511 4.11), and its connection
         * is of no use until it is answered. */
        dir_log(dir, POPKIT_LOG_WARNING, "%s; closing the connection", text);
        ldap_conn_close(conn);
      }
    }
    ldap_op_finish(op, LDAP_TIMEOUT, true, text);
    if (dir->destroying)
      return;
  }
  dispatch(dir);
}

/* ---- The public face ---------------------------------------------------- */

struct ldap_dir *ldap_dir_new(uv_loop_t *loop, const struct ldap_dir_options *options,
                              const struct popkit_host *host,
                              struct popkit_module_handle *self) {
  struct ldap_dir *dir = calloc(1, sizeof *dir);
  if (dir == NULL)
    return NULL;
  dir->loop = loop;
  dir->host = host;
  dir->self = self;
  dir->starttls = options->starttls;
  dir->tls_verify = options->tls_verify;
  dir->timeout_ms = options->timeout_ms;
  dir->bind_connections = options->bind_connections;
  dir->reconnect_max_ms = options->reconnect_max_ms;
  if (!ldap_copy_string(&dir->uri, options->uri) ||
      !ldap_copy_string(&dir->ca_file, options->ca_file) ||
      !ldap_copy_string(&dir->bind_dn, options->bind_dn) ||
      !ldap_copy_string(&dir->bind_password, options->bind_password)) {
    dir->destroying = true;
    ldap_dir_maybe_free(dir);
    return NULL;
  }
  return dir;
}

static void on_dir_timer_closed(uv_handle_t *handle) {
  struct ldap_dir *dir = handle->data;
  dir->open_handles--;
  ldap_dir_maybe_free(dir);
}

static void start_on_loop(struct ldap_dir *dir) {
  if (dir->started)
    return;
  dir->started = true;
  uv_timer_t *timers[] = {&dir->kick, &dir->retry, &dir->deadline};
  for (size_t i = 0; i < sizeof timers / sizeof timers[0]; i++) {
    uv_timer_init(dir->loop, timers[i]);
    timers[i]->data = dir;
    dir->open_handles++;
  }
}

void ldap_dir_submit(struct ldap_dir *dir, struct ldap_op *op) {
  start_on_loop(dir);
  op->deadline_ms = uv_now(dir->loop) + dir->timeout_ms;
  ldap_dir_queue(dir, op, false);
  ldap_dir_kick(dir);
}

void ldap_dir_cancel(struct ldap_dir *dir, struct ldap_op *op) {
  op->canceled = true;
  struct ldap_conn *conn = op->conn;
  if (conn != NULL && op->kind == LDAP_OP_SEARCH) {
    ldap_conn_abandon(conn, op);
    ldap_dir_queue(dir, op, true); /* dispatch finishes it */
  }
  /* A queued operation is finished by dispatch; a bind that is out, when
   * its answer comes. */
  ldap_dir_kick(dir);
}

void ldap_dir_destroy(struct ldap_dir *dir) {
  if (dir == NULL)
    return;
  dir->destroying = true;
  while (dir->queue_head != NULL) {
    struct ldap_op *op = dir->queue_head;
    ldap_op_unlink(&dir->queue_head, &dir->queue_tail, op);
    ldap_op_free(op);
  }
  for (struct ldap_conn *c = dir->conns; c != NULL; c = c->next) {
    while (c->ops != NULL) {
      struct ldap_op *op = c->ops;
      ldap_conn_take(c, op);
      ldap_op_free(op);
    }
    if (c->state == CONN_UP)
      ldap_conn_close(c); /* connect_done or the close callbacks free the rest */
  }
  if (dir->started) {
    uv_timer_t *timers[] = {&dir->kick, &dir->retry, &dir->deadline};
    for (size_t i = 0; i < sizeof timers / sizeof timers[0]; i++)
      uv_close((uv_handle_t *)timers[i], on_dir_timer_closed);
  }
  ldap_dir_maybe_free(dir);
}
