/*
 * The module loader. A module is judged in two steps:
 *
 *   1. Before any of its code runs, the leading fields of its descriptor are
 *      read from the file (elf_symbol.c) and checked against the rules of
 *      include/popkit/module.h. A module built for another ABI is refused
 *      here, so neither its constructors nor its relocations ever run.
 *   2. Only then is it dlopen'ed, and the live descriptor is checked for
 *      what the file could not tell: that every function a role needs is
 *      there.
 *
 * Modules are loaded on the main thread while the config is read, before
 * any worker thread starts (and a reload also reads its config on the main
 * thread), so the list of loaded modules needs no lock.
 */
#include "loader.h"

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "elf_symbol.h"

#ifndef POPKIT_VERSION
#define POPKIT_VERSION "(unknown version)"
#endif

#define MODULE_NAME_MAX 64

#define FIX_REBUILD "rebuild the module against this popkitd's include/popkit"
#define FIX_DESCRIPTOR "fix the module's descriptor and rebuild it"

/* The fields of the descriptor that never change, as they lie in the file. */
struct descriptor_head {
  uint32_t magic;
  uint16_t abi_major;
  uint16_t abi_minor;
  uint32_t struct_size;
};

_Static_assert(offsetof(struct popkit_module_descriptor, magic) ==
                   offsetof(struct descriptor_head, magic),
               "descriptor head moved");
_Static_assert(offsetof(struct popkit_module_descriptor, abi_major) ==
                   offsetof(struct descriptor_head, abi_major),
               "descriptor head moved");
_Static_assert(offsetof(struct popkit_module_descriptor, abi_minor) ==
                   offsetof(struct descriptor_head, abi_minor),
               "descriptor head moved");
_Static_assert(offsetof(struct popkit_module_descriptor, struct_size) ==
                   offsetof(struct descriptor_head, struct_size),
               "descriptor head moved");

/* The v1 sizes of the role tables: a module's table may be larger (a newer
 * minor added functions), never smaller. */
#define AUTH_OPS_V1_SIZE                                                                 \
  (offsetof(struct popkit_auth_ops, get_credential) + sizeof(void (*)(void)))
#define STORE_OPS_V1_SIZE                                                                \
  (offsetof(struct popkit_store_ops, append_finish) + sizeof(void (*)(void)))

#define KNOWN_ROLES (POPKIT_ROLE_AUTH | POPKIT_ROLE_STORE)
#define KNOWN_FLAGS (POPKIT_MODULE_BLOCKING | POPKIT_MODULE_DECORATOR)

/* A loaded module and the file identity it is shared by: the same file
 * named twice (or through a symlink) is one module. */
struct loaded_entry {
  struct loaded_module module; /* first, so a loaded_module * is an entry */
  dev_t device;
  ino_t inode;
};

static struct loaded_module *loaded_modules;

static int refuse(char *error, size_t error_size, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int refuse(char *error, size_t error_size, int code, const char *fmt, ...) {
  if (error != NULL && error_size > 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error, error_size, fmt, ap);
    va_end(ap);
  }
  return code;
}

/* Quotes an untrusted name for an error line: printable ASCII as is, every
 * other byte as \xNN, cut at a readable length. */
static void quote_name(const char *name, char *out, size_t out_size) {
  size_t used = 0;
  for (const unsigned char *p = (const unsigned char *)name; *p != '\0'; p++) {
    char piece[8];
    if (*p >= 0x20 && *p < 0x7f && *p != '\\' && *p != '"')
      snprintf(piece, sizeof piece, "%c", *p);
    else
      snprintf(piece, sizeof piece, "\\x%02x", *p);
    size_t len = strlen(piece);
    if (used + len + 4 >= out_size) {
      memcpy(out + used, "...", 4);
      return;
    }
    memcpy(out + used, piece, len + 1);
    used += len;
  }
  if (used == 0 && out_size > 0)
    out[0] = '\0';
}

static int valid_module_name(const char *name) {
  size_t len = 0;
  for (const char *p = name; *p != '\0'; p++, len++) {
    char c = *p;
    int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
             c == '-' || c == '_';
    if (!ok || len >= MODULE_NAME_MAX)
      return 0;
  }
  return len > 0;
}

