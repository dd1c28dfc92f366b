/*
 * Reads an exported data symbol from an ELF shared object without loading
 * it. The walk is the one a dynamic linker's tools make (readelf -s): the
 * ELF header, the section headers, .dynsym and the string table it links
 * to, then the PT_LOAD program headers to turn the symbol's address into a
 * file offset.
 *
 * The file is read with pread into bounded buffers rather than mmap'ed, so
 * a file that shrinks while we read it gives a short read (an error), not a
 * SIGBUS. Every offset and size taken from the file is checked against the
 * file's size before it is used, with overflow-safe arithmetic.
 */
#include "elf_symbol.h"

#include <elf.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The native ELF flavour, decided when popkit is compiled: a module must
 * match the process that would dlopen it. */
#if UINTPTR_MAX > 0xffffffffu
typedef Elf64_Ehdr elf_ehdr;
typedef Elf64_Phdr elf_phdr;
typedef Elf64_Shdr elf_shdr;
typedef Elf64_Sym elf_sym;
#define NATIVE_CLASS ELFCLASS64
#define NATIVE_BITS 64
#define SYM_TYPE(info) ELF64_ST_TYPE(info)
#define SYM_BIND(info) ELF64_ST_BIND(info)
#else
typedef Elf32_Ehdr elf_ehdr;
typedef Elf32_Phdr elf_phdr;
typedef Elf32_Shdr elf_shdr;
typedef Elf32_Sym elf_sym;
#define NATIVE_CLASS ELFCLASS32
#define NATIVE_BITS 32
#define SYM_TYPE(info) ELF32_ST_TYPE(info)
#define SYM_BIND(info) ELF32_ST_BIND(info)
#endif

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define NATIVE_DATA ELFDATA2LSB
#else
#define NATIVE_DATA ELFDATA2MSB
#endif

#if defined(__x86_64__)
#define NATIVE_MACHINE EM_X86_64
#elif defined(__aarch64__)
#define NATIVE_MACHINE EM_AARCH64
#elif defined(__i386__)
#define NATIVE_MACHINE EM_386
#elif defined(__arm__)
#define NATIVE_MACHINE EM_ARM
#elif defined(__riscv)
#define NATIVE_MACHINE EM_RISCV
#elif defined(__powerpc64__)
#define NATIVE_MACHINE EM_PPC64
#elif defined(__powerpc__)
#define NATIVE_MACHINE EM_PPC
#elif defined(__s390__)
#define NATIVE_MACHINE EM_S390
#elif defined(__mips__)
#define NATIVE_MACHINE EM_MIPS
#elif defined(__loongarch__)
#define NATIVE_MACHINE 258 /* EM_LOONGARCH, missing from older <elf.h> */
#elif defined(__sparc__) && defined(__arch64__)
#define NATIVE_MACHINE EM_SPARCV9
#else
/* Refusing to build is better than accepting modules of any machine. */
#error "add this CPU's ELF e_machine value to core/elf_symbol.c"
#endif

/* A sanity bound on the tables read into memory; real shared objects are far
 * below it (libc's .dynsym is about 70 KiB). */
#define MAX_TABLE_BYTES (64u * 1024u * 1024u)

struct elf_file {
  int fd;
  uint64_t size;
  char *error;
  size_t error_size;
};

static int fail(struct elf_file *f, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(struct elf_file *f, int code, const char *fmt, ...) {
  if (f->error != NULL && f->error_size > 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->error, f->error_size, fmt, ap);
    va_end(ap);
  }
  return code;
}

const char *elf_machine_name(unsigned machine) {
  switch (machine) {
  case EM_X86_64:
    return "x86_64";
  case EM_AARCH64:
    return "aarch64";
  case EM_386:
    return "i386";
  case EM_ARM:
    return "arm";
  case EM_RISCV:
    return "riscv";
  case EM_PPC64:
    return "ppc64";
  case EM_PPC:
    return "ppc";
  case EM_S390:
    return "s390";
  case EM_MIPS:
    return "mips";
  case 258:
    return "loongarch";
  case EM_SPARCV9:
    return "sparc64";
  default:
    return "unknown machine";
  }
}

unsigned elf_native_machine(void) {
  return NATIVE_MACHINE;
}

static const char *elf_type_name(unsigned type) {
  switch (type) {
  case ET_NONE:
    return "no file type";
  case ET_REL:
    return "a relocatable object (.o)";
  case ET_EXEC:
    return "an executable";
  case ET_CORE:
    return "a core dump";
  default:
    return "an unknown file type";
  }
}

/* Reads exactly `length` bytes at `offset`, refusing anything that does not
 * lie wholly inside the file. `what` names the part for the error text. */
