#include "pg_pool.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_text.h"

/* The first delay before connecting again after a failure; it doubles up
 * to reconnect_max_ms. */
#define RECONNECT_FIRST_MS 100u

enum conn_state {
  CONN_CONNECTING, /* PQconnectdbParams runs on the thread pool */
  CONN_IDLE,       /* up and free; watched, so a close by the server is seen */
  CONN_BUSY,       /* a query is out; its results are awaited */
  CONN_LEASED,     /* up, held by a lease between its queries */
  CONN_CLOSED      /* dropped; its handles are closing */
};

struct pg_conn {
  struct pg_pool *pool;
  struct pg_conn *prev, *next;
  enum conn_state state;
  PGconn *pg;
  uv_work_t connect_work;
  uv_poll_t poll;
  uv_timer_t deadline; /* of the running query */
  int open_handles;
  bool want_write;        /* PQflush has more to send */
  struct pg_query *query; /* running */
  PGresult *result;       /* its result so far */
  struct pg_lease *lease;
};

struct pg_pool {
  uv_loop_t *loop;
  const struct popkit_host *host;
  struct popkit_module_handle *self;
  char *conninfo;
  unsigned size, query_timeout_ms, reconnect_max_ms;
  bool started; /* the timers exist (made on the loop's thread) */
  bool destroying;
  struct pg_conn *conns; /* every connection not yet freed */
  unsigned open_count;   /* connecting or up */
  unsigned up_count;
  struct pg_query *queue_head, *queue_tail;
  uv_timer_t kick;           /* dispatches on the next loop turn */
  uv_timer_t retry;          /* the next connect after a failure */
  uv_timer_t queue_deadline; /* fails queries that waited too long */
  int open_handles;
  bool down;           /* nothing up, and the last connect failed */
  unsigned failures;   /* connects failed in a row */
  uint64_t connect_at; /* no connect before this uv_now() */
  char last_error[256];
  char down_text[300];
};

static void dispatch(struct pg_pool *pool);

#define pool_log(pool, level, ...)                                                       \
  (pool)->host->log((pool)->self, NULL, level, __VA_ARGS__)

/* ---- The queue ---------------------------------------------------------- */

static void queue_push(struct pg_pool *pool, struct pg_query *q) {
  q->next = NULL;
  if (pool->queue_tail != NULL)
    pool->queue_tail->next = q;
  else
    pool->queue_head = q;
  pool->queue_tail = q;
}

static void queue_push_front(struct pg_pool *pool, struct pg_query *q) {
  q->next = pool->queue_head;
  pool->queue_head = q;
  if (pool->queue_tail == NULL)
    pool->queue_tail = q;
}

static bool queue_remove(struct pg_pool *pool, struct pg_query *q) {
  struct pg_query *prev = NULL;
  for (struct pg_query *it = pool->queue_head; it != NULL; prev = it, it = it->next) {
    if (it != q)
      continue;
    if (prev != NULL)
      prev->next = q->next;
    else
      pool->queue_head = q->next;
    if (pool->queue_tail == q)
      pool->queue_tail = prev;
    q->next = NULL;
    return true;
  }
  return false;
}

static void on_kick(uv_timer_t *timer);

/* Dispatching waits for the next loop turn: never inside a caller, which
 * a failure would call back into, and never recursively. */
static void kick(struct pg_pool *pool) {
  if (!pool->destroying)
    uv_timer_start(&pool->kick, on_kick, 0, 0);
}

/* ---- Connections -------------------------------------------------------- */

static void free_conn_if_closed(struct pg_conn *conn);

static void on_conn_handle_closed(uv_handle_t *handle) {
  struct pg_conn *conn = handle->data;
  conn->open_handles--;
  free_conn_if_closed(conn);
}

static void maybe_free_pool(struct pg_pool *pool) {
  if (pool->destroying && pool->conns == NULL && pool->open_handles == 0) {
    free(pool->conninfo);
    free(pool);
  }
}

static void free_conn_if_closed(struct pg_conn *conn) {
  if (conn->open_handles > 0)
    return;
  struct pg_pool *pool = conn->pool;
  if (conn->prev != NULL)
    conn->prev->next = conn->next;
  else
    pool->conns = conn->next;
  if (conn->next != NULL)
    conn->next->prev = conn->prev;
  free(conn);
  maybe_free_pool(pool);
}

