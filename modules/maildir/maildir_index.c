#include "maildir_index.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "maildir_fs.h"
#include "maildir_list.h"
#include "maildir_name.h"

#define VERSION_LINE "popkit-index 1\n"

/* A directory's mtime is trusted only when it is at least this much older
 * than a clock reading taken before the directory was looked at. Linux
 * stamps inodes from a coarse clock (up to a tick, 1 to 10 ms, behind the
 * real time), and some file systems keep whole seconds (ext3, many NFS
 * servers) or two (FAT): two changes of a directory within one tick can
 * leave it with one mtime, so a recent mtime may be shared by a change
 * that is still to come. Every change made after the clock reading is
 * stamped later than that reading minus the granularity, so later than an
 * mtime two seconds older than the reading: a trusted mtime that is still
 * the directory's mtime means nothing changed since. Dovecot's maildir
 * sync meets the same problem with a one-second margin (MAILDIR_SYNC_SECS).
 * An mtime in the future (a clock set back) is not trusted either. */
#define SETTLE_SECONDS 2

/* The longest file name a directory holds (NAME_MAX on Linux). */
#define NAME_LEN_MAX 255

/* The shortest records: "new 0 0 0 1 x\n" and "new 0 1 x\n". They bound
 * the counts of the header, so a damaged count cannot make the loader
 * allocate more than the file's size says. */
#define MESSAGE_RECORD_MIN 14
#define DUPLICATE_RECORD_MIN 10

static int is_settled(const struct timespec *mtime, const struct timespec *now) {
  if (mtime->tv_sec < 0)
    return 0;
  time_t limit = now->tv_sec - SETTLE_SECONDS;
  return mtime->tv_sec < limit ||
         (mtime->tv_sec == limit && mtime->tv_nsec <= now->tv_nsec);
}

int maildir_index_stamp_take(int dir_fd, struct maildir_index_stamp *stamp) {
  /* The clock first: a change made after the stat below is made after this
   * reading, so is_settled() compares against a time no later than it. */
  struct timespec now;
  if (clock_gettime(CLOCK_REALTIME, &now) != 0)
    return -errno;
  for (int subdir = MAILDIR_NEW; subdir <= MAILDIR_CUR; subdir++) {
    struct stat st;
    /* Followed like the scan follows it: a new/ that is a symbolic link to
     * a directory is listed from that directory. */
    if (fstatat(dir_fd, maildir_subdir_name((enum maildir_subdir)subdir), &st, 0) != 0)
      return -errno;
    if (!S_ISDIR(st.st_mode))
      return -ENOTDIR;
    stamp->mtime[subdir] = st.st_mtim;
    stamp->trusted[subdir] = is_settled(&st.st_mtim, &now);
  }
  return 0;
}

/* ---- Reading ------------------------------------------------------------ */

/* The unread part of the index, and the number of the record it is in, for
 * the warning. A record is a line, except that a name may hold '\n'. */
struct cursor {
  const char *p;
  const char *end;
  size_t record;
};

static int take_literal(struct cursor *c, const char *literal) {
  size_t len = strlen(literal);
  if ((size_t)(c->end - c->p) < len || memcmp(c->p, literal, len) != 0)
    return -EINVAL;
  c->p += len;
  return 0;
}

/* Decimal digits up to terminator, which is consumed too. */
static int take_decimal(struct cursor *c, char terminator, uint64_t *value_r) {
  const char *stop = c->p;
  while (stop < c->end && *stop >= '0' && *stop <= '9')
    stop++;
  if (stop == c->end || *stop != terminator ||
      maildir_parse_decimal(c->p, stop, value_r) != 0)
    return -EINVAL;
  c->p = stop + 1;
  if (terminator == '\n')
    c->record++;
  return 0;
}

static int take_subdir(struct cursor *c, enum maildir_subdir *subdir_r) {
  if (take_literal(c, "new ") == 0) {
    *subdir_r = MAILDIR_NEW;
    return 0;
  }
  if (take_literal(c, "cur ") == 0) {
    *subdir_r = MAILDIR_CUR;
    return 0;
  }
  return -EINVAL;
}

/* "<length> <name>\n": a name the scan could have listed, which nothing in
 * the index can turn into a path outside new/ and cur/. */