static int read_at(struct elf_file *f, uint64_t offset, uint64_t length, void *out,
                   const char *what) {
  if (offset > f->size || length > f->size - offset)
    return fail(f, ELF_SYMBOL_CORRUPT,
                "truncated or corrupt ELF file: %s (%llu bytes at offset %llu) "
                "ends past the end of the file (%llu bytes)",
                what, (unsigned long long)length, (unsigned long long)offset,
                (unsigned long long)f->size);
  char *dest = out;
  uint64_t done = 0;
  while (done < length) {
    ssize_t n =
        pread(f->fd, dest + done, (size_t)(length - done), (off_t)(offset + done));
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      int saved = errno;
      return fail(f, -saved, "cannot read the file: %s", strerror(saved));
    }
    if (n == 0)
      return fail(f, ELF_SYMBOL_CORRUPT,
                  "truncated ELF file: it shrank while %s was being read", what);
    done += (uint64_t)n;
  }
  return 0;
}

/* Reads a table of count entries of entry_size bytes into a new buffer. */
static int read_table(struct elf_file *f, uint64_t offset, uint64_t count,
                      uint64_t entry_size, void **table_r, const char *what) {
  *table_r = NULL;
  if (entry_size != 0 && count > MAX_TABLE_BYTES / entry_size)
    return fail(f, ELF_SYMBOL_CORRUPT,
                "corrupt ELF file: %s claims %llu entries, more than popkit reads", what,
                (unsigned long long)count);
  uint64_t bytes = count * entry_size;
  void *table = malloc(bytes > 0 ? (size_t)bytes : 1);
  if (table == NULL)
    return fail(f, -ENOMEM, "out of memory reading %s", what);
  int rc = read_at(f, offset, bytes, table, what);
  if (rc < 0) {
    free(table);
    return rc;
  }
  *table_r = table;
  return 0;
}

/* Checks the ELF header: magic, class, byte order, machine, type, and the
 * entry sizes the rest of the walk relies on. */
static int check_header(struct elf_file *f, elf_ehdr *eh) {
  unsigned char ident[EI_NIDENT];
  uint64_t have = f->size < EI_NIDENT ? f->size : EI_NIDENT;
  int rc = read_at(f, 0, have, ident, "the ELF identification");
  if (rc < 0)
    return rc;
  if (have < SELFMAG || memcmp(ident, ELFMAG, SELFMAG) != 0)
    return fail(f, ELF_SYMBOL_NOT_ELF, "not an ELF file");
  if (have < EI_NIDENT)
    return fail(f, ELF_SYMBOL_CORRUPT,
                "truncated ELF file: the file ends inside the ELF header (%llu bytes)",
                (unsigned long long)f->size);
  if (ident[EI_CLASS] != NATIVE_CLASS)
    return fail(f, ELF_SYMBOL_WRONG_CLASS,
                "built for another machine (%s ELF file), this host runs %d-bit programs",
                ident[EI_CLASS] == ELFCLASS32   ? "a 32-bit"
                : ident[EI_CLASS] == ELFCLASS64 ? "a 64-bit"
                                                : "an unknown-class",
                NATIVE_BITS);
  if (ident[EI_DATA] != NATIVE_DATA)
    return fail(f, ELF_SYMBOL_WRONG_CLASS,
                "built for another machine (%s ELF file), this host is %s",
                ident[EI_DATA] == ELFDATA2MSB   ? "a big-endian"
                : ident[EI_DATA] == ELFDATA2LSB ? "a little-endian"
                                                : "an unknown-byte-order",
                NATIVE_DATA == ELFDATA2LSB ? "little-endian" : "big-endian");
  if (ident[EI_VERSION] != EV_CURRENT)
    return fail(f, ELF_SYMBOL_CORRUPT, "corrupt ELF file: unknown ELF version %u",
                ident[EI_VERSION]);

  if (f->size < sizeof *eh)
    return fail(f, ELF_SYMBOL_CORRUPT,
                "truncated ELF file: the file ends inside the ELF header (%llu of %zu "
                "bytes)",
                (unsigned long long)f->size, sizeof *eh);
  rc = read_at(f, 0, sizeof *eh, eh, "the ELF header");
  if (rc < 0)
    return rc;
  if (eh->e_machine != NATIVE_MACHINE)
    return fail(f, ELF_SYMBOL_WRONG_MACHINE,
                "built for another machine (ELF machine %u, %s), this host is %s",
                (unsigned)eh->e_machine, elf_machine_name(eh->e_machine),
                elf_machine_name(NATIVE_MACHINE));
  if (eh->e_type != ET_DYN)
    return fail(f, ELF_SYMBOL_NOT_SHARED_OBJECT, "not a shared object (ELF type %u, %s)",
                (unsigned)eh->e_type, elf_type_name(eh->e_type));
  if (eh->e_shentsize != sizeof(elf_shdr))
    return fail(f, ELF_SYMBOL_CORRUPT,
                "corrupt ELF file: section header entries are %u bytes, not %zu",
                (unsigned)eh->e_shentsize, sizeof(elf_shdr));
  if (eh->e_phnum > 0 && eh->e_phentsize != sizeof(elf_phdr))
    return fail(f, ELF_SYMBOL_CORRUPT,
                "corrupt ELF file: program header entries are %u bytes, not %zu",
                (unsigned)eh->e_phentsize, sizeof(elf_phdr));
  return 0;
}

