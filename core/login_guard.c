/*
 * The login guard: two hash tables (client addresses, user names) behind one
 * mutex. See login_guard.h for what it counts and why.
 *
 * Both tables chain their entries and hash them with SipHash-2-4 under a key
 * drawn at start-up, so a client cannot choose addresses or user names that
 * all fall into one bucket and turn every connect into a long list walk.
 * A table doubles when it holds as many entries as buckets and halves when
 * it falls under a quarter of that, so memory follows the load both ways.
 */
#include "login_guard.h"

#include <errno.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* The smallest bucket array; tables never shrink below it. */
#define GUARD_MIN_BUCKETS 16

/* One address or one user. An address entry lives while it has connections
 * or a failure not yet forgotten; a user entry lives while it has sessions
 * (its failure fields stay 0). */
struct guard_entry {
  struct guard_entry *next; /* in its bucket */
  uint64_t hash;
  unsigned count;            /* connections of an address, sessions of a user */
  unsigned failures;         /* failed logins since the count last restarted */
  uint64_t last_failure_ms;  /* when the latest of them happened */
  uint64_t penalty_until_ms; /* attempts before this time wait */
  size_t key_len;
  unsigned char key[]; /* addr_key() for an address, the name for a user */
};

struct guard_table {
  struct guard_entry **buckets;
  size_t bucket_count; /* a power of two, at least GUARD_MIN_BUCKETS */
  size_t entries;
};

struct login_guard {
  pthread_mutex_t lock;
  const struct config_limits *limits;
  uint64_t hash_key[2];
  /* The latest time a caller told us. Disconnects, successes and sweeps carry
   * no time of their own, and workers' loop clocks lag one another by a few
   * milliseconds, so expiry is judged by this and never runs backwards. */
  uint64_t now_ms;
  struct guard_table addrs;
  struct guard_table users;
};

/* --- SipHash-2-4 (Aumasson and Bernstein), the keyed hash of both tables --- */

static inline uint64_t rotl64(uint64_t x, unsigned b) {
  return (x << b) | (x >> (64 - b));
}

static inline void sip_round(uint64_t v[4]) {
  v[0] += v[1];
  v[1] = rotl64(v[1], 13);
  v[1] ^= v[0];
  v[0] = rotl64(v[0], 32);
  v[2] += v[3];
  v[3] = rotl64(v[3], 16);
  v[3] ^= v[2];
  v[0] += v[3];
  v[3] = rotl64(v[3], 21);
  v[3] ^= v[0];
  v[2] += v[1];
  v[1] = rotl64(v[1], 17);
  v[1] ^= v[2];
  v[2] = rotl64(v[2], 32);
}

static uint64_t load_le64(const unsigned char *p) {
  uint64_t x = 0;
  for (unsigned i = 0; i < 8; i++)
    x |= (uint64_t)p[i] << (8 * i);
  return x;
}

static uint64_t siphash24(const uint64_t key[2], const unsigned char *in, size_t len) {
  uint64_t v[4] = {0x736f6d6570736575ULL ^ key[0], 0x646f72616e646f6dULL ^ key[1],
                   0x6c7967656e657261ULL ^ key[0], 0x7465646279746573ULL ^ key[1]};
  size_t whole = len - len % 8;
  for (size_t i = 0; i < whole; i += 8) {
    uint64_t m = load_le64(in + i);
    v[3] ^= m;
    sip_round(v);
    sip_round(v);
    v[0] ^= m;
  }
  uint64_t last = (uint64_t)len << 56;
  for (size_t i = 0; i < len % 8; i++)
    last |= (uint64_t)in[whole + i] << (8 * i);
  v[3] ^= last;
  sip_round(v);
  sip_round(v);
  v[0] ^= last;
  v[2] ^= 0xff;
  for (unsigned i = 0; i < 4; i++)
    sip_round(v);
  return v[0] ^ v[1] ^ v[2] ^ v[3];
}

/* --- time --- */

/* Times come from callers (tests pass anything), so sums saturate rather
 * than wrap into the past. */
