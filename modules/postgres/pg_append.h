/*
 * Delivery (popkit-deliver): one message in one transaction on a
 * connection leased from the pool. BEGIN; the mailbox row if it is new;
 * the message row; its raw bytes as 64 KiB pieces while they arrive, so
 * a message of any size passes through bounded memory; its CRLF size;
 * COMMIT. A delivery that fails or is thrown away leaves nothing: the
 * connection is closed with the transaction open, and PostgreSQL rolls
 * it back.
 */
#ifndef POPKIT_PG_APPEND_H
#define POPKIT_PG_APPEND_H

#include "popkit/module.h"

/* The size of the pieces popkit-deliver writes. */
#define PG_APPEND_PIECE_BYTES 65536

void pg_append_begin(void *instance, struct popkit_store_request *req);
void pg_append_write(void *instance, struct popkit_store_request *req);
void pg_append_finish(void *instance, struct popkit_store_request *req);

#endif