static const char *take_name(struct cursor *c, const char **name_r, size_t *len_r) {
  uint64_t len;
  if (take_decimal(c, ' ', &len) != 0)
    return "no name length";
  if (len == 0 || len > NAME_LEN_MAX || len >= (uint64_t)(c->end - c->p) ||
      c->p[len] != '\n')
    return "a name of the wrong length";
  const char *name = c->p;
  if (name[0] == '.')
    return "a name no message can have";
  for (size_t i = 0; i < len; i++) {
    if (name[i] == '/' || name[i] == '\0')
      return "a name no message can have";
  }
  *name_r = name;
  *len_r = (size_t)len;
  c->p += len + 1;
  c->record++;
  return NULL;
}

static char *copy_name(const char *name, size_t len) {
  char *copy = malloc(len + 1);
  if (copy != NULL) {
    memcpy(copy, name, len);
    copy[len] = '\0';
  }
  return copy;
}

/* The header: the version, then the mtimes the index was written for.
 * Sets *stale when they are not the directories' mtimes now. */
static const char *read_header(struct cursor *c, const struct maildir_index_stamp *stamp,
                               int *stale) {
  if (take_literal(c, VERSION_LINE) != 0)
    return "not a version 1 index";
  c->record++;
  *stale = 0;
  for (int subdir = MAILDIR_NEW; subdir <= MAILDIR_CUR; subdir++) {
    enum maildir_subdir found;
    uint64_t sec, nsec;
    if (take_subdir(c, &found) != 0 || found != (enum maildir_subdir)subdir ||
        take_decimal(c, ' ', &sec) != 0 || take_decimal(c, '\n', &nsec) != 0 ||
        nsec >= 1000000000u)
      return "no modification time of new/ and cur/";
    const struct timespec *now = &stamp->mtime[subdir];
    if (sec != (uint64_t)now->tv_sec || nsec != (uint64_t)now->tv_nsec)
      *stale = 1;
  }
  return NULL;
}

static const char *read_message(struct cursor *c, struct maildir_mailbox *mailbox,
                                int *out_of_memory) {
  struct maildir_message *m = &mailbox->messages[mailbox->count];
  uint64_t raw, size, has_crlf_size;
  enum maildir_subdir subdir;
  if (take_subdir(c, &subdir) != 0 || take_decimal(c, ' ', &raw) != 0 ||
      take_decimal(c, ' ', &size) != 0 || take_decimal(c, ' ', &has_crlf_size) != 0 ||
      has_crlf_size > 1)
    return "not a message";
  const char *name;
  size_t len;
  const char *why = take_name(c, &name, &len);
  if (why != NULL)
    return why;
  /* Every field is set below: the array is not zeroed first. */
  m->name = copy_name(name, len);
  if (m->name == NULL) {
    *out_of_memory = 1;
    return "out of memory";
  }
  mailbox->count++;
  m->base_len = maildir_base_len(m->name);
  m->subdir = subdir;
  m->timestamp = maildir_name_timestamp(m->name);
  m->raw_size = raw;
  m->size = size;
  m->has_crlf_size = (int)has_crlf_size;
  m->deleted = 0;
  maildir_uid_from_base(m->name, m->base_len, m->uid);
  /* The scan takes a size from ",W=" whenever the name has one (most
   * names have no ',' at all, which memchr finds fastest). */
  uint64_t named;
  int has_w = memchr(m->name, ',', m->base_len) != NULL &&
              maildir_name_field(m->name, m->base_len, 'W', &named) == 0;
  if (has_w != m->has_crlf_size || (has_w && named != size))
    return "a size that disagrees with the name's W=";
  /* Listing order, one message per base name, as the scan leaves it. */
  if (mailbox->count > 1 && maildir_listing_compare(m - 1, m) >= 0)
    return "a message out of order";
  return NULL;
}

static const char *read_duplicate(struct cursor *c, struct maildir_mailbox *mailbox,
                                  int *out_of_memory) {
  struct maildir_duplicate *d = &mailbox->duplicates[mailbox->duplicate_count];
  enum maildir_subdir subdir;
  uint64_t listed;
  if (take_subdir(c, &subdir) != 0 || take_decimal(c, ' ', &listed) != 0 ||
      listed >= mailbox->count)
    return "not a duplicate of a listed message";
  const char *name;
  size_t len;
  const char *why = take_name(c, &name, &len);
  if (why != NULL)
    return why;
  d->name = copy_name(name, len);
  if (d->name == NULL) {
    *out_of_memory = 1;
    return "out of memory";
  }
  d->subdir = subdir;
  mailbox->duplicate_count++;
  /* A duplicate is another file with the base name of a listed message;
   * an expunge of that message deletes both. */
  const struct maildir_message *m = &mailbox->messages[listed];
  if (maildir_base_len(d->name) != m->base_len ||
      memcmp(d->name, m->name, m->base_len) != 0)
    return "a duplicate with another base name";
  if (subdir == m->subdir && strcmp(d->name, m->name) == 0)
    return "a duplicate that is the listed file";
  memcpy(d->uid, m->uid, sizeof d->uid);
  return NULL;
}