static uint64_t add_ms(uint64_t a, uint64_t b) {
  return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static void advance_clock(struct login_guard *g, uint64_t now_ms) {
  if (now_ms > g->now_ms)
    g->now_ms = now_ms;
}

/* When the failures of e stop counting: the next failure starts again at 1. */
static uint64_t failures_forgotten_at(const struct login_guard *g,
                                      const struct guard_entry *e) {
  return add_ms(e->last_failure_ms, (uint64_t)g->limits->auth_failure_forget_s * 1000);
}

/* Whether e holds nothing worth keeping at the guard's time: no connection
 * or session, and no failure that still counts or still delays. The penalty
 * is checked on its own because it may outlast auth_failure_forget_s, and
 * dropping the entry would let a client escape it by reconnecting. */
static bool entry_is_idle(const struct login_guard *g, const struct guard_entry *e) {
  if (e->count > 0)
    return false;
  if (e->failures == 0)
    return true;
  return g->now_ms >= failures_forgotten_at(g, e) && g->now_ms >= e->penalty_until_ms;
}

/* The penalty of failure n (1-based): auth_failure_delay_ms doubled n-1
 * times, at most auth_failure_delay_max_ms. The base fits in 32 bits, so a
 * shift below 32 cannot overflow 64; anything longer is past the cap. */
static uint64_t penalty_ms(const struct config_limits *limits, unsigned n) {
  uint64_t base = limits->auth_failure_delay_ms, cap = limits->auth_failure_delay_max_ms;
  unsigned shift = n - 1;
  if (shift >= 32 || base << shift > cap)
    return cap;
  return base << shift;
}

/* --- tables --- */

static int table_init(struct guard_table *t) {
  t->buckets = calloc(GUARD_MIN_BUCKETS, sizeof *t->buckets);
  if (t->buckets == NULL)
    return -ENOMEM;
  t->bucket_count = GUARD_MIN_BUCKETS;
  t->entries = 0;
  return 0;
}

static void table_free(struct guard_table *t) {
  for (size_t i = 0; i < t->bucket_count; i++) {
    struct guard_entry *e = t->buckets[i];
    while (e != NULL) {
      struct guard_entry *next = e->next;
      free(e);
      e = next;
    }
  }
  free(t->buckets);
  t->buckets = NULL;
  t->bucket_count = t->entries = 0;
}

/* Moves every entry into a bucket array of new_count. On allocation failure
 * the table keeps its buckets: chains only get longer, nothing is lost. */
static void table_resize(struct guard_table *t, size_t new_count) {
  struct guard_entry **buckets = calloc(new_count, sizeof *buckets);
  if (buckets == NULL)
    return;
  for (size_t i = 0; i < t->bucket_count; i++) {
    struct guard_entry *e = t->buckets[i];
    while (e != NULL) {
      struct guard_entry *next = e->next;
      struct guard_entry **head = &buckets[e->hash & (new_count - 1)];
      e->next = *head;
      *head = e;
      e = next;
    }
  }
  free(t->buckets);
  t->buckets = buckets;
  t->bucket_count = new_count;
}

/* The link that points at the entry with this key, or NULL if none. */
static struct guard_entry **table_find(struct guard_table *t, uint64_t hash,
                                       const void *key, size_t len) {
  struct guard_entry **link = &t->buckets[hash & (t->bucket_count - 1)];
  for (; *link != NULL; link = &(*link)->next) {
    const struct guard_entry *e = *link;
    if (e->hash == hash && e->key_len == len && memcmp(e->key, key, len) == 0)
      return link;
  }
  return NULL;
}

static void unlink_entry(struct guard_table *t, struct guard_entry **link) {
  struct guard_entry *e = *link;
  *link = e->next;
  free(e);
  t->entries--;
}

/* Removes every entry that means nothing any more. */
static void table_sweep(const struct login_guard *g, struct guard_table *t) {
  for (size_t i = 0; i < t->bucket_count; i++) {
    struct guard_entry **link = &t->buckets[i];
    while (*link != NULL) {
      if (entry_is_idle(g, *link))
        unlink_entry(t, link);
      else
        link = &(*link)->next;
    }
  }
}

/* Adds an entry with all counters at 0. A full table is swept first, and
 * grows only if the sweep left it over half full, so at least half a table
 * of inserts separates two sweeps and each costs O(1) per insert. Links
 * taken before this call are stale after it. */
static struct guard_entry *table_add(struct login_guard *g, struct guard_table *t,
                                     uint64_t hash, const void *key, size_t len) {
  struct guard_entry *e = calloc(1, sizeof *e + len);
  if (e == NULL)
    return NULL;
  e->hash = hash;
  e->key_len = len;
  memcpy(e->key, key, len);
  if (t->entries >= t->bucket_count) {
    table_sweep(g, t);
    if (t->entries >= t->bucket_count / 2 && t->bucket_count <= SIZE_MAX / 2 / sizeof e)
      table_resize(t, t->bucket_count * 2);
  }
  struct guard_entry **head = &t->buckets[hash & (t->bucket_count - 1)];
  e->next = *head;
  *head = e;
  t->entries++;
  return e;
}

/* Drops the entry at link if it means nothing now, and gives memory back
 * once the table is mostly empty. */
static void forget_if_idle(struct login_guard *g, struct guard_table *t,
                           struct guard_entry **link) {
  if (!entry_is_idle(g, *link))
    return;
  unlink_entry(t, link);
  if (t->bucket_count > GUARD_MIN_BUCKETS && t->entries < t->bucket_count / 4)
    table_resize(t, t->bucket_count / 2);
}

/* --- the guard --- */

int login_guard_new(const struct config_limits *limits, struct login_guard **guard_r) {
  struct login_guard *g = calloc(1, sizeof *g);
  if (g == NULL)
    return -ENOMEM;
  g->limits = limits;
  unsigned char seed[16] = {0};
  int rc = gnutls_rnd(GNUTLS_RND_KEY, seed, sizeof seed) < 0 ? -EIO : 0;
  g->hash_key[0] = load_le64(seed);
  g->hash_key[1] = load_le64(seed + 8);
  explicit_bzero(seed, sizeof seed);
  if (rc < 0 || (rc = table_init(&g->addrs)) < 0 || (rc = table_init(&g->users)) < 0)
    goto fail;
  if ((rc = -pthread_mutex_init(&g->lock, NULL)) < 0)
    goto fail;
  *guard_r = g;
  return 0;

fail:
  table_free(&g->addrs);
  table_free(&g->users);
  explicit_bzero(g, sizeof *g);
  free(g);
  return rc;
}

void login_guard_free(struct login_guard *g) {
  if (g == NULL)
    return;
  pthread_mutex_destroy(&g->lock);
  table_free(&g->addrs);
  table_free(&g->users);
  /* The hash key is what keeps bucket choice out of a client's hands. */
  explicit_bzero(g, sizeof *g);
  free(g);
}

void guard_addr_init(const struct login_guard *g, const struct sockaddr *peer,
                     struct guard_addr *addr_r) {
  memset(addr_r, 0, sizeof *addr_r);
  bool loopback = false;
  if (peer->sa_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)peer;
    memcpy(addr_r->bytes, &in->sin_addr, 4);
    loopback = addr_r->bytes[0] == 127;
  } else if (peer->sa_family == AF_INET6) {
    const struct in6_addr *a6 = &((const struct sockaddr_in6 *)peer)->sin6_addr;
    if (IN6_IS_ADDR_V4MAPPED(a6)) {
      /* A dual-stack socket's IPv4 client is that IPv4 client. */
      memcpy(addr_r->bytes, a6->s6_addr + 12, 4);
      loopback = addr_r->bytes[0] == 127;
    } else {
      addr_r->ipv6 = true;
      memcpy(addr_r->bytes, a6->s6_addr, 8);
      loopback = IN6_IS_ADDR_LOOPBACK(a6);
    }
  }
  /* Any other family keeps the all-zero IPv4 key: such peers share one
   * budget rather than escape every limit. */
  addr_r->exempt = g->limits->exempt_loopback && loopback;
}

