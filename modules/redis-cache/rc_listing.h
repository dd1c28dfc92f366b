/*
 * The listing cache, used with "lock": true only: then the Redis lock is
 * the mailbox's lock, and a login whose listing is in Redis needs next for
 * nothing until a body is missing or messages are deleted; next opens the
 * mailbox then (late, with a request of the decorator's own), and message
 * indexes are matched by unique id. Without the Redis lock, next's OPEN
 * is what locks the mailbox, and it lists it anyway.
 *
 * A listing is stored with the mailbox's generation, a counter that every
 * committed delivery and every deletion moves (INCR) before it reports
 * success. A listing is used only while the generation it was stored with
 * is the current one, and it is stored only if the generation did not move
 * while next listed the mailbox (one script), so a session never gets a
 * listing older than a delivery that finished before it logged in, nor one
 * with messages deleted before it. If Redis cannot be reached to move the
 * generation, a listing cached before may be used until listing_ttl_s.
 */
#ifndef POPKIT_RC_LISTING_H
#define POPKIT_RC_LISTING_H

#include <stdbool.h>

#include "rc_mailbox.h"

/* Asks Redis for the mailbox's listing and generation (kept in
 * mb->generation). outcome: 1 a hit (the listing is in mb and in the OPEN
 * request), 0 a miss, -1 the listing could not be added to the request
 * (no memory; the request holds part of it and must fail). Returns 0 and
 * calls cb later, or a negative errno when Redis is away. */
typedef void (*rc_listed)(struct store_call *call, int outcome);
int rc_listing_fetch(struct store_call *call, rc_listed cb);

/* Stores mb's listing unless the generation moved since it was read. */
void rc_listing_store(struct rc_module *m, const struct rc_mailbox *mb);

/* Moves the mailbox's generation. Returns 0 and calls cb (may be NULL)
 * later, or a negative errno when Redis is away. */
int rc_listing_invalidate(struct rc_module *m, const char *hash, rc_reply_cb cb,
                          void *data);

/* Opens the mailbox at next late (its listing came from Redis), matches
 * indexes, and goes on with then(call); a failure finishes the call. */
void rc_listing_open_next(struct store_call *call, rc_then then);

#endif
