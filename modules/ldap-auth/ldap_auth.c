/*
 * ldap-auth: users from an LDAP directory (OpenLDAP's libldap), for sites
 * whose accounts live there. Auth role only; mail stays in a store module.
 *
 *   ldap_login.c  what a login and a lookup ask of the directory
 *   ldap_dir.c    a worker's queue of operations, deadlines, the backoff
 *   ldap_conn.c   one connection: opened on the thread pool, then on the loop
 *   ldap_op.c     one operation (a search or a bind) and its answer
 *   ldap_text.c   user names escaped into filters and DNs
 *
 * Every setting is checked here, at start and by --check-config, with
 * libldap's own parsers where it has them, so a typo in a filter or a DN
 * is an error naming its key rather than a login failure at run time.
 */
#include <errno.h>
#include <ldap.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ldap_module.h"
#include "ldap_text.h"
#include "popkit/settings.h"

static const struct popkit_config_key config_keys[] = {
    {"uri", POPKIT_CONFIG_STRING, 1},
    {"base", POPKIT_CONFIG_STRING, 0},
    {"filter", POPKIT_CONFIG_STRING, 0},
    {"scope", POPKIT_CONFIG_STRING, 0},
    {"bind_dn", POPKIT_CONFIG_STRING, 0},
    {"bind_password", POPKIT_CONFIG_STRING, 0},
    {"dn_template", POPKIT_CONFIG_STRING, 0},
    {"identity_attribute", POPKIT_CONFIG_STRING, 0},
    {"starttls", POPKIT_CONFIG_BOOLEAN, 0},
    {"ca_file", POPKIT_CONFIG_PATH, 0},
    {"tls_verify", POPKIT_CONFIG_BOOLEAN, 0},
    {"timeout_s", POPKIT_CONFIG_INTEGER, 0},
    {"bind_connections", POPKIT_CONFIG_INTEGER, 0},
    {"reconnect_max_ms", POPKIT_CONFIG_INTEGER, 0},
    {NULL, 0, 0},
};

static const char default_filter[] = "(uid=%u)";

/* The settings of one instance, as create reads them. */
struct settings {
  struct ldap_dir_options dir;
  const char *base, *filter, *scope_name, *dn_template, *identity_attribute;
  int scope;
};

static int invalid(char *error, size_t error_size, const char *fmt, const char *key,
                   const char *detail) {
  snprintf(error, error_size, fmt, key, detail);
  return -EINVAL;
}

/* uri is one LDAP URL or several, separated by spaces (libldap tries them
 * in turn). */
static int check_uri(const struct settings *s, char *error, size_t error_size) {
  bool ldaps = false;
  unsigned count = 0;
  const char *p = s->dir.uri;
  while (*p != '\0') {
    size_t length = strcspn(p, " ");
    if (length > 0) {
      char url[512];
      LDAPURLDesc *desc = NULL;
      if (length >= sizeof url || (snprintf(url, sizeof url, "%.*s", (int)length, p),
                                   ldap_url_parse(url, &desc) != LDAP_URL_SUCCESS))
        return invalid(error, error_size, "%s: %s", "uri",
                       "not an LDAP URI (ldap://host:port or ldaps://host:port)");
      ldaps |= strcmp(desc->lud_scheme, "ldaps") == 0;
      ldap_free_urldesc(desc);
      count++;
    }
    p += length + (p[length] == ' ');
  }
  if (count == 0)
    return invalid(error, error_size, "%s: %s", "uri", "empty (ldap://host:port)");
  if (ldaps && s->dir.starttls)
    return invalid(error, error_size, "%s: %s", "starttls",
                   "cannot be used with an ldaps:// uri, which is TLS from the start");
  return 0;
}

/* A DN setting must parse as one (RFC 4514). */
static int check_dn(const char *key, const char *dn, char *error, size_t error_size) {
  LDAPDN parsed = NULL;
  int rc = ldap_str2dn(dn, &parsed, LDAP_DN_FORMAT_LDAPV3);
  ldap_dnfree(parsed);
  if (rc != LDAP_SUCCESS)
    return invalid(error, error_size, "%s: not a valid DN (%s)", key,
                   ldap_err2string(rc));
  return 0;
}

