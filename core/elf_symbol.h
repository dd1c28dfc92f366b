/*
 * Reads the bytes of an exported data symbol straight from an ELF shared
 * object, without dlopen. The module loader uses it to check a module's
 * descriptor before any code of the module (a constructor, say) can run.
 *
 * The file is treated as hostile: every offset and size in it is checked
 * against the file's real size, so a truncated or forged file yields an
 * error, never a crash or an unbounded allocation.
 */
#ifndef POPKIT_CORE_ELF_SYMBOL_H
#define POPKIT_CORE_ELF_SYMBOL_H

#include <errno.h>
#include <stddef.h>

/* Each kind of refusal has its own code, so that a caller can word its own
 * advice; the error text describes what was found and what was needed. A
 * failure to open or read the file returns the negative errno of that call
 * (e.g. -ENOENT, -EACCES). */
#define ELF_SYMBOL_NOT_ELF (-ENOEXEC)           /* no ELF magic */
#define ELF_SYMBOL_CORRUPT (-ELIBBAD)           /* truncated or inconsistent */
#define ELF_SYMBOL_WRONG_CLASS (-EMEDIUMTYPE)   /* 32/64-bit or byte order */
#define ELF_SYMBOL_WRONG_MACHINE (-EXDEV)       /* built for another CPU */
#define ELF_SYMBOL_NOT_SHARED_OBJECT (-ENOTSUP) /* executable, .o, core file */
#define ELF_SYMBOL_MISSING (-ENOMSG)            /* no such defined data symbol */
#define ELF_SYMBOL_NOT_IN_FILE (-ENODATA)       /* in .bss, or in no PT_LOAD */
#define ELF_SYMBOL_TOO_SMALL (-EMSGSIZE)        /* symbol smaller than asked */

/* Copies the first `size` bytes of the defined data (STT_OBJECT) symbol
 * `symbol` of the shared object at `path` into `out`, as they are in the
 * file (no relocation is applied, so only plain data is meaningful). The
 * file must be an ELF shared object of this process's class, byte order and
 * machine. On success *symbol_size_r (if not NULL) receives the symbol's
 * st_size, which is at least `size`.
 *
 * Returns 0, or one of the codes above (or a negative errno) with a one-line
 * description in `error` that does not repeat the path. */
int elf_symbol_read(const char *path, const char *symbol, void *out, size_t size,
                    size_t *symbol_size_r, char *error, size_t error_size);

/* The name of an ELF e_machine value ("x86_64", "aarch64", ...), or
 * "unknown machine" for one this table does not know. */
const char *elf_machine_name(unsigned machine);

/* The e_machine value this process was built for, and its name. */
unsigned elf_native_machine(void);

#endif
