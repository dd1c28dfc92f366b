#include "popbench_options.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every run is bounded (the hard timeout adds a minute to these). */
#define MAX_SECONDS 600.0
#define DEFAULT_DURATION_S 10.0
#define DEFAULT_HOLD_S 10.0
#define MAX_CONCURRENCY 100000L

static const char usage[] =
    "usage: popbench --port N [--host 127.0.0.1] [--tls none|stls|implicit] [--cafile "
    "FILE]\n"
    "                --mode sessions|retr|idle\n"
    "                [--users-from N] [--users M] [--user-format 'bench%d'] --password "
    "PW\n"
    "                [--concurrency C] [--duration-s S] [--max-count N] [--warmup-s W]\n"
    "                [--hold-s S]\n"
    "Loads a POP3 server on a loopback address and prints one JSON object of results.\n"
    "User i is user-format with users-from + i; --users defaults to --concurrency.\n"
    "sessions, retr: the run lasts --duration-s (default 10, at most 600), of which the\n"
    "first --warmup-s are not counted. idle: --duration-s bounds the logins, then the\n"
    "sessions are held for --hold-s (default 10, at most 600).\n"
    "Exit: 0 no error, 1 errors counted, 2 bad usage or setup, 3 hard timeout.\n";

enum option_id {
  OPT_PORT = 256,
  OPT_HOST,
  OPT_TLS,
  OPT_CAFILE,
  OPT_MODE,
  OPT_USERS_FROM,
  OPT_USERS,
  OPT_USER_FORMAT,
  OPT_PASSWORD,
  OPT_CONCURRENCY,
  OPT_DURATION,
  OPT_MAX_COUNT,
  OPT_WARMUP,
  OPT_HOLD,
  OPT_HELP,
  OPT_END
};

static const struct option long_options[] = {
    {"port", required_argument, NULL, OPT_PORT},
    {"host", required_argument, NULL, OPT_HOST},
    {"tls", required_argument, NULL, OPT_TLS},
    {"cafile", required_argument, NULL, OPT_CAFILE},
    {"mode", required_argument, NULL, OPT_MODE},
    {"users-from", required_argument, NULL, OPT_USERS_FROM},
    {"users", required_argument, NULL, OPT_USERS},
    {"user-format", required_argument, NULL, OPT_USER_FORMAT},
    {"password", required_argument, NULL, OPT_PASSWORD},
    {"concurrency", required_argument, NULL, OPT_CONCURRENCY},
    {"duration-s", required_argument, NULL, OPT_DURATION},
    {"max-count", required_argument, NULL, OPT_MAX_COUNT},
    {"warmup-s", required_argument, NULL, OPT_WARMUP},
    {"hold-s", required_argument, NULL, OPT_HOLD},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

static int say(char *error, size_t error_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int say(char *error, size_t error_size, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(error, error_size, fmt, ap);
  va_end(ap);
  return -EINVAL;
}

static bool parse_long(const char *text, long min, long max, long *out) {
  char *end;
  errno = 0;
  long v = strtol(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || v < min || v > max)
    return false;
  *out = v;
  return true;
}

static bool parse_seconds(const char *text, double min, double max, double *out) {
  char *end;
  errno = 0;
  double v = strtod(text, &end);
  if (errno != 0 || end == text || *end != '\0' || !isfinite(v) || v < min || v > max)
    return false;
  *out = v;
  return true;
}

/* Only 127.0.0.0/8 and ::1: this tool never loads anything but the
 * machine it runs on. */
static bool set_loopback(struct options *o, const char *host, long port) {
  struct sockaddr_in *v4 = (struct sockaddr_in *)&o->addr;
  struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&o->addr;
  memset(&o->addr, 0, sizeof o->addr);
  if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
    if ((ntohl(v4->sin_addr.s_addr) >> 24) != 127)
      return false;
    v4->sin_family = AF_INET;
    v4->sin_port = htons((uint16_t)port);
    return true;
  }
  if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1 &&
      IN6_IS_ADDR_LOOPBACK(&v6->sin6_addr)) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons((uint16_t)port);
    return true;
  }
  return false;
}

/* Accepts printable ASCII without spaces (a name goes on a command line)
 * with exactly one %d and any number of %%. */
