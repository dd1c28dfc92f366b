#include "rc_redis.h"

#include <errno.h>
#include <hiredis/async.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RECONNECT_FIRST_MS 100u

enum rc_state {
  RC_DOWN,       /* no connection; the retry timer opens the next one */
  RC_CONNECTING, /* connecting, then waiting for the first PONG; commands
                    wait in hiredis, bounded by timeout_ms */
  RC_UP          /* Redis has answered on this connection */
};

/* A command waiting for its answer. */
struct rc_command {
  struct rc_command *next;
  struct rc_redis *redis;
  rc_reply_cb cb;
  void *data;
  uint64_t deadline_ms;
};

/* The glue between one hiredis context and the loop. */
struct rc_events {
  redisAsyncContext *ac; /* NULL once hiredis has let go of it */
  uv_poll_t poll;
  int events;
};

struct rc_redis {
  uv_loop_t *loop;
  const struct popkit_host *host;
  struct popkit_module_handle *self;
  char *address; /* for log lines */
  char *host_or_path;
  int port; /* 0: a unix socket */
  char *password;
  unsigned database;
  unsigned timeout_ms, reconnect_max_ms, log_interval_s;
  redisAsyncContext *ac;
  enum rc_state state;
  bool started; /* the timers exist */
  bool destroying;
  unsigned failures;
  uv_timer_t *retry;
  uv_timer_t *deadline; /* the oldest command's, or the connect's */
  struct rc_command *head, *tail;
  bool down_logged;         /* the going-away line is out */
  uint64_t last_down_log;   /* uv_now() of the last line about it */
  unsigned long lost_calls; /* commands not sent since that line */
  const char *drop_reason;  /* why popkitd itself drops the connection */
  char refusal[160];        /* what Redis answered to AUTH, SELECT or PING */
};

#define redis_log(r, level, ...) (r)->host->log((r)->self, NULL, level, __VA_ARGS__)

static void schedule_reconnect(struct rc_redis *r);

/* ---- libuv glue for hiredis --------------------------------------------- */

static void on_events(uv_poll_t *poll, int status, int events) {
  struct rc_events *e = poll->data;
  if (e->ac == NULL)
    return;
  if (status < 0)
    /* An error on the socket: hiredis finds out what it is when it tries
     * to read or finish connecting. */
    events = UV_READABLE | UV_WRITABLE;
  if (events & UV_WRITABLE)
    redisAsyncHandleWrite(e->ac);
  if (e->ac != NULL && (events & UV_READABLE))
    redisAsyncHandleRead(e->ac);
}

static void watch(struct rc_events *e, int add, int remove) {
  e->events = (e->events | add) & ~remove;
  if (e->events != 0)
    uv_poll_start(&e->poll, e->events, on_events);
  else
    uv_poll_stop(&e->poll);
}

static void add_read(void *p) {
  watch(p, UV_READABLE, 0);
}
static void del_read(void *p) {
  watch(p, 0, UV_READABLE);
}
static void add_write(void *p) {
  watch(p, UV_WRITABLE, 0);
}
static void del_write(void *p) {
  watch(p, 0, UV_WRITABLE);
}

static void free_events(uv_handle_t *handle) {
  free(handle->data);
}

static void cleanup(void *p) {
  struct rc_events *e = p;
  e->ac = NULL;
  uv_close((uv_handle_t *)&e->poll, free_events);
}

static int attach(redisAsyncContext *ac, uv_loop_t *loop) {
  struct rc_events *e = calloc(1, sizeof *e);
  if (e == NULL)
    return -ENOMEM;
  int rc = uv_poll_init(loop, &e->poll, ac->c.fd);
  if (rc < 0) {
    free(e);
    return rc;
  }
  e->ac = ac;
  e->poll.data = e;
  ac->ev.data = e;
  ac->ev.addRead = add_read;
  ac->ev.delRead = del_read;
  ac->ev.addWrite = add_write;
  ac->ev.delWrite = del_write;
  ac->ev.cleanup = cleanup;
  return 0;
}

/* ---- Commands ----------------------------------------------------------- */

static void on_deadline(uv_timer_t *timer);