/* Explains a failure of stat/open on the module file. */
static int refuse_unreadable(const char *path, const char *modules_dir, int saved_errno,
                             char *error, size_t error_size) {
  if (saved_errno == ENOENT && modules_dir != NULL)
    return refuse(error, error_size, -ENOENT,
                  "%s: no such module file (modules_dir is %s; is the module installed?)",
                  path, modules_dir);
  if (saved_errno == ENOENT)
    return refuse(error, error_size, -ENOENT,
                  "%s: no such module file (is the module installed?)", path);
  return refuse(error, error_size, -saved_errno,
                "%s: cannot read the module file: %s (check its permissions and those "
                "of its directory)",
                path, strerror(saved_errno));
}

/* Words elf_symbol's refusal as a module refusal with its fix. */
static int refuse_elf(const char *path, int code, const char *why, char *error,
                      size_t error_size) {
  switch (code) {
  case ELF_SYMBOL_NOT_ELF:
    return refuse(error, error_size, code,
                  "%s: not a popkit module: %s (a module is a shared object built "
                  "against popkitd's include/popkit)",
                  path, why);
  case ELF_SYMBOL_CORRUPT:
    return refuse(error, error_size, code,
                  "%s: not a popkit module: %s: reinstall or rebuild the module", path,
                  why);
  case ELF_SYMBOL_WRONG_CLASS:
  case ELF_SYMBOL_WRONG_MACHINE:
    return refuse(error, error_size, code, "%s: %s: rebuild the module on this machine",
                  path, why);
  case ELF_SYMBOL_NOT_SHARED_OBJECT:
    return refuse(error, error_size, code,
                  "%s: not a popkit module: %s: build it as a shared object (a CMake "
                  "MODULE library, or cc -shared)",
                  path, why);
  case ELF_SYMBOL_MISSING:
    return refuse(error, error_size, code,
                  "%s: not a popkit module: %s (a module defines POPKIT_MODULE_EXPORT "
                  "const struct popkit_module_descriptor " POPKIT_MODULE_SYMBOL ")",
                  path, why);
  case ELF_SYMBOL_NOT_IN_FILE:
    return refuse(error, error_size, code,
                  "%s: not a popkit module: %s (a module defines its descriptor as "
                  "initialized const data: POPKIT_MODULE_EXPORT const struct "
                  "popkit_module_descriptor " POPKIT_MODULE_SYMBOL
                  " = {POPKIT_MODULE_HEADER(\"name\"), ...})",
                  path, why);
  case ELF_SYMBOL_TOO_SMALL:
    return refuse(error, error_size, code,
                  "%s: " POPKIT_MODULE_SYMBOL
                  " is not a module descriptor (%s): " FIX_REBUILD,
                  path, why);
  default:
    return refuse(error, error_size, code, "%s: cannot read the module file: %s", path,
                  why);
  }
}

/* The rules of include/popkit/module.h for the fields that never change.
 * symbol_size is the size of the exported symbol, which the descriptor must
 * fill. */