/* Reads the section header table, following the extended numbering of the
 * ELF spec (e_shnum 0: the count is in section 0's sh_size). */
static int read_sections(struct elf_file *f, const elf_ehdr *eh, elf_shdr **sections_r,
                         uint64_t *count_r) {
  uint64_t count = eh->e_shnum;
  if (eh->e_shoff == 0)
    return fail(f, ELF_SYMBOL_CORRUPT,
                "ELF file without section headers: popkit cannot find its symbols "
                "(was it stripped with sstrip?)");
  if (count == 0) {
    elf_shdr first;
    int rc = read_at(f, eh->e_shoff, sizeof first, &first, "the section header table");
    if (rc < 0)
      return rc;
    count = first.sh_size;
  }
  *count_r = count;
  return read_table(f, eh->e_shoff, count, sizeof(elf_shdr), (void **)sections_r,
                    "the section header table");
}

/* Turns a symbol's address into the file offset of its first `size` bytes
 * through the PT_LOAD segments, which is where the dynamic linker takes
 * them from. */
static int address_to_offset(struct elf_file *f, const elf_ehdr *eh, const char *symbol,
                             uint64_t address, size_t size, uint64_t *offset_r) {
  if (eh->e_phnum == PN_XNUM)
    return fail(f, ELF_SYMBOL_CORRUPT,
                "ELF file with extended program header numbering, which popkit does "
                "not read");
  elf_phdr *segments = NULL;
  int rc = read_table(f, eh->e_phoff, eh->e_phnum, sizeof(elf_phdr), (void **)&segments,
                      "the program header table");
  if (rc < 0)
    return rc;
  rc = 1; /* not found in any segment yet */
  for (unsigned i = 0; i < eh->e_phnum; i++) {
    const elf_phdr *ph = &segments[i];
    if (ph->p_type != PT_LOAD || address < ph->p_vaddr ||
        address - ph->p_vaddr >= ph->p_memsz)
      continue;
    uint64_t inside = address - ph->p_vaddr;
    if (inside > ph->p_filesz || size > ph->p_filesz - inside) {
      rc = fail(f, ELF_SYMBOL_NOT_IN_FILE,
                "symbol %s has no bytes in the file: it is zero-initialized memory "
                "(.bss), not initialized data",
                symbol);
      break;
    }
    if (ph->p_offset > UINT64_MAX - inside) {
      rc = fail(f, ELF_SYMBOL_CORRUPT, "corrupt ELF file: segment %u has offset %llu", i,
                (unsigned long long)ph->p_offset);
      break;
    }
    *offset_r = ph->p_offset + inside;
    rc = 0;
    break;
  }
  free(segments);
  if (rc > 0)
    rc = fail(f, ELF_SYMBOL_NOT_IN_FILE,
              "symbol %s lies outside every loadable segment of the file", symbol);
  return rc;
}

/* Whether entry `sym` of the dynamic symbol table is named `symbol`; the
 * name must be NUL-terminated inside the string table. */
static int symbol_named(const elf_sym *sym, const char *strings, uint64_t strings_size,
                        const char *symbol) {
  size_t want = strlen(symbol) + 1;
  if (sym->st_name >= strings_size || want > strings_size - sym->st_name)
    return 0;
  return memcmp(strings + sym->st_name, symbol, want) == 0;
}

