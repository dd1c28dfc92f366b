/*
 * popbench: the load generator of popkit's benchmark (tests/bench).
 *
 * One thread, one libuv loop, many POP3 clients (popbench_client.c) on
 * loopback. This file runs a mode: how many clients, when they start
 * again, what is counted when, how the run ends, and what it prints.
 * See tests/bench/README.md for the command line.
 */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <uv.h>

#include "popbench_client.h"
#include "popbench_conn.h"
#include "popbench_options.h"
#include "popbench_stats.h"

/* idle: logins in flight at once, so a server's listen backlog (128 by
 * default) is never overrun while thousands of sessions open. */
#define IDLE_MAX_OPENING 200
/* idle: each held session gets a NOOP this often, well inside any
 * server's idle timeout (RFC 1939: at least 10 minutes). */
#define IDLE_NOOP_INTERVAL_MS 50000
/* idle: how long the QUITs at the end may take, well inside the hard
 * timeout's minute. */
#define IDLE_QUIT_GRACE_MS 30000
/* File descriptors beyond one per connection (stdio, the loop's own). */
#define SPARE_FDS 32
/* The hard timeout is the run's own bound plus this. */
#define HARD_TIMEOUT_GRACE_S 60

struct run {
  struct options opt;
  uv_loop_t *loop;
  struct client *clients;
  struct stats stats;
  uv_timer_t warmup_timer; /* sessions, retr: counting starts */
  uv_timer_t end_timer;    /* the run ends; idle: the logins, then the QUITs */
  uv_timer_t hold_timer;   /* idle: the hold ends */
  uv_timer_t noop_timer;   /* idle: NOOP to every held session */
  bool counting, stopping;
  uint64_t start_ns, count_start_ns, end_ns;
  /* idle */
  long next_to_open, logging_in, open;
  bool opening_closed, ready, quitting;
  uint64_t ready_ns;
};

static struct run run;

static double seconds(uint64_t ns) {
  return (double)ns / 1e9;
}

static void close_timers(struct run *r) {
  uv_timer_t *timers[] = {&r->warmup_timer, &r->end_timer, &r->hold_timer,
                          &r->noop_timer};
  for (size_t i = 0; i < sizeof timers / sizeof timers[0]; i++)
    if (!uv_is_closing((uv_handle_t *)timers[i]))
      uv_close((uv_handle_t *)timers[i], NULL);
}

/* Ends the run now; connections in the middle of something are cut. */
static void stop_run(struct run *r) {
  if (r->stopping)
    return;
  r->stopping = true;
  r->end_ns = uv_hrtime();
  close_timers(r);
  for (long i = 0; i < r->opt.concurrency; i++)
    client_abort(&r->clients[i]);
}

/* ---- idle --------------------------------------------------------------- */

static void idle_open_more(struct run *r) {
  while (!r->opening_closed && r->next_to_open < r->opt.concurrency &&
         r->logging_in < IDLE_MAX_OPENING) {
    r->logging_in++;
    r->open++;
    client_start(&r->clients[r->next_to_open++]);
  }
}

static void on_noop_timer(uv_timer_t *t) {
  struct run *r = t->data;
  for (long i = 0; i < r->opt.concurrency; i++)
    client_noop(&r->clients[i]);
}

static void idle_finish(struct run *r) {
  r->stopping = true;
  r->end_ns = uv_hrtime();
  close_timers(r);
}

/* The QUITs had their time: what is still open is cut, and a QUIT (or
 * NOOP) without a reply is an error. */
static void on_quit_over(uv_timer_t *t) {
  struct run *r = t->data;
  for (long i = 0; i < r->opt.concurrency; i++) {
    struct client *cl = &r->clients[i];
    if (cl->conn.state != CONN_OPEN)
      continue;
    if (cl->step == STEP_QUIT || cl->step == STEP_NOOP)
      client_fail(cl, "QUIT: no reply within 30 s", NULL);
    else
      client_abort(cl);
  }
}

static void on_hold_over(uv_timer_t *t) {
  struct run *r = t->data;
  uv_timer_stop(&r->noop_timer);
  r->quitting = true;
  for (long i = 0; i < r->opt.concurrency; i++)
    client_quit(&r->clients[i]);
  if (r->open == 0)
    idle_finish(r);
  else
    uv_timer_start(&r->end_timer, on_quit_over, IDLE_QUIT_GRACE_MS, 0);
}

