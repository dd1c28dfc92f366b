#include "log.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_int min_level = POPKIT_LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warning", "error"};

void log_set_level(enum popkit_log_level level) {
  atomic_store(&min_level, (int)level);
}

enum popkit_log_level log_get_level(void) {
  return (enum popkit_log_level)atomic_load(&min_level);
}

void log_vmsg(enum popkit_log_level level, const char *prefix, const char *fmt,
              va_list ap) {
  if ((int)level < atomic_load(&min_level))
    return;
  if ((unsigned)level > POPKIT_LOG_ERROR)
    level = POPKIT_LOG_ERROR;
  char line[2048];
  struct timespec now;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &now);
  gmtime_r(&now.tv_sec, &tm);
  int used = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s",
                      tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                      tm.tm_sec, now.tv_nsec / 1000000, level_names[level],
                      prefix ? prefix : "");
  if (used < 0)
    return;
  size_t len = (size_t)used < sizeof line ? (size_t)used : sizeof line - 1;
  int more = vsnprintf(line + len, sizeof line - len, fmt, ap);
  if (more > 0)
    len += (size_t)more < sizeof line - len ? (size_t)more : sizeof line - len - 1;
  /* A message cut at the buffer's end still ends the line. */
  if (len >= sizeof line - 1)
    len = sizeof line - 2;
  line[len++] = '\n';
  ssize_t ignored = write(STDERR_FILENO, line, len);
  (void)ignored;
}

void log_msg(enum popkit_log_level level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  log_vmsg(level, NULL, fmt, ap);
  va_end(ap);
}

char *log_escape(char *dst, size_t dst_size, const char *src) {
  static const char hex[] = "0123456789abcdef";
  size_t o = 0;
  if (dst_size == 0)
    return dst;
  for (const unsigned char *p = (const unsigned char *)src; *p != '\0'; p++) {
    if (*p >= 0x20 && *p < 0x7f && *p != '\\' && *p != '"') {
      if (o + 1 >= dst_size)
        break;
      dst[o++] = (char)*p;
    } else {
      if (o + 4 >= dst_size)
        break;
      dst[o++] = '\\';
      dst[o++] = 'x';
      dst[o++] = hex[*p >> 4];
      dst[o++] = hex[*p & 15];
    }
  }
  dst[o] = '\0';
  return dst;
}
