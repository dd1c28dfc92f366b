/*
 * The auth role: what a login and a lookup ask of the directory.
 *
 *   search then bind   find the user's one entry with the filter (as the
 *                      service identity), then bind as its DN with the
 *                      password on a bind connection;
 *   direct bind        bind as dn_template filled in; only when that fails
 *                      does a base-scope read of the DN tell an unknown
 *                      user (NOT_FOUND, the auth list moves on) from a
 *                      wrong password (FAIL).
 *
 * A directory that cannot answer is TEMPFAIL, never FAIL: a user must not
 * be told the password is wrong because slapd restarts. An empty password
 * is never sent: a simple bind with one is an anonymous bind, which
 * succeeds (RFC 4513 5.1.2).
 */
#include <ldap.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ldap_module.h"
#include "ldap_text.h"
#include "popkit/utf8.h"

/* One auth request while it waits on the directory. */
struct login {
  struct ldap_module *m;
  struct popkit_auth_request *req;
  bool verify;    /* VERIFY_PLAIN; otherwise LOOKUP */
  char *dn;       /* the user's entry */
  char *identity; /* the mapped attribute's value, or the user name */
};

static void finish(struct login *l, enum popkit_result result, const char *text) {
  struct popkit_auth_request *req = l->req;
  const struct popkit_host *host = l->m->host;
  req->base.module_data = NULL;
  if (result == POPKIT_OK && host->auth_set_identity(req, l->identity) < 0) {
    result = POPKIT_TEMPFAIL;
    text = "out of memory";
  }
  free(l->dn);
  free(l->identity);
  free(l);
  host->complete(&req->base, result, text);
}

/* A problem of the site's directory or settings, not of this user: the
 * log says so at error level, the client gets [SYS/TEMP]. */
static void finish_misconfigured(struct login *l, const char *text) {
  ldap_log(l->m, &l->req->base, POPKIT_LOG_ERROR, "%s", text);
  finish(l, POPKIT_TEMPFAIL, text);
}

static void submit(struct login *l, struct ldap_op *op) {
  if (op == NULL) {
    finish(l, POPKIT_TEMPFAIL, "out of memory");
    return;
  }
  l->req->base.module_data = op;
  ldap_dir_submit(l->m->dir, op);
}

/* The outcomes every step shares: canceled, or no answer. Returns
 * whether it finished the request. */
static bool finished_without_answer(struct login *l, const struct ldap_op_result *r) {
  l->req->base.module_data = NULL;
  if (r->code == LDAP_USER_CANCELLED) {
    finish(l, POPKIT_TEMPFAIL, "canceled");
    return true;
  }
  if (r->unreachable) {
    finish(l, POPKIT_TEMPFAIL, r->text);
    return true;
  }
  return false;
}

/* Takes the one entry a search found: its DN and identity. Returns NULL,
 * or why the answer cannot be used. */
static const char *take_entry(struct login *l, const struct ldap_op_result *r, char *why,
                              size_t why_size) {
  struct ldap_module *m = l->m;
  if (r->entries > 1) {
    snprintf(why, why_size,
             "filter %s matches more than one entry under %s; it must match one user",
             m->filter, m->base);
    return why;
  }
  if (r->values > 1) {
    snprintf(why, why_size, "identity_attribute %s has %u values in %s; it must have one",
             m->identity_attribute, r->values, r->dn);
    return why;
  }
  free(l->dn);
  free(l->identity);
  l->dn = strdup(r->dn);
  const char *identity =
      r->value != NULL && r->value[0] != '\0' ? r->value : l->req->user;
  l->identity = strdup(identity);
  if (l->dn == NULL || l->identity == NULL)
    return "out of memory";
  return NULL;
}

/* ---- Direct bind -------------------------------------------------------- */

static void on_exists(struct ldap_op *op, const struct ldap_op_result *r);
static void on_identity(struct ldap_op *op, const struct ldap_op_result *r);