static void arm_deadline(struct rc_redis *r) {
  if (r->head == NULL) {
    uv_timer_stop(r->deadline);
    return;
  }
  uint64_t now = uv_now(r->loop);
  uv_timer_start(r->deadline, on_deadline,
                 r->head->deadline_ms > now ? r->head->deadline_ms - now : 0, 0);
}

static void unlink_command(struct rc_redis *r, struct rc_command *cmd) {
  struct rc_command *prev = NULL;
  for (struct rc_command *it = r->head; it != NULL; prev = it, it = it->next) {
    if (it != cmd)
      continue;
    if (prev != NULL)
      prev->next = cmd->next;
    else
      r->head = cmd->next;
    if (r->tail == cmd)
      r->tail = prev;
    return;
  }
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata) {
  struct rc_command *cmd = privdata;
  struct rc_redis *r = cmd->redis;
  (void)ac;
  unlink_command(r, cmd);
  if (!r->destroying) {
    arm_deadline(r);
    if (cmd->cb != NULL)
      cmd->cb(cmd->data, reply);
  }
  free(cmd);
}

/* Sends a command on the connection, whatever its state. */
static int enqueue(struct rc_redis *r, rc_reply_cb cb, void *data, int argc,
                   const char **argv, const size_t *lengths) {
  struct rc_command *cmd = calloc(1, sizeof *cmd);
  if (cmd == NULL)
    return -ENOMEM;
  cmd->redis = r;
  cmd->cb = cb;
  cmd->data = data;
  cmd->deadline_ms = uv_now(r->loop) + r->timeout_ms;
  if (redisAsyncCommandArgv(r->ac, on_reply, cmd, argc, argv, lengths) != REDIS_OK) {
    free(cmd);
    return -EIO;
  }
  if (r->tail != NULL)
    r->tail->next = cmd;
  else
    r->head = cmd;
  r->tail = cmd;
  if (!uv_is_active((uv_handle_t *)r->deadline))
    arm_deadline(r);
  return 0;
}

static void start_timers(struct rc_redis *r);
static void connect_now(struct rc_redis *r);

void rc_redis_connect_soon(struct rc_redis *r) {
  if (r->state == RC_DOWN && !r->started) {
    start_timers(r);
    connect_now(r);
  }
}

int rc_redis_command(struct rc_redis *r, rc_reply_cb cb, void *data, int argc,
                     const char **argv, const size_t *lengths) {
  /* The first command opens the connection, and waits for it (bounded by
   * timeout_ms) rather than miss the cache. */
  rc_redis_connect_soon(r);
  if (r->state == RC_DOWN) {
    r->lost_calls++;
    return -ENOTCONN;
  }
  /* While connecting, hiredis keeps commands until the connection is up. */
  return enqueue(r, cb, data, argc, argv, lengths);
}

/* ---- The connection ----------------------------------------------------- */

static void log_down(struct rc_redis *r, const char *why) {
  uint64_t now = uv_now(r->loop);
  if (!r->down_logged) {
    redis_log(r, POPKIT_LOG_WARNING,
              "Redis at %s is unreachable: %s; every call goes to the next module, "
              "and popkitd keeps trying in the background",
              r->address, why);
  } else if (now - r->last_down_log >= (uint64_t)r->log_interval_s * 1000) {
    redis_log(r, POPKIT_LOG_WARNING,
              "Redis at %s is still unreachable: %s (%lu calls went to the next module "
              "since the last line)",
              r->address, why, r->lost_calls);
  } else {
    return;
  }
  r->down_logged = true;
  r->last_down_log = now;
  r->lost_calls = 0;
}

static void went_down(struct rc_redis *r, const char *why) {
  r->drop_reason = NULL;
  r->ac = NULL;
  r->state = RC_DOWN;
  if (r->destroying)
    return;
  r->failures++;
  log_down(r, why);
  schedule_reconnect(r);
}

/* Only an answer makes a connection up: a Redis that hangs (stopped, or
 * swapped out) still completes TCP connects, and counting those as
 * recoveries would log one flap per login and never back off. */
/* Redis answered, but not as popkitd needs: drop the connection, with the
 * answer as the reason, and try again later as after any failure. */
