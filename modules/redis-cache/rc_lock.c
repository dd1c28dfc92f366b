#include "rc_lock.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "rc_keys.h"
#include "rc_module.h"

static const char renew_script[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then"
    " return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";

static const char release_script[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then"
    " return redis.call('DEL', KEYS[1]) else return 0 end";

struct lock_call {
  struct rc_module *m;
  struct rc_lock *lock;
  rc_lock_cb cb;
  void *data;
};

static void ttl_text(const struct rc_module *m, char *text, size_t size) {
  snprintf(text, size, "%llu", (unsigned long long)m->lock_ttl_s * 1000);
}

/* ---- Renewal ------------------------------------------------------------ */

static void renew_all(uv_timer_t *timer) {
  struct rc_module *m = timer->data;
  if (m->locks == NULL) {
    uv_timer_stop(timer);
    return;
  }
  char ttl[24];
  ttl_text(m, ttl, sizeof ttl);
  for (struct rc_lock *l = m->locks; l != NULL; l = l->next) {
    const char *argv[] = {"EVAL", renew_script, "1", l->key, l->token, ttl};
    size_t lengths[] = {
        4, sizeof renew_script - 1, 1, strlen(l->key), strlen(l->token), strlen(ttl)};
    /* Away: the next tick tries again, and the lease has two more. */
    rc_redis_command(m->redis, NULL, NULL, 6, argv, lengths);
  }
}

static void hold(struct rc_module *m, struct rc_lock *lock) {
  lock->held = true;
  lock->prev = NULL;
  lock->next = m->locks;
  if (m->locks != NULL)
    m->locks->prev = lock;
  m->locks = lock;
  if (m->lock_timer == NULL) {
    m->lock_timer = malloc(sizeof *m->lock_timer);
    if (m->lock_timer == NULL)
      return;
    uv_timer_init(m->loop, m->lock_timer);
    m->lock_timer->data = m;
  }
  if (!uv_is_active((uv_handle_t *)m->lock_timer)) {
    uint64_t period = (uint64_t)m->lock_ttl_s * 1000 / 3;
    uv_timer_start(m->lock_timer, renew_all, period, period);
  }
}

void rc_locks_forget(struct rc_module *m, struct rc_lock *lock) {
  if (!lock->held)
    return;
  lock->held = false;
  if (lock->prev != NULL)
    lock->prev->next = lock->next;
  else
    m->locks = lock->next;
  if (lock->next != NULL)
    lock->next->prev = lock->prev;
  lock->prev = lock->next = NULL;
}

/* ---- Taking and giving back --------------------------------------------- */

static void on_acquired(void *data, redisReply *reply) {
  struct lock_call *call = data;
  int outcome = -1;
  if (reply != NULL && reply->type == REDIS_REPLY_STATUS)
    outcome = 1; /* "OK" */
  else if (reply != NULL && reply->type == REDIS_REPLY_NIL)
    outcome = 0;
  if (outcome == 1)
    hold(call->m, call->lock);
  call->cb(call->data, outcome);
  free(call);
}

int rc_lock_acquire(struct rc_module *m, struct rc_lock *lock, const char *mailbox_hash,
                    rc_lock_cb cb, void *data) {
  unsigned char random[16];
  if (getrandom(random, sizeof random, 0) != sizeof random)
    return -EIO;
  for (size_t i = 0; i < sizeof random; i++)
    snprintf(lock->token + 2 * i, 3, "%02x", random[i]);
  if (rc_key(lock->key, sizeof lock->key, m->key_prefix, "lock", mailbox_hash, NULL) < 0)
    return -ENAMETOOLONG;
  struct lock_call *call = calloc(1, sizeof *call);
  if (call == NULL)
    return -ENOMEM;
  *call = (struct lock_call){m, lock, cb, data};
  char ttl[24];
  ttl_text(m, ttl, sizeof ttl);
  const char *argv[] = {"SET", lock->key, lock->token, "NX", "PX", ttl};
  size_t lengths[] = {3, strlen(lock->key), strlen(lock->token), 2, 2, strlen(ttl)};
  int rc = rc_redis_command(m->redis, on_acquired, call, 6, argv, lengths);
  if (rc < 0)
    free(call);
  return rc;
}

static void on_released(void *data, redisReply *reply) {
  struct lock_call *call = data;
  if (call->cb != NULL)
    call->cb(call->data, reply != NULL && reply->type == REDIS_REPLY_INTEGER ? 1 : -1);
  free(call);
}

int rc_lock_release(struct rc_module *m, struct rc_lock *lock, rc_lock_cb cb,
                    void *data) {
  rc_locks_forget(m, lock);
  struct lock_call *call = calloc(1, sizeof *call);
  if (call == NULL)
    return -ENOMEM;
  *call = (struct lock_call){m, lock, cb, data};
  const char *argv[] = {"EVAL", release_script, "1", lock->key, lock->token};
  size_t lengths[] = {4, sizeof release_script - 1, 1, strlen(lock->key),
                      strlen(lock->token)};
  int rc = rc_redis_command(m->redis, on_released, call, 5, argv, lengths);
  if (rc < 0)
    free(call);
  return rc;
}

static void free_timer(uv_handle_t *handle) {
  free(handle);
}

void rc_locks_close(struct rc_module *m) {
  if (m->lock_timer != NULL)
    uv_close((uv_handle_t *)m->lock_timer, free_timer);
  m->lock_timer = NULL;
  m->locks = NULL;
}
