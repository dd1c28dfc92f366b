/*
 * The module loader: finds NAME.so in the modules directory, reads its
 * descriptor from the file (without running any of its code), checks the
 * ABI rules of include/popkit/module.h, and only then dlopens it.
 *
 * Every refusal is one line that names the file, what it found, what popkitd
 * needs and the fix, e.g.
 *   /usr/lib/popkit/modules/x.so: module ABI 2.0, popkitd speaks ABI 1.0:
 *   rebuild the module against popkit 0.1.0's include/popkit
 */
#ifndef POPKIT_CORE_LOADER_H
#define POPKIT_CORE_LOADER_H

#include <stddef.h>

#include "popkit/module.h"

struct loaded_module {
  char *path; /* absolute path of the .so */
  void *dl;   /* dlopen handle */
  const struct popkit_module_descriptor *descriptor;
  struct loaded_module *next; /* the loader's list, for sharing and unload */
};

/* Reads and checks the descriptor of a shared object without running any
 * of its code (the ELF file is parsed, not dlopened). Returns 0 or a
 * negative errno-style code with the refusal in error. */
int loader_inspect_file(const char *path, char *error, size_t error_size);

/* Loads module `name` (letters, digits, '-' and '_' only) from modules_dir.
 * The same file is loaded once however many times the config names it.
 * Returns 0 or a negative errno-style code with the refusal in error. */
int loader_load(const char *modules_dir, const char *name,
                struct loaded_module **module_r, char *error, size_t error_size);

/* Loads a module from an exact path (tests, and names given with a '/'). */
int loader_load_path(const char *path, struct loaded_module **module_r, char *error,
                     size_t error_size);

/* dlcloses every loaded module; no instance may remain. */
void loader_unload_all(void);

#endif
