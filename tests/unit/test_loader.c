/*
 * Tests of the module loader (core/loader.c) and of the ELF reader it uses
 * before any module code runs (core/elf_symbol.c).
 *
 * The modules come from tests/modules, most of them broken on purpose; the
 * ones that popkitd must refuse from the file alone carry a constructor that
 * creates the file named by POPKIT_TEST_MARKER, so every refusal also checks
 * that no code of the module ran. Corrupted ELF files are made here, by
 * patching a copy of good_auth.so.
 */
#include <check.h>
#include <dirent.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check_run.h"
#include "elf_symbol.h"
#include "loader.h"
#include "popkit/module.h"

/* "MAJOR.MINOR" of the SDK these tests are built with. */
#define ABI_TEXT POPKIT_STRINGIFY(POPKIT_ABI_MAJOR) "." POPKIT_STRINGIFY(POPKIT_ABI_MINOR)

#define ERROR_SIZE 2048

static char work_dir[1024]; /* a fresh directory for each test */
static char marker[PATH_MAX];

static const char *test_modules_dir(void) {
  const char *dir = getenv("POPKIT_TEST_MODULES_DIR");
  ck_assert_msg(dir != NULL && dir[0] != '\0', "POPKIT_TEST_MODULES_DIR is not set");
  return dir;
}

static void setup(void) {
  snprintf(work_dir, sizeof work_dir, "%s/test_loader.XXXXXX",
           getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp");
  ck_assert_ptr_nonnull(mkdtemp(work_dir));
  snprintf(marker, sizeof marker, "%s/marker", work_dir);
  ck_assert_int_eq(setenv("POPKIT_TEST_MARKER", marker, 1), 0);
}

static void teardown(void) {
  loader_unload_all();
  DIR *dir = opendir(work_dir);
  if (dir != NULL) {
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
      if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0)
        continue;
      char path[PATH_MAX + 256];
      snprintf(path, sizeof path, "%s/%s", work_dir, entry->d_name);
      if (unlink(path) < 0)
        rmdir(path); /* the directory made by the FIFO test */
    }
    closedir(dir);
  }
  rmdir(work_dir);
}

static int marker_exists(void) {
  return access(marker, F_OK) == 0;
}

/* Asserts that text contains every one of the NULL-terminated parts. */
static void assert_contains_all(const char *text, ...) {
  va_list ap;
  va_start(ap, text);
  const char *part;
  while ((part = va_arg(ap, const char *)) != NULL)
    ck_assert_msg(strstr(text, part) != NULL, "\"%s\" is not in the message: %s", part,
                  text);
  va_end(ap);
}

/* Loads test module `name`, expects a one-line refusal that contains every
 * part, and that the module ran no code. Returns the code. */
static int expect_refusal(const char *name, char *error) {
  struct loaded_module *module = (struct loaded_module *)1;
  int rc = loader_load(test_modules_dir(), name, &module, error, ERROR_SIZE);
  ck_assert_msg(rc < 0, "%s.so was accepted", name);
  ck_assert_ptr_null(module);
  ck_assert_msg(error[0] != '\0', "refusal of %s.so without a message", name);
  ck_assert_msg(strchr(error, '\n') == NULL, "refusal is not one line: %s", error);
  ck_assert_msg(!marker_exists(), "%s.so ran code although it was refused", name);
  return rc;
}

static void module_path(char *path, size_t size, const char *name) {
  snprintf(path, size, "%s/%s.so", test_modules_dir(), name);
}

/* ---- Refused from the file ---------------------------------------------- */

START_TEST(refuses_wrong_major) {
  char error[ERROR_SIZE], path[PATH_MAX], theirs[64], ours[64];
  expect_refusal("wrong_major", error);
  module_path(path, sizeof path, "wrong_major");
  snprintf(theirs, sizeof theirs, "module ABI 2.%d,", POPKIT_ABI_MINOR);
  snprintf(ours, sizeof ours, "popkitd %s speaks ABI %d.%d", POPKIT_VERSION,
           POPKIT_ABI_MAJOR, POPKIT_ABI_MINOR);
  ck_assert_msg(strncmp(error, path, strlen(path)) == 0, "message starts elsewhere: %s",
                error);
  assert_contains_all(error, theirs, ours,
                      "rebuild the module against this popkitd's include/popkit", NULL);
}
END_TEST