/* Drops a connection that was up. Its query, if any, is the caller's. */
static void conn_close(struct pg_conn *conn) {
  struct pg_pool *pool = conn->pool;
  conn->state = CONN_CLOSED;
  if (conn->lease != NULL) {
    conn->lease->conn = NULL;
    conn->lease->broken = true;
    conn->lease = NULL;
  }
  PQclear(conn->result);
  conn->result = NULL;
  /* The poll handle goes first: closing it takes the socket out of the
   * loop, and only then may libpq close the socket. */
  uv_close((uv_handle_t *)&conn->poll, on_conn_handle_closed);
  uv_close((uv_handle_t *)&conn->deadline, on_conn_handle_closed);
  PQfinish(conn->pg);
  conn->pg = NULL;
  pool->up_count--;
  pool->open_count--;
}

static void fail_query(struct pg_query *q, const char *error) {
  q->cb(q, NULL, error);
}

/* The connection broke (or missed a deadline): drop it, and send its query
 * again or fail it. */
static void conn_broke(struct pg_conn *conn, const char *why) {
  struct pg_pool *pool = conn->pool;
  char text[384];
  pg_text_one_line(text, sizeof text, why);
  struct pg_query *q = conn->query;
  conn->query = NULL;
  pool_log(pool, q != NULL ? POPKIT_LOG_WARNING : POPKIT_LOG_INFO,
           "connection to PostgreSQL lost%s: %s", q != NULL ? " during a query" : "",
           text);
  conn_close(conn);
  if (q != NULL) {
    if (q->retry_safe && q->lease == NULL && q->attempts < 2 &&
        uv_now(pool->loop) < q->deadline_ms) {
      queue_push_front(pool, q);
    } else {
      char error[440];
      snprintf(error, sizeof error, "connection to PostgreSQL lost: %s", text);
      fail_query(q, error);
    }
  }
  kick(pool);
}

static void conn_watch(struct pg_conn *conn) {
  int events = UV_READABLE | (conn->want_write ? UV_WRITABLE : 0);
  uv_poll_start(&conn->poll, events, conn->poll.poll_cb);
}

static bool conn_flush(struct pg_conn *conn) {
  int rc = PQflush(conn->pg);
  if (rc < 0) {
    conn_broke(conn, PQerrorMessage(conn->pg));
    return false;
  }
  conn->want_write = rc == 1;
  conn_watch(conn);
  return true;
}

static void on_query_deadline(uv_timer_t *timer) {
  struct pg_conn *conn = timer->data;
  char why[128];
  snprintf(why, sizeof why, "no answer within %u s (query_timeout_s)",
           conn->pool->query_timeout_ms / 1000);
  conn_broke(conn, why);
}

static void conn_run(struct pg_conn *conn, struct pg_query *q) {
  struct pg_pool *pool = conn->pool;
  conn->query = q;
  conn->state = CONN_BUSY;
  q->attempts++;
  if (q->lease != NULL && conn->lease == NULL) {
    conn->lease = q->lease;
    q->lease->conn = conn;
  }
  if (!PQsendQueryParams(conn->pg, q->sql, q->nparams, NULL,
                         (const char *const *)q->values, q->lengths, q->formats,
                         q->result_format)) {
    conn_broke(conn, PQerrorMessage(conn->pg));
    return;
  }
  if (!conn_flush(conn))
    return;
  uint64_t now = uv_now(pool->loop);
  uv_timer_start(&conn->deadline, on_query_deadline,
                 q->deadline_ms > now ? q->deadline_ms - now : 1, 0);
}

/* The query's last result has arrived. */
static void conn_query_done(struct pg_conn *conn) {
  struct pg_pool *pool = conn->pool;
  struct pg_query *q = conn->query;
  PGresult *res = conn->result;
  conn->query = NULL;
  conn->result = NULL;
  uv_timer_stop(&conn->deadline);
  conn->state = conn->lease != NULL ? CONN_LEASED : CONN_IDLE;
  ExecStatusType status = res != NULL ? PQresultStatus(res) : PGRES_FATAL_ERROR;
  if (status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK) {
    q->cb(q, res, NULL);
  } else {
    char error[600];
    q->statement_failed = res != NULL;
    if (res != NULL)
      pg_query_error_text(res, error, sizeof error);
    else
      snprintf(error, sizeof error, "no result from PostgreSQL");
    PQclear(res);
    fail_query(q, error);
  }
  kick(pool);
}