/* An address as a table key: a family tag, so that IPv4 1.2.3.4 and the
 * IPv6 net 102:304::/64 differ, then its 4 or 8 significant bytes. */
#define ADDR_KEY_MAX 9

static size_t addr_key(const struct guard_addr *addr, unsigned char key[ADDR_KEY_MAX]) {
  size_t n = addr->ipv6 ? 8 : 4;
  key[0] = addr->ipv6 ? 6 : 4;
  memcpy(key + 1, addr->bytes, n);
  return 1 + n;
}

/* The link of addr's entry, or NULL; the caller holds the lock. */
static struct guard_entry **find_addr(struct login_guard *g,
                                      const struct guard_addr *addr) {
  unsigned char key[ADDR_KEY_MAX];
  size_t len = addr_key(addr, key);
  return table_find(&g->addrs, siphash24(g->hash_key, key, len), key, len);
}

/* addr's entry, created if absent, or NULL when memory ran out. */
static struct guard_entry *get_addr(struct login_guard *g,
                                    const struct guard_addr *addr) {
  unsigned char key[ADDR_KEY_MAX];
  size_t len = addr_key(addr, key);
  uint64_t hash = siphash24(g->hash_key, key, len);
  struct guard_entry **link = table_find(&g->addrs, hash, key, len);
  return link != NULL ? *link : table_add(g, &g->addrs, hash, key, len);
}

