#include "pg_auth.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_text.h"
#include "popkit/utf8.h"

const char pg_auth_default_query[] =
    "SELECT password, mailbox FROM popkit.users WHERE name = $1";

/* What an unknown user's password is checked against before any user's
 * secret has been seen. Nobody logs in with it: the outcome of a check
 * against a stand-in is thrown away. */
static const char plain_stand_in[] = "{PLAIN}popkit postgres stand-in";

enum auth_kind { AUTH_LOOKUP, AUTH_VERIFY, AUTH_CREDENTIAL };

/* One auth request while it waits on PostgreSQL and then, for
 * VERIFY_PLAIN, on the password check. */
struct auth_call {
  struct pg_module *m;
  struct popkit_auth_request *req;
  enum auth_kind kind;
  uv_work_t work;
  /* The password check, on the thread pool: copies, since the instance
   * may change its stand-in meanwhile. */
  char *secret;   /* the user's, or NULL for an unknown or locked user */
  char *stand_in; /* checked when secret is NULL or unusable */
  int check;      /* enum popkit_password_check, or -ENOMEM */
  char *identity; /* from the row: the mailbox, or the user name */
};

static void wipe_free(char *s) {
  if (s != NULL) {
    explicit_bzero(s, strlen(s));
    free(s);
  }
}

static void finish(struct auth_call *call, enum popkit_result result, const char *text) {
  struct popkit_auth_request *req = call->req;
  const struct popkit_host *host = call->m->host;
  wipe_free(call->secret);
  wipe_free(call->stand_in);
  free(call->identity);
  free(call);
  host->complete(&req->base, result, text);
}

/* ---- The password check ------------------------------------------------- */

static void check_on_thread(uv_work_t *work) {
  struct auth_call *call = work->data;
  const struct popkit_host *host = call->m->host;
  const char *password = call->req->password;
  int rc = POPKIT_PASSWORD_UNUSABLE;
  if (call->secret != NULL)
    rc = host->password_verify(call->secret, password);
  if (rc == POPKIT_PASSWORD_UNUSABLE) {
    /* Unknown user, locked secret or unknown scheme: none of them cost a
     * hash, so the stand-in's check makes the answer take as long as a
     * real one and tells nobody which case it was. */
    int spent = host->password_verify(call->stand_in, password);
    if (spent < 0)
      rc = spent;
  }
  call->check = rc;
}

static void remember_stand_in(struct pg_module *m, const char *secret) {
  if (m->stand_in_secret != NULL && strcmp(m->stand_in_secret, secret) == 0)
    return;
  char *copy = strdup(secret);
  if (copy == NULL)
    return; /* the old stand-in will do */
  wipe_free(m->stand_in_secret);
  m->stand_in_secret = copy;
}

static void check_done(uv_work_t *work, int status) {
  struct auth_call *call = work->data;
  struct pg_module *m = call->m;
  struct popkit_auth_request *req = call->req;
  char text[256];
  if (status < 0) {
    snprintf(text, sizeof text, "checking the password: %s", uv_strerror(status));
    finish(call, POPKIT_TEMPFAIL, text);
    return;
  }
  if (call->check < 0) {
    finish(call, POPKIT_TEMPFAIL, "out of memory checking the password");
    return;
  }
  if (call->identity == NULL) {
    finish(call, POPKIT_NOT_FOUND, "no such user in PostgreSQL (password_query: no row)");
    return;
  }
  if (call->check != POPKIT_PASSWORD_UNUSABLE)
    /* The latest secret a real user had is the next stand-in: an unknown
     * user then costs what users of this site cost now. */
    remember_stand_in(m, call->secret);
  switch (call->check) {
  case POPKIT_PASSWORD_MATCH:
    if (m->host->auth_set_identity(req, call->identity) < 0) {
      finish(call, POPKIT_TEMPFAIL, "out of memory");
      return;
    }
    finish(call, POPKIT_OK, NULL);
    return;
  case POPKIT_PASSWORD_MISMATCH:
    finish(call, POPKIT_FAIL, "wrong password");
    return;
  default:
    finish(call, POPKIT_FAIL,
           "the stored secret is empty, locked or of an unknown scheme: no password "
           "matches it");
    return;
  }
}

static void start_check(struct auth_call *call) {
  struct pg_module *m = call->m;
  call->stand_in =
      strdup(m->stand_in_secret != NULL ? m->stand_in_secret : plain_stand_in);
  if (call->stand_in == NULL) {
    finish(call, POPKIT_TEMPFAIL, "out of memory");
    return;
  }
  call->work.data = call;
  int rc = uv_queue_work(m->loop, &call->work, check_on_thread, check_done);
  if (rc < 0) {
    char text[128];
    snprintf(text, sizeof text, "checking the password: %s", uv_strerror(rc));
    finish(call, POPKIT_TEMPFAIL, text);
  }
}

/* ---- The row ------------------------------------------------------------ */

/* Reads the user's row into call: identity (NULL when there is no row) and
 * secret. Returns NULL, or why the result is unusable. */
