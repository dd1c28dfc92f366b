/*
 * A descriptor cut short: the fields that never change, with struct_size
 * saying 24 bytes, as a module written against a broken or truncated SDK
 * might have it. The loader must refuse it by struct_size.
 */
#include "popkit/module.h"

struct short_descriptor {
  uint32_t magic;
  uint16_t abi_major;
  uint16_t abi_minor;
  uint32_t struct_size;
  uint32_t reserved;
  const char *name;
};

POPKIT_MODULE_EXPORT const struct short_descriptor popkit_module = {
    .magic = POPKIT_MODULE_MAGIC,
    .abi_major = POPKIT_ABI_MAJOR,
    .abi_minor = POPKIT_ABI_MINOR,
    .struct_size = 24,
    .reserved = 0,
    .name = "short_struct",
};