static int check_head(const char *path, const struct descriptor_head *head,
                      size_t symbol_size, char *error, size_t error_size) {
  if (head->magic != POPKIT_MODULE_MAGIC)
    return refuse(error, error_size, -ENOEXEC,
                  "%s: " POPKIT_MODULE_SYMBOL
                  " is not a module descriptor (magic 0x%08x, "
                  "expected 0x%08x): " FIX_REBUILD,
                  path, head->magic, POPKIT_MODULE_MAGIC);
  if (head->abi_major != POPKIT_ABI_MAJOR)
    return refuse(
        error, error_size, -EPROTO,
        "%s: module ABI %u.%u, popkitd " POPKIT_VERSION " speaks ABI %d.%d: " FIX_REBUILD,
        path, head->abi_major, head->abi_minor, POPKIT_ABI_MAJOR, POPKIT_ABI_MINOR);
  if (head->abi_minor > POPKIT_ABI_MINOR)
    return refuse(error, error_size, -EPROTO,
                  "%s: module needs ABI %u.%u, popkitd " POPKIT_VERSION " speaks ABI "
                  "%d.%d: upgrade popkitd or " FIX_REBUILD,
                  path, head->abi_major, head->abi_minor, POPKIT_ABI_MAJOR,
                  POPKIT_ABI_MINOR);
  if (head->struct_size < POPKIT_MODULE_DESCRIPTOR_V1_SIZE)
    return refuse(
        error, error_size, -EPROTO,
        "%s: descriptor is %u bytes, ABI %d.%d needs at least %zu: " FIX_REBUILD, path,
        head->struct_size, POPKIT_ABI_MAJOR, POPKIT_ABI_MINOR,
        (size_t)POPKIT_MODULE_DESCRIPTOR_V1_SIZE);
  /* A descriptor that claims more bytes than its symbol has would make
   * popkitd read past it. */
  if (head->struct_size > symbol_size)
    return refuse(
        error, error_size, -EPROTO,
        "%s: descriptor says it is %u bytes, but the symbol " POPKIT_MODULE_SYMBOL
        " is only %zu bytes: " FIX_REBUILD,
        path, head->struct_size, symbol_size);
  return 0;
}

/* Step 1: everything that can be learned from the file without running it.
 * modules_dir, when not NULL, is named in the "no such file" refusal. */
static int inspect(const char *path, const char *modules_dir, char *error,
                   size_t error_size) {
  struct stat st;
  if (stat(path, &st) < 0)
    return refuse_unreadable(path, modules_dir, errno, error, error_size);
  struct descriptor_head head;
  size_t symbol_size = 0;
  char why[512];
  int rc = elf_symbol_read(path, POPKIT_MODULE_SYMBOL, &head, sizeof head, &symbol_size,
                           why, sizeof why);
  if (rc < 0)
    return refuse_elf(path, rc, why, error, error_size);
  return check_head(path, &head, symbol_size, error, error_size);
}

int loader_inspect_file(const char *path, char *error, size_t error_size) {
  return inspect(path, NULL, error, error_size);
}

/* Step 2: the live descriptor, once dlopen has run the module's
 * relocations. `who` names the file and the module for the refusal. */
