/*
 * Looks like a module to a careless eye: it exports symbols whose names
 * start like the descriptor's, but not popkit_module itself.
 */
#include "popkit/module.h"

POPKIT_MODULE_EXPORT const int popkit_module_version = 1;
POPKIT_MODULE_EXPORT const char popkit_modules[] = "not a descriptor";

POPKIT_MODULE_EXPORT int popkit_module_init(void);

int popkit_module_init(void) {
  return 0;
}
