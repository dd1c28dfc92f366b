#include "pg_lock.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "pg_module.h"

const char pg_lock_acquire_sql[] =
    "INSERT INTO popkit.mailbox_locks AS l (mailbox, holder, session, expires_at)"
    " VALUES ($1, $2, $3, now() + $4::integer * interval '1 second')"
    " ON CONFLICT (mailbox) DO UPDATE"
    " SET holder = excluded.holder, session = excluded.session,"
    " expires_at = excluded.expires_at"
    " WHERE l.expires_at < now()"
    " OR (l.holder = excluded.holder AND l.session = excluded.session)"
    " RETURNING 1";

static const char renew_sql[] =
    "UPDATE popkit.mailbox_locks"
    " SET expires_at = now() + $2::integer * interval '1 second'"
    " WHERE holder = $1";

static const char release_sql[] = "DELETE FROM popkit.mailbox_locks"
                                  " WHERE mailbox = $1 AND holder = $2 AND session = $3";

int pg_locks_init(struct pg_locks *locks, unsigned worker_id, unsigned ttl_s) {
  memset(locks, 0, sizeof *locks);
  locks->ttl_s = ttl_s;
  char host[64];
  if (gethostname(host, sizeof host) != 0)
    snprintf(host, sizeof host, "?");
  host[sizeof host - 1] = '\0';
  uint64_t random_part;
  if (getrandom(&random_part, sizeof random_part, 0) != sizeof random_part)
    return -EIO;
  /* The random part tells apart two instances with the same pid, on two
   * hosts that share a name or after a restart. */
  snprintf(locks->holder, sizeof locks->holder, "%s/%ld/w%u/%016" PRIx64, host,
           (long)getpid(), worker_id, random_part);
  return 0;
}

int64_t pg_locks_new_session(struct pg_locks *locks) {
  return ++locks->last_session;
}

void pg_lock_params(struct pg_query *q, const struct pg_locks *locks, const char *mailbox,
                    int64_t session) {
  pg_query_text(q, mailbox);
  pg_query_text(q, locks->holder);
  pg_query_int64(q, session);
  pg_query_int64(q, locks->ttl_s);
}

/* ---- Renewal ------------------------------------------------------------ */

static void on_renewed(struct pg_query *q, PGresult *res, const char *error) {
  struct pg_module *m = q->data;
  struct pg_locks *locks = &m->locks;
  locks->renew_running = false;
  if (error != NULL && !locks->renew_failing)
    pg_log(m, NULL, POPKIT_LOG_WARNING,
           "renewing mailbox locks failed: %s; they expire %u s after the last renewal",
           error, locks->ttl_s);
  else if (error == NULL && locks->renew_failing)
    pg_log(m, NULL, POPKIT_LOG_INFO, "mailbox locks renewed again");
  locks->renew_failing = error != NULL;
  PQclear(res);
  pg_query_free(q);
}

static void on_renew_timer(uv_timer_t *timer) {
  struct pg_module *m = timer->data;
  struct pg_locks *locks = &m->locks;
  if (locks->held == 0) {
    uv_timer_stop(timer);
    return;
  }
  if (locks->renew_running)
    return;
  struct pg_query *q = pg_query_new(renew_sql, on_renewed, m);
  if (q == NULL)
    return; /* the next tick tries again */
  pg_query_text(q, locks->holder);
  pg_query_int64(q, locks->ttl_s);
  q->retry_safe = true;
  locks->renew_running = true;
  pg_module_submit(m, NULL, q);
}

void pg_locks_taken(struct pg_module *m) {
  struct pg_locks *locks = &m->locks;
  locks->held++;
  if (locks->renew_timer == NULL) {
    locks->renew_timer = malloc(sizeof *locks->renew_timer);
    if (locks->renew_timer == NULL)
      return; /* renewal tries again at the next lock */
    uv_timer_init(m->loop, locks->renew_timer);
    locks->renew_timer->data = m;
  }
  if (!uv_is_active((uv_handle_t *)locks->renew_timer)) {
    /* Three renewals fit in one lease, so one that fails or comes late
     * does not lose it. */
    uint64_t period = (uint64_t)locks->ttl_s * 1000 / 3;
    uv_timer_start(locks->renew_timer, on_renew_timer, period, period);
  }
}

void pg_locks_returned(struct pg_module *m) {
  if (m->locks.held > 0)
    m->locks.held--;
}

static void on_released(struct pg_query *q, PGresult *res, const char *error) {
  struct pg_module *m = q->data;
  if (error != NULL)
    pg_log(m, NULL, POPKIT_LOG_WARNING,
           "giving back the lock of mailbox \"%s\" failed: %s; it expires within %u s",
           q->values[0], error, m->locks.ttl_s);
  PQclear(res);
  pg_query_free(q);
}

struct pg_query *pg_locks_release_query(struct pg_module *m, const char *mailbox,
                                        int64_t session, pg_query_cb cb, void *data) {
  struct pg_locks *locks = &m->locks;
  struct pg_query *q = pg_query_new(release_sql, cb, data);
  if (q == NULL)
    return NULL;
  pg_query_text(q, mailbox);
  pg_query_text(q, locks->holder);
  pg_query_int64(q, session);
  q->retry_safe = true;
  return q;
}

void pg_locks_release(struct pg_module *m, const char *mailbox, int64_t session) {
  struct pg_query *q = pg_locks_release_query(m, mailbox, session, on_released, m);
  if (q == NULL) {
    pg_log(m, NULL, POPKIT_LOG_WARNING,
           "out of memory giving back the lock of mailbox \"%s\"; it expires within %u s",
           mailbox, m->locks.ttl_s);
    return;
  }
  pg_module_submit(m, NULL, q);
}

static void free_timer(uv_handle_t *handle) {
  free(handle);
}

void pg_locks_close(struct pg_locks *locks) {
  if (locks->renew_timer != NULL)
    uv_close((uv_handle_t *)locks->renew_timer, free_timer);
  locks->renew_timer = NULL;
}
