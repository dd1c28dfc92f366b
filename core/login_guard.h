/*
 * The login guard: the facts about clients that every worker must share.
 *
 *   - connections per client address (limits.max_connections_per_ip),
 *   - the penalty after failed logins per client address: the first failure
 *     costs limits.auth_failure_delay_ms, every further one doubles it up
 *     to limits.auth_failure_delay_max_ms, and failures are forgotten after
 *     limits.auth_failure_forget_s without a new one (or at a successful
 *     login),
 *   - logged-in sessions per user (limits.max_sessions_per_user).
 *
 * An address is an IPv4 address, or an IPv6 /64 (one customer's network is
 * one guesser; v4-mapped IPv6 counts as IPv4). Loopback clients are exempt
 * from the per-address facts while limits.exempt_loopback is true.
 *
 * One mutex guards everything; the table holds only addresses with a live
 * connection or a penalty not yet forgotten, so its size follows the load,
 * and it is never on the path of a command, only of connect and login.
 * Times are milliseconds of a monotonic clock, passed in so tests can run
 * hours of penalties in microseconds.
 */
#ifndef POPKIT_CORE_LOGIN_GUARD_H
#define POPKIT_CORE_LOGIN_GUARD_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config.h"

struct login_guard;

/* The key of a client address. */
struct guard_addr {
  unsigned char bytes[16]; /* IPv4 in the first 4 bytes, or the IPv6 /64 */
  bool ipv6;
  bool exempt; /* loopback while limits.exempt_loopback: no per-address limit */
};

/* limits is borrowed and must outlive the guard. Returns 0 or -ENOMEM
 * (or -EIO when no random hash key could be drawn, or the error of
 * pthread_mutex_init, negated). */
int login_guard_new(const struct config_limits *limits, struct login_guard **guard_r);
void login_guard_free(struct login_guard *g);

void guard_addr_init(const struct login_guard *g, const struct sockaddr *peer,
                     struct guard_addr *addr_r);

/* A connection from addr begins. Returns 0 (counted), or -EUSERS when the
 * address already has max_connections_per_ip (nothing counted), or -ENOMEM
 * when its entry could not be made (nothing counted: refuse the client). */
int login_guard_connect(struct login_guard *g, const struct guard_addr *addr);
/* ...and ends; once per successful login_guard_connect. */
void login_guard_disconnect(struct login_guard *g, const struct guard_addr *addr);

/* How long a login attempt from addr must wait before it is checked: the
 * rest of the penalty of its last failure, 0 if none. */
uint64_t login_guard_delay_ms(struct login_guard *g, const struct guard_addr *addr,
                              uint64_t now_ms);
/* Records a failed login from addr and returns its penalty, the time the
 * -ERR answer waits (and every attempt from addr until then). 0 when
 * auth_failure_delay_ms is 0 (penalties off) or addr is exempt.
 * login_guard_disconnect and login_guard_succeeded take no time: they judge
 * whether a penalty is over by the latest now_ms any call was given. */
uint64_t login_guard_failed(struct login_guard *g, const struct guard_addr *addr,
                            uint64_t now_ms);
/* A login from addr succeeded: its failures are forgotten. */
void login_guard_succeeded(struct login_guard *g, const struct guard_addr *addr);

/* A session of user logs in. Returns 0, or -EUSERS when the user already
 * has max_sessions_per_user sessions (nothing counted), or -ENOMEM (nothing
 * counted). user is any string of bytes but NUL, compared exactly. */
int login_guard_user_enter(struct login_guard *g, const char *user);
void login_guard_user_leave(struct login_guard *g, const char *user);

/* Entries held, for tests that check the table shrinks again. */
size_t login_guard_entries(struct login_guard *g);

#endif
