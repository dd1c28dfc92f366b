/*
 * One connection to the directory. It is opened on libuv's thread pool,
 * since libldap connects only blocking; then its socket is non-blocking
 * and watched by the loop, operations go out with libldap's asynchronous
 * calls, and answers are read with ldap_result() and a zero timeout.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "ldap_dir_internal.h"
#include "ldap_text.h"

/* ---- Closing ------------------------------------------------------------ */

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
  ldap_dir_maybe_free(dir);
}

static void on_conn_handle_closed(uv_handle_t *handle) {
  struct ldap_conn *conn = handle->data;
  conn->open_handles--;
  free_conn_if_closed(conn);
}

/* Drops an up connection; its operations are the caller's to move first. */
void ldap_conn_close(struct ldap_conn *conn) {
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
  ldap_conn_close(conn);
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
    ldap_dir_queue(dir, op, true);
  }
  while (failed != NULL) {
    struct ldap_op *op = failed;
    failed = op->next;
    op->next = NULL;
    ldap_op_finish(op, LDAP_SERVER_DOWN, true, text);
  }
  ldap_dir_kick(dir);
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

/* ---- Answers ------------------------------------------------------------ */

static struct ldap_op *find_op(struct ldap_conn *conn, int msgid) {
  for (struct ldap_op *op = conn->ops; op != NULL; op = op->next)
    if (op->msgid == msgid)
      return op;
  return NULL;
}

void ldap_conn_take(struct ldap_conn *conn, struct ldap_op *op) {
  ldap_op_unlink(&conn->ops, NULL, op);
  conn->op_count--;
  op->conn = NULL;
}

void ldap_conn_abandon(struct ldap_conn *conn, struct ldap_op *op) {
  ldap_conn_take(conn, op);
  ldap_abandon_ext(conn->ld, op->msgid, NULL, NULL);
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
  ldap_conn_take(conn, op);
  if (op->kind == LDAP_OP_SEARCH && op->entries > 0 && op->first_dn == NULL)
    code = LDAP_NO_MEMORY; /* keep no half answer */
  ldap_op_finish(op, code, false, text);
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
    ldap_dir_kick(conn->dir);
}

/* ---- Opening ------------------------------------------------------------ */

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
      ldap_conn_close(conn);
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
    ldap_dir_connect_failed(dir, text);
    ldap_dir_kick(dir);
    return;
  }
  conn->state = CONN_UP;
  ldap_dir_connected(dir);
  ldap_dir_kick(dir);
}

void ldap_conn_open(struct ldap_dir *dir, bool for_binds) {
  struct ldap_conn *conn = calloc(1, sizeof *conn);
  if (conn == NULL) {
    ldap_dir_connect_failed(dir, "out of memory");
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
    ldap_dir_connect_failed(dir, uv_strerror(rc));
  }
}

/* ---- Sending ------------------------------------------------------------ */

/* Sends op on conn. When the connection turns out broken, conn_broke
 * queues op again. */
void ldap_conn_send(struct ldap_conn *conn, struct ldap_op *op) {
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
  ldap_conn_take(conn, op);
  ldap_op_finish(op, rc, false, why);
}
