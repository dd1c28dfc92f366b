#include "popbench_client.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static struct client_env env;
static bool tls_described;

void client_set_env(const struct client_env *e) {
  env = *e;
}

const char *client_step_name(enum client_step step) {
  static const char *const names[] = {
      [STEP_IDLE] = "idle",
      [STEP_CONNECT] = "connect",
      [STEP_HANDSHAKE] = "TLS handshake",
      [STEP_BANNER] = "banner",
      [STEP_CAPA] = "CAPA",
      [STEP_CAPA_LINES] = "CAPA lines",
      [STEP_STLS] = "STLS",
      [STEP_STLS_HANDSHAKE] = "STLS handshake",
      [STEP_USER] = "USER",
      [STEP_PASS] = "PASS",
      [STEP_STAT] = "STAT",
      [STEP_LIST] = "LIST",
      [STEP_LIST_LINES] = "LIST lines",
      [STEP_RETR] = "RETR",
      [STEP_RETR_BODY] = "RETR body",
      [STEP_HELD] = "held session",
      [STEP_NOOP] = "NOOP",
      [STEP_QUIT] = "QUIT",
      [STEP_WAIT_CLOSE] = "close after QUIT",
  };
  return names[step];
}

/* ---- Errors and commands ------------------------------------------------ */

void client_fail(struct client *cl, const char *kind, const char *detail) {
  env.hooks->error(cl->run, kind, detail);
  conn_close(&cl->conn);
}

/* A server has this long to close after "+OK" to QUIT; one that keeps
 * the connection would otherwise hold its slot, uncounted, to the end. */
#define CLOSE_AFTER_QUIT_NS 1000000000ull

void client_abort(struct client *cl) {
  if (cl->conn.state == CONN_OPEN && cl->step == STEP_WAIT_CLOSE &&
      uv_hrtime() - cl->sent_ns > CLOSE_AFTER_QUIT_NS) {
    client_fail(cl, "close after QUIT: the server kept the connection open over 1 s",
                NULL);
    return;
  }
  conn_close(&cl->conn);
}

