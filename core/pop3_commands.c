/*
 * The POP3 command table (RFC 1939, RFC 2449 CAPA) and the handlers. Each
 * handler runs with a complete line, answers, or starts a backend call and
 * leaves the answer to the session's completion callbacks.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "pop3_session.h"

#define IN_AUTHORIZATION (1u << 0)
#define IN_TRANSACTION (1u << 1)
#define MAX_ARGS 3

struct pop3_args {
  char *v[MAX_ARGS];
  size_t count;
  bool too_many;
  char *rest; /* everything after the command and one space (PASS) */
};

struct pop3_command {
  const char *name;
  unsigned states;
  bool rest_of_line; /* the argument is the rest of the line, spaces and all */
  void (*run)(struct session *s, struct pop3_args *a);
};

/* ---- Arguments ---------------------------------------------------------- */

static void split_args(char *line, struct pop3_args *a) {
  memset(a, 0, sizeof *a);
  char *p = line;
  while (*p == ' ')
    p++;
  a->rest = p;
  while (*p != '\0') {
    char *start = p;
    while (*p != '\0' && *p != ' ')
      p++;
    if (*p == ' ')
      *p++ = '\0';
    while (*p == ' ')
      p++;
    if (a->count < MAX_ARGS)
      a->v[a->count++] = start;
    else
      a->too_many = true;
  }
}

/* Parses a decimal number of at most 64 bits: digits only, no sign, no
 * spaces. Returns false for anything else, including overflow. */
static bool parse_u64(const char *text, uint64_t *value_r) {
  uint64_t v = 0;
  if (*text == '\0')
    return false;
  for (const char *p = text; *p != '\0'; p++) {
    if (*p < '0' || *p > '9')
      return false;
    unsigned digit = (unsigned)(*p - '0');
    if (v > (UINT64_MAX - digit) / 10)
      return false;
    v = v * 10 + digit;
  }
  *value_r = v;
  return true;
}

/* Resolves a message-number argument to an index of a live message, or
 * answers -ERR and returns false. */
static bool message_arg(struct session *s, const char *arg, uint64_t *index_r) {
  uint64_t n;
  if (!parse_u64(arg, &n) || n == 0) {
    session_error(s, "Invalid message number: expected a number from 1 to %llu.",
                  (unsigned long long)s->listing.count);
    return false;
  }
  if (n > s->listing.count) {
    session_error(s, "No such message: there %s %llu.",
                  s->listing.count == 1 ? "is" : "are",
                  (unsigned long long)s->listing.count);
    return false;
  }
  if (s->listing.entries[n - 1].deleted) {
    session_error(s, "Message %llu is deleted.", (unsigned long long)n);
    return false;
  }
  *index_r = n - 1;
  return true;
}

static bool want_args(struct session *s, const struct pop3_args *a, size_t min,
                      size_t max, const char *usage) {
  if (a->count < min || a->count > max || a->too_many) {
    session_error(s, "%s arguments. Usage: %s", a->count < min ? "Missing" : "Too many",
                  usage);
    return false;
  }
  return true;
}

/* ---- AUTHORIZATION ------------------------------------------------------ */

void pop3_write_capa(struct session *s) {
  static const char head[] = "+OK Capability list follows.\r\n";
  outbuf_append(&s->out, head, sizeof head - 1);
  outbuf_append_literal(&s->out, "TOP\r\n");
  if (session_plaintext_allowed(s))
    outbuf_append_literal(&s->out, "USER\r\n");
  if (s->state != SESSION_TRANSACTION) {
    /* RFC 2449: SASL lists what AUTH accepts here and now. */
    bool any = false;
    for (int m = 0; m < SASL_MECH_COUNT; m++) {
      if (!pop3_auth_mech_offered(s, (enum sasl_mech)m))
        continue;
      outbuf_printf(&s->out, "%s%s", any ? " " : "SASL ",
                    sasl_mech_name((enum sasl_mech)m));
      any = true;
    }
    if (any)
      outbuf_append_literal(&s->out, "\r\n");
    if (s->tls_offered)
      outbuf_append_literal(&s->out, "STLS\r\n");
  }
  outbuf_append_literal(&s->out,
                        "UIDL\r\nPIPELINING\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n");
  outbuf_append_literal(&s->out, "EXPIRE NEVER\r\n");
  outbuf_printf(&s->out, "IMPLEMENTATION popkit %s\r\n.\r\n", POPKIT_VERSION);
  s->bad_commands = 0;
}

