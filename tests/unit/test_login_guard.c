/* Tests for core/login_guard.c: per-address and per-user caps, the penalty
 * after failed logins, loopback exemption, and a table that empties again. */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_run.h"
#include "login_guard.h"

/* The limits every test starts from; a test changes what it is about. */
static struct config_limits test_limits(void) {
  return (struct config_limits){
      .max_connections_per_ip = 3,
      .max_sessions_per_user = 2,
      .auth_failure_delay_ms = 1000,
      .auth_failure_delay_max_ms = 8000,
      .auth_failure_forget_s = 60,
      .exempt_loopback = true,
  };
}

static struct login_guard *new_guard(const struct config_limits *limits) {
  struct login_guard *g = NULL;
  ck_assert_int_eq(login_guard_new(limits, &g), 0);
  ck_assert_ptr_nonnull(g);
  return g;
}

/* The guard's key for a numeric IPv4 or IPv6 address, as a listener would
 * make it from the peer's sockaddr. */
static struct guard_addr addr_of(const struct login_guard *g, const char *ip) {
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  struct sockaddr_in *in = (struct sockaddr_in *)&ss;
  struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
  if (inet_pton(AF_INET, ip, &in->sin_addr) == 1) {
    in->sin_family = AF_INET;
    in->sin_port = htons(40000);
  } else {
    ck_assert_msg(inet_pton(AF_INET6, ip, &in6->sin6_addr) == 1, "bad address %s", ip);
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(40000);
  }
  struct guard_addr a;
  guard_addr_init(g, (const struct sockaddr *)&ss, &a);
  return a;
}

/* Connects n times from ip and checks each was accepted. */
static void connect_n(struct login_guard *g, const struct guard_addr *a, unsigned n) {
  for (unsigned i = 0; i < n; i++)
    ck_assert_int_eq(login_guard_connect(g, a), 0);
}

START_TEST(per_address_cap_ipv4) {
  struct config_limits limits = test_limits();
  struct login_guard *g = new_guard(&limits);
  struct guard_addr a = addr_of(g, "192.0.2.1"), b = addr_of(g, "198.51.100.7");
  connect_n(g, &a, 3);
  ck_assert_int_eq(login_guard_connect(g, &a), -EUSERS);
  /* Another address has its own budget. */
  connect_n(g, &b, 3);
  ck_assert_int_eq(login_guard_connect(g, &b), -EUSERS);
  /* A refused connection was not counted: one disconnect frees one place. */
  login_guard_disconnect(g, &a);
  ck_assert_int_eq(login_guard_connect(g, &a), 0);
  ck_assert_int_eq(login_guard_connect(g, &a), -EUSERS);
  ck_assert_uint_eq(login_guard_entries(g), 2);
  for (int i = 0; i < 3; i++) {
    login_guard_disconnect(g, &a);
    login_guard_disconnect(g, &b);
  }
  ck_assert_uint_eq(login_guard_entries(g), 0);
  login_guard_free(g);
}
END_TEST

START_TEST(per_address_cap_ipv6_by_64) {
  struct config_limits limits = test_limits();
  struct login_guard *g = new_guard(&limits);
  struct guard_addr a1 = addr_of(g, "2001:db8:1:2::1");
  struct guard_addr a2 = addr_of(g, "2001:db8:1:2:ffff:eeee:dddd:9");
  struct guard_addr other = addr_of(g, "2001:db8:1:3::1");
  ck_assert(a1.ipv6);
  ck_assert(!a1.exempt);
  /* Two hosts of one /64 are one client. */
  connect_n(g, &a1, 2);
  ck_assert_int_eq(login_guard_connect(g, &a2), 0);
  ck_assert_int_eq(login_guard_connect(g, &a2), -EUSERS);
  ck_assert_int_eq(login_guard_connect(g, &a1), -EUSERS);
  /* The next /64 is not. */
  connect_n(g, &other, 3);
  ck_assert_int_eq(login_guard_connect(g, &other), -EUSERS);
  /* Whichever host of the /64 leaves, the place is the net's. */
  login_guard_disconnect(g, &a2);
  ck_assert_int_eq(login_guard_connect(g, &a1), 0);
  ck_assert_uint_eq(login_guard_entries(g), 2);
  for (int i = 0; i < 3; i++) {
    login_guard_disconnect(g, &a1);
    login_guard_disconnect(g, &other);
  }
  ck_assert_uint_eq(login_guard_entries(g), 0);
  login_guard_free(g);
}
END_TEST