static void conn_read_results(struct pg_conn *conn) {
  while (!PQisBusy(conn->pg)) {
    PGresult *r = PQgetResult(conn->pg);
    if (r == NULL) {
      conn_query_done(conn);
      return;
    }
    /* One statement gives one result; keep an error over anything else. */
    if (conn->result == NULL || PQresultStatus(r) == PGRES_FATAL_ERROR) {
      PQclear(conn->result);
      conn->result = r;
    } else {
      PQclear(r);
    }
  }
  if (PQstatus(conn->pg) == CONNECTION_BAD)
    conn_broke(conn, PQerrorMessage(conn->pg));
}

static void on_conn_poll(uv_poll_t *handle, int status, int events) {
  struct pg_conn *conn = handle->data;
  if (status < 0) {
    conn_broke(conn, uv_strerror(status));
    return;
  }
  if ((events & UV_WRITABLE) && conn->want_write && !conn_flush(conn))
    return;
  if (!(events & UV_READABLE))
    return;
  if (!PQconsumeInput(conn->pg)) {
    conn_broke(conn, PQerrorMessage(conn->pg));
    return;
  }
  PGnotify *notify;
  while ((notify = PQnotifies(conn->pg)) != NULL)
    PQfreemem(notify);
  if (conn->state == CONN_BUSY)
    conn_read_results(conn);
  else if (PQstatus(conn->pg) == CONNECTION_BAD)
    conn_broke(conn, PQerrorMessage(conn->pg));
}

/* ---- Opening connections ------------------------------------------------ */

static void connect_on_thread(uv_work_t *work) {
  struct pg_conn *conn = work->data;
  /* Defaults first, so the site's conninfo (expanded from "dbname")
   * overrides them; client_encoding last, since popkit sends and reads
   * UTF-8 whatever the site's default is. */
  const char *const keywords[] = {"fallback_application_name", "connect_timeout",
                                  "dbname", "client_encoding", NULL};
  const char *const values[] = {"popkitd", "5", conn->pool->conninfo, "UTF8", NULL};
  conn->pg = PQconnectdbParams(keywords, values, 1);
}

static void connected(struct pg_pool *pool, struct pg_conn *conn) {
  pool->failures = 0;
  pool->connect_at = 0;
  uv_timer_stop(&pool->retry);
  const char *version = PQparameterStatus(conn->pg, "server_version");
  if (pool->down) {
    pool->down = false;
    pool_log(pool, POPKIT_LOG_INFO, "PostgreSQL %s is reachable again",
             version != NULL ? version : "");
  } else {
    pool_log(pool, POPKIT_LOG_DEBUG, "connected to PostgreSQL %s",
             version != NULL ? version : "");
  }
}

static void on_retry(uv_timer_t *timer);

static void connect_failed(struct pg_pool *pool, const char *why) {
  pg_text_one_line(pool->last_error, sizeof pool->last_error, why);
  pool->failures++;
  uint64_t delay = RECONNECT_FIRST_MS;
  for (unsigned i = 1; i < pool->failures && delay < pool->reconnect_max_ms; i++)
    delay *= 2;
  if (delay > pool->reconnect_max_ms)
    delay = pool->reconnect_max_ms;
  pool->connect_at = uv_now(pool->loop) + delay;
  uv_timer_start(&pool->retry, on_retry, delay, 0);
  if (pool->up_count == 0 && pool->open_count == 0) {
    if (!pool->down)
      pool_log(pool, POPKIT_LOG_WARNING,
               "PostgreSQL is unreachable: %s; trying again in the background",
               pool->last_error);
    else
      pool_log(pool, POPKIT_LOG_DEBUG, "PostgreSQL is still unreachable: %s",
               pool->last_error);
    pool->down = true;
  } else {
    pool_log(pool, POPKIT_LOG_WARNING,
             "cannot open one more connection to PostgreSQL: %s", pool->last_error);
  }
}

static void connect_done(uv_work_t *work, int status) {
  struct pg_conn *conn = work->data;
  struct pg_pool *pool = conn->pool;
  conn->open_handles--; /* the work request */
  if (pool->destroying) {
    PQfinish(conn->pg);
    free_conn_if_closed(conn);
    return;
  }
  char why[384];
  why[0] = '\0';
  if (status < 0)
    snprintf(why, sizeof why, "%s", uv_strerror(status));
  else if (conn->pg == NULL)
    snprintf(why, sizeof why, "out of memory");
  else if (PQstatus(conn->pg) != CONNECTION_OK)
    pg_text_one_line(why, sizeof why, PQerrorMessage(conn->pg));
  else if (PQsetnonblocking(conn->pg, 1) != 0)
    pg_text_one_line(why, sizeof why, PQerrorMessage(conn->pg));
  else {
    int rc = uv_poll_init(pool->loop, &conn->poll, PQsocket(conn->pg));
    if (rc < 0)
      snprintf(why, sizeof why, "watching the socket: %s", uv_strerror(rc));
  }
  if (why[0] != '\0') {
    PQfinish(conn->pg);
    conn->pg = NULL;
    pool->open_count--;
    free_conn_if_closed(conn);
    connect_failed(pool, why);
    kick(pool);
    return;
  }
  conn->poll.data = conn;
  conn->poll.poll_cb = on_conn_poll;
  uv_timer_init(pool->loop, &conn->deadline);
  conn->deadline.data = conn;
  conn->open_handles = 2;
  conn->state = CONN_IDLE;
  pool->up_count++;
  connected(pool, conn);
  conn_watch(conn);
  kick(pool);
}