START_TEST(refuses_newer_minor) {
  char error[ERROR_SIZE], path[PATH_MAX], theirs[64], ours[64];
  expect_refusal("newer_minor", error);
  module_path(path, sizeof path, "newer_minor");
  snprintf(theirs, sizeof theirs, "module needs ABI %d.%d,", POPKIT_ABI_MAJOR,
           POPKIT_ABI_MINOR + 1);
  snprintf(ours, sizeof ours, "speaks ABI %d.%d", POPKIT_ABI_MAJOR, POPKIT_ABI_MINOR);
  assert_contains_all(error, path, theirs, ours, "upgrade popkitd or rebuild the module",
                      NULL);
}
END_TEST

START_TEST(refuses_short_struct) {
  char error[ERROR_SIZE], path[PATH_MAX], needs[64];
  expect_refusal("short_struct", error);
  module_path(path, sizeof path, "short_struct");
  snprintf(needs, sizeof needs, "needs at least %zu",
           (size_t)POPKIT_MODULE_DESCRIPTOR_V1_SIZE);
  assert_contains_all(error, path, "descriptor is 24 bytes", needs, "rebuild the module",
                      NULL);
}
END_TEST

START_TEST(refuses_bad_magic) {
  char error[ERROR_SIZE], path[PATH_MAX];
  expect_refusal("bad_magic", error);
  module_path(path, sizeof path, "bad_magic");
  assert_contains_all(error, path, "popkit_module is not a module descriptor",
                      "magic 0x12345678", "expected 0x444d4b50", "rebuild", NULL);
}
END_TEST

START_TEST(refuses_library_without_descriptor) {
  const char *names[] = {"no_descriptor", "libforeign"};
  for (size_t i = 0; i < 2; i++) {
    char error[ERROR_SIZE], path[PATH_MAX];
    ck_assert_int_eq(expect_refusal(names[i], error), ELF_SYMBOL_MISSING);
    module_path(path, sizeof path, names[i]);
    assert_contains_all(error, path, "not a popkit module",
                        "exports no symbol popkit_module",
                        "POPKIT_MODULE_EXPORT const struct popkit_module_descriptor "
                        "popkit_module",
                        NULL);
  }
}
END_TEST

START_TEST(refuses_text_file) {
  char error[ERROR_SIZE], path[PATH_MAX], expected[PATH_MAX + 64];
  ck_assert_int_eq(expect_refusal("not_elf", error), ELF_SYMBOL_NOT_ELF);
  module_path(path, sizeof path, "not_elf");
  snprintf(expected, sizeof expected, "%s: not a popkit module: not an ELF file", path);
  assert_contains_all(error, expected, NULL);
}
END_TEST

START_TEST(refuses_descriptor_in_bss) {
  char error[ERROR_SIZE], path[PATH_MAX];
  ck_assert_int_eq(expect_refusal("bss_descriptor", error), ELF_SYMBOL_NOT_IN_FILE);
  module_path(path, sizeof path, "bss_descriptor");
  assert_contains_all(error, path, "no bytes in the file", ".bss",
                      "initialized const data", NULL);
}
END_TEST

START_TEST(refuses_missing_file) {
  char error[ERROR_SIZE], expected[PATH_MAX + 128];
  ck_assert_int_eq(expect_refusal("not_installed", error), -ENOENT);
  snprintf(expected, sizeof expected,
           "%s/not_installed.so: no such module file (modules_dir is %s;",
           test_modules_dir(), test_modules_dir());
  assert_contains_all(error, expected, "installed?", NULL);
}
END_TEST

START_TEST(refuses_names_that_leave_modules_dir) {
  char long_name[66];
  memset(long_name, 'a', 65);
  long_name[65] = '\0';
  const char *names[] = {"../x",         "a/b",       "",    long_name,
                         "good_auth.so", "good auth", "/etc"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    char error[ERROR_SIZE];
    ck_assert_int_eq(expect_refusal(names[i], error), -EINVAL);
    assert_contains_all(error, "is not valid", "1 to 64 letters, digits, '-' or '_'",
                        test_modules_dir(), NULL);
  }
  /* 64 characters is still a name: it is refused for want of a file. */
  char error[ERROR_SIZE];
  long_name[64] = '\0';
  ck_assert_int_eq(expect_refusal(long_name, error), -ENOENT);
}
END_TEST

START_TEST(quotes_control_characters_of_a_bad_name) {
  char error[ERROR_SIZE];
  expect_refusal("evil\n\x1b[31m", error);
  assert_contains_all(error, "\"evil\\x0a\\x1b[31m\"", NULL);
  ck_assert_ptr_null(strchr(error, '\x1b'));
}
END_TEST

