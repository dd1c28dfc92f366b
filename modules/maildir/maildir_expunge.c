#include "maildir_expunge.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "maildir_fs.h"
#include "maildir_name.h"
#include "maildir_quote.h"

/* A record names a file directly in new/ or cur/ and nothing else: a
 * damaged journal must not delete popkit.lock, a directory or a file
 * outside the maildir. */
static int record_is_valid(const char *record, size_t len) {
  if (len <= 4 || (memcmp(record, "new/", 4) != 0 && memcmp(record, "cur/", 4) != 0))
    return 0;
  const char *name = record + 4;
  return name[0] != '.' && memchr(name, '/', len - 4) == NULL;
}

/* Removes one file of the journal. A file another agent renamed since the
 * journal was written (new->cur, a flag change) is found again by its base
 * name, and so is every copy of it; one that is really gone counts as
 * deleted. */
static int remove_record(int dir_fd, const char *record) {
  if (unlinkat(dir_fd, record, 0) == 0)
    return 0;
  if (errno != ENOENT)
    return -errno;
  const char *name = record + 4;
  size_t base_len = maildir_base_len(name);
  /* Each pass removes one file, so the bound only guards against a file
   * system that keeps answering with the same name. */
  for (int pass = 0; pass < 64; pass++) {
    enum maildir_subdir subdir;
    char *found;
    int rc = maildir_find_base(dir_fd, name, base_len, &subdir, &found);
    if (rc == -ENOENT)
      return 0;
    if (rc != 0)
      return rc;
    size_t len = strlen(found) + 5;
    char *path = malloc(len);
    if (path == NULL) {
      free(found);
      return -ENOMEM;
    }
    snprintf(path, len, "%s/%s", maildir_subdir_name(subdir), found);
    free(found);
    rc = unlinkat(dir_fd, path, 0) == 0 || errno == ENOENT ? 0 : -errno;
    free(path);
    if (rc != 0)
      return rc;
  }
  return -ELOOP;
}

/* Carries out a committed journal; removes it once every file is gone and
 * the removals are durable. Returns the first error; the journal then stays
 * for the next attempt. */
static int apply_journal(struct maildir_mailbox *mailbox,
                         const struct popkit_request *req, const char *data,
                         size_t size) {
  int first_error = 0;
  const char *p = data, *end = data + size;
  while (p < end) {
    const char *nul = memchr(p, '\0', (size_t)(end - p));
    char shown[160];
    if (nul == NULL) {
      /* The journal is fsynced before it is renamed into place, so this is
       * damage from elsewhere; the files it named in full are still gone. */
      maildir_log(mailbox->instance, req, POPKIT_LOG_WARNING,
                  "%s ends in an incomplete record \"%s\"; ignored", MAILDIR_JOURNAL,
                  maildir_quote(p, (size_t)(end - p), shown, sizeof shown));
      break;
    }
    size_t len = (size_t)(nul - p);
    if (!record_is_valid(p, len)) {
      maildir_log(mailbox->instance, req, POPKIT_LOG_WARNING,
                  "%s holds a record that names no message, \"%s\"; ignored",
                  MAILDIR_JOURNAL, maildir_quote(p, len, shown, sizeof shown));
    } else {
      int rc = remove_record(mailbox->dir_fd, p);
      if (rc != 0) {
        maildir_log(mailbox->instance, req, POPKIT_LOG_WARNING, "cannot delete %s: %s",
                    maildir_quote(p, len, shown, sizeof shown), strerror(-rc));
        if (first_error == 0)
          first_error = rc;
      }
    }
    p = nul + 1;
  }
  for (int subdir = MAILDIR_NEW; subdir <= MAILDIR_CUR; subdir++) {
    int rc = maildir_fsync_dir_at(mailbox->dir_fd,
                                  maildir_subdir_name((enum maildir_subdir)subdir));
    if (rc != 0 && first_error == 0)
      first_error = rc;
  }
  if (first_error != 0)
    return first_error;
  if (unlinkat(mailbox->dir_fd, MAILDIR_JOURNAL, 0) != 0 && errno != ENOENT)
    return -errno;
  /* Were the removal of the journal lost in a crash, the next open would
   * replay it and find every file gone: harmless, so a failure here is
   * only logged. */
  int rc = maildir_fsync_dir_at(mailbox->dir_fd, ".");
  if (rc != 0)
    maildir_log(mailbox->instance, req, POPKIT_LOG_WARNING,
                "cannot fsync %s after removing %s: %s", mailbox->path, MAILDIR_JOURNAL,
                strerror(-rc));
  return 0;
}