START_TEST(v4_mapped_counts_as_ipv4) {
  struct config_limits limits = test_limits();
  struct login_guard *g = new_guard(&limits);
  struct guard_addr v4 = addr_of(g, "192.0.2.1");
  struct guard_addr mapped = addr_of(g, "::ffff:192.0.2.1");
  /* An IPv6 net whose first bytes spell the IPv4 address is not it. */
  struct guard_addr lookalike = addr_of(g, "c000:201::1");
  ck_assert(!mapped.ipv6);
  ck_assert_int_eq(memcmp(mapped.bytes, v4.bytes, 4), 0);
  connect_n(g, &v4, 2);
  ck_assert_int_eq(login_guard_connect(g, &mapped), 0);
  ck_assert_int_eq(login_guard_connect(g, &mapped), -EUSERS);
  ck_assert_int_eq(login_guard_connect(g, &v4), -EUSERS);
  ck_assert_int_eq(login_guard_connect(g, &lookalike), 0);
  /* A failure over IPv6 penalises the IPv4 client. */
  ck_assert_uint_eq(login_guard_failed(g, &mapped, 5000), 1000);
  ck_assert_uint_eq(login_guard_delay_ms(g, &v4, 5000), 1000);
  ck_assert_uint_eq(login_guard_delay_ms(g, &lookalike, 5000), 0);
  login_guard_free(g);
}
END_TEST

START_TEST(penalty_doubles_up_to_the_cap) {
  struct config_limits limits = test_limits();
  struct login_guard *g = new_guard(&limits);
  struct guard_addr a = addr_of(g, "203.0.113.9");
  uint64_t want[] = {1000, 2000, 4000, 8000, 8000, 8000};
  uint64_t now = 1000000;
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    ck_assert_uint_eq(login_guard_delay_ms(g, &a, now), 0);
    uint64_t d = login_guard_failed(g, &a, now);
    ck_assert_msg(d == want[i], "failure %zu: delay %llu, want %llu", i + 1,
                  (unsigned long long)d, (unsigned long long)want[i]);
    ck_assert_uint_eq(login_guard_delay_ms(g, &a, now), d);
    now += d; /* the next attempt comes when the penalty is over */
  }
  /* Far past any shift width, the delay stays at the cap. */
  for (int i = 0; i < 100; i++) {
    ck_assert_uint_eq(login_guard_failed(g, &a, now), 8000);
    now += 8000;
  }
  login_guard_free(g);
}
END_TEST

START_TEST(penalty_shift_does_not_overflow) {
  /* A base near the top of its range: the doubled value must be computed
   * wide enough to see that it passes the cap. */
  struct config_limits limits = test_limits();
  limits.auth_failure_delay_ms = 3000000000u;
  limits.auth_failure_delay_max_ms = 4000000000u;
  struct login_guard *g = new_guard(&limits);
  struct guard_addr a = addr_of(g, "203.0.113.10");
  ck_assert_uint_eq(login_guard_failed(g, &a, 1), 3000000000u);
  for (int i = 0; i < 70; i++)
    ck_assert_uint_eq(login_guard_failed(g, &a, 2 + (uint64_t)i), 4000000000u);
  login_guard_free(g);
}
END_TEST

START_TEST(penalty_remaining_decreases_with_time) {
  struct config_limits limits = test_limits();
  struct login_guard *g = new_guard(&limits);
  struct guard_addr a = addr_of(g, "203.0.113.9");
  ck_assert_int_eq(login_guard_connect(g, &a), 0);
  ck_assert_uint_eq(login_guard_failed(g, &a, 10000), 1000);
  ck_assert_uint_eq(login_guard_delay_ms(g, &a, 10000), 1000);
  ck_assert_uint_eq(login_guard_delay_ms(g, &a, 10400), 600);
  ck_assert_uint_eq(login_guard_delay_ms(g, &a, 10999), 1);
  ck_assert_uint_eq(login_guard_delay_ms(g, &a, 11000), 0);
  ck_assert_uint_eq(login_guard_delay_ms(g, &a, 50000), 0);
  /* Another address never waited. */
  struct guard_addr b = addr_of(g, "203.0.113.10");
  ck_assert_uint_eq(login_guard_delay_ms(g, &b, 10000), 0);
  login_guard_free(g);
}
END_TEST