static int check_live(const char *who, const struct popkit_module_descriptor *d,
                      char *error, size_t error_size) {
  if (d->roles == 0)
    return refuse(error, error_size, -EINVAL,
                  "%s: declares no role (roles 0, needs POPKIT_ROLE_AUTH and/or "
                  "POPKIT_ROLE_STORE): " FIX_DESCRIPTOR,
                  who);
  if (d->roles & ~KNOWN_ROLES)
    return refuse(error, error_size, -EINVAL,
                  "%s: declares roles 0x%x, ABI %d.%d knows only 0x%x (auth and "
                  "store): " FIX_REBUILD,
                  who, d->roles, POPKIT_ABI_MAJOR, POPKIT_ABI_MINOR, KNOWN_ROLES);
  if (d->flags & ~KNOWN_FLAGS)
    return refuse(error, error_size, -EINVAL,
                  "%s: sets flags 0x%x, ABI %d.%d knows only 0x%x "
                  "(POPKIT_MODULE_BLOCKING, POPKIT_MODULE_DECORATOR): " FIX_REBUILD,
                  who, d->flags, POPKIT_ABI_MAJOR, POPKIT_ABI_MINOR, KNOWN_FLAGS);
  if ((d->flags & POPKIT_MODULE_DECORATOR) && (d->flags & POPKIT_MODULE_BLOCKING))
    /* pass_to_next belongs to the loop thread, where a blocking module's
     * operations never run. */
    return refuse(error, error_size, -EINVAL,
                  "%s: is both a decorator and blocking, which cannot work: a decorator "
                  "hands requests on from the loop thread: " FIX_DESCRIPTOR,
                  who);
  if (d->create == NULL || d->destroy == NULL)
    return refuse(error, error_size, -EINVAL,
                  "%s: has no %s function (it is NULL, every module needs create and "
                  "destroy): " FIX_DESCRIPTOR,
                  who, d->create == NULL ? "create" : "destroy");

  if (d->roles & POPKIT_ROLE_AUTH) {
    const struct popkit_auth_ops *ops = d->auth;
    if (ops == NULL)
      return refuse(
          error, error_size, -EINVAL,
          "%s: declares the auth role but its auth operations are NULL: " FIX_DESCRIPTOR,
          who);
    if (ops->struct_size < AUTH_OPS_V1_SIZE)
      return refuse(
          error, error_size, -EPROTO,
          "%s: auth operations are %u bytes, ABI %d.%d needs at least %zu: " FIX_REBUILD,
          who, ops->struct_size, POPKIT_ABI_MAJOR, POPKIT_ABI_MINOR,
          (size_t)AUTH_OPS_V1_SIZE);
    /* get_credential is optional: without it popkitd offers no challenge
     * mechanism (APOP, SCRAM) for this module's users. */
    const char *missing = ops->lookup == NULL         ? "lookup"
                          : ops->verify_plain == NULL ? "verify_plain"
                                                      : NULL;
    if (missing != NULL)
      return refuse(
          error, error_size, -EINVAL,
          "%s: auth operation %s is NULL, the auth role needs it: " FIX_DESCRIPTOR, who,
          missing);
  }

  if (d->roles & POPKIT_ROLE_STORE) {
    const struct popkit_store_ops *ops = d->store;
    if (ops == NULL)
      return refuse(error, error_size, -EINVAL,
                    "%s: declares the store role but its store operations are "
                    "NULL: " FIX_DESCRIPTOR,
                    who);
    if (ops->struct_size < STORE_OPS_V1_SIZE)
      return refuse(
          error, error_size, -EPROTO,
          "%s: store operations are %u bytes, ABI %d.%d needs at least %zu: " FIX_REBUILD,
          who, ops->struct_size, POPKIT_ABI_MAJOR, POPKIT_ABI_MINOR,
          (size_t)STORE_OPS_V1_SIZE);
    const char *missing = ops->open == NULL            ? "open"
                          : ops->read == NULL          ? "read"
                          : ops->expunge == NULL       ? "expunge"
                          : ops->close == NULL         ? "close"
                          : ops->append_begin == NULL  ? "append_begin"
                          : ops->append_write == NULL  ? "append_write"
                          : ops->append_finish == NULL ? "append_finish"
                                                       : NULL;
    if (missing != NULL)
      return refuse(
          error, error_size, -EINVAL,
          "%s: store operation %s is NULL, the store role needs it: " FIX_DESCRIPTOR, who,
          missing);
  }
  return 0;
}

static struct loaded_module *find_loaded(dev_t device, ino_t inode) {
  for (struct loaded_module *m = loaded_modules; m != NULL; m = m->next) {
    struct loaded_entry *entry = (struct loaded_entry *)m;
    if (entry->device == device && entry->inode == inode)
      return m;
  }
  return NULL;
}

/* dlopens a file that passed inspection and checks the live descriptor. */
static int open_checked(const char *path, const char *real_path, void **dl_r,
                        const struct popkit_module_descriptor **descriptor_r, char *error,
                        size_t error_size) {
  /* RTLD_LOCAL keeps one module's symbols from resolving another's;
   * RTLD_NOW reports a missing library symbol here, not at the first call
   * in the middle of a session. */
  void *dl = dlopen(real_path, RTLD_NOW | RTLD_LOCAL);
  if (dl == NULL) {
    const char *why = dlerror();
    return refuse(error, error_size, -ENOEXEC,
                  "%s: cannot be loaded: %s: install the libraries it needs (ldd %s "
                  "lists them)",
                  path, why != NULL ? why : "dlopen failed", path);
  }
  dlerror();
  const struct popkit_module_descriptor *d = dlsym(dl, POPKIT_MODULE_SYMBOL);
  int rc = 0;
  if (d == NULL) {
    rc = refuse(error, error_size, -ENOEXEC,
                "%s: not a popkit module: dlopen finds no symbol " POPKIT_MODULE_SYMBOL
                " although the file has one: reinstall the module",
                path);
  } else {
    /* The file may have been replaced between inspection and dlopen; the
     * leading fields are checked again on what was really loaded. */
    struct descriptor_head head = {d->magic, d->abi_major, d->abi_minor, d->struct_size};
    rc = check_head(path, &head, head.struct_size, error, error_size);
  }
  if (rc == 0) {
    char who[PATH_MAX + 256];
    snprintf(who, sizeof who, "%s (module \"%.64s\", %.96s)", path,
             d->name != NULL ? d->name : "",
             d->build_signature != NULL ? d->build_signature : "no build signature");
    if (d->name == NULL)
      rc = refuse(
          error, error_size, -EINVAL,
          "%s: the descriptor's name is NULL, every module needs one: " FIX_DESCRIPTOR,
          who);
    else
      rc = check_live(who, d, error, error_size);
  }
  if (rc < 0) {
    dlclose(dl);
    return rc;
  }
  *dl_r = dl;
  *descriptor_r = d;
  return 0;
}