int maildir_journal_recover(struct maildir_mailbox *mailbox,
                            const struct popkit_request *req, char *error,
                            size_t error_size) {
  if (unlinkat(mailbox->dir_fd, MAILDIR_JOURNAL_TMP, 0) == 0) {
    maildir_log(mailbox->instance, req, POPKIT_LOG_INFO,
                "dropped %s/%s, a deletion that never committed", mailbox->path,
                MAILDIR_JOURNAL_TMP);
  } else if (errno != ENOENT) {
    maildir_log(mailbox->instance, req, POPKIT_LOG_WARNING, "cannot remove %s/%s: %s",
                mailbox->path, MAILDIR_JOURNAL_TMP, strerror(errno));
  }
  char *data;
  size_t size;
  int rc = maildir_read_small_file(mailbox->dir_fd, MAILDIR_JOURNAL, &data, &size);
  if (rc == -ENOENT)
    return 0;
  if (rc != 0) {
    snprintf(error, error_size, "cannot read %s/%s: %s", mailbox->path, MAILDIR_JOURNAL,
             strerror(-rc));
    return rc;
  }
  maildir_log(mailbox->instance, req, POPKIT_LOG_INFO,
              "finishing the deletion recorded in %s/%s", mailbox->path, MAILDIR_JOURNAL);
  rc = apply_journal(mailbox, req, data, size);
  free(data);
  if (rc != 0)
    snprintf(error, error_size,
             "cannot finish the deletion recorded in %s/%s: %s; the mailbox stays closed "
             "until it can",
             mailbox->path, MAILDIR_JOURNAL, strerror(-rc));
  return rc;
}

static int append_record(char **data, size_t *size, size_t *capacity,
                         enum maildir_subdir subdir, const char *name) {
  size_t len = strlen(name);
  if (*size + len + 5 > *capacity) {
    size_t bigger_capacity = (*capacity + len + 5) * 2;
    char *bigger = realloc(*data, bigger_capacity);
    if (bigger == NULL)
      return -ENOMEM;
    *data = bigger;
    *capacity = bigger_capacity;
  }
  memcpy(*data + *size, maildir_subdir_name(subdir), 3);
  (*data)[*size + 3] = '/';
  memcpy(*data + *size + 4, name, len + 1);
  *size += len + 5;
  return 0;
}

static int build_journal(const struct maildir_mailbox *mailbox, const uint64_t *indexes,
                         size_t index_count, char **data_r, size_t *size_r) {
  char *data = NULL;
  size_t size = 0, capacity = 0;
  int rc = 0;
  for (size_t i = 0; i < index_count && rc == 0; i++) {
    const struct maildir_message *m = &mailbox->messages[indexes[i]];
    if (m->deleted)
      continue;
    rc = append_record(&data, &size, &capacity, m->subdir, m->name);
    for (size_t d = 0; d < mailbox->duplicate_count && rc == 0; d++) {
      const struct maildir_duplicate *dup = &mailbox->duplicates[d];
      if (strcmp(dup->uid, m->uid) == 0)
        rc = append_record(&data, &size, &capacity, dup->subdir, dup->name);
    }
  }
  if (rc != 0) {
    free(data);
    return rc;
  }
  *data_r = data;
  *size_r = size;
  return 0;
}

enum popkit_result maildir_expunge(struct maildir_mailbox *mailbox,
                                   const struct popkit_request *req,
                                   const uint64_t *indexes, size_t index_count, char *log,
                                   size_t log_size) {
  for (size_t i = 0; i < index_count; i++) {
    if (indexes[i] >= mailbox->count) {
      snprintf(log, log_size, "expunge of message %llu of %zu; nothing deleted",
               (unsigned long long)indexes[i], mailbox->count);
      return POPKIT_PERMFAIL;
    }
  }
  /* A journal this session could not finish earlier is finished first;
   * writing a new one over it would lose its records. */
  int rc = maildir_journal_recover(mailbox, req, log, log_size);
  if (rc != 0)
    return maildir_result_for_errno(rc);
  char *data;
  size_t size;
  rc = build_journal(mailbox, indexes, index_count, &data, &size);
  if (rc != 0) {
    snprintf(log, log_size, "out of memory; nothing deleted");
    return POPKIT_TEMPFAIL;
  }
  if (size == 0) {
    free(data);
    return POPKIT_OK;
  }
  rc = maildir_replace_file(mailbox->dir_fd, MAILDIR_JOURNAL, MAILDIR_JOURNAL_TMP, data,
                            size, 1);
  if (rc != 0) {
    /* The rename may have happened before the directory fsync failed; a
     * journal left in place would be carried out by the next open, after
     * the client was told that nothing was deleted. */
    unlinkat(mailbox->dir_fd, MAILDIR_JOURNAL, 0);
    free(data);
    snprintf(log, log_size, "cannot write %s/%s: %s; nothing deleted", mailbox->path,
             MAILDIR_JOURNAL, strerror(-rc));
    return POPKIT_TEMPFAIL;
  }
  /* Committed: these messages are gone for every later session. */
  for (size_t i = 0; i < index_count; i++) {
    mailbox->messages[indexes[i]].deleted = 1;
    if (mailbox->read_fd >= 0 && mailbox->read_index == indexes[i]) {
      close(mailbox->read_fd);
      mailbox->read_fd = -1;
    }
  }
  rc = apply_journal(mailbox, req, data, size);
  free(data);
  if (rc != 0)
    maildir_log(mailbox->instance, req, POPKIT_LOG_WARNING,
                "the deletion is committed in %s/%s but not finished (%s); the next "
                "open finishes it",
                mailbox->path, MAILDIR_JOURNAL, strerror(-rc));
  return POPKIT_OK;
}