START_TEST(refuses_fifo_and_directory_without_hanging) {
  char fifo[PATH_MAX + 16], dir[PATH_MAX + 16];
  snprintf(fifo, sizeof fifo, "%s/fifo.so", work_dir);
  snprintf(dir, sizeof dir, "%s/dir.so", work_dir);
  ck_assert_int_eq(mkfifo(fifo, 0600), 0);
  ck_assert_int_eq(mkdir(dir, 0700), 0);
  struct loaded_module *module;
  char error[ERROR_SIZE];
  ck_assert_int_lt(loader_load(work_dir, "fifo", &module, error, sizeof error), 0);
  assert_contains_all(error, fifo, "not a regular file", NULL);
  ck_assert_int_lt(loader_load(work_dir, "dir", &module, error, sizeof error), 0);
  assert_contains_all(error, dir, "not a popkit module", NULL);
}
END_TEST

START_TEST(inspect_file_reads_without_running) {
  char path[PATH_MAX], error[ERROR_SIZE] = "";
  module_path(path, sizeof path, "good_auth");
  ck_assert_int_eq(loader_inspect_file(path, error, sizeof error), 0);
  ck_assert_msg(!marker_exists(), "inspecting good_auth.so ran its constructor");
  module_path(path, sizeof path, "wrong_major");
  ck_assert_int_lt(loader_inspect_file(path, error, sizeof error), 0);
  assert_contains_all(error, path, "module ABI 2.", NULL);
  ck_assert(!marker_exists());
}
END_TEST

/* ---- Refused after dlopen, by the live descriptor ----------------------- */

struct live_case {
  const char *name;
  const char *part;
};

static const struct live_case live_cases[] = {
    {"no_name", "name is NULL"},
    {"no_roles", "declares no role (roles 0"},
    {"unknown_role", "declares roles 0x5, ABI " ABI_TEXT " knows only 0x3"},
    {"unknown_flag", "sets flags 0x80"},
    {"null_create", "has no create function"},
    {"auth_without_ops", "declares the auth role but its auth operations are NULL"},
    {"short_auth_ops", "auth operations are 8 bytes, ABI " ABI_TEXT " needs at least 32"},
    {"null_verify", "auth operation verify_plain is NULL"},
    {"store_null_op", "store operation append_write is NULL"},
    {"decorator_blocking", "is both a decorator and blocking, which cannot work"},
};

START_TEST(refuses_incomplete_live_descriptor) {
  const struct live_case *c = &live_cases[_i];
  struct loaded_module *module;
  char error[ERROR_SIZE], path[PATH_MAX];
  int rc = loader_load(test_modules_dir(), c->name, &module, error, sizeof error);
  ck_assert_msg(rc < 0, "%s.so was accepted", c->name);
  module_path(path, sizeof path, c->name);
  assert_contains_all(error, path, c->part, "popkit-sdk abi " ABI_TEXT, NULL);
  ck_assert_ptr_null(strchr(error, '\n'));
  /* The loader keeps nothing of a refused module: a good one still loads. */
  ck_assert_int_eq(
      loader_load(test_modules_dir(), "good_auth", &module, error, sizeof error), 0);
}
END_TEST

START_TEST(refuses_module_whose_library_is_missing) {
  struct loaded_module *module;
  char error[ERROR_SIZE], path[PATH_MAX];
  int rc =
      loader_load(test_modules_dir(), "missing_library", &module, error, sizeof error);
  ck_assert_int_lt(rc, 0);
  module_path(path, sizeof path, "missing_library");
  assert_contains_all(error, path, "cannot be loaded", "libforeign.so",
                      "install the libraries it needs", NULL);
  ck_assert_ptr_null(strchr(error, '\n'));
}
END_TEST

/* ---- Accepted modules --------------------------------------------------- */

static enum popkit_result last_result;
static int completions;

static void record_complete(struct popkit_request *req, enum popkit_result result,
                            const char *log_text) {
  last_result = result;
  completions++;
}