START_TEST(penalty_survives_reconnecting) {
  struct config_limits limits = test_limits();
  struct login_guard *g = new_guard(&limits);
  struct guard_addr a = addr_of(g, "203.0.113.9");
  ck_assert_int_eq(login_guard_connect(g, &a), 0);
  ck_assert_uint_eq(login_guard_failed(g, &a, 1000), 1000);
  ck_assert_uint_eq(login_guard_failed(g, &a, 2000), 2000);
  login_guard_disconnect(g, &a);
  ck_assert_uint_eq(login_guard_entries(g), 1);
  ck_assert_int_eq(login_guard_connect(g, &a), 0);
  ck_assert_uint_eq(login_guard_delay_ms(g, &a, 3000), 1000);
  /* ...and the count goes on where it was. */
  ck_assert_uint_eq(login_guard_failed(g, &a, 4000), 4000);
  login_guard_free(g);
}
END_TEST

START_TEST(failures_forgotten_after_forget_s) {
  struct config_limits limits = test_limits();
  struct login_guard *g = new_guard(&limits);
  struct guard_addr a = addr_of(g, "203.0.113.9");
  ck_assert_uint_eq(login_guard_failed(g, &a, 0), 1000);
  ck_assert_uint_eq(login_guard_failed(g, &a, 1000), 2000);
  /* One millisecond short of forget_s after the last failure: still counted. */
  ck_assert_uint_eq(login_guard_failed(g, &a, 1000 + 60000 - 1), 4000);
  uint64_t last = 1000 + 60000 - 1;
  /* forget_s after the last failure: the count restarts at 1. */
  ck_assert_uint_eq(login_guard_failed(g, &a, last + 60000), 1000);
  ck_assert_uint_eq(login_guard_failed(g, &a, last + 61000), 2000);
  /* Once forgotten, an address without connections is not held. */
  ck_assert_uint_eq(login_guard_entries(g), 1);
  ck_assert_uint_eq(login_guard_delay_ms(g, &a, last + 61000 + 60000), 0);
  ck_assert_uint_eq(login_guard_entries(g), 0);
  ck_assert_uint_eq(login_guard_failed(g, &a, last + 200000), 1000);
  login_guard_free(g);
}
END_TEST

START_TEST(penalty_outlasting_forget_s_is_kept) {
  /* The count is forgotten after 1 s but the 5 s penalty is not over: the
   * entry stays until both are, or reconnecting would escape the penalty. */
  struct config_limits limits = test_limits();
  limits.auth_failure_delay_ms = 5000;
  limits.auth_failure_delay_max_ms = 5000;
  limits.auth_failure_forget_s = 1;
  struct login_guard *g = new_guard(&limits);
  struct guard_addr a = addr_of(g, "203.0.113.9");
  ck_assert_int_eq(login_guard_connect(g, &a), 0);
  ck_assert_uint_eq(login_guard_failed(g, &a, 0), 5000);
  ck_assert_uint_eq(login_guard_delay_ms(g, &a, 2000), 3000);
  login_guard_disconnect(g, &a);
  ck_assert_uint_eq(login_guard_delay_ms(g, &a, 2500), 2500);
  ck_assert_uint_eq(login_guard_entries(g), 1);
  ck_assert_uint_eq(login_guard_delay_ms(g, &a, 5000), 0);
  ck_assert_uint_eq(login_guard_entries(g), 0);
  login_guard_free(g);
}
END_TEST

START_TEST(success_clears_failures) {
  struct config_limits limits = test_limits();
  struct login_guard *g = new_guard(&limits);
  struct guard_addr a = addr_of(g, "203.0.113.9");
  ck_assert_int_eq(login_guard_connect(g, &a), 0);
  ck_assert_uint_eq(login_guard_failed(g, &a, 0), 1000);
  ck_assert_uint_eq(login_guard_failed(g, &a, 1000), 2000);
  ck_assert_uint_eq(login_guard_failed(g, &a, 3000), 4000);
  login_guard_succeeded(g, &a);
  ck_assert_uint_eq(login_guard_delay_ms(g, &a, 3001), 0);
  ck_assert_uint_eq(login_guard_failed(g, &a, 3002), 1000);
  /* Without a connection, a success leaves nothing behind. */
  login_guard_disconnect(g, &a);
  ck_assert_uint_eq(login_guard_entries(g), 1);
  login_guard_succeeded(g, &a);
  ck_assert_uint_eq(login_guard_entries(g), 0);
  login_guard_free(g);
}
END_TEST

