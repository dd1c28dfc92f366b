/* placeholder: being written */
#include <errno.h>
#include <stdio.h>
#include "loader.h"
int loader_inspect_file(const char *path, char *error, size_t error_size) { return -ENOSYS; }
int loader_load(const char *modules_dir, const char *name, struct loaded_module **module_r,
                char *error, size_t error_size) {
  snprintf(error, error_size, "loader not implemented yet");
  return -ENOSYS;
}
int loader_load_path(const char *path, struct loaded_module **module_r, char *error,
                     size_t error_size) {
  snprintf(error, error_size, "loader not implemented yet");
  return -ENOSYS;
}
void loader_unload_all(void) {}