static void open_connection(struct pg_pool *pool) {
  struct pg_conn *conn = calloc(1, sizeof *conn);
  if (conn == NULL) {
    connect_failed(pool, "out of memory");
    return;
  }
  conn->pool = pool;
  conn->state = CONN_CONNECTING;
  conn->connect_work.data = conn;
  conn->next = pool->conns;
  if (pool->conns != NULL)
    pool->conns->prev = conn;
  pool->conns = conn;
  pool->open_count++;
  conn->open_handles = 1; /* the work request, until connect_done */
  int rc =
      uv_queue_work(pool->loop, &conn->connect_work, connect_on_thread, connect_done);
  if (rc < 0) {
    conn->open_handles = 0;
    pool->open_count--;
    free_conn_if_closed(conn);
    connect_failed(pool, uv_strerror(rc));
  }
}

static void on_retry(uv_timer_t *timer) {
  struct pg_pool *pool = timer->data;
  /* While down, keep trying whether or not anyone waits, so the first
   * login after PostgreSQL comes back already finds it up. */
  if (pool->down && pool->open_count == 0)
    open_connection(pool);
  else
    dispatch(pool);
}

/* ---- Dispatching -------------------------------------------------------- */

static struct pg_conn *idle_conn(struct pg_pool *pool) {
  for (struct pg_conn *c = pool->conns; c != NULL; c = c->next)
    if (c->state == CONN_IDLE)
      return c;
  return NULL;
}

static void on_queue_deadline(uv_timer_t *timer);

/* Takes the next query that can go now: its connection, and what to fail
 * it with when it cannot ever go. */
static struct pg_query *next_ready(struct pg_pool *pool, struct pg_conn **conn_r,
                                   const char **fail_r) {
  struct pg_conn *idle = idle_conn(pool);
  for (struct pg_query *q = pool->queue_head; q != NULL; q = q->next) {
    *conn_r = NULL;
    *fail_r = NULL;
    if (q->canceled)
      *fail_r = "canceled";
    else if (q->out_of_memory)
      *fail_r = "out of memory";
    else if (q->lease != NULL && q->lease->broken)
      *fail_r = "the connection of this transaction was lost";
    else if (q->lease != NULL && q->lease->conn != NULL) {
      if (q->lease->conn->state != CONN_LEASED)
        continue; /* its previous query still runs */
      *conn_r = q->lease->conn;
    } else if (pool->down) {
      snprintf(pool->down_text, sizeof pool->down_text, "PostgreSQL is unreachable: %s",
               pool->last_error);
      *fail_r = pool->down_text;
    } else if (idle != NULL) {
      *conn_r = idle;
    } else {
      continue;
    }
    queue_remove(pool, q);
    return q;
  }
  return NULL;
}

static void dispatch(struct pg_pool *pool) {
  if (pool->destroying)
    return;
  struct pg_query *q;
  struct pg_conn *conn;
  const char *fail;
  /* Callbacks may queue more, so the queue is searched afresh each time. */
  while ((q = next_ready(pool, &conn, &fail)) != NULL) {
    if (fail != NULL)
      fail_query(q, fail);
    else
      conn_run(conn, q);
  }
  unsigned waiting = 0;
  uint64_t earliest = UINT64_MAX;
  for (q = pool->queue_head; q != NULL; q = q->next) {
    if (q->lease == NULL || q->lease->conn == NULL)
      waiting++;
    if (q->deadline_ms < earliest)
      earliest = q->deadline_ms;
  }
  unsigned connecting = pool->open_count - pool->up_count;
  uint64_t now = uv_now(pool->loop);
  while (waiting > connecting && pool->open_count < pool->size &&
         now >= pool->connect_at && !pool->down) {
    open_connection(pool);
    connecting++;
  }
  if (earliest != UINT64_MAX)
    uv_timer_start(&pool->queue_deadline, on_queue_deadline,
                   earliest > now ? earliest - now : 0, 0);
  else
    uv_timer_stop(&pool->queue_deadline);
}

