#include "pg_query.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_text.h"

struct pg_query *pg_query_new(const char *sql, pg_query_cb cb, void *data) {
  struct pg_query *q = calloc(1, sizeof *q);
  if (q == NULL)
    return NULL;
  q->sql = sql;
  q->cb = cb;
  q->data = data;
  return q;
}

static void add_param(struct pg_query *q, const void *data, size_t size, int format) {
  if (q->nparams == PG_QUERY_MAX_PARAMS || size > INT32_MAX) {
    q->out_of_memory = true;
    return;
  }
  char *copy = malloc(size + 1);
  if (copy == NULL) {
    q->out_of_memory = true;
    return;
  }
  memcpy(copy, data, size);
  copy[size] = '\0';
  q->values[q->nparams] = copy;
  q->lengths[q->nparams] = (int)size;
  q->formats[q->nparams] = format;
  q->nparams++;
}

void pg_query_text(struct pg_query *q, const char *value) {
  add_param(q, value, strlen(value), 0);
}

void pg_query_bytes(struct pg_query *q, const void *data, size_t size) {
  add_param(q, data, size, 1);
}

void pg_query_int64(struct pg_query *q, int64_t value) {
  char text[24];
  snprintf(text, sizeof text, "%" PRId64, value);
  pg_query_text(q, text);
}

void pg_query_free(struct pg_query *q) {
  if (q == NULL)
    return;
  for (int i = 0; i < q->nparams; i++) {
    explicit_bzero(q->values[i], (size_t)q->lengths[i]);
    free(q->values[i]);
  }
  free(q);
}

void pg_query_error_text(const PGresult *res, char *buf, size_t size) {
  char message[512];
  const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
  pg_text_one_line(message, sizeof message,
                   primary != NULL ? primary : PQresultErrorMessage(res));
  const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
  if (state != NULL)
    snprintf(buf, size, "%s: %s", state, message);
  else
    snprintf(buf, size, "%s",
             message[0] != '\0' ? message : PQresStatus(PQresultStatus(res)));
}