START_TEST(loads_good_auth_and_runs_it) {
  struct loaded_module *module;
  char error[ERROR_SIZE] = "";
  int rc = loader_load(test_modules_dir(), "good_auth", &module, error, sizeof error);
  ck_assert_msg(rc == 0, "good_auth refused: %s", error);
  /* The marker proves that the refusals above would have seen a
   * constructor run. */
  ck_assert(marker_exists());
  ck_assert_str_eq(module->descriptor->name, "good_auth");
  ck_assert_ptr_nonnull(module->dl);
  ck_assert_msg(module->path[0] == '/' && strstr(module->path, "/good_auth.so") != NULL,
                "path %s", module->path);

  struct popkit_host host = {.struct_size = sizeof host, .complete = record_complete};
  struct popkit_module_args args = {.struct_size = sizeof args, .host = &host};
  void *instance = NULL;
  ck_assert_int_eq(module->descriptor->create(&args, &instance, error, sizeof error), 0);
  struct popkit_auth_request req = {
      .base = {.magic = POPKIT_REQUEST_MAGIC, .kind = POPKIT_REQ_AUTH_VERIFY_PLAIN},
      .user = "alice",
      .password = "secret",
      .client_address = ""};
  module->descriptor->auth->verify_plain(instance, &req);
  ck_assert_int_eq(completions, 1);
  ck_assert_int_eq(last_result, POPKIT_OK);
  req.password = "wrong";
  module->descriptor->auth->verify_plain(instance, &req);
  ck_assert_int_eq(last_result, POPKIT_FAIL);
  module->descriptor->destroy(instance);
}
END_TEST

START_TEST(same_file_is_one_module) {
  struct loaded_module *first, *again, *by_path, *by_link;
  char error[ERROR_SIZE] = "", path[PATH_MAX + 16], link_path[PATH_MAX + 16];
  ck_assert_int_eq(
      loader_load(test_modules_dir(), "good_auth", &first, error, sizeof error), 0);
  ck_assert_int_eq(
      loader_load(test_modules_dir(), "good_auth", &again, error, sizeof error), 0);
  ck_assert_ptr_eq(first, again);

  snprintf(path, sizeof path, "%s/./good_auth.so", test_modules_dir());
  ck_assert_int_eq(loader_load_path(path, &by_path, error, sizeof error), 0);
  ck_assert_ptr_eq(first, by_path);

  snprintf(link_path, sizeof link_path, "%s/alias.so", work_dir);
  module_path(path, sizeof path, "good_auth");
  ck_assert_int_eq(symlink(path, link_path), 0);
  ck_assert_int_eq(loader_load(work_dir, "alias", &by_link, error, sizeof error), 0);
  ck_assert_ptr_eq(first, by_link);

  /* After unloading, loading works again from scratch. */
  loader_unload_all();
  struct loaded_module *fresh;
  ck_assert_int_eq(
      loader_load(test_modules_dir(), "good_auth", &fresh, error, sizeof error), 0);
  ck_assert_str_eq(fresh->descriptor->name, "good_auth");
}
END_TEST

START_TEST(loads_slow_auth) {
  struct loaded_module *module;
  char error[ERROR_SIZE] = "";
  int rc = loader_load(test_modules_dir(), "slow_auth", &module, error, sizeof error);
  ck_assert_msg(rc == 0, "slow_auth refused: %s", error);
  ck_assert_ptr_nonnull(module->descriptor->cancel);
}
END_TEST

START_TEST(loads_decorator) {
  /* The control for decorator_blocking: the same source without
   * POPKIT_MODULE_BLOCKING loads. */
  struct loaded_module *module;
  char error[ERROR_SIZE] = "";
  int rc = loader_load(test_modules_dir(), "decorator", &module, error, sizeof error);
  ck_assert_msg(rc == 0, "decorator refused: %s", error);
  ck_assert_uint_eq(module->descriptor->flags, POPKIT_MODULE_DECORATOR);
}
END_TEST

/* ---- Corrupted and foreign ELF files ------------------------------------ */

/* A copy of good_auth.so in memory, to patch and write out. */
struct elf_copy {
  unsigned char *data;
  size_t size;
};

static struct elf_copy read_good_auth(void) {
  char path[PATH_MAX];
  module_path(path, sizeof path, "good_auth");
  FILE *f = fopen(path, "rb");
  ck_assert_ptr_nonnull(f);
  struct elf_copy copy = {0};
  ck_assert_int_eq(fseek(f, 0, SEEK_END), 0);
  copy.size = (size_t)ftell(f);
  rewind(f);
  copy.data = malloc(copy.size);
  ck_assert_ptr_nonnull(copy.data);
  ck_assert_uint_eq(fread(copy.data, 1, copy.size, f), copy.size);
  fclose(f);
  return copy;
}

/* Writes the first `size` bytes of the copy as work_dir/name.so. */
static void write_copy(const struct elf_copy *copy, size_t size, const char *name,
                       char *path, size_t path_size) {
  snprintf(path, path_size, "%s/%s.so", work_dir, name);
  FILE *f = fopen(path, "wb");
  ck_assert_ptr_nonnull(f);
  ck_assert_uint_eq(fwrite(copy->data, 1, size, f), size);
  ck_assert_int_eq(fclose(f), 0);
}