/* A base-scope read of the user's DN: whether it exists, and its identity. */
static struct ldap_op *read_dn(struct login *l, ldap_op_done done) {
  return ldap_op_search(l->dn, LDAP_SCOPE_BASE, "(objectClass=*)",
                        l->m->identity_attribute, done, l);
}

static void on_direct_bind(struct ldap_op *op, const struct ldap_op_result *r) {
  struct login *l = op->data;
  if (finished_without_answer(l, r))
    return;
  switch (r->code) {
  case LDAP_SUCCESS:
    if (l->m->identity_attribute != NULL)
      submit(l, read_dn(l, on_identity));
    else
      finish(l, POPKIT_OK, NULL);
    return;
  case LDAP_INVALID_CREDENTIALS:
    /* The same answer for no such DN and a wrong password. */
    submit(l, read_dn(l, on_exists));
    return;
  case LDAP_INVALID_DN_SYNTAX:
    finish(l, POPKIT_NOT_FOUND, "the user name makes no valid DN of dn_template");
    return;
  default:
    finish(l, POPKIT_TEMPFAIL, r->text);
    return;
  }
}

static void on_exists(struct ldap_op *op, const struct ldap_op_result *r) {
  struct login *l = op->data;
  if (finished_without_answer(l, r))
    return;
  if (r->code == LDAP_NO_SUCH_OBJECT)
    finish(l, POPKIT_NOT_FOUND, "no such user in the directory (no entry at the DN)");
  else if (r->code == LDAP_SUCCESS && r->entries > 0)
    finish(l, POPKIT_FAIL,
           l->verify && l->req->password[0] == '\0'
               ? "empty password (never sent: it would bind anonymously)"
               : "wrong password");
  else
    /* The entry cannot be seen: the bind's failure stands, and nothing
     * later in the auth list decides for this user. */
    finish(l, POPKIT_FAIL, r->text);
}

/* After a direct bind, or for a lookup in direct-bind mode. */
static void on_identity(struct ldap_op *op, const struct ldap_op_result *r) {
  struct login *l = op->data;
  if (finished_without_answer(l, r))
    return;
  if (r->code == LDAP_NO_SUCH_OBJECT || r->code == LDAP_INVALID_DN_SYNTAX ||
      (r->code == LDAP_SUCCESS && r->entries == 0)) {
    finish(l, POPKIT_NOT_FOUND, "no such user in the directory (no entry at the DN)");
    return;
  }
  if (r->code != LDAP_SUCCESS) {
    finish(l, POPKIT_TEMPFAIL, r->text);
    return;
  }
  char why[512];
  const char *bad = take_entry(l, r, why, sizeof why);
  if (bad != NULL)
    finish_misconfigured(l, bad);
  else
    finish(l, POPKIT_OK, NULL);
}

static void start_direct(struct login *l) {
  l->dn = ldap_text_expand(l->m->dn_template, l->req->user, LDAP_TEXT_DN);
  l->identity = strdup(l->req->user);
  if (l->dn == NULL || l->identity == NULL) {
    finish(l, POPKIT_TEMPFAIL, "out of memory");
    return;
  }
  if (!l->verify)
    submit(l, read_dn(l, on_identity));
  else if (l->req->password[0] == '\0')
    submit(l, read_dn(l, on_exists));
  else
    submit(l, ldap_op_bind(l->dn, l->req->password, on_direct_bind, l));
}

/* ---- Search then bind --------------------------------------------------- */

static void on_bound(struct ldap_op *op, const struct ldap_op_result *r) {
  struct login *l = op->data;
  if (finished_without_answer(l, r))
    return;
  switch (r->code) {
  case LDAP_SUCCESS:
    finish(l, POPKIT_OK, NULL);
    return;
  case LDAP_INVALID_CREDENTIALS:
    finish(l, POPKIT_FAIL, "wrong password");
    return;
  case LDAP_INAPPROPRIATE_AUTH:
  case LDAP_UNWILLING_TO_PERFORM:
  case LDAP_CONSTRAINT_VIOLATION:
    /* The directory refuses this user (no password, account locked by a
     * password policy): the user's answer, not a failure of the server. */
    finish(l, POPKIT_FAIL, r->text);
    return;
  default:
    finish(l, POPKIT_TEMPFAIL, r->text);
    return;
  }
}