/* Whether libldap can encode the filter, filled in for a sample user. It
 * parses it while it builds a search request, before it connects; the
 * handle points at a socket that does not exist, so nothing goes out and
 * nothing waits, and a good filter ends in "can't contact" instead. */
static int check_filter(const char *filter, char *error, size_t error_size) {
  char why[200];
  if (ldap_text_check_template(filter, why, sizeof why) < 0)
    return invalid(error, error_size, "%s: %s", "filter", why);
  char *sample = ldap_text_expand(filter, "user@example.test", LDAP_TEXT_FILTER);
  LDAP *ld = NULL;
  int rc = sample != NULL ? ldap_initialize(&ld, "ldapi://%2Fnonexistent%2Fpopkit")
                          : LDAP_NO_MEMORY;
  if (rc == LDAP_SUCCESS) {
    int msgid;
    rc = ldap_search_ext(ld, "", LDAP_SCOPE_BASE, sample, NULL, 0, NULL, NULL, NULL, 1,
                         &msgid);
  }
  if (ld != NULL)
    ldap_unbind_ext(ld, NULL, NULL);
  free(sample);
  if (rc == LDAP_FILTER_ERROR || rc == LDAP_NO_MEMORY)
    return invalid(error, error_size, "%s: %s", "filter",
                   rc == LDAP_NO_MEMORY ? "out of memory"
                                        : "not a valid LDAP filter (RFC 4515), such as "
                                          "(uid=%u)");
  return 0;
}

static int check_dn_template(const char *template, char *error, size_t error_size) {
  char why[200];
  if (ldap_text_check_template(template, why, sizeof why) < 0)
    return invalid(error, error_size, "%s: %s", "dn_template", why);
  if (!ldap_text_names_user(template))
    return invalid(error, error_size, "%s: %s", "dn_template",
                   "has no %u or %n: every user would bind as one DN");
  char *sample = ldap_text_expand(template, "user@example.test", LDAP_TEXT_DN);
  if (sample == NULL)
    return invalid(error, error_size, "%s: %s", "dn_template", "out of memory");
  int rc = check_dn("dn_template", sample, error, error_size);
  free(sample);
  return rc;
}

static int read_mode(struct settings *s, char *error, size_t error_size) {
  if (s->dn_template != NULL) {
    const char *search_key = s->base != NULL         ? "base"
                             : s->filter != NULL     ? "filter"
                             : s->scope_name != NULL ? "scope"
                                                     : NULL;
    if (search_key != NULL)
      return invalid(error, error_size,
                     "%s: not used with dn_template, which binds without searching "
                     "(keep one of the two ways)%s",
                     search_key, "");
    return check_dn_template(s->dn_template, error, error_size);
  }
  if (s->base == NULL)
    return invalid(error, error_size, "%s: %s", "base",
                   "missing: the search base (or dn_template to bind without searching)");
  int rc = check_dn("base", s->base, error, error_size);
  if (rc < 0)
    return rc;
  if (s->filter == NULL)
    s->filter = default_filter;
  rc = check_filter(s->filter, error, error_size);
  if (rc < 0)
    return rc;
  const char *scope = s->scope_name != NULL ? s->scope_name : "sub";
  if (strcmp(scope, "sub") == 0)
    s->scope = LDAP_SCOPE_SUBTREE;
  else if (strcmp(scope, "one") == 0)
    s->scope = LDAP_SCOPE_ONELEVEL;
  else if (strcmp(scope, "base") == 0)
    s->scope = LDAP_SCOPE_BASE;
  else
    return invalid(error, error_size, "%s: \"%s\" is not one of sub, one, base", "scope",
                   scope);
  return 0;
}