static Elf64_Ehdr *ehdr_of(struct elf_copy *copy) {
  return (Elf64_Ehdr *)copy->data;
}

static Elf64_Shdr *section_of_type(struct elf_copy *copy, uint32_t type) {
  Elf64_Ehdr *eh = ehdr_of(copy);
  Elf64_Shdr *sections = (Elf64_Shdr *)(copy->data + eh->e_shoff);
  for (unsigned i = 0; i < eh->e_shnum; i++)
    if (sections[i].sh_type == type)
      return &sections[i];
  ck_abort_msg("good_auth.so has no section of type %u", type);
  return NULL;
}

static Elf64_Sym *descriptor_symbol(struct elf_copy *copy) {
  Elf64_Ehdr *eh = ehdr_of(copy);
  Elf64_Shdr *sections = (Elf64_Shdr *)(copy->data + eh->e_shoff);
  Elf64_Shdr *dynsym = section_of_type(copy, SHT_DYNSYM);
  const char *strings = (const char *)copy->data + sections[dynsym->sh_link].sh_offset;
  Elf64_Sym *symbols = (Elf64_Sym *)(copy->data + dynsym->sh_offset);
  for (size_t i = 1; i < dynsym->sh_size / sizeof(Elf64_Sym); i++)
    if (strcmp(strings + symbols[i].st_name, POPKIT_MODULE_SYMBOL) == 0)
      return &symbols[i];
  ck_abort_msg("good_auth.so exports no popkit_module");
  return NULL;
}

/* Loads work_dir/name.so through the loader, expecting a refusal with the
 * given code and message parts. */
static void expect_patched_refusal(const char *name, int code, ...) {
  struct loaded_module *module;
  char error[ERROR_SIZE] = "";
  int rc = loader_load(work_dir, name, &module, error, sizeof error);
  ck_assert_msg(rc == code, "%s.so: code %d, expected %d: %s", name, rc, code, error);
  ck_assert_ptr_null(strchr(error, '\n'));
  ck_assert_msg(!marker_exists(), "%s.so ran code although it was refused", name);
  va_list ap;
  va_start(ap, code);
  const char *part;
  while ((part = va_arg(ap, const char *)) != NULL)
    ck_assert_msg(strstr(error, part) != NULL, "\"%s\" is not in: %s", part, error);
  va_end(ap);
}

START_TEST(unpatched_copy_loads) {
  /* The control for every patched case below: the copy itself is fine. */
  struct elf_copy copy = read_good_auth();
  char path[PATH_MAX + 64], error[ERROR_SIZE] = "";
  write_copy(&copy, copy.size, "copy", path, sizeof path);
  struct loaded_module *module;
  ck_assert_msg(loader_load(work_dir, "copy", &module, error, sizeof error) == 0, "%s",
                error);
  free(copy.data);
}
END_TEST

START_TEST(refuses_module_for_another_machine) {
  struct elf_copy copy = read_good_auth();
  char path[PATH_MAX + 64], ours[64];
  unsigned foreign = elf_native_machine() == EM_AARCH64 ? EM_X86_64 : EM_AARCH64;
  ehdr_of(&copy)->e_machine = (Elf64_Half)foreign;
  write_copy(&copy, copy.size, "arm", path, sizeof path);
  char found[128];
  snprintf(found, sizeof found, "built for another machine (ELF machine %u, %s)", foreign,
           elf_machine_name(foreign));
  snprintf(ours, sizeof ours, "this host is %s", elf_machine_name(elf_native_machine()));
  expect_patched_refusal("arm", ELF_SYMBOL_WRONG_MACHINE, path, found, ours,
                         "rebuild the module on this machine", NULL);
  free(copy.data);
}
END_TEST

START_TEST(refuses_other_class_and_byte_order) {
  struct elf_copy copy = read_good_auth();
  char path[PATH_MAX + 64];
  copy.data[EI_CLASS] = ELFCLASS32;
  write_copy(&copy, copy.size, "class32", path, sizeof path);
  expect_patched_refusal("class32", ELF_SYMBOL_WRONG_CLASS, path, "a 32-bit ELF file",
                         "64-bit", "rebuild the module on this machine", NULL);
  copy.data[EI_CLASS] = ELFCLASS64;
  copy.data[EI_DATA] = ELFDATA2MSB;
  write_copy(&copy, copy.size, "bigendian", path, sizeof path);
  expect_patched_refusal("bigendian", ELF_SYMBOL_WRONG_CLASS, path, "big-endian",
                         "this host is little-endian", NULL);
  free(copy.data);
}
END_TEST