int login_guard_connect(struct login_guard *g, const struct guard_addr *addr) {
  if (addr->exempt)
    return 0;
  unsigned cap = g->limits->max_connections_per_ip;
  int rc = 0;
  pthread_mutex_lock(&g->lock);
  struct guard_entry *e = get_addr(g, addr);
  if (e == NULL)
    rc = -ENOMEM;
  else if ((cap != 0 && e->count >= cap) || e->count == UINT_MAX)
    rc = -EUSERS;
  else
    e->count++;
  pthread_mutex_unlock(&g->lock);
  return rc;
}

void login_guard_disconnect(struct login_guard *g, const struct guard_addr *addr) {
  if (addr->exempt)
    return;
  pthread_mutex_lock(&g->lock);
  struct guard_entry **link = find_addr(g, addr);
  if (link != NULL && (*link)->count > 0) {
    (*link)->count--;
    forget_if_idle(g, &g->addrs, link);
  }
  pthread_mutex_unlock(&g->lock);
}

uint64_t login_guard_delay_ms(struct login_guard *g, const struct guard_addr *addr,
                              uint64_t now_ms) {
  if (addr->exempt)
    return 0;
  uint64_t delay = 0;
  pthread_mutex_lock(&g->lock);
  advance_clock(g, now_ms);
  struct guard_entry **link = find_addr(g, addr);
  if (link != NULL) {
    if ((*link)->penalty_until_ms > now_ms)
      delay = (*link)->penalty_until_ms - now_ms;
    forget_if_idle(g, &g->addrs, link);
  }
  pthread_mutex_unlock(&g->lock);
  return delay;
}

uint64_t login_guard_failed(struct login_guard *g, const struct guard_addr *addr,
                            uint64_t now_ms) {
  if (addr->exempt || g->limits->auth_failure_delay_ms == 0)
    return 0;
  pthread_mutex_lock(&g->lock);
  advance_clock(g, now_ms);
  struct guard_entry *e = get_addr(g, addr);
  if (e == NULL) {
    /* Nothing can be remembered, but this answer still waits. */
    pthread_mutex_unlock(&g->lock);
    return penalty_ms(g->limits, 1);
  }
  if (e->failures > 0 && now_ms >= failures_forgotten_at(g, e))
    e->failures = 0;
  if (e->failures < UINT_MAX)
    e->failures++;
  uint64_t delay = penalty_ms(g->limits, e->failures);
  e->last_failure_ms = now_ms;
  /* Another worker's clock may lag: never shorten a running penalty. */
  uint64_t until = add_ms(now_ms, delay);
  if (until > e->penalty_until_ms)
    e->penalty_until_ms = until;
  pthread_mutex_unlock(&g->lock);
  return delay;
}

void login_guard_succeeded(struct login_guard *g, const struct guard_addr *addr) {
  if (addr->exempt)
    return;
  pthread_mutex_lock(&g->lock);
  struct guard_entry **link = find_addr(g, addr);
  if (link != NULL) {
    struct guard_entry *e = *link;
    e->failures = 0;
    e->last_failure_ms = 0;
    e->penalty_until_ms = 0;
    forget_if_idle(g, &g->addrs, link);
  }
  pthread_mutex_unlock(&g->lock);
}

int login_guard_user_enter(struct login_guard *g, const char *user) {
  size_t len = strlen(user);
  uint64_t hash = siphash24(g->hash_key, (const unsigned char *)user, len);
  unsigned cap = g->limits->max_sessions_per_user;
  int rc = 0;
  pthread_mutex_lock(&g->lock);
  struct guard_entry **link = table_find(&g->users, hash, user, len);
  struct guard_entry *e = link != NULL ? *link : table_add(g, &g->users, hash, user, len);
  if (e == NULL)
    rc = -ENOMEM;
  else if ((cap != 0 && e->count >= cap) || e->count == UINT_MAX)
    rc = -EUSERS;
  else
    e->count++;
  pthread_mutex_unlock(&g->lock);
  return rc;
}

void login_guard_user_leave(struct login_guard *g, const char *user) {
  size_t len = strlen(user);
  uint64_t hash = siphash24(g->hash_key, (const unsigned char *)user, len);
  pthread_mutex_lock(&g->lock);
  struct guard_entry **link = table_find(&g->users, hash, user, len);
  if (link != NULL && (*link)->count > 0) {
    (*link)->count--;
    forget_if_idle(g, &g->users, link);
  }
  pthread_mutex_unlock(&g->lock);
}

size_t login_guard_entries(struct login_guard *g) {
  pthread_mutex_lock(&g->lock);
  size_t n = g->addrs.entries + g->users.entries;
  pthread_mutex_unlock(&g->lock);
  return n;
}