static int load(const char *path, const char *modules_dir,
                struct loaded_module **module_r, char *error, size_t error_size) {
  *module_r = NULL;
  struct stat st;
  if (stat(path, &st) < 0)
    return refuse_unreadable(path, modules_dir, errno, error, error_size);
  struct loaded_module *known = find_loaded(st.st_dev, st.st_ino);
  if (known != NULL) {
    *module_r = known;
    return 0;
  }

  int rc = inspect(path, modules_dir, error, error_size);
  if (rc < 0)
    return rc;
  /* dlopen searches the library path for a name without a '/', so it is
   * always handed the resolved absolute path of the file just inspected. */
  char *real_path = realpath(path, NULL);
  if (real_path == NULL)
    return refuse_unreadable(path, modules_dir, errno, error, error_size);

  struct loaded_entry *entry = calloc(1, sizeof *entry);
  if (entry == NULL) {
    free(real_path);
    return refuse(error, error_size, -ENOMEM, "%s: out of memory loading the module",
                  path);
  }
  rc = open_checked(path, real_path, &entry->module.dl, &entry->module.descriptor, error,
                    error_size);
  if (rc < 0) {
    free(real_path);
    free(entry);
    return rc;
  }
  entry->module.path = real_path;
  entry->device = st.st_dev;
  entry->inode = st.st_ino;
  entry->module.next = loaded_modules;
  loaded_modules = &entry->module;
  *module_r = &entry->module;
  return 0;
}

int loader_load(const char *modules_dir, const char *name,
                struct loaded_module **module_r, char *error, size_t error_size) {
  *module_r = NULL;
  if (!valid_module_name(name)) {
    char quoted[160];
    quote_name(name, quoted, sizeof quoted);
    return refuse(error, error_size, -EINVAL,
                  "module name \"%s\" is not valid: a module name is 1 to %d letters, "
                  "digits, '-' or '_', naming the file NAME.so in modules_dir (%s): use "
                  "the name of a module installed there",
                  quoted, MODULE_NAME_MAX, modules_dir != NULL ? modules_dir : "unset");
  }
  if (modules_dir == NULL || modules_dir[0] == '\0')
    return refuse(error, error_size, -EINVAL,
                  "module \"%s\": modules_dir is empty: set modules_dir in the config to "
                  "the directory of the modules",
                  name);
  char path[PATH_MAX];
  int len = snprintf(path, sizeof path, "%s/%s.so", modules_dir, name);
  if (len < 0 || (size_t)len >= sizeof path)
    return refuse(error, error_size, -ENAMETOOLONG,
                  "module \"%s\": the path %s/%s.so is longer than PATH_MAX: choose a "
                  "shorter modules_dir",
                  name, modules_dir, name);
  return load(path, modules_dir, module_r, error, error_size);
}

int loader_load_path(const char *path, struct loaded_module **module_r, char *error,
                     size_t error_size) {
  return load(path, NULL, module_r, error, error_size);
}

void loader_unload_all(void) {
  struct loaded_module *m = loaded_modules;
  loaded_modules = NULL;
  while (m != NULL) {
    struct loaded_module *next = m->next;
    dlclose(m->dl);
    free(m->path);
    free(m);
    m = next;
  }
}