START_TEST(refuses_executable) {
  struct elf_copy copy = read_good_auth();
  char path[PATH_MAX + 64];
  ehdr_of(&copy)->e_type = ET_EXEC;
  write_copy(&copy, copy.size, "exec", path, sizeof path);
  expect_patched_refusal("exec", ELF_SYMBOL_NOT_SHARED_OBJECT, path,
                         "not a shared object (ELF type 2, an executable)",
                         "build it as a shared object", NULL);
  free(copy.data);
}
END_TEST

START_TEST(refuses_truncated_header) {
  struct elf_copy copy = read_good_auth();
  char path[PATH_MAX + 64];
  write_copy(&copy, 40, "short", path, sizeof path);
  expect_patched_refusal("short", ELF_SYMBOL_CORRUPT, path, "truncated ELF file",
                         "reinstall or rebuild the module", NULL);
  write_copy(&copy, 3, "tiny", path, sizeof path);
  expect_patched_refusal("tiny", ELF_SYMBOL_NOT_ELF, path, "not an ELF file", NULL);
  write_copy(&copy, 0, "empty", path, sizeof path);
  expect_patched_refusal("empty", ELF_SYMBOL_NOT_ELF, path, "not an ELF file", NULL);
  free(copy.data);
}
END_TEST

START_TEST(refuses_section_table_past_end) {
  struct elf_copy copy = read_good_auth();
  char path[PATH_MAX + 64];
  Elf64_Ehdr *eh = ehdr_of(&copy);
  Elf64_Off shoff = eh->e_shoff;

  eh->e_shoff = copy.size + 4096;
  write_copy(&copy, copy.size, "shoff", path, sizeof path);
  expect_patched_refusal("shoff", ELF_SYMBOL_CORRUPT, path, "section header table",
                         "past the end of the file", NULL);

  eh->e_shoff = UINT64_MAX - 16; /* offset + size overflows */
  write_copy(&copy, copy.size, "overflow", path, sizeof path);
  expect_patched_refusal("overflow", ELF_SYMBOL_CORRUPT, path, "past the end", NULL);

  eh->e_shoff = shoff;
  eh->e_shnum = 0xfff0;
  write_copy(&copy, copy.size, "shnum", path, sizeof path);
  expect_patched_refusal("shnum", ELF_SYMBOL_CORRUPT, path, "past the end", NULL);

  /* The file cut inside the section table. */
  eh->e_shnum = (Elf64_Half)((copy.size - shoff) / sizeof(Elf64_Shdr));
  write_copy(&copy, copy.size - 10, "cut", path, sizeof path);
  expect_patched_refusal("cut", ELF_SYMBOL_CORRUPT, path, "past the end", NULL);
  free(copy.data);
}
END_TEST

START_TEST(refuses_hostile_symbol_tables) {
  struct elf_copy copy = read_good_auth();
  char path[PATH_MAX + 64];
  Elf64_Shdr *dynsym = section_of_type(&copy, SHT_DYNSYM);
  Elf64_Shdr saved = *dynsym;

  dynsym->sh_link = 9999;
  write_copy(&copy, copy.size, "link", path, sizeof path);
  expect_patched_refusal("link", ELF_SYMBOL_CORRUPT, path, "not a string table", NULL);
  *dynsym = saved;

  dynsym->sh_size = (Elf64_Xword)1 << 40;
  write_copy(&copy, copy.size, "dynsize", path, sizeof path);
  expect_patched_refusal("dynsize", ELF_SYMBOL_CORRUPT, path, "dynamic symbol table",
                         NULL);
  *dynsym = saved;

  dynsym->sh_offset = copy.size - 8;
  write_copy(&copy, copy.size, "dynoff", path, sizeof path);
  expect_patched_refusal("dynoff", ELF_SYMBOL_CORRUPT, path, "past the end", NULL);
  *dynsym = saved;

  dynsym->sh_entsize = 7;
  write_copy(&copy, copy.size, "entsize", path, sizeof path);
  expect_patched_refusal("entsize", ELF_SYMBOL_CORRUPT, path, "dynamic symbols are 7",
                         NULL);
  *dynsym = saved;

  Elf64_Shdr *strtab =
      (Elf64_Shdr *)(copy.data + ehdr_of(&copy)->e_shoff) + saved.sh_link;
  Elf64_Xword strsize = strtab->sh_size;
  strtab->sh_size = copy.size * 2;
  write_copy(&copy, copy.size, "strsize", path, sizeof path);
  expect_patched_refusal("strsize", ELF_SYMBOL_CORRUPT, path, "string table", NULL);
  strtab->sh_size = strsize;

  Elf64_Sym *sym = descriptor_symbol(&copy);
  Elf64_Sym saved_sym = *sym;
  sym->st_name = 0xfffffff0u;
  write_copy(&copy, copy.size, "stname", path, sizeof path);
  expect_patched_refusal("stname", ELF_SYMBOL_MISSING, path, "exports no symbol", NULL);
  *sym = saved_sym;

  sym->st_value = 0x7fff00000000ull;
  write_copy(&copy, copy.size, "stvalue", path, sizeof path);
  expect_patched_refusal("stvalue", ELF_SYMBOL_NOT_IN_FILE, path,
                         "outside every loadable segment", NULL);
  *sym = saved_sym;

  sym->st_size = 4;
  write_copy(&copy, copy.size, "stsize", path, sizeof path);
  expect_patched_refusal("stsize", ELF_SYMBOL_TOO_SMALL, path,
                         "popkit_module is not a module descriptor", "is 4 bytes", NULL);
  *sym = saved_sym;

  sym->st_info = ELF64_ST_INFO(STB_GLOBAL, STT_FUNC);
  write_copy(&copy, copy.size, "functype", path, sizeof path);
  expect_patched_refusal("functype", ELF_SYMBOL_MISSING, path, "not as a data object",
                         NULL);
  *sym = saved_sym;

  sym->st_shndx = SHN_UNDEF;
  write_copy(&copy, copy.size, "undef", path, sizeof path);
  expect_patched_refusal("undef", ELF_SYMBOL_MISSING, path, "exports no symbol", NULL);
  free(copy.data);
}
END_TEST