START_TEST(penalties_off_when_delay_is_zero) {
  struct config_limits limits = test_limits();
  limits.auth_failure_delay_ms = 0;
  struct login_guard *g = new_guard(&limits);
  struct guard_addr a = addr_of(g, "203.0.113.9");
  for (int i = 0; i < 10; i++)
    ck_assert_uint_eq(login_guard_failed(g, &a, (uint64_t)i), 0);
  ck_assert_uint_eq(login_guard_delay_ms(g, &a, 10), 0);
  ck_assert_uint_eq(login_guard_entries(g), 0);
  login_guard_free(g);
}
END_TEST

static const char *const loopbacks[] = {"127.0.0.1", "127.8.9.10", "::1",
                                        "::ffff:127.0.0.1"};

START_TEST(loopback_exempt) {
  struct config_limits limits = test_limits();
  struct login_guard *g = new_guard(&limits);
  for (size_t i = 0; i < sizeof loopbacks / sizeof loopbacks[0]; i++) {
    struct guard_addr a = addr_of(g, loopbacks[i]);
    ck_assert_msg(a.exempt, "%s should be exempt", loopbacks[i]);
    connect_n(g, &a, 50);
    for (int f = 0; f < 5; f++)
      ck_assert_uint_eq(login_guard_failed(g, &a, 1000), 0);
    ck_assert_uint_eq(login_guard_delay_ms(g, &a, 1000), 0);
    for (int d = 0; d < 50; d++)
      login_guard_disconnect(g, &a);
  }
  ck_assert_uint_eq(login_guard_entries(g), 0);
  /* Only loopback is exempt. */
  struct guard_addr outside = addr_of(g, "128.0.0.1");
  ck_assert(!outside.exempt);
  ck_assert(!addr_of(g, "::2").exempt);
  login_guard_free(g);
}
END_TEST

START_TEST(loopback_limited_without_exemption) {
  struct config_limits limits = test_limits();
  limits.exempt_loopback = false;
  struct login_guard *g = new_guard(&limits);
  for (size_t i = 0; i < sizeof loopbacks / sizeof loopbacks[0]; i++) {
    struct guard_addr a = addr_of(g, loopbacks[i]);
    ck_assert_msg(!a.exempt, "%s should not be exempt", loopbacks[i]);
  }
  struct guard_addr a = addr_of(g, "127.0.0.1");
  struct guard_addr mapped = addr_of(g, "::ffff:127.0.0.1");
  connect_n(g, &a, 3);
  ck_assert_int_eq(login_guard_connect(g, &mapped), -EUSERS);
  ck_assert_uint_eq(login_guard_failed(g, &a, 1000), 1000);
  ck_assert_uint_eq(login_guard_delay_ms(g, &mapped, 1500), 500);
  login_guard_free(g);
}
END_TEST

START_TEST(per_user_cap_with_odd_bytes) {
  struct config_limits limits = test_limits();
  struct login_guard *g = new_guard(&limits);
  char long_name[5000];
  memset(long_name, 'x', sizeof long_name - 1);
  long_name[sizeof long_name - 1] = '\0';
  const char *names[] = {
      "o'brien", "user\xff\x01name", "user\xff\x01namf", "a b\tc\r\n%u*)(",
      "",        long_name};
  size_t n = sizeof names / sizeof names[0];
  for (size_t i = 0; i < n; i++) {
    ck_assert_int_eq(login_guard_user_enter(g, names[i]), 0);
    ck_assert_int_eq(login_guard_user_enter(g, names[i]), 0);
  }
  /* Each name reached its own cap; names one byte apart are not mixed up. */
  for (size_t i = 0; i < n; i++)
    ck_assert_msg(login_guard_user_enter(g, names[i]) == -EUSERS, "name %zu", i);
  ck_assert_uint_eq(login_guard_entries(g), n);
  login_guard_user_leave(g, "user\xff\x01name");
  ck_assert_int_eq(login_guard_user_enter(g, "user\xff\x01namf"), -EUSERS);
  ck_assert_int_eq(login_guard_user_enter(g, "user\xff\x01name"), 0);
  /* Users and addresses are counted apart. */
  struct guard_addr a = addr_of(g, "192.0.2.1");
  connect_n(g, &a, 3);
  ck_assert_uint_eq(login_guard_entries(g), n + 1);
  for (size_t i = 0; i < n; i++) {
    login_guard_user_leave(g, names[i]);
    login_guard_user_leave(g, names[i]);
  }
  /* A leave without an enter changes nothing. */
  login_guard_user_leave(g, "nobody");
  ck_assert_uint_eq(login_guard_entries(g), 1);
  for (int i = 0; i < 3; i++)
    login_guard_disconnect(g, &a);
  ck_assert_uint_eq(login_guard_entries(g), 0);
  login_guard_free(g);
}
END_TEST