static void refuse(struct rc_redis *r, const char *what, const char *answer) {
  if (r->ac == NULL || r->drop_reason != NULL)
    return; /* already being dropped */
  snprintf(r->refusal, sizeof r->refusal, "Redis refused %s: %s", what, answer);
  r->drop_reason = r->refusal;
  redisAsyncFree(r->ac); /* deferred by hiredis until this callback returns */
}

static void on_pong(void *data, redisReply *reply) {
  struct rc_redis *r = data;
  if (reply == NULL)
    return; /* the connection is going down */
  if (reply->type == REDIS_REPLY_ERROR) {
    refuse(r, "PING", reply->str); /* NOAUTH: it wants a password */
    return;
  }
  r->state = RC_UP;
  r->failures = 0;
  if (r->down_logged)
    redis_log(r, POPKIT_LOG_INFO, "Redis at %s is reachable again", r->address);
  r->down_logged = false;
}

static void on_connect(const redisAsyncContext *ac, int status) {
  struct rc_redis *r = ac->data;
  if (status != REDIS_OK) {
    /* hiredis frees the context when this returns. */
    went_down(r, ac->errstr);
    return;
  }
  arm_deadline(r);
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
  struct rc_redis *r = ac->data;
  const char *why = r->drop_reason != NULL ? r->drop_reason
                    : status == REDIS_OK   ? "connection closed"
                                           : ac->errstr;
  went_down(r, why);
}

static void on_setup_reply(void *data, redisReply *reply) {
  struct rc_redis *r = data;
  if (reply != NULL && reply->type == REDIS_REPLY_ERROR)
    refuse(r, "AUTH or SELECT", reply->str);
}

static void send_setup(struct rc_redis *r) {
  if (r->password != NULL) {
    const char *argv[] = {"AUTH", r->password};
    size_t lengths[] = {4, strlen(r->password)};
    enqueue(r, on_setup_reply, r, 2, argv, lengths);
  }
  if (r->database != 0) {
    char db[16];
    snprintf(db, sizeof db, "%u", r->database);
    const char *argv[] = {"SELECT", db};
    size_t lengths[] = {6, strlen(db)};
    enqueue(r, on_setup_reply, r, 2, argv, lengths);
  }
  const char *ping[] = {"PING"};
  size_t ping_length[] = {4};
  enqueue(r, on_pong, r, 1, ping, ping_length);
}

static void connect_now(struct rc_redis *r) {
  redisAsyncContext *ac = r->port != 0 ? redisAsyncConnect(r->host_or_path, r->port)
                                       : redisAsyncConnectUnix(r->host_or_path);
  if (ac == NULL || ac->err) {
    char why[256];
    snprintf(why, sizeof why, "%s", ac != NULL ? ac->errstr : "out of memory");
    if (ac != NULL)
      redisAsyncFree(ac);
    went_down(r, why);
    return;
  }
  int rc = attach(ac, r->loop);
  if (rc < 0) {
    redisAsyncFree(ac);
    went_down(r, uv_strerror(rc));
    return;
  }
  ac->data = r;
  redisAsyncSetConnectCallback(ac, on_connect);
  redisAsyncSetDisconnectCallback(ac, on_disconnect);
  r->ac = ac;
  r->state = RC_CONNECTING;
  /* AUTH and SELECT go out first once connected; hiredis queues them. */
  send_setup(r);
  /* A connect that hangs (a host that drops packets) counts as a timeout. */
  uv_timer_start(r->deadline, on_deadline, r->timeout_ms, 0);
}

static void on_retry(uv_timer_t *timer) {
  struct rc_redis *r = timer->data;
  if (r->state == RC_DOWN)
    connect_now(r);
}

static void start_timers(struct rc_redis *r) {
  if (r->started)
    return;
  r->started = true;
  r->retry = malloc(sizeof *r->retry);
  r->deadline = malloc(sizeof *r->deadline);
  uv_timer_init(r->loop, r->retry);
  uv_timer_init(r->loop, r->deadline);
  r->retry->data = r->deadline->data = r;
}