/* Every single-byte change to the headers and tables, and every truncation
 * of the file, must give an answer and never a crash (the test runs under
 * AddressSanitizer in the sanitizer build). */
START_TEST(survives_every_header_mutation_and_truncation) {
  struct elf_copy copy = read_good_auth();
  char path[PATH_MAX + 64];
  write_copy(&copy, copy.size, "fuzz", path, sizeof path);
  int fd = open(path, O_RDWR);
  ck_assert_int_ge(fd, 0);
  Elf64_Ehdr *eh = ehdr_of(&copy);
  Elf64_Shdr *dynsym = section_of_type(&copy, SHT_DYNSYM);
  struct {
    uint64_t offset, size;
  } regions[] = {
      {0, sizeof(Elf64_Ehdr)},
      {eh->e_phoff, (uint64_t)eh->e_phnum * sizeof(Elf64_Phdr)},
      {eh->e_shoff, (uint64_t)eh->e_shnum * sizeof(Elf64_Shdr)},
      {dynsym->sh_offset, dynsym->sh_size},
  };
  const unsigned char values[] = {0x00, 0xff, 0x80, 0x7f};
  unsigned accepted = 0, refused = 0;
  for (size_t r = 0; r < sizeof regions / sizeof regions[0]; r++) {
    for (uint64_t at = regions[r].offset; at < regions[r].offset + regions[r].size;
         at++) {
      for (size_t v = 0; v < sizeof values; v++) {
        if (copy.data[at] == values[v])
          continue;
        ck_assert_int_eq(pwrite(fd, &values[v], 1, (off_t)at), 1);
        unsigned char head[12];
        char error[512] = "";
        int rc = elf_symbol_read(path, POPKIT_MODULE_SYMBOL, head, sizeof head, NULL,
                                 error, sizeof error);
        if (rc == 0) {
          accepted++;
        } else {
          ck_assert_msg(rc < 0 && error[0] != '\0', "byte %llu: code %d without a text",
                        (unsigned long long)at, rc);
          refused++;
        }
        ck_assert_int_eq(pwrite(fd, &copy.data[at], 1, (off_t)at), 1);
      }
    }
  }
  /* Both outcomes happen: many bytes (padding, unused fields) do not
   * matter, many do. */
  ck_assert_uint_gt(accepted, 0);
  ck_assert_uint_gt(refused, 0);

  for (off_t length = (off_t)copy.size - 1; length >= 0; length--) {
    ck_assert_int_eq(ftruncate(fd, length), 0);
    unsigned char head[12];
    char error[512] = "";
    int rc = elf_symbol_read(path, POPKIT_MODULE_SYMBOL, head, sizeof head, NULL, error,
                             sizeof error);
    /* The section table is at the end of the file, so no cut file is whole. */
    ck_assert_msg(rc < 0 && error[0] != '\0', "cut at %lld: code %d", (long long)length,
                  rc);
  }
  close(fd);
  free(copy.data);
}
END_TEST