static void on_kick(uv_timer_t *timer) {
  dispatch(timer->data);
}

static void on_queue_deadline(uv_timer_t *timer) {
  struct pg_pool *pool = timer->data;
  uint64_t now = uv_now(pool->loop);
  char error[128];
  snprintf(error, sizeof error,
           "no connection to PostgreSQL free within %u s (pool_size %u)",
           pool->query_timeout_ms / 1000, pool->size);
  for (;;) {
    struct pg_query *late = NULL;
    for (struct pg_query *q = pool->queue_head; q != NULL && late == NULL; q = q->next)
      if (q->deadline_ms <= now)
        late = q;
    if (late == NULL)
      break;
    queue_remove(pool, late);
    fail_query(late, error);
  }
  dispatch(pool);
}

/* ---- The public face ---------------------------------------------------- */

struct pg_pool *pg_pool_new(uv_loop_t *loop, const struct pg_pool_options *options,
                            const struct popkit_host *host,
                            struct popkit_module_handle *self) {
  struct pg_pool *pool = calloc(1, sizeof *pool);
  if (pool == NULL)
    return NULL;
  pool->conninfo = strdup(options->conninfo);
  if (pool->conninfo == NULL) {
    free(pool);
    return NULL;
  }
  pool->loop = loop;
  pool->host = host;
  pool->self = self;
  pool->size = options->size;
  pool->query_timeout_ms = options->query_timeout_ms;
  pool->reconnect_max_ms = options->reconnect_max_ms;
  return pool;
}

static void on_pool_timer_closed(uv_handle_t *handle) {
  struct pg_pool *pool = handle->data;
  pool->open_handles--;
  maybe_free_pool(pool);
}

static void start_on_loop(struct pg_pool *pool) {
  if (pool->started)
    return;
  pool->started = true;
  uv_timer_t *timers[] = {&pool->kick, &pool->retry, &pool->queue_deadline};
  for (size_t i = 0; i < sizeof timers / sizeof timers[0]; i++) {
    uv_timer_init(pool->loop, timers[i]);
    timers[i]->data = pool;
    pool->open_handles++;
  }
}

void pg_pool_submit(struct pg_pool *pool, struct pg_query *q) {
  start_on_loop(pool);
  if (q->deadline_ms == 0)
    q->deadline_ms = uv_now(pool->loop) + pool->query_timeout_ms;
  queue_push(pool, q);
  kick(pool);
}

bool pg_pool_cancel(struct pg_pool *pool, struct pg_query *q) {
  for (struct pg_query *it = pool->queue_head; it != NULL; it = it->next) {
    if (it == q) {
      q->canceled = true;
      kick(pool);
      return true;
    }
  }
  return false;
}

void pg_pool_end_lease(struct pg_pool *pool, struct pg_lease *lease) {
  struct pg_conn *conn = lease->conn;
  lease->conn = NULL;
  if (conn == NULL)
    return;
  conn->lease = NULL;
  if (conn->state != CONN_LEASED)
    return;
  if (PQtransactionStatus(conn->pg) == PQTRANS_IDLE) {
    conn->state = CONN_IDLE;
    kick(pool);
  } else {
    /* Closing is the one rollback that cannot fail or wait. */
    conn->query = NULL;
    conn_close(conn);
  }
}

void pg_pool_destroy(struct pg_pool *pool) {
  if (pool == NULL)
    return;
  pool->destroying = true;
  while (pool->queue_head != NULL) {
    struct pg_query *q = pool->queue_head;
    queue_remove(pool, q);
    pg_query_free(q);
  }
  for (struct pg_conn *c = pool->conns; c != NULL; c = c->next) {
    if (c->state == CONN_CONNECTING || c->state == CONN_CLOSED)
      continue; /* connect_done or the close callbacks free it */
    pg_query_free(c->query);
    c->query = NULL;
    conn_close(c);
  }
  if (pool->started) {
    uv_timer_t *timers[] = {&pool->kick, &pool->retry, &pool->queue_deadline};
    for (size_t i = 0; i < sizeof timers / sizeof timers[0]; i++)
      uv_close((uv_handle_t *)timers[i], on_pool_timer_closed);
  }
  maybe_free_pool(pool);
}
