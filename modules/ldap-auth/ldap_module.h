/*
 * One instance of ldap-auth: its settings and its directory. popkitd makes
 * one instance per worker and per place the module has in the config, so
 * nothing here needs a lock: everything runs on the worker's loop thread,
 * except the connects that ldap_dir.c hands to the thread pool.
 *
 * A request that waits on the directory keeps its ldap_op in
 * req->base.module_data, so the module's cancel can reach it.
 */
#ifndef POPKIT_LDAP_MODULE_H
#define POPKIT_LDAP_MODULE_H

#include "ldap_dir.h"
#include "popkit/module.h"

struct ldap_module {
  const struct popkit_host *host;
  struct popkit_module_handle *self;
  struct ldap_dir *dir;
  /* Search then bind: find the user's entry with filter under base. */
  const char *base;
  int scope; /* LDAP_SCOPE_* */
  const char *filter;
  /* Direct bind: the user's DN is dn_template filled in (base is NULL). */
  const char *dn_template;
  const char *identity_attribute; /* NULL: the identity is the user name */
  /* The config's strings live as long as the instance. */
};

#define ldap_log(m, req, level, ...)                                                     \
  (m)->host->log((m)->self, (req), (level), __VA_ARGS__)

extern const struct popkit_auth_ops ldap_login_ops;

/* Asks the request's operation, if it has one out, to end early. */
void ldap_login_cancel(struct ldap_module *m, struct popkit_request *req);

#endif