START_TEST(zero_caps_mean_no_cap) {
  struct config_limits limits = test_limits();
  limits.max_connections_per_ip = 0;
  limits.max_sessions_per_user = 0;
  struct login_guard *g = new_guard(&limits);
  struct guard_addr a = addr_of(g, "192.0.2.1");
  connect_n(g, &a, 1000);
  for (int i = 0; i < 1000; i++)
    ck_assert_int_eq(login_guard_user_enter(g, "alice"), 0);
  ck_assert_uint_eq(login_guard_entries(g), 2);
  for (int i = 0; i < 1000; i++) {
    login_guard_disconnect(g, &a);
    login_guard_user_leave(g, "alice");
  }
  ck_assert_uint_eq(login_guard_entries(g), 0);
  login_guard_free(g);
}
END_TEST

START_TEST(entries_return_to_zero) {
  struct config_limits limits = test_limits();
  struct login_guard *g = new_guard(&limits);
  char ip[64];
  struct guard_addr failing[10];
  /* Ten clients connect, log in as ten users, and fail once each. */
  for (int i = 0; i < 10; i++) {
    snprintf(ip, sizeof ip, "2001:db8:%x::1", i);
    failing[i] = addr_of(g, ip);
    ck_assert_int_eq(login_guard_connect(g, &failing[i]), 0);
    ck_assert_uint_eq(login_guard_failed(g, &failing[i], 1000), 1000);
    snprintf(ip, sizeof ip, "user%d", i);
    ck_assert_int_eq(login_guard_user_enter(g, ip), 0);
  }
  ck_assert_uint_eq(login_guard_entries(g), 20);
  for (int i = 0; i < 10; i++) {
    login_guard_disconnect(g, &failing[i]);
    snprintf(ip, sizeof ip, "user%d", i);
    login_guard_user_leave(g, ip);
  }
  /* Their failures are remembered for forget_s. */
  ck_assert_uint_eq(login_guard_entries(g), 10);
  /* Later, new clients come and go; the table grows past its first size, and
   * the sweep that comes with growth drops the forgotten failures without
   * anyone asking about those addresses again. */
  struct guard_addr later = addr_of(g, "192.0.2.200");
  ck_assert_uint_eq(login_guard_delay_ms(g, &later, 1000 + 60000), 0);
  struct guard_addr crowd[200];
  for (int i = 0; i < 200; i++) {
    snprintf(ip, sizeof ip, "198.51.100.%d", i);
    crowd[i] = addr_of(g, ip);
    ck_assert_int_eq(login_guard_connect(g, &crowd[i]), 0);
  }
  ck_assert_uint_eq(login_guard_entries(g), 200);
  for (int i = 0; i < 200; i++)
    login_guard_disconnect(g, &crowd[i]);
  ck_assert_uint_eq(login_guard_entries(g), 0);
  login_guard_free(g);
}
END_TEST

START_TEST(growth_to_100000_addresses_and_back) {
  struct config_limits limits = test_limits();
  struct login_guard *g = new_guard(&limits);
  enum { N = 100000 };
  struct guard_addr *addrs = calloc(N, sizeof *addrs);
  ck_assert_ptr_nonnull(addrs);
  char ip[64];
  for (int i = 0; i < N; i++) {
    /* Half IPv4, half IPv6 nets. */
    if (i % 2)
      snprintf(ip, sizeof ip, "10.%d.%d.%d", (i >> 16) & 255, (i >> 8) & 255, i & 255);
    else
      snprintf(ip, sizeof ip, "2001:db8:%x:%x::1", i >> 16, i & 0xffff);
    addrs[i] = addr_of(g, ip);
    ck_assert_int_eq(login_guard_connect(g, &addrs[i]), 0);
  }
  ck_assert_uint_eq(login_guard_entries(g), N);
  /* Every address still has its own count: none was dropped or merged. */
  for (int i = 0; i < N; i += 997) {
    connect_n(g, &addrs[i], 2);
    ck_assert_int_eq(login_guard_connect(g, &addrs[i]), -EUSERS);
    login_guard_disconnect(g, &addrs[i]);
    login_guard_disconnect(g, &addrs[i]);
  }
  for (int i = 0; i < N; i++)
    login_guard_disconnect(g, &addrs[i]);
  ck_assert_uint_eq(login_guard_entries(g), 0);
  free(addrs);
  login_guard_free(g);
}
END_TEST

