/*
 * The AUTH command (RFC 5034): picks a mechanism, relays challenges and
 * responses between the client and core/sasl.c, and hands the outcome to
 * the login flow (pop3_login.c).
 */
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pop3_session.h"

bool pop3_auth_mech_offered(const struct session *s, enum sasl_mech mech) {
  if (sasl_mech_is_plaintext(mech))
    return session_plaintext_allowed(s);
  /* SCRAM needs the stored credential from some auth module. */
  return s->env->chain->can_get_credential;
}

static void list_mechanisms(struct session *s) {
  session_reply(s, "Methods supported:");
  for (int m = 0; m < SASL_MECH_COUNT; m++) {
    if (pop3_auth_mech_offered(s, (enum sasl_mech)m))
      outbuf_printf(&s->out, "%s\r\n", sasl_mech_name((enum sasl_mech)m));
  }
  outbuf_append_literal(&s->out, ".\r\n");
}

/* Acts on what the mechanism asks for next. */
static void follow(struct session *s, enum sasl_step step) {
  struct sasl *x = s->sasl;
  switch (step) {
  case SASL_STEP_CHALLENGE:
    outbuf_printf(&s->out, "+ %s\r\n", x->challenge != NULL ? x->challenge : "");
    s->state = SESSION_SASL;
    return;
  case SASL_STEP_VERIFY_PLAIN: {
    /* The password moves to the login; the exchange is over. */
    char *user = x->user, *password = x->password;
    x->user = x->password = NULL;
    login_reset(s);
    login_begin(s, POPKIT_REQ_AUTH_VERIFY_PLAIN, user, password);
    explicit_bzero(password, strlen(password));
    free(password);
    free(user);
    return;
  }
  case SASL_STEP_NEED_CREDENTIAL:
    login_begin(s, POPKIT_REQ_AUTH_GET_CREDENTIAL, x->user, NULL);
    return;
  case SASL_STEP_SUCCESS: {
    /* login_succeeded() ends the exchange, x->user with it. */
    char *identity = s->login_identity != NULL ? s->login_identity : strdup(x->user);
    s->login_identity = NULL;
    if (identity == NULL) {
      login_failed(s, POPKIT_TEMPFAIL, "out of memory");
      return;
    }
    login_succeeded(s, identity);
    free(identity);
    return;
  }
  case SASL_STEP_FAILED: {
    const char *error = x->error; /* static text: it outlives the exchange */
    if (x->auth_failure || x->temp_failure) {
      login_failed(s, x->temp_failure ? POPKIT_TEMPFAIL : POPKIT_FAIL, error);
      return;
    }
    session_log(s, POPKIT_LOG_INFO, "AUTH %s: %s", sasl_mech_name(x->mech), error);
    login_reset(s);
    session_error(s, "%s", error);
    return;
  }
  case SASL_STEP_CANCELED:
    login_reset(s);
    session_error(s, "Authentication canceled.");
    return;
  }
}

void pop3_auth_command(struct session *s, char *args) {
  char *mech_name = args, *initial = NULL;
  char *space = strchr(args, ' ');
  if (space != NULL) {
    *space = '\0';
    initial = space + 1;
    if (*initial == '\0' || strchr(initial, ' ') != NULL) {
      session_error(s, "Invalid arguments. Usage: AUTH mechanism [initial-response]");
      return;
    }
  }
  if (mech_name[0] == '\0') {
    list_mechanisms(s);
    return;
  }
  enum sasl_mech mech;
  if (!sasl_mech_lookup(mech_name, &mech)) {
    session_error(s, "Unknown authentication mechanism.");
    return;
  }
  if (!pop3_auth_mech_offered(s, mech)) {
    if (sasl_mech_is_plaintext(mech))
      pop3_refuse_plaintext(s);
    else
      session_error(s, "%s is not available on this server.", sasl_mech_name(mech));
    return;
  }
  s->sasl = calloc(1, sizeof *s->sasl);
  if (s->sasl == NULL) {
    session_error(s, "[SYS/TEMP] Out of memory.");
    return;
  }
  follow(s, sasl_start(s->sasl, mech, initial));
}

void pop3_auth_line(struct session *s, char *line, bool too_long) {
  if (too_long) {
    login_reset(s);
    session_error(s, "Authentication aborted: line too long (the limit is %zu octets).",
                  s->env->config->limits.max_line_bytes);
    return;
  }
  enum sasl_step step = sasl_continue(s->sasl, line);
  explicit_bzero(line, strlen(line));
  follow(s, step);
}

void pop3_auth_credential(struct session *s, const char *credential,
                          const char *identity) {
  free(s->login_identity);
  s->login_identity = identity != NULL ? strdup(identity) : NULL;
  follow(s, sasl_credential(s->sasl, credential));
}
