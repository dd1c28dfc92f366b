/*
 * The optional mailbox lock in Redis ("lock": true), for stores whose own
 * lock does not reach across hosts (a maildir on shared storage):
 *   - taken with SET key TOKEN NX PX lock_ttl_s, TOKEN random per session;
 *   - renewed while the session lives: every lock_ttl_s / 3 the instance
 *     extends each lock it holds, only if it still holds TOKEN;
 *   - given back at the end with a script that deletes the key only if it
 *     still holds TOKEN, so a lock that expired and was taken by another
 *     session is never released by the old owner.
 * When Redis is away the lock falls through: the store's own lock still
 * applies.
 */
#ifndef POPKIT_RC_LOCK_H
#define POPKIT_RC_LOCK_H

#include <stdbool.h>
#include <stddef.h>

struct rc_module;

struct rc_lock {
  struct rc_lock *prev, *next; /* in the instance's list of held locks */
  char key[160];
  char token[33];
  bool held;
};

/* What became of a request about a lock: 1 taken (or released), 0 held by
 * another session, -1 no answer from Redis. */
typedef void (*rc_lock_cb)(void *data, int outcome);

/* Tries to take the lock of the mailbox whose hash is given. Returns 0 and
 * calls cb later, or a negative errno when Redis is away (cb never runs). */
int rc_lock_acquire(struct rc_module *m, struct rc_lock *lock, const char *mailbox_hash,
                    rc_lock_cb cb, void *data);

/* Gives a held lock back and forgets it. Returns 0 and calls cb (may be
 * NULL) later, or a negative errno when Redis is away: then the lock
 * expires by itself. */
int rc_lock_release(struct rc_module *m, struct rc_lock *lock, rc_lock_cb cb, void *data);

/* Stops renewing a lock without giving it back: it expires. */
void rc_locks_forget(struct rc_module *m, struct rc_lock *lock);

/* Stops renewing (instance destruction). */
void rc_locks_close(struct rc_module *m);

#endif
