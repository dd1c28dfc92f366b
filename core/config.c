/* placeholder: being written */
#include <errno.h>
#include <stdio.h>
#include "config.h"
int config_load(const char *file, struct config **config_r, char *error, size_t error_size) {
  snprintf(error, error_size, "%s: config not implemented yet", file);
  return -ENOSYS;
}
int config_load_string(const char *text, const char *name, const char *base_dir,
                       struct config **config_r, char *error, size_t error_size) {
  snprintf(error, error_size, "%s: config not implemented yet", name);
  return -ENOSYS;
}
void config_free(struct config *config) {}
int config_check_module_keys(const struct config *config, const struct config_module *module,
                             const struct popkit_config_key *keys, char *error, size_t error_size) {
  return -ENOSYS;
}
char *config_resolve_path(const struct config *config, const char *path) { return NULL; }
