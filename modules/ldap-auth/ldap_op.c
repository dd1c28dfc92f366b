/*
 * Operations: what a caller asks of the directory, and their answer.
 */
#include <stdlib.h>
#include <string.h>

#include "ldap_dir_internal.h"

void ldap_wipe_free(char *s) {
  if (s != NULL) {
    explicit_bzero(s, strlen(s));
    free(s);
  }
}

/* strdup that keeps NULL as NULL; false when out of memory. */
bool ldap_copy_string(char **to, const char *from) {
  *to = from != NULL ? strdup(from) : NULL;
  return from == NULL || *to != NULL;
}

void ldap_op_free(struct ldap_op *op) {
  if (op == NULL)
    return;
  free(op->base);
  free(op->filter);
  free(op->attribute);
  free(op->dn);
  ldap_wipe_free(op->password);
  free(op->first_dn);
  free(op->value);
  free(op);
}

struct ldap_op *ldap_op_search(const char *base, int scope, const char *filter,
                               const char *attribute, ldap_op_done done, void *data) {
  struct ldap_op *op = calloc(1, sizeof *op);
  if (op == NULL)
    return NULL;
  op->kind = LDAP_OP_SEARCH;
  op->scope = scope;
  op->done = done;
  op->data = data;
  if (!ldap_copy_string(&op->base, base) || !ldap_copy_string(&op->filter, filter) ||
      !ldap_copy_string(&op->attribute, attribute)) {
    ldap_op_free(op);
    return NULL;
  }
  return op;
}

struct ldap_op *ldap_op_bind(const char *dn, const char *password, ldap_op_done done,
                             void *data) {
  struct ldap_op *op = calloc(1, sizeof *op);
  if (op == NULL)
    return NULL;
  op->kind = LDAP_OP_BIND;
  op->done = done;
  op->data = data;
  if (!ldap_copy_string(&op->dn, dn) || !ldap_copy_string(&op->password, password)) {
    ldap_op_free(op);
    return NULL;
  }
  return op;
}

/* Runs op's done and frees it. */
void ldap_op_finish(struct ldap_op *op, int code, bool unreachable, const char *text) {
  struct ldap_op_result r = {
      .code = code,
      .unreachable = unreachable,
      .text = text != NULL ? text : "",
      .entries = op->entries,
      .dn = op->first_dn,
      .value = op->value,
      .values = op->values,
  };
  if (op->canceled) {
    r.code = LDAP_USER_CANCELLED;
    r.unreachable = false;
    r.text = "canceled";
  }
  op->done(op, &r);
  ldap_op_free(op);
}

/* A doubly linked list through op->prev/next: the queue, or the
 * operations of one connection. */
void ldap_op_unlink(struct ldap_op **head, struct ldap_op **tail, struct ldap_op *op) {
  if (op->prev != NULL)
    op->prev->next = op->next;
  else
    *head = op->next;
  if (op->next != NULL)
    op->next->prev = op->prev;
  else if (tail != NULL)
    *tail = op->prev;
  op->prev = op->next = NULL;
}
