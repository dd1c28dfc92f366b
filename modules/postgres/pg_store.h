/*
 * The store role on the schema of schema.sql: open (lock, then list in one
 * query), read (a message a piece at a time), expunge (one statement, so
 * one transaction, that also checks the lock is still ours) and close
 * (give the lock back before popkitd answers QUIT).
 */
#ifndef POPKIT_PG_STORE_H
#define POPKIT_PG_STORE_H

#include "popkit/module.h"

void pg_store_open(void *instance, struct popkit_store_request *req);
void pg_store_read(void *instance, struct popkit_store_request *req);
void pg_store_expunge(void *instance, struct popkit_store_request *req);
void pg_store_close(void *instance, struct popkit_store_request *req);

#endif