static void schedule_reconnect(struct rc_redis *r) {
  start_timers(r);
  uint64_t delay = 0;
  if (r->failures > 0) {
    delay = RECONNECT_FIRST_MS;
    for (unsigned i = 1; i < r->failures && delay < r->reconnect_max_ms; i++)
      delay *= 2;
    if (delay > r->reconnect_max_ms)
      delay = r->reconnect_max_ms;
  }
  uv_timer_start(r->retry, on_retry, delay, 0);
}

static void on_deadline(uv_timer_t *timer) {
  struct rc_redis *r = timer->data;
  if (r->ac == NULL)
    return;
  /* libuv runs timers before it polls: on a busy loop the answer may be
   * waiting on the socket already. Read it before judging Redis slow. */
  if (r->state == RC_UP) {
    redisAsyncHandleRead(r->ac);
    if (r->ac == NULL)
      return; /* the read found the connection gone */
    if (r->head == NULL || r->head->deadline_ms > uv_now(r->loop)) {
      arm_deadline(r);
      return;
    }
  }
  char why[96];
  snprintf(why, sizeof why, "no answer within %u ms (timeout_ms)", r->timeout_ms);
  /* Every command waiting on it gets a NULL reply and falls through. For a
   * connection hiredis had connected, it calls on_disconnect too. */
  r->drop_reason = why;
  redisAsyncFree(r->ac);
  r->drop_reason = NULL;
  if (r->ac != NULL)
    went_down(r, why);
}

/* ---- Making and unmaking ------------------------------------------------ */

int rc_redis_check_address(const char *address, char *error, size_t error_size) {
  if (address[0] == '/')
    return 0;
  const char *colon = strrchr(address, ':');
  char *end = NULL;
  long port = colon != NULL ? strtol(colon + 1, &end, 10) : 0;
  if (colon == NULL || colon == address || end == colon + 1 || *end != '\0' || port < 1 ||
      port > 65535) {
    snprintf(error, error_size,
             "address: \"%s\" is neither HOST:PORT nor the path of a unix socket",
             address);
    return -EINVAL;
  }
  return 0;
}

struct rc_redis *rc_redis_new(uv_loop_t *loop, const struct rc_redis_options *options,
                              const struct popkit_host *host,
                              struct popkit_module_handle *self) {
  struct rc_redis *r = calloc(1, sizeof *r);
  if (r == NULL)
    return NULL;
  r->loop = loop;
  r->host = host;
  r->self = self;
  r->database = options->database;
  r->timeout_ms = options->timeout_ms;
  r->reconnect_max_ms = options->reconnect_max_ms;
  r->log_interval_s = options->log_interval_s;
  r->address = strdup(options->address);
  r->host_or_path = strdup(options->address);
  r->password = options->password != NULL ? strdup(options->password) : NULL;
  if (r->address == NULL || r->host_or_path == NULL ||
      (options->password != NULL && r->password == NULL)) {
    rc_redis_destroy(r);
    return NULL;
  }
  if (r->host_or_path[0] != '/') {
    char *colon = strrchr(r->host_or_path, ':');
    *colon = '\0';
    r->port = atoi(colon + 1);
    /* "[::1]:6379" */
    size_t n = strlen(r->host_or_path);
    if (n >= 2 && r->host_or_path[0] == '[' && r->host_or_path[n - 1] == ']') {
      memmove(r->host_or_path, r->host_or_path + 1, n - 2);
      r->host_or_path[n - 2] = '\0';
    }
  }
  return r;
}

static void free_timer(uv_handle_t *handle) {
  free(handle);
}

void rc_redis_destroy(struct rc_redis *r) {
  if (r == NULL)
    return;
  r->destroying = true;
  if (r->ac != NULL)
    redisAsyncFree(r->ac); /* waiting commands: forgotten by on_reply */
  r->ac = NULL;
  if (r->started) {
    uv_close((uv_handle_t *)r->retry, free_timer);
    uv_close((uv_handle_t *)r->deadline, free_timer);
  }
  if (r->password != NULL)
    explicit_bzero(r->password, strlen(r->password));
  free(r->password);
  free(r->host_or_path);
  free(r->address);
  free(r);
}