/* An error named after the step it happened in. */
static void fail_in_step(struct client *cl, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void fail_in_step(struct client *cl, const char *fmt, ...) {
  char what[256], kind[320];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  snprintf(kind, sizeof kind, "%s: %s", client_step_name(cl->step), what);
  client_fail(cl, kind, NULL);
}

/* Sends one command line and waits for its status line in the new step. */
static void command(struct client *cl, enum client_step step, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void command(struct client *cl, enum client_step step, const char *fmt, ...) {
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line - 2, fmt, ap);
  va_end(ap);
  /* The options bound names and passwords well under the buffer. */
  if (n < 0 || (size_t)n >= sizeof line - 2)
    abort();
  memcpy(line + n, "\r\n", 2);
  cl->step = step;
  scan_start(&cl->scan, SCAN_STATUS);
  if (step == STEP_RETR)
    cl->sent_ns = uv_hrtime();
  conn_send(&cl->conn, line, (size_t)n + 2);
  /* PASS was in it. */
  explicit_bzero(line, sizeof line);
}

/* True for "+OK" and "+OK text"; anything else is an error of the step,
 * printed with the reply. */
static bool reply_ok(struct client *cl) {
  const char *line = cl->scan.line;
  if (strncmp(line, "+OK", 3) == 0 && (line[3] == '\0' || line[3] == ' '))
    return true;
  char kind[96];
  snprintf(kind, sizeof kind, "%s %s", client_step_name(cl->step),
           strncmp(line, "-ERR", 4) == 0 ? "refused"
                                         : "got a reply neither +OK nor -ERR");
  client_fail(cl, kind, line);
  return false;
}

/* ---- The dialogue ------------------------------------------------------- */

static void send_user(struct client *cl) {
  char name[300];
  options_user_name(env.opt, cl->user, name, sizeof name);
  command(cl, STEP_USER, "USER %s", name);
}

/* RETR of the next message in turn. The turn moves on as the command
 * leaves, so after an error the new connection goes on with the message
 * after the one that failed rather than failing on it again. */
static void send_next_retr(struct client *cl) {
  if (cl->next >= cl->n_messages)
    cl->next = 0;
  cl->current = cl->next++;
  command(cl, STEP_RETR, "RETR %u", cl->messages[cl->current].number);
}

/* One line of a scan listing: "number size". */
static bool add_listed(struct client *cl, const char *line) {
  char *end;
  if (!isdigit((unsigned char)line[0]))
    return false; /* strtoul would take spaces and signs */
  errno = 0;
  unsigned long number = strtoul(line, &end, 10);
  if (errno != 0 || end == line || *end != ' ' || number == 0 || number > UINT32_MAX)
    return false;
  const char *size_text = end + 1;
  unsigned long long size = strtoull(size_text, &end, 10);
  if (errno != 0 || end == size_text || !isdigit((unsigned char)*size_text) ||
      (*end != '\0' && *end != ' '))
    return false;
  if (cl->n_messages == cl->messages_room) {
    size_t room = cl->messages_room ? 2 * cl->messages_room : 64;
    struct listed_message *m = realloc(cl->messages, room * sizeof *m);
    if (m == NULL)
      return false;
    cl->messages = m;
    cl->messages_room = room;
  }
  cl->messages[cl->n_messages].number = (unsigned)number;
  cl->messages[cl->n_messages].size = size;
  cl->n_messages++;
  return true;
}

static void logged_in(struct client *cl) {
  if (env.opt->mode == MODE_RETR) {
    command(cl, STEP_LIST, "LIST");
    return;
  }
  command(cl, STEP_STAT, "STAT");
}

/* A line (status line or kept line of a multi-line reply) or the end of a
 * multi-line reply, in the step that was waiting for it. */
static void on_reply(struct client *cl, enum scan_event ev) {
  bool multi = cl->step == STEP_CAPA_LINES || cl->step == STEP_LIST_LINES ||
               cl->step == STEP_RETR_BODY;
  if (!multi && !reply_ok(cl))
    return;
  switch (cl->step) {
  case STEP_BANNER:
    if (env.opt->tls == BENCH_TLS_STLS)
      command(cl, STEP_CAPA, "CAPA");
    else
      send_user(cl);
    break;
  case STEP_CAPA:
    cl->step = STEP_CAPA_LINES;
    cl->stls_offered = false;
    scan_start(&cl->scan, SCAN_LINES);
    break;
  case STEP_CAPA_LINES:
    if (ev == SCAN_LINE) {
      const char *l = cl->scan.line;
      if (strncasecmp(l, "STLS", 4) == 0 && (l[4] == '\0' || l[4] == ' '))
        cl->stls_offered = true;
    } else if (!cl->stls_offered) {
      fail_in_step(cl, "the server does not offer STLS");
    } else {
      command(cl, STEP_STLS, "STLS");
    }
    break;
  case STEP_STLS:
    cl->step = STEP_STLS_HANDSHAKE;
    conn_start_tls(&cl->conn);
    break;
  case STEP_USER:
    command(cl, STEP_PASS, "PASS %s", env.opt->password);
    break;
  case STEP_PASS:
    logged_in(cl);
    break;
  case STEP_STAT:
    if (env.opt->mode == MODE_SESSIONS) {
      command(cl, STEP_QUIT, "QUIT");
    } else {
      cl->step = STEP_HELD;
      env.hooks->completed(cl->run, cl, uv_hrtime() - cl->started_ns);
    }
    break;
  case STEP_LIST:
    cl->step = STEP_LIST_LINES;
    cl->n_messages = 0;
    scan_start(&cl->scan, SCAN_LINES);
    break;
  case STEP_LIST_LINES:
    if (ev == SCAN_LINE) {
      if (!add_listed(cl, cl->scan.line))
        client_fail(cl, "LIST lines: not \"number size\"", cl->scan.line);
    } else if (cl->n_messages == 0) {
      /* Nothing to retrieve: reconnecting would not change that. */
      cl->retired = true;
      fail_in_step(cl, "the mailbox is empty");
    } else {
      send_next_retr(cl);
    }
    break;
  case STEP_RETR:
    cl->step = STEP_RETR_BODY;
    cl->bytes_counted = 0;
    scan_start(&cl->scan, SCAN_BODY);
    break;
  case STEP_RETR_BODY: {
    /* Only the end comes here: body lines are not kept. */
    const struct listed_message *m = &cl->messages[cl->current];
    if (cl->scan.body_bytes != m->size) {
      char detail[128];
      snprintf(detail, sizeof detail, "message %u has %llu bytes, LIST said %llu",
               m->number, (unsigned long long)cl->scan.body_bytes,
               (unsigned long long)m->size);
      client_fail(cl, "RETR body: the size differs from LIST's", detail);
      break;
    }
    env.hooks->completed(cl->run, cl, uv_hrtime() - cl->sent_ns);
    if (cl->conn.state == CONN_OPEN)
      send_next_retr(cl);
    break;
  }
  case STEP_NOOP:
    cl->step = STEP_HELD;
    if (cl->quit_after_noop)
      command(cl, STEP_QUIT, "QUIT");
    break;
  case STEP_QUIT:
    cl->step = STEP_WAIT_CLOSE;
    cl->sent_ns = uv_hrtime(); /* the close is due from now */
    break;
  default:
    /* Steps that expect nothing are caught before the scanner runs. */
    abort();
  }
}

static bool expects_reply(enum client_step step) {
  switch (step) {
  case STEP_BANNER:
  case STEP_CAPA:
  case STEP_CAPA_LINES:
  case STEP_STLS:
  case STEP_USER:
  case STEP_PASS:
  case STEP_STAT:
  case STEP_LIST:
  case STEP_LIST_LINES:
  case STEP_RETR:
  case STEP_RETR_BODY:
  case STEP_NOOP:
  case STEP_QUIT:
    return true;
  default:
    return false;
  }
}

/* ---- Connection events -------------------------------------------------- */

static void on_data(struct conn *c, const char *data, size_t len) {
  struct client *cl = (struct client *)c;
  const char *p = data, *end = data + len;
  while (p < end && cl->conn.state == CONN_OPEN) {
    if (!expects_reply(cl->step)) {
      /* Bytes nobody asked for: after "+OK" to STLS they would be read as
       * clear text where TLS belongs (RFC 2595 forbids it). */
      char shown[64];
      size_t n =
          (size_t)(end - p) < sizeof shown - 1 ? (size_t)(end - p) : sizeof shown - 1;
      for (size_t i = 0; i < n; i++)
        shown[i] = (p[i] >= 0x20 && p[i] < 0x7f) ? p[i] : '?';
      shown[n] = '\0';
      char kind[96];
      snprintf(kind, sizeof kind, "%s: the server sent bytes nothing asked for",
               client_step_name(cl->step));
      client_fail(cl, kind, shown);
      return;
    }
    enum scan_event ev = scan_next(&cl->scan, &p, end);
    if (cl->step == STEP_RETR_BODY && cl->scan.body_bytes > cl->bytes_counted) {
      env.hooks->bytes(cl->run, cl->scan.body_bytes - cl->bytes_counted);
      cl->bytes_counted = cl->scan.body_bytes;
    }
    if (ev == SCAN_MORE)
      return;
    if (ev == SCAN_ERROR) {
      fail_in_step(cl, "%s", cl->scan.error);
      return;
    }
    on_reply(cl, ev);
  }
}

static void on_connected(struct conn *c) {
  struct client *cl = (struct client *)c;
  if (env.opt->tls == BENCH_TLS_IMPLICIT) {
    cl->step = STEP_HANDSHAKE;
    conn_start_tls(c);
    return;
  }
  cl->step = STEP_BANNER;
  scan_start(&cl->scan, SCAN_STATUS);
}

static void on_secured(struct conn *c) {
  struct client *cl = (struct client *)c;
  if (!tls_described) {
    char what[128];
    conn_tls_describe(c, what, sizeof what);
    fprintf(stderr, "popbench: %s, server certificate verified against %s\n", what,
            env.opt->cafile);
    tls_described = true;
  }
  if (cl->step == STEP_HANDSHAKE) {
    cl->step = STEP_BANNER;
    scan_start(&cl->scan, SCAN_STATUS);
  } else {
    send_user(cl);
  }
}

static void on_eof(struct conn *c) {
  struct client *cl = (struct client *)c;
  if (cl->step != STEP_WAIT_CLOSE) {
    fail_in_step(cl, "the server closed the connection");
    return;
  }
  cl->step = STEP_IDLE;
  conn_close(c);
  if (env.opt->mode == MODE_SESSIONS)
    env.hooks->completed(cl->run, cl, uv_hrtime() - cl->started_ns);
}

static void on_failed(struct conn *c, const char *what, const char *detail) {
  struct client *cl = (struct client *)c;
  char kind[320];
  const char *step = client_step_name(cl->step);
  /* "connect failed: ...", "read failed during RETR body: ..." */
  if (strcmp(what, step) == 0)
    snprintf(kind, sizeof kind, "%s failed: %s", what, detail);
  else
    snprintf(kind, sizeof kind, "%s failed during %s: %s", what, step, detail);
  env.hooks->error(cl->run, kind, NULL);
}

static void on_closed(struct conn *c) {
  struct client *cl = (struct client *)c;
  cl->step = STEP_IDLE;
  env.hooks->ended(cl->run, cl);
}

static const struct conn_events client_events = {
    .connected = on_connected,
    .secured = on_secured,
    .data = on_data,
    .eof = on_eof,
    .failed = on_failed,
    .closed = on_closed,
};

/* ---- Control from the run ----------------------------------------------- */

void client_start(struct client *cl) {
  cl->step = STEP_CONNECT;
  cl->quit_after_noop = false;
  cl->started_ns = uv_hrtime();
  conn_open(&cl->conn, env.loop, (const struct sockaddr *)&env.opt->addr, &client_events);
}

void client_noop(struct client *cl) {
  if (cl->conn.state == CONN_OPEN && cl->step == STEP_HELD)
    command(cl, STEP_NOOP, "NOOP");
}

void client_quit(struct client *cl) {
  if (cl->conn.state != CONN_OPEN)
    return;
  if (cl->step == STEP_HELD)
    command(cl, STEP_QUIT, "QUIT");
  else if (cl->step == STEP_NOOP)
    cl->quit_after_noop = true;
  else
    client_abort(cl);
}

void client_free(struct client *cl) {
  free(cl->messages);
  cl->messages = NULL;
}