/* The thread test: workers connect and disconnect on a few addresses at
 * once; live[] counts what the guard let in, so a place handed out twice
 * shows as more than the cap. */
enum { THREADS = 4, ROUNDS = 10000, SHARED_ADDRS = 3, THREAD_CAP = 2 };

struct thread_test {
  struct login_guard *g;
  struct guard_addr addrs[SHARED_ADDRS];
  atomic_uint live[SHARED_ADDRS];
  atomic_uint over_cap;
  atomic_uint admitted;
};

static void *hammer(void *arg) {
  struct thread_test *t = arg;
  for (unsigned r = 0; r < ROUNDS; r++) {
    unsigned i = r % SHARED_ADDRS;
    const struct guard_addr *a = &t->addrs[i];
    /* Two connections at once from one thread, so four threads overrun the cap. */
    int held = 0;
    for (int k = 0; k < 2; k++) {
      if (login_guard_connect(t->g, a) != 0)
        continue;
      held++;
      atomic_fetch_add(&t->admitted, 1);
      if (atomic_fetch_add(&t->live[i], 1) + 1 > THREAD_CAP)
        atomic_fetch_add(&t->over_cap, 1);
    }
    if (held > 0 && login_guard_user_enter(t->g, "shared") == 0)
      login_guard_user_leave(t->g, "shared");
    login_guard_delay_ms(t->g, a, r);
    for (int k = 0; k < held; k++) {
      atomic_fetch_sub(&t->live[i], 1);
      login_guard_disconnect(t->g, a);
    }
  }
  return NULL;
}

START_TEST(threads_keep_the_cap_and_leave_nothing) {
  struct config_limits limits = test_limits();
  limits.max_connections_per_ip = THREAD_CAP;
  struct login_guard *g = new_guard(&limits);
  static struct thread_test t;
  memset(&t, 0, sizeof t);
  t.g = g;
  t.addrs[0] = addr_of(g, "192.0.2.1");
  t.addrs[1] = addr_of(g, "2001:db8::1");
  t.addrs[2] = addr_of(g, "::ffff:198.51.100.1");
  pthread_t threads[THREADS];
  for (int i = 0; i < THREADS; i++)
    ck_assert_int_eq(pthread_create(&threads[i], NULL, hammer, &t), 0);
  for (int i = 0; i < THREADS; i++)
    ck_assert_int_eq(pthread_join(threads[i], NULL), 0);
  ck_assert_uint_eq(atomic_load(&t.over_cap), 0);
  /* The cap held without refusing everything. */
  ck_assert_uint_gt(atomic_load(&t.admitted), 0);
  ck_assert_uint_eq(login_guard_entries(g), 0);
  login_guard_free(g);
}
END_TEST

int main(void) {
  Suite *s = suite_create("login_guard");
  TCase *tc = tcase_create("addresses");
  tcase_add_test(tc, per_address_cap_ipv4);
  tcase_add_test(tc, per_address_cap_ipv6_by_64);
  tcase_add_test(tc, v4_mapped_counts_as_ipv4);
  tcase_add_test(tc, loopback_exempt);
  tcase_add_test(tc, loopback_limited_without_exemption);
  tcase_add_test(tc, zero_caps_mean_no_cap);
  suite_add_tcase(s, tc);

  tc = tcase_create("penalties");
  tcase_add_test(tc, penalty_doubles_up_to_the_cap);
  tcase_add_test(tc, penalty_shift_does_not_overflow);
  tcase_add_test(tc, penalty_remaining_decreases_with_time);
  tcase_add_test(tc, penalty_survives_reconnecting);
  tcase_add_test(tc, failures_forgotten_after_forget_s);
  tcase_add_test(tc, penalty_outlasting_forget_s_is_kept);
  tcase_add_test(tc, success_clears_failures);
  tcase_add_test(tc, penalties_off_when_delay_is_zero);
  suite_add_tcase(s, tc);

  tc = tcase_create("users");
  tcase_add_test(tc, per_user_cap_with_odd_bytes);
  suite_add_tcase(s, tc);

  tc = tcase_create("table");
  tcase_add_test(tc, entries_return_to_zero);
  tcase_add_test(tc, growth_to_100000_addresses_and_back);
  tcase_add_test(tc, threads_keep_the_cap_and_leave_nothing);
  suite_add_tcase(s, tc);

  return check_run(s) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