static void cmd_capa(struct session *s, struct pop3_args *a) {
  if (want_args(s, a, 0, 0, "CAPA"))
    pop3_write_capa(s);
}

/* USER, PASS and AUTH PLAIN/LOGIN where passwords must not travel in
 * clear: the answer says what to do instead. */
void pop3_refuse_plaintext(struct session *s) {
  if (s->tls_offered)
    session_error(s, "[AUTH] Plaintext authentication is not allowed without TLS: "
                     "send STLS first.");
  else
    session_error(s, "[AUTH] Plaintext authentication is not allowed on this "
                     "connection: use TLS (POP3S, port 995).");
}

static void cmd_user(struct session *s, struct pop3_args *a) {
  if (!session_plaintext_allowed(s)) {
    pop3_refuse_plaintext(s);
    return;
  }
  /* RFC 1939 allows no spaces in a name, but some sites have them: take
   * the rest of the line, as for PASS. */
  if (a->rest[0] == '\0') {
    session_error(s, "Missing arguments. Usage: USER name");
    return;
  }
  free(s->user);
  s->user = strdup(a->rest);
  if (s->user == NULL) {
    session_error(s, "[SYS/TEMP] Out of memory.");
    return;
  }
  session_reply(s, "Send PASS.");
}

static void cmd_pass(struct session *s, struct pop3_args *a) {
  if (!session_plaintext_allowed(s)) {
    pop3_refuse_plaintext(s);
    return;
  }
  if (s->user == NULL) {
    session_error(s, "Send USER first.");
    return;
  }
  /* RFC 1939: the password is the rest of the line, spaces included. */
  char *user = s->user;
  s->user = NULL;
  login_begin(s, POPKIT_REQ_AUTH_VERIFY_PLAIN, user, a->rest);
  explicit_bzero(a->rest, strlen(a->rest));
  free(user);
}

static void cmd_apop(struct session *s, struct pop3_args *a) {
  if (s->apop_timestamp[0] == '\0') {
    session_error(s, "APOP is not enabled on this server.");
    return;
  }
  if (!want_args(s, a, 2, 2, "APOP name digest"))
    return;
  login_begin(s, POPKIT_REQ_AUTH_GET_CREDENTIAL, a->v[0], a->v[1]);
}

static void cmd_auth(struct session *s, struct pop3_args *a) {
  pop3_auth_command(s, a->rest);
}

/* RFC 2595 section 4. */
static void cmd_stls(struct session *s, struct pop3_args *a) {
  if (!s->tls_offered) {
    session_error(s, s->secured ? "TLS is already active."
                                : "STLS is not offered on this port.");
    return;
  }
  if (!want_args(s, a, 0, 0, "STLS"))
    return;
  session_reply(s, "Begin TLS negotiation now.");
  /* Commands pipelined after STLS arrived in clear, where anyone on the
   * path could have put them: they are dropped, never run under TLS. */
  line_parser_reset(&s->parser);
  s->state = SESSION_TLS_WAIT; /* session_tls_ready() forgets the USER */
  s->io->start_tls(s->io_ctx);
}

static void cmd_quit(struct session *s, struct pop3_args *a) {
  if (s->state == SESSION_TRANSACTION) {
    session_begin_update(s);
    return;
  }
  session_reply(s, "Logging out.");
  session_logout(s, "QUIT");
}

/* ---- TRANSACTION -------------------------------------------------------- */

static void cmd_stat(struct session *s, struct pop3_args *a) {
  if (want_args(s, a, 0, 0, "STAT"))
    session_reply(s, "%llu %llu", (unsigned long long)s->live_count,
                  (unsigned long long)s->live_octets);
}

static void cmd_list(struct session *s, struct pop3_args *a) {
  uint64_t i;
  if (!want_args(s, a, 0, 1, "LIST [msg]"))
    return;
  if (a->count == 1) {
    if (message_arg(s, a->v[0], &i))
      session_reply(s, "%llu %llu", (unsigned long long)i + 1,
                    (unsigned long long)s->listing.entries[i].size);
    return;
  }
  session_reply(s, "%llu messages (%llu octets)", (unsigned long long)s->live_count,
                (unsigned long long)s->live_octets);
  session_begin_sending(s, SEND_LIST, 0, false, 0);
}

static void cmd_uidl(struct session *s, struct pop3_args *a) {
  uint64_t i;
  if (!want_args(s, a, 0, 1, "UIDL [msg]"))
    return;
  if (a->count == 1) {
    if (message_arg(s, a->v[0], &i))
      session_reply(s, "%llu %s", (unsigned long long)i + 1,
                    s->listing.uids + s->listing.entries[i].uid_off);
    return;
  }
  session_reply(s, "Unique-ID listing follows.");
  session_begin_sending(s, SEND_UIDL, 0, false, 0);
}

