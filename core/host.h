/*
 * The core's side of the module ABI: the host function table handed to
 * every module, and module instances (one per worker per config entry).
 */
#ifndef POPKIT_CORE_HOST_H
#define POPKIT_CORE_HOST_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "loader.h"
#include "popkit/module.h"

#define MODULE_INSTANCE_MAGIC 0x4e494b50u /* "PKIN" */

/* What the opaque struct popkit_config_object is inside the core. */
struct popkit_config_object {
  json_t *json;
  const struct config *config;
  char **paths; /* resolved paths handed out by config_path */
  size_t path_count;
};

/* What the opaque struct popkit_module_handle is inside the core. */
struct popkit_module_handle {
  uint32_t magic;
  const struct popkit_module_descriptor *descriptor;
  void *instance;
  char label[96]; /* "passwd-file($.auth[0])" for log lines */
  bool blocking;  /* ops run on the thread pool */
  struct popkit_config_object config;
  unsigned worker_id;
  /* A decorator's next module (its own instance), or NULL. */
  struct popkit_module_handle *next;
};
typedef struct popkit_module_handle module_instance;

extern const struct popkit_host host_table;

/* Loads the module a config entry names, checks its keys and creates its
 * instance for one worker. Returns 0 or a negative errno code with the
 * reason in error. */
int module_instance_create(const struct config *config, const struct config_module *entry,
                           uv_loop_t *loop, unsigned worker_id, uint32_t required_role,
                           module_instance **mi_r, char *error, size_t error_size);
void module_instance_destroy(module_instance *mi);

#endif