/* Everything after the header. Fills the mailbox's listing as far as it
 * goes; the caller frees it on failure. */
static const char *read_listing(struct cursor *c, struct maildir_mailbox *mailbox,
                                int *out_of_memory) {
  uint64_t count, duplicate_count;
  if (take_literal(c, "count ") != 0 || take_decimal(c, ' ', &count) != 0 ||
      take_decimal(c, '\n', &duplicate_count) != 0)
    return "no count";
  size_t left = (size_t)(c->end - c->p);
  if (count > left / MESSAGE_RECORD_MIN || duplicate_count > left / DUPLICATE_RECORD_MIN)
    return "counts larger than the file";
  mailbox->messages = malloc((count > 0 ? (size_t)count : 1) * sizeof *mailbox->messages);
  mailbox->duplicates = calloc(duplicate_count > 0 ? (size_t)duplicate_count : 1,
                               sizeof *mailbox->duplicates);
  if (mailbox->messages == NULL || mailbox->duplicates == NULL) {
    *out_of_memory = 1;
    return "out of memory";
  }
  while (mailbox->count < count) {
    const char *why = read_message(c, mailbox, out_of_memory);
    if (why != NULL)
      return why;
  }
  while (mailbox->duplicate_count < duplicate_count) {
    const char *why = read_duplicate(c, mailbox, out_of_memory);
    if (why != NULL)
      return why;
  }
  if (take_literal(c, "end\n") != 0 || c->p != c->end)
    return "more or fewer records than counted";
  return NULL;
}

int maildir_index_load(struct maildir_mailbox *mailbox, const struct popkit_request *req,
                       const struct maildir_index_stamp *stamp) {
  /* A recent mtime equal to the recorded one proves nothing (the recorded
   * one was settled when written, so this only happens after the clock
   * went back). */
  if (!stamp->trusted[MAILDIR_NEW] || !stamp->trusted[MAILDIR_CUR])
    return 1;
  char *text;
  size_t size;
  int rc = maildir_read_small_file(mailbox->dir_fd, MAILDIR_INDEX, &text, &size);
  if (rc == -ENOENT)
    return 1;
  if (rc == -ENOMEM)
    return rc;
  if (rc != 0) {
    maildir_log(mailbox->instance, req, POPKIT_LOG_WARNING,
                "cannot read %s/%s: %s; the mailbox is scanned", mailbox->path,
                MAILDIR_INDEX, strerror(-rc));
    return 1;
  }
  struct cursor c = {.p = text, .end = text + size, .record = 1};
  int stale = 0, out_of_memory = 0;
  const char *why = read_header(&c, stamp, &stale);
  if (why == NULL && !stale)
    why = read_listing(&c, mailbox, &out_of_memory);
  free(text);
  if (why == NULL && !stale)
    return 0;
  maildir_list_free(mailbox);
  if (out_of_memory)
    return -ENOMEM;
  if (why != NULL)
    maildir_log(mailbox->instance, req, POPKIT_LOG_WARNING,
                "%s/%s is damaged (record %zu: %s); the mailbox is scanned and the "
                "index rewritten",
                mailbox->path, MAILDIR_INDEX, c.record, why);
  return 1;
}

/* ---- Writing ------------------------------------------------------------ */

/* The position of the listed message a duplicate belongs to: the one with
 * its base name, found by the listing order, which sorts base names. */
static const struct maildir_message *
listed_message_of(const struct maildir_mailbox *mailbox,
                  const struct maildir_duplicate *d) {
  struct maildir_message key = {0};
  key.name = d->name;
  key.base_len = maildir_base_len(d->name);
  key.timestamp = maildir_name_timestamp(d->name);
  size_t low = 0, high = mailbox->count;
  while (low < high) {
    size_t middle = low + (high - low) / 2;
    int c = maildir_listing_compare(&key, &mailbox->messages[middle]);
    if (c == 0)
      return &mailbox->messages[middle];
    if (c < 0)
      high = middle;
    else
      low = middle + 1;
  }
  return NULL;
}

/* Room for a record's fixed part: a subdir, three numbers, separators. */
#define RECORD_FIXED_MAX (4 + 3 * 21 + 3)

