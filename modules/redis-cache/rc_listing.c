#include "rc_listing.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char store_if_unmoved[] =
    "if (redis.call('GET', KEYS[1]) or '0') == ARGV[1] then"
    " redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3]) end return 0";

/* ---- The stored form: "GENERATION\nUID SIZE\n..." ----------------------- */

/* Reads a stored listing into mb if it is of generation; false if not. */
static bool parse(struct rc_mailbox *mb, const char *value, size_t length,
                  const char *generation) {
  const char *end = value + length;
  const char *nl = memchr(value, '\n', length);
  if (nl == NULL || (size_t)(nl - value) != strlen(generation) ||
      memcmp(value, generation, (size_t)(nl - value)) != 0)
    return false;
  size_t lines = 0;
  for (const char *p = nl + 1; p < end; p++)
    lines += *p == '\n';
  mb->uids = calloc(lines > 0 ? lines : 1, sizeof *mb->uids);
  mb->sizes = calloc(lines > 0 ? lines : 1, sizeof *mb->sizes);
  if (mb->uids == NULL || mb->sizes == NULL)
    return false;
  for (const char *p = nl + 1; p < end;) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    const char *space = eol != NULL ? memchr(p, ' ', (size_t)(eol - p)) : NULL;
    if (space == NULL || space == p)
      return false;
    char *uid = strndup(p, (size_t)(space - p));
    char *size_end;
    unsigned long long size = strtoull(space + 1, &size_end, 10);
    if (uid == NULL || size_end != eol) {
      free(uid);
      return false;
    }
    mb->uids[mb->count] = uid;
    mb->sizes[mb->count] = size;
    mb->count++;
    p = eol + 1;
  }
  return true;
}

static void forget_listing(struct rc_mailbox *mb) {
  for (size_t i = 0; i < mb->count; i++)
    free(mb->uids[i]);
  free(mb->uids);
  free(mb->sizes);
  mb->uids = NULL;
  mb->sizes = NULL;
  mb->count = 0;
}

void rc_listing_store(struct rc_module *m, const struct rc_mailbox *mb) {
  size_t size = strlen(mb->generation) + 2;
  for (size_t i = 0; i < mb->count; i++)
    size += strlen(mb->uids[i]) + 24;
  char *value = malloc(size);
  if (value == NULL)
    return;
  size_t n = (size_t)snprintf(value, size, "%s\n", mb->generation);
  for (size_t i = 0; i < mb->count; i++)
    n += (size_t)snprintf(value + n, size - n, "%s %llu\n", mb->uids[i],
                          (unsigned long long)mb->sizes[i]);
  char gen_key[256], list_key[256], ttl[16];
  int g = rc_key(gen_key, sizeof gen_key, m->key_prefix, "gen", mb->hash, NULL);
  int l = rc_key(list_key, sizeof list_key, m->key_prefix, "list", mb->hash, NULL);
  snprintf(ttl, sizeof ttl, "%u", m->listing_ttl_s);
  if (g > 0 && l > 0) {
    const char *argv[] = {"EVAL",   store_if_unmoved, "2",   gen_key,
                          list_key, mb->generation,   value, ttl};
    size_t lengths[] = {4,         sizeof store_if_unmoved - 1, 1, (size_t)g,
                        (size_t)l, strlen(mb->generation),      n, strlen(ttl)};
    rc_send_and_forget(m, 8, argv, lengths);
  }
  free(value);
}

int rc_listing_invalidate(struct rc_module *m, const char *hash, rc_reply_cb cb,
                          void *data) {
  char key[256];
  int n = rc_key(key, sizeof key, m->key_prefix, "gen", hash, NULL);
  if (n < 0)
    return -ENAMETOOLONG;
  const char *argv[] = {"INCR", key};
  size_t lengths[] = {4, (size_t)n};
  return rc_redis_command(m->redis, cb, data, 2, argv, lengths);
}

/* ---- Reading it --------------------------------------------------------- */

struct fetch {
  struct store_call *call;
  rc_listed cb;
};

/* Adds the cached listing to the OPEN request: every entry was checked by
 * the host when next listed it, so only memory can fail. */
static bool add_to_request(struct rc_module *m, struct store_call *call) {
  for (size_t i = 0; i < call->mb->count; i++)
    if (m->host->store_add_message(call->req, call->mb->uids[i], call->mb->sizes[i]) < 0)
      return false;
  return true;
}

