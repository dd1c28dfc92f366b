#include "ldap_dir.h"

#include <errno.h>
#include <fcntl.h>
#include <ldap.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "ldap_text.h"

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

static void dispatch(struct ldap_dir *dir);

/* ---- Operations --------------------------------------------------------- */

static void wipe_free(char *s) {
  if (s != NULL) {
    explicit_bzero(s, strlen(s));
    free(s);
  }
}

static void op_free(struct ldap_op *op) {
  if (op == NULL)
    return;
  free(op->base);
  free(op->filter);
  free(op->attribute);
  free(op->dn);
  wipe_free(op->password);
  free(op->first_dn);
  free(op->value);
  free(op);
}

/* strdup that keeps NULL as NULL; false when out of memory. */
static bool copy(char **to, const char *from) {
  *to = from != NULL ? strdup(from) : NULL;
  return from == NULL || *to != NULL;
}

struct ldap_op *ldap_op_search(const char *base, int scope, const char *filter,
                               const char *attribute, ldap_op_done done, void *data) {
  struct ldap_op *op = calloc(1, sizeof *op);
  if (op == NULL)
    return NULL;
  op->kind = LDAP_OP_SEARCH;
  op->scope = scope;
  op->done = done;
  op->data = data;
  if (!copy(&op->base, base) || !copy(&op->filter, filter) ||
      !copy(&op->attribute, attribute)) {
    op_free(op);
    return NULL;
  }
  return op;
}

struct ldap_op *ldap_op_bind(const char *dn, const char *password, ldap_op_done done,
                             void *data) {
  struct ldap_op *op = calloc(1, sizeof *op);
  if (op == NULL)
    return NULL;
  op->kind = LDAP_OP_BIND;
  op->done = done;
  op->data = data;
  if (!copy(&op->dn, dn) || !copy(&op->password, password)) {
    op_free(op);
    return NULL;
  }
  return op;
}

/* Runs op's done and frees it. */
static void op_finish(struct ldap_op *op, int code, bool unreachable, const char *text) {
  struct ldap_op_result r = {
      .code = code,
      .unreachable = unreachable,
      .text = text != NULL ? text : "",
      .entries = op->entries,
      .dn = op->first_dn,
      .value = op->value,
      .values = op->values,
  };
  if (op->canceled) {
    r.code = LDAP_USER_CANCELLED;
    r.unreachable = false;
    r.text = "canceled";
  }
  op->done(op, &r);
  op_free(op);
}

/* A doubly linked list through op->prev/next: the queue, or the
 * operations of one connection. */
static void list_remove(struct ldap_op **head, struct ldap_op **tail,
                        struct ldap_op *op) {
  if (op->prev != NULL)
    op->prev->next = op->next;
  else
    *head = op->next;
  if (op->next != NULL)
    op->next->prev = op->prev;
  else if (tail != NULL)
    *tail = op->prev;
  op->prev = op->next = NULL;
}

