/*
 * Mailbox locks shared by every popkitd on one database: leases in
 * popkit.mailbox_locks.
 *
 * A session takes the row of its mailbox when it opens it, and deletes it
 * when it closes; while any session of this instance holds one, a timer
 * renews every lease of this instance with one UPDATE each lock_ttl_s / 3.
 * If popkitd dies, nobody renews its leases and they expire within
 * lock_ttl_s (30 s by default): PostgreSQL's clock decides, so the hosts'
 * clocks do not matter. A holder names one instance (host, pid, worker and
 * a random part), a session one open of a mailbox by it.
 */
#ifndef POPKIT_PG_LOCK_H
#define POPKIT_PG_LOCK_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "pg_query.h"

struct pg_module;

struct pg_locks {
  char holder[160];
  int64_t last_session;
  unsigned ttl_s;
  unsigned held;           /* leases this instance holds now */
  uv_timer_t *renew_timer; /* made on the loop thread at the first lock */
  bool renew_running;      /* a renewal query is out */
  bool renew_failing;      /* the last renewal failed (logged once) */
};

/* Names this instance. Returns 0 or a negative errno. */
int pg_locks_init(struct pg_locks *locks, unsigned worker_id, unsigned ttl_s);

/* Stops renewing; the timer's memory goes with the loop's close callback. */
void pg_locks_close(struct pg_locks *locks);

/* Takes the lease on mailbox $1 for holder $2, session $3, for $4 seconds:
 * one row back when the lease is ours, none when another session holds
 * it. Idempotent, so it may be sent again after a broken connection. */
extern const char pg_lock_acquire_sql[];

/* A new session number of this instance. */
int64_t pg_locks_new_session(struct pg_locks *locks);

/* Appends the parameters $1..$4 that pg_lock_acquire_sql (and every
 * statement that checks a lease) takes. */
void pg_lock_params(struct pg_query *q, const struct pg_locks *locks, const char *mailbox,
                    int64_t session);

/* Counts a lease taken, to renew leases only while some are held. */
void pg_locks_taken(struct pg_module *m);

/* Counts a lease given back (or given up for lost). */
void pg_locks_returned(struct pg_module *m);

/* A query that gives the lease of (mailbox, session) back; NULL on
 * allocation failure. */
struct pg_query *pg_locks_release_query(struct pg_module *m, const char *mailbox,
                                        int64_t session, pg_query_cb cb, void *data);

/* Gives the lease of (mailbox, session) back in the background; a failure
 * is logged, and the lease then expires by itself. */
void pg_locks_release(struct pg_module *m, const char *mailbox, int64_t session);

#endif