/* Finds the defined data symbol in .dynsym and stores a copy of it. */
static int find_symbol(struct elf_file *f, const elf_shdr *sections, uint64_t count,
                       const char *symbol, elf_sym *found_r) {
  const elf_shdr *dynsym = NULL;
  for (uint64_t i = 0; i < count; i++) {
    if (sections[i].sh_type == SHT_DYNSYM) {
      dynsym = &sections[i];
      break;
    }
  }
  if (dynsym == NULL)
    return fail(f, ELF_SYMBOL_MISSING,
                "it exports no symbol %s (it has no dynamic symbol table)", symbol);
  if (dynsym->sh_entsize != sizeof(elf_sym))
    return fail(f, ELF_SYMBOL_CORRUPT,
                "corrupt ELF file: dynamic symbols are %llu bytes, not %zu",
                (unsigned long long)dynsym->sh_entsize, sizeof(elf_sym));
  if (dynsym->sh_link >= count || sections[dynsym->sh_link].sh_type != SHT_STRTAB)
    return fail(f, ELF_SYMBOL_CORRUPT,
                "corrupt ELF file: the dynamic symbol table links to section %u, "
                "which is not a string table",
                (unsigned)dynsym->sh_link);
  const elf_shdr *strtab = &sections[dynsym->sh_link];

  elf_sym *symbols = NULL;
  char *strings = NULL;
  uint64_t symbol_count = dynsym->sh_size / sizeof(elf_sym);
  int rc = read_table(f, dynsym->sh_offset, symbol_count, sizeof(elf_sym),
                      (void **)&symbols, "the dynamic symbol table");
  if (rc < 0)
    return rc;
  rc = read_table(f, strtab->sh_offset, strtab->sh_size, 1, (void **)&strings,
                  "the dynamic string table");
  if (rc < 0) {
    free(symbols);
    return rc;
  }

  int wrong_type = -1;
  rc = 1;
  for (uint64_t i = 1; i < symbol_count && rc > 0; i++) {
    const elf_sym *sym = &symbols[i];
    unsigned bind = SYM_BIND(sym->st_info);
    /* Undefined entries are references to another object's symbol, and
     * local ones cannot be found by dlsym: neither is an export. */
    if (sym->st_shndx == SHN_UNDEF || bind == STB_LOCAL ||
        !symbol_named(sym, strings, strtab->sh_size, symbol))
      continue;
    if (SYM_TYPE(sym->st_info) != STT_OBJECT) {
      wrong_type = SYM_TYPE(sym->st_info);
      continue;
    }
    if (sym->st_shndx == SHN_ABS || sym->st_shndx == SHN_COMMON) {
      rc =
          fail(f, ELF_SYMBOL_NOT_IN_FILE,
               "symbol %s is not stored in the file (absolute or common symbol)", symbol);
      break;
    }
    *found_r = *sym;
    rc = 0;
  }
  if (rc > 0 && wrong_type >= 0)
    rc = fail(f, ELF_SYMBOL_MISSING,
              "it exports %s, but as code or another non-data symbol (ELF symbol type "
              "%d), not as a data object",
              symbol, wrong_type);
  else if (rc > 0)
    rc = fail(f, ELF_SYMBOL_MISSING, "it exports no symbol %s", symbol);
  free(strings);
  free(symbols);
  return rc;
}

static int read_symbol(struct elf_file *f, const char *symbol, void *out, size_t size,
                       size_t *symbol_size_r) {
  elf_ehdr eh;
  int rc = check_header(f, &eh);
  if (rc < 0)
    return rc;
  elf_shdr *sections = NULL;
  uint64_t count = 0;
  rc = read_sections(f, &eh, &sections, &count);
  if (rc < 0)
    return rc;
  elf_sym sym = {0};
  rc = find_symbol(f, sections, count, symbol, &sym);
  free(sections);
  if (rc < 0)
    return rc;
  if (sym.st_size < size)
    return fail(f, ELF_SYMBOL_TOO_SMALL,
                "symbol %s is %llu bytes, at least %zu are needed", symbol,
                (unsigned long long)sym.st_size, size);
  uint64_t offset = 0;
  rc = address_to_offset(f, &eh, symbol, sym.st_value, size, &offset);
  if (rc < 0)
    return rc;
  rc = read_at(f, offset, size, out, "the symbol's bytes");
  if (rc < 0)
    return rc;
  if (symbol_size_r != NULL)
    *symbol_size_r = sym.st_size > SIZE_MAX ? SIZE_MAX : (size_t)sym.st_size;
  return 0;
}

int elf_symbol_read(const char *path, const char *symbol, void *out, size_t size,
                    size_t *symbol_size_r, char *error, size_t error_size) {
  struct elf_file f = {.fd = -1, .error = error, .error_size = error_size};
  if (error != NULL && error_size > 0)
    error[0] = '\0';
  /* O_NONBLOCK keeps a FIFO planted in place of a module from hanging the
   * open; it changes nothing for a regular file. */
  f.fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (f.fd < 0) {
    int saved = errno;
    return fail(&f, -saved, "cannot open the file: %s", strerror(saved));
  }
  struct stat st;
  int rc;
  if (fstat(f.fd, &st) < 0) {
    int saved = errno;
    rc = fail(&f, -saved, "cannot stat the file: %s", strerror(saved));
  } else if (!S_ISREG(st.st_mode)) {
    rc = fail(&f, ELF_SYMBOL_NOT_ELF, "not an ELF file: it is not a regular file");
  } else {
    f.size = (uint64_t)st.st_size;
    rc = read_symbol(&f, symbol, out, size, symbol_size_r);
  }
  close(f.fd);
  return rc;
}