/* Writes "<subdir> " at out; returns the end. */
static char *put_subdir(char *out, enum maildir_subdir subdir) {
  memcpy(out, maildir_subdir_name(subdir), 3);
  out[3] = ' ';
  return out + 4;
}

/* Writes value in decimal and then separator at out; returns the end.
 * snprintf would cost most of the time the index takes to write. */
static char *put_decimal(char *out, uint64_t value, char separator) {
  char digits[20];
  size_t n = 0;
  do {
    digits[n++] = (char)('0' + value % 10);
    value /= 10;
  } while (value != 0);
  while (n > 0)
    *out++ = digits[--n];
  *out++ = separator;
  return out;
}

/* Writes "<length> <name>\n" at out; returns the end. */
static char *put_name(char *out, const char *name) {
  size_t len = strlen(name);
  out = put_decimal(out, len, ' ');
  memcpy(out, name, len);
  out[len] = '\n';
  return out + len + 1;
}

static int format_index(const struct maildir_mailbox *mailbox,
                        const struct maildir_index_stamp *stamp, char **text_r,
                        size_t *len_r) {
  size_t capacity = 256;
  for (size_t i = 0; i < mailbox->count; i++)
    capacity += RECORD_FIXED_MAX + strlen(mailbox->messages[i].name) + 1;
  for (size_t i = 0; i < mailbox->duplicate_count; i++)
    capacity += RECORD_FIXED_MAX + strlen(mailbox->duplicates[i].name) + 1;
  char *text = malloc(capacity);
  if (text == NULL)
    return -ENOMEM;
  char *out = text + snprintf(text, capacity,
                              VERSION_LINE "new %lld %ld\ncur %lld %ld\ncount %zu %zu\n",
                              (long long)stamp->mtime[MAILDIR_NEW].tv_sec,
                              stamp->mtime[MAILDIR_NEW].tv_nsec,
                              (long long)stamp->mtime[MAILDIR_CUR].tv_sec,
                              stamp->mtime[MAILDIR_CUR].tv_nsec, mailbox->count,
                              mailbox->duplicate_count);
  for (size_t i = 0; i < mailbox->count; i++) {
    const struct maildir_message *m = &mailbox->messages[i];
    out = put_subdir(out, m->subdir);
    out = put_decimal(out, m->raw_size, ' ');
    out = put_decimal(out, m->size, ' ');
    out = put_decimal(out, (uint64_t)m->has_crlf_size, ' ');
    out = put_name(out, m->name);
  }
  for (size_t i = 0; i < mailbox->duplicate_count; i++) {
    const struct maildir_duplicate *d = &mailbox->duplicates[i];
    const struct maildir_message *m = listed_message_of(mailbox, d);
    if (m == NULL) {
      free(text);
      return -EINVAL;
    }
    out = put_subdir(out, d->subdir);
    out = put_decimal(out, (uint64_t)(m - mailbox->messages), ' ');
    out = put_name(out, d->name);
  }
  memcpy(out, "end\n", 4);
  *text_r = text;
  *len_r = (size_t)(out + 4 - text);
  return 0;
}

void maildir_index_save(const struct maildir_mailbox *mailbox,
                        const struct popkit_request *req,
                        const struct maildir_index_stamp *stamp) {
  /* A directory that changed within SETTLE_SECONDS of the listing may
   * change again under the same mtime: an index of it could hide that
   * change, so there is none until a later open finds it settled. The old
   * index goes too, so that no open reads it only to find it stale. */
  if (!stamp->trusted[MAILDIR_NEW] || !stamp->trusted[MAILDIR_CUR]) {
    if (unlinkat(mailbox->dir_fd, MAILDIR_INDEX, 0) != 0 && errno != ENOENT)
      maildir_log(mailbox->instance, req, POPKIT_LOG_WARNING,
                  "cannot remove the stale %s/%s: %s", mailbox->path, MAILDIR_INDEX,
                  strerror(errno));
    return;
  }
  char *text = NULL;
  size_t len;
  int rc = format_index(mailbox, stamp, &text, &len);
  /* The index is only a shortcut, and a torn one fails to parse: neither
   * the directory nor (beyond what maildir_replace_file does) the file
   * needs more care. */
  if (rc == 0)
    rc = maildir_replace_file(mailbox->dir_fd, MAILDIR_INDEX, MAILDIR_INDEX_TMP, text,
                              len, 0);
  free(text);
  if (rc != 0)
    maildir_log(mailbox->instance, req, POPKIT_LOG_WARNING,
                "cannot write the listing index %s/%s: %s; the next open scans again",
                mailbox->path, MAILDIR_INDEX, strerror(-rc));
}