static bool split_user_format(struct options *o, const char *format) {
  char *out = o->user_prefix;
  size_t used = 0, room = sizeof o->user_prefix;
  int numbers = 0;
  for (const char *p = format; *p != '\0'; p++) {
    unsigned char ch = (unsigned char)*p;
    if (ch < 0x21 || ch > 0x7e)
      return false;
    if (ch == '%') {
      p++;
      if (*p == 'd') {
        if (++numbers > 1)
          return false;
        out[used] = '\0';
        out = o->user_suffix;
        used = 0;
        room = sizeof o->user_suffix;
        continue;
      }
      if (*p != '%')
        return false;
    }
    if (used + 1 >= room)
      return false;
    out[used++] = (char)ch;
  }
  out[used] = '\0';
  return numbers == 1;
}

static bool password_is_sendable(const char *pw) {
  size_t len = strlen(pw);
  if (len == 0 || len > 255)
    return false;
  for (size_t i = 0; i < len; i++)
    if (pw[i] == '\r' || pw[i] == '\n')
      return false;
  return true;
}

int options_parse(int argc, char **argv, struct options *o, char *error,
                  size_t error_size) {
  memset(o, 0, sizeof *o);
  o->tls = BENCH_TLS_NONE;
  o->user_format = "bench%d";
  o->concurrency = 1;
  o->users = -1;
  o->duration_s = DEFAULT_DURATION_S;
  o->hold_s = DEFAULT_HOLD_S;
  o->max_count = UINT64_MAX;
  const char *host = "127.0.0.1", *mode = NULL, *password = NULL;
  long port = -1;
  bool given[OPT_END] = {false};

  opterr = 0;
  optind = 1;
  int id;
  while ((id = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
    if (id == '?') {
      if (optopt >= OPT_PORT)
        return say(error, error_size, "%s needs a value", argv[optind - 1]);
      return say(error, error_size, "unknown option %s (see --help)", argv[optind - 1]);
    }
    if (id == ':')
      return say(error, error_size, "%s needs a value", argv[optind - 1]);
    given[id] = true;
    const char *v = optarg;
    long n;
    switch (id) {
    case OPT_PORT:
      if (!parse_long(v, 1, 65535, &port))
        return say(error, error_size, "--port %s: expected 1..65535", v);
      break;
    case OPT_HOST:
      host = v;
      break;
    case OPT_TLS:
      if (strcmp(v, "none") == 0)
        o->tls = BENCH_TLS_NONE;
      else if (strcmp(v, "stls") == 0)
        o->tls = BENCH_TLS_STLS;
      else if (strcmp(v, "implicit") == 0)
        o->tls = BENCH_TLS_IMPLICIT;
      else
        return say(error, error_size, "--tls %s: expected none, stls or implicit", v);
      break;
    case OPT_CAFILE:
      o->cafile = v;
      break;
    case OPT_MODE:
      mode = v;
      break;
    case OPT_USERS_FROM:
      if (!parse_long(v, 0, INT_MAX, &o->users_from))
        return say(error, error_size, "--users-from %s: expected 0..%d", v, INT_MAX);
      break;
    case OPT_USERS:
      if (!parse_long(v, 1, INT_MAX, &o->users))
        return say(error, error_size, "--users %s: expected 1..%d", v, INT_MAX);
      break;
    case OPT_USER_FORMAT:
      o->user_format = v;
      break;
    case OPT_PASSWORD:
      password = v;
      break;
    case OPT_CONCURRENCY:
      if (!parse_long(v, 1, MAX_CONCURRENCY, &o->concurrency))
        return say(error, error_size, "--concurrency %s: expected 1..%ld", v,
                   MAX_CONCURRENCY);
      break;
    case OPT_DURATION:
      if (!parse_seconds(v, 0.001, MAX_SECONDS, &o->duration_s) || o->duration_s <= 0)
        return say(error, error_size, "--duration-s %s: expected more than 0, at most %g",
                   v, MAX_SECONDS);
      break;
    case OPT_MAX_COUNT:
      if (!parse_long(v, 1, LONG_MAX, &n))
        return say(error, error_size, "--max-count %s: expected a count of 1 or more", v);
      o->max_count = (uint64_t)n;
      break;
    case OPT_WARMUP:
      if (!parse_seconds(v, 0, MAX_SECONDS, &o->warmup_s))
        return say(error, error_size, "--warmup-s %s: expected 0..%g", v, MAX_SECONDS);
      break;
    case OPT_HOLD:
      if (!parse_seconds(v, 0, MAX_SECONDS, &o->hold_s))
        return say(error, error_size, "--hold-s %s: expected 0..%g", v, MAX_SECONDS);
      break;
    case OPT_HELP:
      fputs(usage, stdout);
      return 1;
    }
  }
  if (optind < argc)
    return say(error, error_size, "unexpected argument %s (every option is --name value)",
               argv[optind]);

  if (port < 0)
    return say(error, error_size, "--port is required");
  if (!set_loopback(o, host, port))
    return say(error, error_size,
               "--host %s: must be a loopback address (127.0.0.0/8 or ::1)", host);
  snprintf(o->host, sizeof o->host, "%s", host);
  if (mode == NULL)
    return say(error, error_size, "--mode is required (sessions, retr or idle)");
  if (strcmp(mode, "sessions") == 0)
    o->mode = MODE_SESSIONS;
  else if (strcmp(mode, "retr") == 0)
    o->mode = MODE_RETR;
  else if (strcmp(mode, "idle") == 0)
    o->mode = MODE_IDLE;
  else
    return say(error, error_size, "--mode %s: expected sessions, retr or idle", mode);

  if (o->tls != BENCH_TLS_NONE && o->cafile == NULL)
    return say(error, error_size, "--tls %s needs --cafile (the server is verified)",
               bench_tls_name(o->tls));
  if (o->tls == BENCH_TLS_NONE && o->cafile != NULL)
    return say(error, error_size, "--cafile is only for --tls stls or implicit");

  if (!split_user_format(o, o->user_format))
    return say(error, error_size,
               "--user-format %s: expected printable ASCII without spaces and exactly "
               "one %%d (%%%% for a %%), under 128 bytes around the %%d",
               o->user_format);
  if (o->users < 0)
    o->users = o->concurrency;
  if (o->users_from + o->users - 1 > INT_MAX)
    return say(error, error_size, "--users-from + --users goes past %d", INT_MAX);
  if (o->mode != MODE_SESSIONS && o->users < o->concurrency)
    return say(error, error_size,
               "--mode %s logs every connection in as its own user: --users %ld is "
               "less than --concurrency %ld",
               mode, o->users, o->concurrency);
  if (password == NULL)
    return say(error, error_size, "--password is required");
  if (!password_is_sendable(password))
    return say(error, error_size, "--password: expected 1..255 bytes without CR or LF");

  if (o->mode == MODE_IDLE) {
    if (given[OPT_WARMUP] || given[OPT_MAX_COUNT])
      return say(error, error_size, "--warmup-s and --max-count are not for --mode idle");
  } else {
    if (given[OPT_HOLD])
      return say(error, error_size, "--hold-s is only for --mode idle");
    if (o->warmup_s >= o->duration_s)
      return say(error, error_size,
                 "--warmup-s %g leaves nothing to count of --duration-s %g", o->warmup_s,
                 o->duration_s);
  }
  o->password = strdup(password);
  if (o->password == NULL)
    return say(error, error_size, "out of memory");
  return 0;
}

void options_free(struct options *o) {
  if (o->password != NULL) {
    explicit_bzero(o->password, strlen(o->password));
    free(o->password);
    o->password = NULL;
  }
}

void options_user_name(const struct options *o, long i, char *out, size_t out_size) {
  snprintf(out, out_size, "%s%ld%s", o->user_prefix, o->users_from + i, o->user_suffix);
}

const char *bench_mode_name(enum bench_mode mode) {
  switch (mode) {
  case MODE_SESSIONS:
    return "sessions";
  case MODE_RETR:
    return "retr";
  case MODE_IDLE:
    return "idle";
  }
  return "?";
}

const char *bench_tls_name(enum bench_tls tls) {
  switch (tls) {
  case BENCH_TLS_NONE:
    return "none";
  case BENCH_TLS_STLS:
    return "stls";
  case BENCH_TLS_IMPLICIT:
    return "implicit";
  }
  return "?";
}
