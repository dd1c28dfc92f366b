/*
 * The directory as one worker sees it: connections to the LDAP server on
 * the worker's libuv loop, and the operations that wait for them.
 *
 * Two kinds of connection, because LDAP ties identity to a connection:
 *   - one search connection, bound as the service identity (bind_dn) or
 *     anonymous, on which any number of searches run at once;
 *   - bind_connections connections for user binds, one bind at a time each
 *     (a bind changes who the connection is, and RFC 4511 forbids other
 *     operations on a connection while a bind is in progress).
 *
 * Nothing blocks the loop. A connection is opened on libuv's thread pool
 * (host name lookup, TCP, the TLS handshake of ldaps:// or StartTLS and the
 * service bind are blocking calls in libldap, each bounded by timeout_ms);
 * after that its socket is non-blocking, watched by a uv_poll, operations
 * go out with libldap's asynchronous calls and results are read with
 * ldap_result() and a zero timeout when the socket is readable.
 *
 * Failure, as an operator wants it:
 *   - Every operation has a deadline, timeout_ms from its submission,
 *     queued or sent. A search that misses it is abandoned; a bind cannot
 *     be, so its connection is closed.
 *   - A connection that breaks (slapd restarted, network gone) is dropped;
 *     the operations that were on it go out once more on a new one.
 *   - When opening a connection fails and nothing is up, the directory is
 *     down: operations fail at once instead of waiting, and a connect is
 *     retried in the background, 100 ms later, doubling up to
 *     reconnect_max_ms, so logins work again soon after slapd is back.
 *   - One log line when the directory goes away and one when it is back.
 */
#ifndef POPKIT_LDAP_DIR_H
#define POPKIT_LDAP_DIR_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "popkit/module.h"

struct ldap_dir;
struct ldap_conn;

struct ldap_dir_options {
  const char *uri; /* copied, as are the strings below */
  bool starttls;
  const char *ca_file; /* NULL: libldap's default CAs */
  bool tls_verify;
  const char *bind_dn; /* NULL: searches run anonymously */
  const char *bind_password;
  unsigned timeout_ms;
  unsigned bind_connections;
  unsigned reconnect_max_ms;
};

/* What an operation came to. */
struct ldap_op_result {
  /* An LDAP result code (LDAP_SUCCESS, LDAP_INVALID_CREDENTIALS,
   * LDAP_NO_SUCH_OBJECT...), or, when unreachable is set, the libldap
   * error that kept the operation from being answered. */
  int code;
  bool unreachable; /* no answer: connect failed, timed out, connection lost */
  const char *text; /* for the log: the server's diagnostic or libldap's */
  /* A search: how many entries came (at most 2 are asked for), the DN of
   * the first and the values of the attribute asked for in it. */
  unsigned entries;
  const char *dn;
  const char *value; /* the first value, or NULL */
  unsigned values;
};

struct ldap_op;
typedef void (*ldap_op_done)(struct ldap_op *op, const struct ldap_op_result *result);

enum ldap_op_kind { LDAP_OP_SEARCH, LDAP_OP_BIND };

/* One operation. The caller fills the fields of its kind with
 * ldap_op_search or ldap_op_bind, submits it, and hears of it once through
 * done, from the loop; the operation is freed when done returns. */
struct ldap_op {
  enum ldap_op_kind kind;
  char *base; /* search */
  int scope;
  char *filter;
  char *attribute; /* NULL: no attribute */
  char *dn;        /* bind */
  char *password;
  ldap_op_done done;
  void *data;

  /* The directory's. */
  struct ldap_op *prev, *next; /* in the queue or in a connection's list */
  struct ldap_conn *conn;      /* sent on it; NULL while queued */
  int msgid;
  uint64_t deadline_ms;
  bool retried;  /* already sent once on a connection that broke */
  bool canceled; /* its caller does not wait for it any more */
  unsigned entries;
  char *first_dn;
  char *value;
  unsigned values;
};

/* A search under base (scope LDAP_SCOPE_*), or a simple bind as dn. NULL
 * when out of memory. Strings are copied; the password is wiped when the
 * operation is freed. */
struct ldap_op *ldap_op_search(const char *base, int scope, const char *filter,
                               const char *attribute, ldap_op_done done, void *data);
struct ldap_op *ldap_op_bind(const char *dn, const char *password, ldap_op_done done,
                             void *data);

/* Touches no loop until the first operation. NULL when out of memory. */
struct ldap_dir *ldap_dir_new(uv_loop_t *loop, const struct ldap_dir_options *options,
                              const struct popkit_host *host,
                              struct popkit_module_handle *self);

/* Queues op; its done runs later, from the loop, exactly once. */
void ldap_dir_submit(struct ldap_dir *dir, struct ldap_op *op);

/* Ends op early for a caller that went away: done runs soon with
 * LDAP_USER_CANCELLED (a bind already sent runs to its end first). */
void ldap_dir_cancel(struct ldap_dir *dir, struct ldap_op *op);

/* Closes every connection and drops every operation without its done:
 * their callers are going away too. The memory goes once the loop has run
 * the handles' close callbacks. */
void ldap_dir_destroy(struct ldap_dir *dir);

#endif