static void idle_check_ready(struct run *r) {
  if (r->ready || r->logging_in > 0 ||
      (!r->opening_closed && r->next_to_open < r->opt.concurrency))
    return;
  r->ready = true;
  r->ready_ns = uv_hrtime();
  uv_timer_stop(&r->end_timer);
  /* The caller reads the server's memory between this line and the end
   * of the hold. */
  fprintf(stderr, "ready %llu sessions in %.3f s (%llu errors); holding for %g s\n",
          (unsigned long long)r->stats.count, seconds(r->ready_ns - r->start_ns),
          (unsigned long long)r->stats.errors, r->opt.hold_s);
  /* With no session in there is nothing to hold. */
  uint64_t hold_ms = r->stats.count > 0 ? (uint64_t)(r->opt.hold_s * 1000.0) : 0;
  uv_timer_start(&r->hold_timer, on_hold_over, hold_ms, 0);
  uv_timer_start(&r->noop_timer, on_noop_timer, IDLE_NOOP_INTERVAL_MS,
                 IDLE_NOOP_INTERVAL_MS);
}

/* --duration-s passed before every session was in. */
static void on_logins_over(uv_timer_t *t) {
  struct run *r = t->data;
  r->opening_closed = true;
  for (long i = r->next_to_open; i < r->opt.concurrency; i++)
    stats_error(&r->stats, "login: not started within --duration-s", NULL);
  for (long i = 0; i < r->next_to_open; i++)
    if (r->clients[i].conn.state == CONN_OPEN && !r->clients[i].got_in)
      client_fail(&r->clients[i], "login: not done within --duration-s", NULL);
  idle_check_ready(r);
}

static void idle_ended(struct run *r, struct client *cl) {
  r->open--;
  cl->retired = true;
  if (!cl->got_in) {
    r->logging_in--;
    idle_open_more(r);
    idle_check_ready(r);
  }
  if (r->quitting && r->open == 0)
    idle_finish(r);
}

/* ---- Hooks the clients call --------------------------------------------- */

static void on_completed(struct run *r, struct client *cl, uint64_t latency_ns) {
  if (r->opt.mode == MODE_IDLE) {
    cl->got_in = true;
    r->logging_in--;
    r->stats.count++;
    histogram_add(&r->stats.latency, latency_ns / 1000);
    idle_open_more(r);
    idle_check_ready(r);
    return;
  }
  if (!r->counting || r->stopping)
    return;
  r->stats.count++;
  histogram_add(&r->stats.latency, latency_ns / 1000);
  if (r->stats.count >= r->opt.max_count)
    stop_run(r);
}

static void on_bytes(struct run *r, uint64_t bytes) {
  if (r->counting && !r->stopping)
    r->stats.bytes += bytes;
}

static void on_error(struct run *r, const char *kind, const char *detail) {
  stats_error(&r->stats, kind, detail);
}

static void on_ended(struct run *r, struct client *cl) {
  if (r->opt.mode == MODE_IDLE) {
    idle_ended(r, cl);
    return;
  }
  if (!r->stopping && !cl->retired)
    client_start(cl);
}

static const struct run_hooks hooks = {
    .completed = on_completed,
    .bytes = on_bytes,
    .error = on_error,
    .ended = on_ended,
};

/* ---- sessions, retr ----------------------------------------------------- */

static void on_warmup_over(uv_timer_t *t) {
  struct run *r = t->data;
  r->counting = true;
  r->count_start_ns = uv_hrtime();
}

static void on_run_over(uv_timer_t *t) {
  stop_run(t->data);
}

/* ---- Setup -------------------------------------------------------------- */

static void hard_timeout(int sig) {
  static const char msg[] =
      "popbench: hard timeout: the run did not end within its duration + 60 s; aborted\n";
  ssize_t n = write(STDERR_FILENO, msg, sizeof msg - 1);
  (void)n;
  _exit(3);
}

/* Raises the soft limit on open files to the hard one: idle mode holds
 * thousands of sockets. Returns the limit now in force. */
static rlim_t raise_nofile(void) {
  struct rlimit lim;
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0)
    return 0;
  if (lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &lim) != 0)
      getrlimit(RLIMIT_NOFILE, &lim);
  }
  return lim.rlim_cur;
}

