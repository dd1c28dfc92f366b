/*
 * popbench's command line: every option long, every value checked, and
 * anything wrong reported as one line (the caller exits 2).
 */
#ifndef POPBENCH_OPTIONS_H
#define POPBENCH_OPTIONS_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

enum bench_mode {
  MODE_SESSIONS, /* closed loop of full sessions, login to QUIT */
  MODE_RETR,     /* logged-in connections retrieving every message in turn */
  MODE_IDLE,     /* many logged-in sessions held open */
};

enum bench_tls {
  BENCH_TLS_NONE,     /* plain TCP */
  BENCH_TLS_STLS,     /* CAPA, STLS, then the handshake (RFC 2595) */
  BENCH_TLS_IMPLICIT, /* the handshake at connect (POP3S) */
};

struct options {
  char host[64];
  struct sockaddr_storage addr; /* host and port, checked to be loopback */
  enum bench_tls tls;
  const char *cafile;
  enum bench_mode mode;
  long users_from, users;
  const char *user_format; /* one %d, checked */
  /* The format split around its %d, %% undone, so no caller's text ever
   * reaches printf as a format. */
  char user_prefix[128], user_suffix[128];
  char *password; /* a copy, wiped by options_free() */
  long concurrency;
  double duration_s, warmup_s, hold_s;
  uint64_t max_count; /* UINT64_MAX: no limit */
};

/* Fills o from argv. Returns 0, 1 when --help was asked (usage is printed),
 * or -EINVAL with the reason in error. */
int options_parse(int argc, char **argv, struct options *o, char *error,
                  size_t error_size);
void options_free(struct options *o);

/* The name of user i of the run (0 <= i < o->users) into out. */
void options_user_name(const struct options *o, long i, char *out, size_t out_size);

const char *bench_mode_name(enum bench_mode mode);
const char *bench_tls_name(enum bench_tls tls);

#endif