static void queue_push(struct ldap_dir *dir, struct ldap_op *op, bool front) {
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

static void on_kick(uv_timer_t *timer);

/* Dispatching waits for the next loop turn: never inside a caller, which
 * a failure would call back into, and never recursively. */
static void kick(struct ldap_dir *dir) {
  if (!dir->destroying)
    uv_timer_start(&dir->kick, on_kick, 0, 0);
}

/* ---- Connections -------------------------------------------------------- */

static void maybe_free_dir(struct ldap_dir *dir) {
  if (dir->destroying && dir->conns == NULL && dir->open_handles == 0) {
    free(dir->uri);
    free(dir->ca_file);
    free(dir->bind_dn);
    wipe_free(dir->bind_password);
    free(dir);
  }
}

static void free_conn_if_closed(struct ldap_conn *conn) {
  if (conn->open_handles > 0)
    return;
  struct ldap_dir *dir = conn->dir;
  if (conn->prev != NULL)
    conn->prev->next = conn->next;
  else
    dir->conns = conn->next;
  if (conn->next != NULL)
    conn->next->prev = conn->prev;
  if (conn->ld != NULL)
    ldap_unbind_ext(conn->ld, NULL, NULL);
  free(conn);
  maybe_free_dir(dir);
}

static void on_conn_handle_closed(uv_handle_t *handle) {
  struct ldap_conn *conn = handle->data;
  conn->open_handles--;
  free_conn_if_closed(conn);
}

/* Drops an up connection; its operations are the caller's to move first. */
static void conn_close(struct ldap_conn *conn) {
  conn->state = CONN_CLOSED;
  /* The poll handle goes first: closing it takes the socket out of the
   * loop's watch before ldap_unbind_ext (in free_conn_if_closed) closes it. */
  uv_close((uv_handle_t *)&conn->poll, on_conn_handle_closed);
}

/* The connection is gone under its operations: each goes out once more on
 * a new connection, or fails if it already did. */
static void conn_broke(struct ldap_conn *conn, const char *why) {
  struct ldap_dir *dir = conn->dir;
  char text[400];
  ldap_text_one_line(text, sizeof text, why);
  /* When slapd goes away every connection of the worker breaks: one line
   * says so, the rest go to the debug log until a connection is up again. */
  dir_log(dir, dir->loss_logged ? POPKIT_LOG_DEBUG : POPKIT_LOG_WARNING,
          "connection to the directory lost: %s", text);
  dir->loss_logged = true;
  struct ldap_op *ops = conn->ops;
  conn->ops = NULL;
  conn->op_count = 0;
  conn_close(conn);
  /* Back to the queue ahead of what waits there, oldest first: the
   * connection's list has the newest first, and each goes to the front. */
  struct ldap_op *failed = NULL;
  while (ops != NULL) {
    struct ldap_op *op = ops;
    ops = op->next;
    op->prev = op->next = NULL;
    if (op->retried || op->canceled) {
      op->next = failed;
      failed = op;
      continue;
    }
    op->retried = true;
    op->entries = op->values = 0;
    free(op->first_dn);
    free(op->value);
    op->first_dn = op->value = NULL;
    queue_push(dir, op, true);
  }
  while (failed != NULL) {
    struct ldap_op *op = failed;
    failed = op->next;
    op->next = NULL;
    op_finish(op, LDAP_SERVER_DOWN, true, text);
  }
  kick(dir);
}

/* libldap's last error on ld, with the server's or TLS layer's detail. */
static void describe_error(LDAP *ld, int code, char *buf, size_t size) {
  char *detail = NULL;
  if (ld != NULL)
    ldap_get_option(ld, LDAP_OPT_DIAGNOSTIC_MESSAGE, &detail);
  char text[400];
  /* libldap says "(unknown error code)" when a TLS handshake fails; its
   * reason only goes to its debug output. */
  if (detail != NULL && strcmp(detail, "(unknown error code)") == 0)
    snprintf(text, sizeof text,
             "%s: the TLS handshake failed; is the server's certificate signed by a CA "
             "in ca_file, and issued for the host name in uri?",
             ldap_err2string(code));
  else if (detail != NULL && detail[0] != '\0')
    snprintf(text, sizeof text, "%s (%s)", ldap_err2string(code), detail);
  else
    snprintf(text, sizeof text, "%s", ldap_err2string(code));
  ldap_memfree(detail);
  ldap_text_one_line(buf, size, text);
}

static struct ldap_op *find_op(struct ldap_conn *conn, int msgid) {
  for (struct ldap_op *op = conn->ops; op != NULL; op = op->next)
    if (op->msgid == msgid)
      return op;
  return NULL;
}

static void conn_take(struct ldap_conn *conn, struct ldap_op *op) {
  list_remove(&conn->ops, NULL, op);
  conn->op_count--;
  op->conn = NULL;
}

/* One search entry: counted, and the first one's DN and value kept. */
static void read_entry(struct ldap_conn *conn, struct ldap_op *op, LDAPMessage *msg) {
  if (++op->entries > 1)
    return;
  char *dn = ldap_get_dn(conn->ld, msg);
  if (dn != NULL) {
    op->first_dn = strdup(dn);
    ldap_memfree(dn);
  }
  if (op->attribute == NULL)
    return;
  struct berval **values = ldap_get_values_len(conn->ld, msg, op->attribute);
  if (values == NULL)
    return;
  op->values = (unsigned)ldap_count_values_len(values);
  if (op->values > 0)
    op->value = strndup(values[0]->bv_val, values[0]->bv_len);
  ldap_value_free_len(values);
}

/* A final result: a search's end or a bind's answer. */
static void read_result(struct ldap_conn *conn, struct ldap_op *op, LDAPMessage *msg) {
  int code = LDAP_OTHER;
  char *diagnostic = NULL;
  int rc = ldap_parse_result(conn->ld, msg, &code, NULL, &diagnostic, NULL, NULL, 0);
  char text[400];
  if (rc != LDAP_SUCCESS)
    code = rc;
  if (diagnostic != NULL && diagnostic[0] != '\0')
    ldap_text_one_line(text, sizeof text, diagnostic);
  else
    snprintf(text, sizeof text, "%s", ldap_err2string(code));
  ldap_memfree(diagnostic);
  conn_take(conn, op);
  if (op->kind == LDAP_OP_SEARCH && op->entries > 0 && op->first_dn == NULL)
    code = LDAP_NO_MEMORY; /* keep no half answer */
  op_finish(op, code, false, text);
}

/* Reads every whole message libldap has or the socket holds. Returns
 * whether it got any; false on a broken connection too. */
static bool conn_read(struct ldap_conn *conn) {
  bool got = false;
  while (conn->state == CONN_UP) {
    struct timeval zero = {0, 0};
    LDAPMessage *msg = NULL;
    int type = ldap_result(conn->ld, LDAP_RES_ANY, LDAP_MSG_ONE, &zero, &msg);
    if (type == 0)
      break;
    if (type < 0) {
      int code = LDAP_SERVER_DOWN;
      ldap_get_option(conn->ld, LDAP_OPT_RESULT_CODE, &code);
      char why[400];
      describe_error(conn->ld, code, why, sizeof why);
      conn_broke(conn, why);
      return false;
    }
    got = true;
    int msgid = ldap_msgid(msg);
    struct ldap_op *op = find_op(conn, msgid);
    if (msgid == 0 || (op == NULL && type == LDAP_RES_EXTENDED)) {
      /* An unsolicited notice: slapd says it closes the connection. */
      ldap_msgfree(msg);
      conn_broke(conn, "the server ended the connection");
      return false;
    }
    if (op == NULL) {
      ldap_msgfree(msg); /* the tail of an abandoned search */
      continue;
    }
    if (type == LDAP_RES_SEARCH_ENTRY)
      read_entry(conn, op, msg);
    else if (type == LDAP_RES_SEARCH_RESULT || type == LDAP_RES_BIND)
      read_result(conn, op, msg);
    /* References are not followed: the entry must be on this server. */
    ldap_msgfree(msg);
  }
  return got;
}

/* Why an idle connection whose socket turned readable gave libldap no
 * message, or NULL when it merely took in bytes that were no message (a
 * TLS 1.3 session ticket). */
static const char *idle_wakeup(struct ldap_conn *conn, char *why, size_t why_size) {
  char byte;
  ssize_t n = recv(conn->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n == 0)
    return "the server closed the connection";
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
    return NULL;
  if (n < 0) {
    snprintf(why, why_size, "%s", strerror(errno));
    return why;
  }
  /* Bytes libldap would not take: polling again would only spin. */
  return "the server sent data no operation asked for";
}

static void on_conn_poll(uv_poll_t *handle, int status, int events) {
  struct ldap_conn *conn = handle->data;
  if (status < 0) {
    conn_broke(conn, uv_strerror(status));
    return;
  }
  bool idle = conn->op_count == 0;
  bool got = conn_read(conn);
  if (conn->state != CONN_UP)
    return;
  char buf[128];
  const char *why = NULL;
  if (events & UV_DISCONNECT)
    why = "the server closed the connection";
  else if (idle && !got)
    /* Nothing is asked on an idle connection: slapd's only word there is
     * its notice of disconnection, which conn_read handles. */
    why = idle_wakeup(conn, buf, sizeof buf);
  if (why != NULL)
    conn_broke(conn, why);
  else
    kick(conn->dir);
}

/* ---- Opening connections ------------------------------------------------ */

/* Sets the options every connection has, on the thread pool. */
static int set_options(struct ldap_dir *dir, LDAP *ld) {
  int version = LDAP_VERSION3;
  struct timeval timeout = {.tv_sec = dir->timeout_ms / 1000,
                            .tv_usec = (dir->timeout_ms % 1000) * 1000};
  int require = dir->tls_verify ? LDAP_OPT_X_TLS_DEMAND : LDAP_OPT_X_TLS_NEVER;
  int is_server = 0;
  int rc = ldap_set_option(ld, LDAP_OPT_PROTOCOL_VERSION, &version);
  /* Following a referral would connect, blocking, to another server. */
  if (rc == LDAP_SUCCESS)
    rc = ldap_set_option(ld, LDAP_OPT_REFERRALS, LDAP_OPT_OFF);
  if (rc == LDAP_SUCCESS)
    rc = ldap_set_option(ld, LDAP_OPT_NETWORK_TIMEOUT, &timeout);
  if (rc == LDAP_SUCCESS)
    rc = ldap_set_option(ld, LDAP_OPT_TIMEOUT, &timeout);
  if (rc == LDAP_SUCCESS && dir->ca_file != NULL)
    rc = ldap_set_option(ld, LDAP_OPT_X_TLS_CACERTFILE, dir->ca_file);
  if (rc == LDAP_SUCCESS)
    rc = ldap_set_option(ld, LDAP_OPT_X_TLS_REQUIRE_CERT, &require);
  /* The TLS options above are this handle's own only once it has a
   * context of its own made from them. */
  if (rc == LDAP_SUCCESS)
    rc = ldap_set_option(ld, LDAP_OPT_X_TLS_NEWCTX, &is_server);
  return rc;
}

static void connect_on_thread(uv_work_t *work) {
  struct ldap_conn *conn = work->data;
  struct ldap_dir *dir = conn->dir;
  LDAP *ld = NULL;
  const char *step = "uri";
  int rc = ldap_initialize(&ld, dir->uri);
  if (rc == LDAP_SUCCESS) {
    step = "setting options";
    rc = set_options(dir, ld);
  }
  if (rc == LDAP_SUCCESS) {
    step = "connecting";
    rc = ldap_connect(ld);
  }
  if (rc == LDAP_SUCCESS && dir->starttls) {
    step = "StartTLS";
    rc = ldap_start_tls_s(ld, NULL, NULL);
  }
  if (rc == LDAP_SUCCESS && !conn->for_binds && dir->bind_dn != NULL) {
    step = "binding as bind_dn";
    struct berval password = {strlen(dir->bind_password), dir->bind_password};
    rc =
        ldap_sasl_bind_s(ld, dir->bind_dn, LDAP_SASL_SIMPLE, &password, NULL, NULL, NULL);
  }
  if (rc != LDAP_SUCCESS) {
    char why[380];
    describe_error(ld, rc, why, sizeof why);
    snprintf(conn->connect_error, sizeof conn->connect_error, "%s: %.380s", step, why);
    if (ld != NULL)
      ldap_unbind_ext(ld, NULL, NULL);
    ld = NULL;
  }
  conn->ld = ld;
}

static void connected(struct ldap_dir *dir) {
  dir->loss_logged = false;
  dir->failures = 0;
  dir->connect_at = 0;
  uv_timer_stop(&dir->retry);
  if (dir->down) {
    dir->down = false;
    dir_log(dir, POPKIT_LOG_INFO, "the directory %s is reachable again", dir->uri);
  }
}

static void on_retry(uv_timer_t *timer);

static bool anything_up(const struct ldap_dir *dir) {
  for (const struct ldap_conn *c = dir->conns; c != NULL; c = c->next)
    if (c->state != CONN_CLOSED)
      return true;
  return false;
}

static void connect_failed(struct ldap_dir *dir, const char *why) {
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

/* Makes the socket non-blocking and watches it. Returns 0 or why not. */
static const char *watch(struct ldap_conn *conn, char *why, size_t why_size) {
  int fd = -1;
  if (ldap_get_option(conn->ld, LDAP_OPT_DESC, &fd) != LDAP_OPT_SUCCESS || fd < 0)
    return "libldap has no socket for the connection";
  /* libldap reads a message across several calls when the socket would
   * block, so ldap_result() never waits on the loop. */
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    snprintf(why, why_size, "making the socket non-blocking: %s", strerror(errno));
    return why;
  }
  conn->fd = fd;
  int rc = uv_poll_init_socket(conn->dir->loop, &conn->poll, fd);
  if (rc == 0) {
    conn->poll.data = conn;
    rc = uv_poll_start(&conn->poll, UV_READABLE | UV_DISCONNECT, on_conn_poll);
    conn->open_handles = 1;
    if (rc < 0) {
      snprintf(why, why_size, "watching the socket: %s", uv_strerror(rc));
      conn_close(conn);
      return why;
    }
    return NULL;
  }
  snprintf(why, why_size, "watching the socket: %s", uv_strerror(rc));
  return why;
}

static void connect_done(uv_work_t *work, int status) {
  struct ldap_conn *conn = work->data;
  struct ldap_dir *dir = conn->dir;
  conn->open_handles--; /* the work request */
  if (dir->destroying) {
    conn->state = CONN_CLOSED;
    free_conn_if_closed(conn);
    return;
  }
  char buf[420];
  const char *why = NULL;
  if (status < 0)
    why = uv_strerror(status);
  else if (conn->ld == NULL)
    why = conn->connect_error;
  else
    why = watch(conn, buf, sizeof buf);
  if (why != NULL) {
    char text[420];
    snprintf(text, sizeof text, "%s", why);
    if (conn->state != CONN_CLOSED) {
      conn->state = CONN_CLOSED;
      free_conn_if_closed(conn);
    }
    connect_failed(dir, text);
    kick(dir);
    return;
  }
  conn->state = CONN_UP;
  connected(dir);
  kick(dir);
}

static void open_connection(struct ldap_dir *dir, bool for_binds) {
  struct ldap_conn *conn = calloc(1, sizeof *conn);
  if (conn == NULL) {
    connect_failed(dir, "out of memory");
    return;
  }
  conn->dir = dir;
  conn->for_binds = for_binds;
  conn->state = CONN_CONNECTING;
  conn->connect_work.data = conn;
  conn->next = dir->conns;
  if (dir->conns != NULL)
    dir->conns->prev = conn;
  dir->conns = conn;
  conn->open_handles = 1; /* the work request, until connect_done */
  int rc = uv_queue_work(dir->loop, &conn->connect_work, connect_on_thread, connect_done);
  if (rc < 0) {
    conn->open_handles = 0;
    conn->state = CONN_CLOSED;
    free_conn_if_closed(conn);
    connect_failed(dir, uv_strerror(rc));
  }
}

static void on_retry(uv_timer_t *timer) {
  struct ldap_dir *dir = timer->data;
  /* While down, keep trying whether or not anyone waits, so the first
   * login after slapd comes back already finds it up. */
  if (dir->down && !anything_up(dir))
    open_connection(dir, false);
  else
    dispatch(dir);
}

/* ---- Sending ------------------------------------------------------------ */

/* Sends op on conn. When the connection turns out broken, conn_broke
 * queues op again. */
static void send_op(struct ldap_conn *conn, struct ldap_op *op) {
  int rc;
  if (op->kind == LDAP_OP_SEARCH) {
    /* "1.1" asks for no attributes (RFC 4511 4.5.1.8). Two entries are
     * enough to tell one from too many. */
    char *attrs[] = {op->attribute != NULL ? op->attribute : (char *)"1.1", NULL};
    rc = ldap_search_ext(conn->ld, op->base, op->scope, op->filter, attrs, 0, NULL, NULL,
                         NULL, 2, &op->msgid);
  } else {
    struct berval password = {strlen(op->password), op->password};
    rc = ldap_sasl_bind(conn->ld, op->dn, LDAP_SASL_SIMPLE, &password, NULL, NULL,
                        &op->msgid);
  }
  op->conn = conn;
  op->prev = NULL;
  op->next = conn->ops;
  if (conn->ops != NULL)
    conn->ops->prev = op;
  conn->ops = op;
  conn->op_count++;
  if (rc == LDAP_SUCCESS)
    return;
  char why[400];
  describe_error(conn->ld, rc, why, sizeof why);
  if (rc == LDAP_SERVER_DOWN || rc == LDAP_CONNECT_ERROR) {
    conn_broke(conn, why);
    return;
  }
  /* Refused before it left (a filter libldap cannot encode): the
   * operation's answer, not the connection's. */
  conn_take(conn, op);
  op_finish(op, rc, false, why);
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

static void on_deadline(uv_timer_t *timer);

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
    open_connection(dir, false);
  unsigned connecting = count_conns(dir, true, CONN_CONNECTING);
  unsigned open = connecting + count_conns(dir, true, CONN_UP);
  while (binds > connecting && open < dir->bind_connections) {
    open_connection(dir, true);
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
    list_remove(&dir->queue_head, &dir->queue_tail, op);
    if (conn != NULL) {
      send_op(conn, op);
    } else if (op->canceled) {
      op_finish(op, LDAP_USER_CANCELLED, false, "canceled");
    } else {
      snprintf(dir->down_text, sizeof dir->down_text, "the directory is unreachable: %s",
               dir->last_error);
      op_finish(op, LDAP_SERVER_DOWN, true, dir->down_text);
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
      list_remove(&dir->queue_head, &dir->queue_tail, op);
      snprintf(text, sizeof text, "no connection to the directory within %u ms",
               dir->timeout_ms);
    } else {
      snprintf(text, sizeof text, "no answer from the directory within %u ms",
               dir->timeout_ms);
      conn_take(conn, op);
      if (op->kind == LDAP_OP_SEARCH) {
        ldap_abandon_ext(conn->ld, op->msgid, NULL, NULL);
      } else {
        /* A bind cannot be abandoned (RFC 4511 4.11), and its connection
         * is of no use until it is answered. */
        dir_log(dir, POPKIT_LOG_WARNING, "%s; closing the connection", text);
        conn_close(conn);
      }
    }
    op_finish(op, LDAP_TIMEOUT, true, text);
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
  if (!copy(&dir->uri, options->uri) || !copy(&dir->ca_file, options->ca_file) ||
      !copy(&dir->bind_dn, options->bind_dn) ||
      !copy(&dir->bind_password, options->bind_password)) {
    dir->destroying = true;
    maybe_free_dir(dir);
    return NULL;
  }
  return dir;
}

static void on_dir_timer_closed(uv_handle_t *handle) {
  struct ldap_dir *dir = handle->data;
  dir->open_handles--;
  maybe_free_dir(dir);
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
  queue_push(dir, op, false);
  kick(dir);
}

void ldap_dir_cancel(struct ldap_dir *dir, struct ldap_op *op) {
  op->canceled = true;
  struct ldap_conn *conn = op->conn;
  if (conn != NULL && op->kind == LDAP_OP_SEARCH) {
    conn_take(conn, op);
    ldap_abandon_ext(conn->ld, op->msgid, NULL, NULL);
    queue_push(dir, op, true); /* dispatch finishes it */
  }
  /* A queued operation is finished by dispatch; a bind that is out, when
   * its answer comes. */
  kick(dir);
}

void ldap_dir_destroy(struct ldap_dir *dir) {
  if (dir == NULL)
    return;
  dir->destroying = true;
  while (dir->queue_head != NULL) {
    struct ldap_op *op = dir->queue_head;
    list_remove(&dir->queue_head, &dir->queue_tail, op);
    op_free(op);
  }
  for (struct ldap_conn *c = dir->conns; c != NULL; c = c->next) {
    while (c->ops != NULL) {
      struct ldap_op *op = c->ops;
      conn_take(c, op);
      op_free(op);
    }
    if (c->state == CONN_UP)
      conn_close(c); /* connect_done or the close callbacks free the rest */
  }
  if (dir->started) {
    uv_timer_t *timers[] = {&dir->kick, &dir->retry, &dir->deadline};
    for (size_t i = 0; i < sizeof timers / sizeof timers[0]; i++)
      uv_close((uv_handle_t *)timers[i], on_dir_timer_closed);
  }
  maybe_free_dir(dir);
}