static const char *read_row(struct auth_call *call, const PGresult *res, char *why,
                            size_t why_size) {
  int rows = PQntuples(res);
  if (rows == 0)
    return NULL;
  if (rows > 1) {
    snprintf(why, why_size,
             "password_query returned %d rows for one user; it must return at most one",
             rows);
    return why;
  }
  int password_column = PQfnumber(res, "password");
  int mailbox_column = PQfnumber(res, "mailbox");
  if (call->kind != AUTH_LOOKUP && password_column < 0)
    return "password_query returns no column named \"password\"";
  const char *user = call->req->user;
  const char *mailbox = NULL;
  if (mailbox_column >= 0 && !PQgetisnull(res, 0, mailbox_column))
    mailbox = PQgetvalue(res, 0, mailbox_column);
  call->identity = strdup(mailbox != NULL && mailbox[0] != '\0' ? mailbox : user);
  if (call->identity == NULL)
    return "out of memory";
  /* A NULL secret is a locked user. */
  if (password_column >= 0 && !PQgetisnull(res, 0, password_column)) {
    call->secret = strdup(PQgetvalue(res, 0, password_column));
    if (call->secret == NULL)
      return "out of memory";
  }
  return NULL;
}

static void on_row(struct pg_query *q, PGresult *res, const char *error) {
  struct auth_call *call = q->data;
  call->req->base.module_data = NULL;
  bool statement_failed = q->statement_failed;
  pg_query_free(q);
  char why[256];
  const char *bad = error;
  if (bad == NULL)
    bad = read_row(call, res, why, sizeof why);
  if (res != NULL) {
    /* The secret's text in libpq's buffer goes too. */
    for (int c = 0; c < PQnfields(res); c++)
      for (int r = 0; r < PQntuples(res); r++)
        explicit_bzero(PQgetvalue(res, r, c), (size_t)PQgetlength(res, r, c));
    PQclear(res);
  }
  if (bad != NULL) {
    /* A connection that failed was logged by the pool; a query that
     * PostgreSQL refuses, or an answer of the wrong shape, is the site's
     * to fix. */
    if (error == NULL || statement_failed)
      pg_log(call->m, &call->req->base, POPKIT_LOG_ERROR, "password_query: %s", bad);
    finish(call, POPKIT_TEMPFAIL, bad);
    return;
  }
  if (call->kind == AUTH_VERIFY) {
    start_check(call);
    return;
  }
  if (call->identity == NULL) {
    finish(call, POPKIT_NOT_FOUND, "no such user in PostgreSQL (password_query: no row)");
    return;
  }
  const struct popkit_host *host = call->m->host;
  int rc = host->auth_set_identity(call->req, call->identity);
  if (rc == 0 && call->kind == AUTH_CREDENTIAL)
    /* "*" is how crypt(3) spells a locked secret: no mechanism can use it. */
    rc = host->auth_set_credential(call->req, call->secret != NULL ? call->secret : "*");
  finish(call, rc == 0 ? POPKIT_OK : POPKIT_TEMPFAIL, rc == 0 ? NULL : "out of memory");
}

static void start(struct pg_module *m, struct popkit_auth_request *req,
                  enum auth_kind kind) {
  struct auth_call *call = calloc(1, sizeof *call);
  if (call == NULL) {
    m->host->complete(&req->base, POPKIT_TEMPFAIL, "out of memory");
    return;
  }
  call->m = m;
  call->req = req;
  call->kind = kind;
  if (kind == AUTH_VERIFY && req->password == NULL) {
    finish(call, POPKIT_FAIL, "no password in the request");
    return;
  }
  if (!popkit_is_utf8(req->user)) {
    /* The connection speaks UTF-8, so no such name is in the database. */
    if (kind == AUTH_VERIFY)
      start_check(call);
    else
      finish(call, POPKIT_NOT_FOUND, "the user name is not UTF-8");
    return;
  }
  struct pg_query *q = pg_query_new(m->password_query, on_row, call);
  if (q == NULL) {
    finish(call, POPKIT_TEMPFAIL, "out of memory");
    return;
  }
  pg_query_text(q, req->user);
  q->retry_safe = true;
  pg_module_submit(m, &req->base, q);
}

static void pg_auth_lookup(void *instance, struct popkit_auth_request *req) {
  start(instance, req, AUTH_LOOKUP);
}

static void pg_auth_verify_plain(void *instance, struct popkit_auth_request *req) {
  start(instance, req, AUTH_VERIFY);
}

static void pg_auth_get_credential(void *instance, struct popkit_auth_request *req) {
  start(instance, req, AUTH_CREDENTIAL);
}

const struct popkit_auth_ops pg_auth_ops = {
    .struct_size = sizeof(struct popkit_auth_ops),
    .lookup = pg_auth_lookup,
    .verify_plain = pg_auth_verify_plain,
    .get_credential = pg_auth_get_credential,
};

void pg_auth_forget(struct pg_module *m) {
  wipe_free(m->stand_in_secret);
  m->stand_in_secret = NULL;
}