START_TEST(reads_the_descriptor_head_from_the_file) {
  char path[PATH_MAX], error[512] = "";
  module_path(path, sizeof path, "good_auth");
  struct {
    uint32_t magic;
    uint16_t major, minor;
    uint32_t struct_size;
  } head;
  size_t symbol_size = 0;
  ck_assert_int_eq(elf_symbol_read(path, POPKIT_MODULE_SYMBOL, &head, sizeof head,
                                   &symbol_size, error, sizeof error),
                   0);
  ck_assert_uint_eq(head.magic, POPKIT_MODULE_MAGIC);
  ck_assert_uint_eq(head.major, POPKIT_ABI_MAJOR);
  ck_assert_uint_eq(head.minor, POPKIT_ABI_MINOR);
  ck_assert_uint_eq(head.struct_size, sizeof(struct popkit_module_descriptor));
  ck_assert_uint_eq(symbol_size, sizeof(struct popkit_module_descriptor));
  ck_assert(!marker_exists());
}
END_TEST

/* ---- The real modules of the build tree --------------------------------- */

static void expect_real_module(const char *name, uint32_t role) {
  const char *dir = getenv("POPKIT_BUILD_MODULES_DIR");
  ck_assert_msg(dir != NULL && dir[0] != '\0', "POPKIT_BUILD_MODULES_DIR is not set");
  struct loaded_module *module;
  char error[ERROR_SIZE] = "";
  int rc = loader_load(dir, name, &module, error, sizeof error);
  ck_assert_msg(rc == 0, "%s refused: %s", name, error);
  ck_assert_str_eq(module->descriptor->name, name);
  ck_assert_msg(module->descriptor->roles & role, "%s lacks its role", name);
}

START_TEST(loads_maildir) {
  expect_real_module("maildir", POPKIT_ROLE_STORE);
}
END_TEST

START_TEST(loads_passwd_file) {
  expect_real_module("passwd-file", POPKIT_ROLE_AUTH);
}
END_TEST

int main(void) {
  Suite *suite = suite_create("loader");

  TCase *tc = check_tcase(suite, "refused from the file", setup, teardown);
  tcase_add_test(tc, refuses_wrong_major);
  tcase_add_test(tc, refuses_newer_minor);
  tcase_add_test(tc, refuses_short_struct);
  tcase_add_test(tc, refuses_bad_magic);
  tcase_add_test(tc, refuses_library_without_descriptor);
  tcase_add_test(tc, refuses_text_file);
  tcase_add_test(tc, refuses_descriptor_in_bss);
  tcase_add_test(tc, refuses_missing_file);
  tcase_add_test(tc, refuses_names_that_leave_modules_dir);
  tcase_add_test(tc, quotes_control_characters_of_a_bad_name);
  tcase_add_test(tc, refuses_fifo_and_directory_without_hanging);
  tcase_add_test(tc, inspect_file_reads_without_running);

  tc = check_tcase(suite, "refused after dlopen", setup, teardown);
  tcase_add_loop_test(tc, refuses_incomplete_live_descriptor, 0,
                      (int)(sizeof live_cases / sizeof live_cases[0]));
  tcase_add_test(tc, refuses_module_whose_library_is_missing);

  tc = check_tcase(suite, "accepted", setup, teardown);
  tcase_add_test(tc, loads_good_auth_and_runs_it);
  tcase_add_test(tc, same_file_is_one_module);
  tcase_add_test(tc, loads_slow_auth);
  tcase_add_test(tc, loads_decorator);

  tc = check_tcase(suite, "elf", setup, teardown);
  tcase_add_test(tc, reads_the_descriptor_head_from_the_file);
  tcase_add_test(tc, unpatched_copy_loads);
  tcase_add_test(tc, refuses_module_for_another_machine);
  tcase_add_test(tc, refuses_other_class_and_byte_order);
  tcase_add_test(tc, refuses_executable);
  tcase_add_test(tc, refuses_truncated_header);
  tcase_add_test(tc, refuses_section_table_past_end);
  tcase_add_test(tc, refuses_hostile_symbol_tables);
  tcase_add_test(tc, survives_every_header_mutation_and_truncation);

  /* Last: the real modules are written in parallel with this test. */
  tc = check_tcase(suite, "real modules", setup, teardown);
  tcase_add_test(tc, loads_maildir);
  tcase_add_test(tc, loads_passwd_file);

  int failed = check_run(suite);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