static void start_run(struct run *r) {
  uv_timer_t *timers[] = {&r->warmup_timer, &r->end_timer, &r->hold_timer,
                          &r->noop_timer};
  for (size_t i = 0; i < sizeof timers / sizeof timers[0]; i++) {
    uv_timer_init(r->loop, timers[i]);
    timers[i]->data = r;
  }
  r->start_ns = r->count_start_ns = uv_hrtime();
  uint64_t duration_ms = (uint64_t)ceil(r->opt.duration_s * 1000.0);
  if (r->opt.mode == MODE_IDLE) {
    uv_timer_start(&r->end_timer, on_logins_over, duration_ms, 0);
    idle_open_more(r);
    return;
  }
  r->counting = r->opt.warmup_s == 0;
  if (!r->counting)
    uv_timer_start(&r->warmup_timer, on_warmup_over,
                   (uint64_t)ceil(r->opt.warmup_s * 1000.0), 0);
  uv_timer_start(&r->end_timer, on_run_over, duration_ms, 0);
  for (long i = 0; i < r->opt.concurrency; i++)
    client_start(&r->clients[i]);
}

static void report(struct run *r) {
  struct report rep = {
      .mode = bench_mode_name(r->opt.mode),
      .tls = bench_tls_name(r->opt.tls),
      .concurrency = r->opt.concurrency,
      .ready_s = -1,
  };
  if (r->opt.mode == MODE_IDLE) {
    rep.elapsed_s = seconds(r->end_ns - r->start_ns);
    rep.ready_s = r->ready ? seconds(r->ready_ns - r->start_ns) : rep.elapsed_s;
    rep.rate_window_s = rep.ready_s; /* logins per second */
  } else {
    rep.elapsed_s = r->counting ? seconds(r->end_ns - r->count_start_ns) : 0;
    rep.rate_window_s = rep.elapsed_s;
  }
  stats_print_error_tally(&r->stats);
  stats_print_json(&r->stats, &rep, stdout);
}

int main(int argc, char **argv) {
  struct run *r = &run;
  char error[512];
  int rc = options_parse(argc, argv, &r->opt, error, sizeof error);
  if (rc == 1)
    return 0;
  if (rc < 0) {
    fprintf(stderr, "popbench: %s\n", error);
    return 2;
  }
  rlim_t files = raise_nofile();
  if (files < (rlim_t)r->opt.concurrency + SPARE_FDS) {
    fprintf(stderr,
            "popbench: --concurrency %ld needs %ld open files, the limit is %llu "
            "(ulimit -n)\n",
            r->opt.concurrency, r->opt.concurrency + SPARE_FDS,
            (unsigned long long)files);
    options_free(&r->opt);
    return 2;
  }
  if (r->opt.tls != BENCH_TLS_NONE &&
      conn_tls_setup(r->opt.cafile, r->opt.host, error, sizeof error) < 0) {
    fprintf(stderr, "popbench: %s\n", error);
    options_free(&r->opt);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  signal(SIGALRM, hard_timeout);
  double bound_s = r->opt.duration_s + (r->opt.mode == MODE_IDLE ? r->opt.hold_s : 0);
  alarm((unsigned)ceil(bound_s) + HARD_TIMEOUT_GRACE_S);

  r->clients = calloc((size_t)r->opt.concurrency, sizeof *r->clients);
  if (r->clients == NULL) {
    fprintf(stderr, "popbench: out of memory for %ld clients\n", r->opt.concurrency);
    return 2;
  }
  r->loop = uv_default_loop();
  for (long i = 0; i < r->opt.concurrency; i++) {
    r->clients[i].run = r;
    r->clients[i].user = i % r->opt.users;
  }
  struct client_env env = {.opt = &r->opt, .loop = r->loop, .hooks = &hooks};
  client_set_env(&env);
  start_run(r);
  uv_run(r->loop, UV_RUN_DEFAULT);
  alarm(0);

  report(r);
  for (long i = 0; i < r->opt.concurrency; i++)
    client_free(&r->clients[i]);
  free(r->clients);
  uv_loop_close(r->loop);
  conn_tls_cleanup();
  options_free(&r->opt);
  return r->stats.errors == 0 ? 0 : 1;
}
