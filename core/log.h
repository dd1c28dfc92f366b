/*
 * Logging: one line per event on stderr, written with a single write(2) so
 * lines from different workers never interleave.
 *
 *   2026-11-22T10:15:02.123Z info conn=17 ip=192.0.2.4 user=ana: logged in
 *
 * Anything a client chose (user names, addresses from a PROXY header) goes
 * through log_escape() first, so a name holding a newline cannot forge a
 * log line that fail2ban would trust.
 */
#ifndef POPKIT_CORE_LOG_H
#define POPKIT_CORE_LOG_H

#include <stdarg.h>
#include <stddef.h>

#include "popkit/module.h"

void log_set_level(enum popkit_log_level level);
enum popkit_log_level log_get_level(void);

void log_msg(enum popkit_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void log_vmsg(enum popkit_log_level level, const char *prefix, const char *fmt,
              va_list ap);

/* Copies src into dst (of dst_size bytes, always NUL-terminated), writing
 * bytes outside printable ASCII, backslash and double quote as \xHH. Returns
 * dst. */
char *log_escape(char *dst, size_t dst_size, const char *src);

#define log_debug(...) log_msg(POPKIT_LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(POPKIT_LOG_INFO, __VA_ARGS__)
#define log_warning(...) log_msg(POPKIT_LOG_WARNING, __VA_ARGS__)
#define log_error(...) log_msg(POPKIT_LOG_ERROR, __VA_ARGS__)

#endif
