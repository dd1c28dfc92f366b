/*
 * Integer settings with a range, for a module's create(). popkitd checks a
 * key's type before create runs; the range is the module's to say, and
 * this reads a list of them with one error message per bad value, naming
 * the key, as every popkit module words it.
 *
 *   unsigned size, timeout_s;
 *   const struct popkit_integer_setting settings[] = {
 *       {"pool_size", 4, 1, 64, &size},
 *       {"timeout_s", 10, 1, 3600, &timeout_s},
 *   };
 *   rc = popkit_read_integers(args->host, args->config, settings, 2, error, size);
 */
#ifndef POPKIT_SETTINGS_H
#define POPKIT_SETTINGS_H

#include <errno.h>
#include <stdio.h>

#include "popkit/module.h"

struct popkit_integer_setting {
  const char *key;
  int64_t fallback; /* when the key is absent */
  int64_t min, max; /* within 0..UINT_MAX */
  unsigned *value;
};

/* Reads every setting; returns 0, or -EINVAL with the first bad one
 * named in error. */
static inline int popkit_read_integers(const struct popkit_host *host,
                                       const struct popkit_config_object *cfg,
                                       const struct popkit_integer_setting *settings,
                                       size_t count, char *error, size_t error_size) {
  for (size_t i = 0; i < count; i++) {
    const struct popkit_integer_setting *s = &settings[i];
    int64_t v = host->config_integer(cfg, s->key, s->fallback);
    if (v < s->min || v > s->max) {
      snprintf(error, error_size, "%s: %lld is out of range (%lld to %lld)", s->key,
               (long long)v, (long long)s->min, (long long)s->max);
      return -EINVAL;
    }
    *s->value = (unsigned)v;
  }
  return 0;
}

#endif /* POPKIT_SETTINGS_H */
