#include "passwd_table.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct passwd_table {
  char *buffer; /* the file's content; entries point into it */
  size_t buffer_size;
  struct passwd_entry *entries;
  size_t count;
  /* Open addressing with linear probing: a slot holds an entry index + 1,
   * 0 for empty. There are at least twice as many slots as lines, so a
   * probe sequence stays short. */
  uint32_t *slots;
  size_t slot_mask;
};

struct parse_state {
  const char *name;
  passwd_warn_fn *warn;
  void *context;
  size_t warnings;
};

static void __attribute__((format(printf, 3, 4)))
warn_line(struct parse_state *state, size_t line, const char *fmt, ...) {
  state->warnings++;
  if (state->warnings > PASSWD_MAX_WARNINGS)
    return;
  char reason[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(reason, sizeof reason, fmt, ap);
  va_end(ap);
  char text[1024];
  snprintf(text, sizeof text, "%s:%zu: %s", state->name, line, reason);
  state->warn(state->context, text);
}

/* FNV-1a: user names come from a file the administrator wrote, so nobody
 * can choose keys that collide; a simple, fast hash is enough. */
static uint32_t hash_user(const char *user, size_t len) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < len; i++) {
    h ^= (unsigned char)user[i];
    h *= 16777619u;
  }
  return h;
}

/* Finds the slot that holds user, or the empty slot where it would go. */
static size_t find_slot(const struct passwd_table *table, const char *user, size_t len) {
  size_t slot = hash_user(user, len) & table->slot_mask;
  for (;;) {
    uint32_t index = table->slots[slot];
    if (index == 0)
      return slot;
    const struct passwd_entry *entry = &table->entries[index - 1];
    if (entry->user_len == len && memcmp(entry->user, user, len) == 0)
      return slot;
    slot = (slot + 1) & table->slot_mask;
  }
}

static size_t count_lines(const char *buffer, size_t size) {
  size_t lines = 1;
  const char *p = buffer;
  const char *end = buffer + size;
  while ((p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
    lines++;
    p++;
  }
  return lines;
}

static int is_blank(char c) {
  return c == ' ' || c == '\t';
}

/* Reads one line (without its line end) into the table, or warns why not. */
static void parse_line(struct passwd_table *table, struct parse_state *state, char *line,
                       size_t len, size_t line_no) {
  if (len > PASSWD_MAX_LINE_BYTES) {
    warn_line(state, line_no, "line longer than %d bytes, skipped",
              PASSWD_MAX_LINE_BYTES);
    return;
  }
  size_t first = 0;
  while (first < len && is_blank(line[first]))
    first++;
  if (first == len || line[first] == '#')
    return;
  if (memchr(line, '\0', len) != NULL) {
    warn_line(state, line_no, "NUL byte in the line, skipped");
    return;
  }
  char *colon = memchr(line, ':', len);
  if (colon == NULL) {
    warn_line(state, line_no, "no ':' between user and hash, skipped");
    return;
  }
  if (colon == line) {
    warn_line(state, line_no, "empty user name, skipped");
    return;
  }
  char *hash = colon + 1;
  char *hash_end = memchr(hash, ':', (size_t)(line + len - hash));
  if (hash_end == NULL)
    hash_end = line + len;
  size_t user_len = (size_t)(colon - line);
  size_t slot = find_slot(table, line, user_len);
  if (table->slots[slot] != 0) {
    warn_line(state, line_no, "duplicate user, line %zu wins, skipped",
              table->entries[table->slots[slot] - 1].line);
    return;
  }
  /* Terminating in place: hash_end is a ':', the CR or LF of this line, or
   * the NUL after the buffer's last byte. */
  *colon = '\0';
  *hash_end = '\0';
  struct passwd_entry *entry = &table->entries[table->count];
  entry->user = line;
  entry->user_len = user_len;
  entry->hash = hash;
  entry->line = line_no;
  table->count++;
  table->slots[slot] = (uint32_t)table->count;
}

static void parse_lines(struct passwd_table *table, struct parse_state *state,
                        size_t size) {
  char *p = table->buffer;
  char *end = table->buffer + size;
  size_t line_no = 0;
  while (p < end) {
    char *newline = memchr(p, '\n', (size_t)(end - p));
    char *line_end = newline != NULL ? newline : end;
    size_t len = (size_t)(line_end - p);
    line_no++;
    if (len > 0 && p[len - 1] == '\r')
      len--;
    parse_line(table, state, p, len, line_no);
    p = newline != NULL ? newline + 1 : end;
  }
}

/* The file's content holds every user's secret, {PLAIN} passwords among
 * them: it is wiped before its memory goes back to the allocator. */
static void free_content(char *buffer, size_t size) {
  explicit_bzero(buffer, size);
  free(buffer);
}

int passwd_table_parse(const char *name, char *buffer, size_t size, passwd_warn_fn *warn,
                       void *context, struct passwd_table **table_r) {
  buffer[size] = '\0';
  size_t lines = count_lines(buffer, size);
  if (lines >= UINT32_MAX / 4) {
    free_content(buffer, size);
    return -EFBIG;
  }
  size_t slot_count = 16;
  while (slot_count < 2 * lines)
    slot_count *= 2;
  struct passwd_table *table = calloc(1, sizeof *table);
  if (table == NULL) {
    free_content(buffer, size);
    return -ENOMEM;
  }
  table->buffer = buffer;
  table->buffer_size = size;
  table->entries = calloc(lines, sizeof *table->entries);
  table->slots = calloc(slot_count, sizeof *table->slots);
  table->slot_mask = slot_count - 1;
  if (table->entries == NULL || table->slots == NULL) {
    passwd_table_free(table);
    return -ENOMEM;
  }
  struct parse_state state = {.name = name, .warn = warn, .context = context};
  parse_lines(table, &state, size);
  if (state.warnings > PASSWD_MAX_WARNINGS) {
    char text[1024];
    snprintf(text, sizeof text, "%s: %zu more problem lines skipped without a warning",
             name, state.warnings - PASSWD_MAX_WARNINGS);
    warn(context, text);
  }
  *table_r = table;
  return 0;
}

void passwd_table_free(struct passwd_table *table) {
  if (table == NULL)
    return;
  free_content(table->buffer, table->buffer_size);
  free(table->entries);
  free(table->slots);
  free(table);
}

const struct passwd_entry *passwd_table_find(const struct passwd_table *table,
                                             const char *user) {
  size_t len = strlen(user);
  uint32_t index = table->slots[find_slot(table, user, len)];
  return index == 0 ? NULL : &table->entries[index - 1];
}

size_t passwd_table_count(const struct passwd_table *table) {
  return table->count;
}

const struct passwd_entry *passwd_table_entry(const struct passwd_table *table,
                                              size_t index) {
  return &table->entries[index];
}