static void cmd_retr(struct session *s, struct pop3_args *a) {
  uint64_t i;
  if (!want_args(s, a, 1, 1, "RETR msg") || !message_arg(s, a->v[0], &i))
    return;
  session_begin_sending(s, SEND_MESSAGE, i, false, 0);
}

static void cmd_top(struct session *s, struct pop3_args *a) {
  uint64_t i, lines;
  if (!want_args(s, a, 2, 2, "TOP msg lines") || !message_arg(s, a->v[0], &i))
    return;
  if (!parse_u64(a->v[1], &lines)) {
    session_error(s, "Invalid line count: expected a number of 0 or more.");
    return;
  }
  session_begin_sending(s, SEND_MESSAGE, i, true, lines);
}

static void cmd_dele(struct session *s, struct pop3_args *a) {
  uint64_t i;
  if (!want_args(s, a, 1, 1, "DELE msg") || !message_arg(s, a->v[0], &i))
    return;
  s->listing.entries[i].deleted = true;
  s->live_count--;
  s->live_octets -= s->listing.entries[i].size;
  session_reply(s, "Message %llu marked to be deleted.", (unsigned long long)i + 1);
}

static void cmd_rset(struct session *s, struct pop3_args *a) {
  if (!want_args(s, a, 0, 0, "RSET"))
    return;
  s->live_count = s->listing.count;
  s->live_octets = 0;
  for (size_t i = 0; i < s->listing.count; i++) {
    s->listing.entries[i].deleted = false;
    s->live_octets += s->listing.entries[i].size;
  }
  session_reply(s, "%llu messages (%llu octets).", (unsigned long long)s->live_count,
                (unsigned long long)s->live_octets);
}

static void cmd_noop(struct session *s, struct pop3_args *a) {
  if (want_args(s, a, 0, 0, "NOOP"))
    session_reply(s, "Still here.");
}

static const struct pop3_command commands[] = {
    {"CAPA", IN_AUTHORIZATION | IN_TRANSACTION, false, cmd_capa},
    {"USER", IN_AUTHORIZATION, true, cmd_user},
    {"PASS", IN_AUTHORIZATION, true, cmd_pass},
    {"APOP", IN_AUTHORIZATION, false, cmd_apop},
    {"AUTH", IN_AUTHORIZATION, true, cmd_auth},
    {"STLS", IN_AUTHORIZATION, false, cmd_stls},
    {"QUIT", IN_AUTHORIZATION | IN_TRANSACTION, false, cmd_quit},
    {"STAT", IN_TRANSACTION, false, cmd_stat},
    {"LIST", IN_TRANSACTION, false, cmd_list},
    {"RETR", IN_TRANSACTION, false, cmd_retr},
    {"DELE", IN_TRANSACTION, false, cmd_dele},
    {"NOOP", IN_TRANSACTION, false, cmd_noop},
    {"RSET", IN_TRANSACTION, false, cmd_rset},
    {"TOP", IN_TRANSACTION, false, cmd_top},
    {"UIDL", IN_TRANSACTION, false, cmd_uidl},
};

void pop3_dispatch(struct session *s, char *line, size_t len) {
  if (memchr(line, '\0', len) != NULL) {
    session_error(s, "Invalid command: it contains a NUL byte.");
    return;
  }
  char *args = line;
  while (*args != '\0' && *args != ' ')
    args++;
  size_t name_len = (size_t)(args - line);
  if (*args == ' ')
    *args++ = '\0';
  if (name_len == 0) {
    session_error(s, "Empty command.");
    return;
  }
  const struct pop3_command *cmd = NULL;
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
    if (strcasecmp(commands[i].name, line) == 0) {
      cmd = &commands[i];
      break;
    }
  }
  if (cmd == NULL) {
    session_error(s, "Unknown command.");
    return;
  }
  unsigned state_bit =
      s->state == SESSION_TRANSACTION ? IN_TRANSACTION : IN_AUTHORIZATION;
  if ((cmd->states & state_bit) == 0) {
    session_error(s, "%s is not allowed %s.", cmd->name,
                  state_bit == IN_TRANSACTION ? "after login" : "before login");
    return;
  }
  struct pop3_args a;
  if (cmd->rest_of_line) {
    memset(&a, 0, sizeof a);
    a.rest = args;
  } else {
    split_args(args, &a);
  }
  cmd->run(s, &a);
}