static void on_fetched(void *data, redisReply *reply) {
  struct fetch *f = data;
  struct store_call *call = f->call;
  rc_listed cb = f->cb;
  free(f);
  struct rc_module *m = call->m;
  struct rc_mailbox *mb = call->mb;
  int outcome = 0;
  if (reply != NULL && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2) {
    redisReply *gen = reply->element[0], *list = reply->element[1];
    snprintf(mb->generation, sizeof mb->generation, "%s",
             gen->type == REDIS_REPLY_STRING ? gen->str : "0");
    if (list->type == REDIS_REPLY_STRING &&
        parse(mb, list->str, list->len, mb->generation))
      outcome = add_to_request(m, call) ? 1 : -1;
    if (outcome != 1)
      forget_listing(mb);
    rc_stats_count(&m->stats, m->loop, outcome == 1 ? &m->stats.hits : &m->stats.misses);
  } else {
    snprintf(mb->generation, sizeof mb->generation, "none");
    rc_stats_count(&m->stats, m->loop, &m->stats.fall_throughs);
  }
  cb(call, outcome);
}

int rc_listing_fetch(struct store_call *call, rc_listed cb) {
  struct rc_module *m = call->m;
  char gen_key[256], list_key[256];
  int g = rc_key(gen_key, sizeof gen_key, m->key_prefix, "gen", call->mb->hash, NULL);
  int l = rc_key(list_key, sizeof list_key, m->key_prefix, "list", call->mb->hash, NULL);
  struct fetch *f = malloc(sizeof *f);
  if (g < 0 || l < 0 || f == NULL) {
    free(f);
    return -ENOMEM;
  }
  f->call = call;
  f->cb = cb;
  const char *argv[] = {"MGET", gen_key, list_key};
  size_t lengths[] = {4, (size_t)g, (size_t)l};
  int rc = rc_redis_command(m->redis, on_fetched, f, 3, argv, lengths);
  if (rc < 0)
    free(f);
  return rc;
}

/* ---- Opening next late -------------------------------------------------- */

struct position {
  const char *uid;
  size_t index;
};

static int by_uid(const void *a, const void *b) {
  return strcmp(((const struct position *)a)->uid, ((const struct position *)b)->uid);
}

/* Matches the cached listing with next's by unique id. */
static bool match_indexes(struct rc_module *m, struct rc_mailbox *mb,
                          const struct popkit_store_request *own) {
  size_t count = m->host->store_message_count(own);
  struct position *next = calloc(count > 0 ? count : 1, sizeof *next);
  mb->to_next = calloc(mb->count > 0 ? mb->count : 1, sizeof *mb->to_next);
  if (next == NULL || mb->to_next == NULL) {
    free(next);
    return false;
  }
  for (size_t j = 0; j < count; j++) {
    uint64_t size;
    next[j].index = j;
    if (m->host->store_message(own, j, &next[j].uid, &size) < 0)
      next[j].uid = "";
  }
  qsort(next, count, sizeof *next, by_uid);
  for (size_t i = 0; i < mb->count; i++) {
    struct position key = {mb->uids[i], 0};
    struct position *found = bsearch(&key, next, count, sizeof *next, by_uid);
    mb->to_next[i] = found != NULL ? found->index : SIZE_MAX;
  }
  free(next);
  return true;
}

static void on_opened_late(void *instance, struct popkit_request *own,
                           enum popkit_result result, const char *log_text) {
  struct rc_module *m = instance;
  struct store_call *call = own->module_data;
  own->module_data = NULL;
  struct rc_mailbox *mb = call->mb;
  struct popkit_store_request *own_store = (struct popkit_store_request *)own;
  char text[512];
  if (result == POPKIT_OK) {
    mb->inner = own_store->mailbox;
    if (!match_indexes(m, mb, own_store)) {
      /* mb->inner is open: the session's CLOSE closes it. */
      m->host->complete(own, POPKIT_OK, NULL);
      rc_call_finish(call, POPKIT_TEMPFAIL, "out of memory");
      return;
    }
    m->host->complete(own, POPKIT_OK, NULL); /* frees it */
    call->req->mailbox = mb;
    call->then(call);
    return;
  }
  snprintf(text, sizeof text, "opening the mailbox at next failed: %s",
           log_text != NULL ? log_text : "");
  m->host->complete(own, result, log_text);
  call->req->mailbox = mb;
  rc_call_finish(call, result == POPKIT_IN_USE ? POPKIT_TEMPFAIL : result, text);
}

void rc_listing_open_next(struct store_call *call, rc_then then) {
  struct rc_module *m = call->m;
  struct popkit_request *own =
      m->host->next_request(&call->req->base, POPKIT_REQ_STORE_OPEN);
  if (own == NULL) {
    rc_call_finish(call, POPKIT_TEMPFAIL, "out of memory");
    return;
  }
  ((struct popkit_store_request *)own)->identity = call->mb->identity;
  own->module_data = call;
  call->then = then;
  m->host->pass_to_next(own, on_opened_late);
}