static int read_settings(const struct popkit_module_args *args, struct settings *s,
                         char *error, size_t error_size) {
  const struct popkit_host *host = args->host;
  const struct popkit_config_object *cfg = args->config;
  s->dir.uri = host->config_string(cfg, "uri");
  s->dir.starttls = host->config_boolean(cfg, "starttls", 0);
  s->dir.ca_file = host->config_path(cfg, "ca_file");
  s->dir.tls_verify = host->config_boolean(cfg, "tls_verify", 1);
  s->dir.bind_dn = host->config_string(cfg, "bind_dn");
  s->dir.bind_password = host->config_string(cfg, "bind_password");
  s->base = host->config_string(cfg, "base");
  s->filter = host->config_string(cfg, "filter");
  s->scope_name = host->config_string(cfg, "scope");
  s->dn_template = host->config_string(cfg, "dn_template");
  s->identity_attribute = host->config_string(cfg, "identity_attribute");
  unsigned timeout_s;
  const struct popkit_integer_setting integers[] = {
      {"timeout_s", 5, 1, 300, &timeout_s},
      {"bind_connections", 2, 1, 32, &s->dir.bind_connections},
      {"reconnect_max_ms", 2000, 100, 600000, &s->dir.reconnect_max_ms},
  };
  int rc = popkit_read_integers(host, cfg, integers, sizeof integers / sizeof integers[0],
                                error, error_size);
  if (rc < 0)
    return rc;
  s->dir.timeout_ms = timeout_s * 1000;
  if (s->dir.uri == NULL)
    return invalid(error, error_size, "%s: %s", "uri", "missing (ldap://host:port)");
  rc = check_uri(s, error, error_size);
  if (rc < 0)
    return rc;
  if ((s->dir.bind_dn == NULL) != (s->dir.bind_password == NULL))
    return invalid(error, error_size, "%s: %s",
                   s->dir.bind_dn == NULL ? "bind_password" : "bind_dn",
                   "bind_dn and bind_password go together");
  if (s->dir.bind_password != NULL && s->dir.bind_password[0] == '\0')
    return invalid(error, error_size, "%s: %s", "bind_password",
                   "empty: that would be an anonymous bind; leave out both bind_dn and "
                   "bind_password for one");
  if (s->dir.bind_dn != NULL) {
    rc = check_dn("bind_dn", s->dir.bind_dn, error, error_size);
    if (rc < 0)
      return rc;
  }
  if (s->identity_attribute != NULL && s->identity_attribute[0] == '\0')
    return invalid(error, error_size, "%s: %s", "identity_attribute",
                   "empty (leave it out to use the user name)");
  return read_mode(s, error, error_size);
}

static int ldap_auth_create(const struct popkit_module_args *args, void **instance_r,
                            char *error, size_t error_size) {
  const struct popkit_host *host = args->host;
  if (args->struct_size < sizeof *args) {
    snprintf(error, error_size, "popkitd is older than this module");
    return -EINVAL;
  }
  struct settings s = {0};
  int rc = read_settings(args, &s, error, error_size);
  if (rc < 0)
    return rc;
  struct ldap_module *m = calloc(1, sizeof *m);
  if (m == NULL) {
    snprintf(error, error_size, "out of memory");
    return -ENOMEM;
  }
  m->host = host;
  m->self = args->self;
  m->base = s.base;
  m->scope = s.scope;
  m->filter = s.filter;
  m->dn_template = s.dn_template;
  m->identity_attribute = s.identity_attribute;
  m->dir = ldap_dir_new(args->loop, &s.dir, host, args->self);
  if (m->dir == NULL) {
    free(m);
    snprintf(error, error_size, "out of memory");
    return -ENOMEM;
  }
  if (!s.dir.tls_verify && args->worker_id == 0)
    host->log(args->self, NULL, POPKIT_LOG_WARNING,
              "tls_verify is false: the directory's certificate is not checked, so "
              "anyone on the path can pose as it and read passwords");
  *instance_r = m;
  return 0;
}

static void ldap_auth_destroy(void *instance) {
  struct ldap_module *m = instance;
  ldap_dir_destroy(m->dir);
  free(m);
}

static void ldap_auth_cancel(void *instance, struct popkit_request *req) {
  ldap_login_cancel(instance, req);
}

POPKIT_MODULE_EXPORT const struct popkit_module_descriptor popkit_module = {
    POPKIT_MODULE_HEADER("ldap-auth"),
    .roles = POPKIT_ROLE_AUTH,
    .flags = 0,
    .config_keys = config_keys,
    .create = ldap_auth_create,
    .destroy = ldap_auth_destroy,
    .auth = &ldap_login_ops,
    .store = NULL,
    .cancel = ldap_auth_cancel,
};