static void on_found(struct ldap_op *op, const struct ldap_op_result *r) {
  struct login *l = op->data;
  struct ldap_module *m = l->m;
  if (finished_without_answer(l, r))
    return;
  char why[512];
  if (r->code == LDAP_NO_SUCH_OBJECT) {
    snprintf(why, sizeof why, "base %s does not exist in the directory", m->base);
    finish_misconfigured(l, why);
    return;
  }
  /* Size limit exceeded comes with the two entries that tell of it. */
  if (r->code != LDAP_SUCCESS &&
      !(r->code == LDAP_SIZELIMIT_EXCEEDED && r->entries > 1)) {
    snprintf(why, sizeof why, "searching with filter %s: %s", m->filter, r->text);
    finish_misconfigured(l, why);
    return;
  }
  if (r->entries == 0) {
    finish(l, POPKIT_NOT_FOUND,
           "no such user in the directory (the filter matches none)");
    return;
  }
  const char *bad = take_entry(l, r, why, sizeof why);
  if (bad != NULL) {
    finish_misconfigured(l, bad);
    return;
  }
  if (!l->verify)
    finish(l, POPKIT_OK, NULL);
  else if (l->req->password[0] == '\0')
    finish(l, POPKIT_FAIL, "empty password (never sent: it would bind anonymously)");
  else
    submit(l, ldap_op_bind(l->dn, l->req->password, on_bound, l));
}

static void start_search(struct login *l) {
  struct ldap_module *m = l->m;
  char *filter = ldap_text_expand(m->filter, l->req->user, LDAP_TEXT_FILTER);
  if (filter == NULL) {
    finish(l, POPKIT_TEMPFAIL, "out of memory");
    return;
  }
  submit(l,
         ldap_op_search(m->base, m->scope, filter, m->identity_attribute, on_found, l));
  free(filter);
}

/* ---- The role ----------------------------------------------------------- */

static void start(struct ldap_module *m, struct popkit_auth_request *req, bool verify) {
  if (verify && req->password == NULL) {
    m->host->complete(&req->base, POPKIT_FAIL, "no password in the request");
    return;
  }
  if (!popkit_is_utf8(req->user)) {
    /* LDAP strings are UTF-8: no entry has this name. */
    m->host->complete(&req->base, POPKIT_NOT_FOUND, "the user name is not UTF-8");
    return;
  }
  struct login *l = calloc(1, sizeof *l);
  if (l == NULL) {
    m->host->complete(&req->base, POPKIT_TEMPFAIL, "out of memory");
    return;
  }
  l->m = m;
  l->req = req;
  l->verify = verify;
  if (m->dn_template != NULL)
    start_direct(l);
  else
    start_search(l);
}

static void ldap_login_lookup(void *instance, struct popkit_auth_request *req) {
  start(instance, req, false);
}

static void ldap_login_verify_plain(void *instance, struct popkit_auth_request *req) {
  start(instance, req, true);
}

/* No get_credential: a directory does not hand out passwords, so APOP and
 * SCRAM are for other modules of the auth list. */
const struct popkit_auth_ops ldap_login_ops = {
    .struct_size = sizeof(struct popkit_auth_ops),
    .lookup = ldap_login_lookup,
    .verify_plain = ldap_login_verify_plain,
    .get_credential = NULL,
};

void ldap_login_cancel(struct ldap_module *m, struct popkit_request *req) {
  if (req->module_data != NULL)
    ldap_dir_cancel(m->dir, req->module_data);
}
