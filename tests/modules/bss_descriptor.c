/*
 * A descriptor that is not initialized data: a zero-filled, writable
 * variable lives in .bss and has no bytes in the file, so the loader cannot
 * read its fields before running the module and must refuse it.
 */
#include "popkit/module.h"

POPKIT_MODULE_EXPORT struct popkit_module_descriptor popkit_module;
