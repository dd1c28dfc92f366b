/*
 * redis-cache in front of a store.
 *   - Bodies of messages up to max_body_bytes are cached under the
 *     mailbox and the message's unique id: the first RETR gathers the
 *     bytes next sends and stores them, later ones are served from Redis.
 *     A unique id always names the same bytes, so a body needs no
 *     invalidation; the ones of deleted messages are removed at QUIT.
 *     A session holds a body only while sending it.
 *   - With "lock": true, a mailbox is also locked in Redis (rc_lock.h),
 *     for stores whose own lock does not reach other hosts.
 *   - OPEN, EXPUNGE, CLOSE and deliveries go to next; the listing is not
 *     cached yet.
 */
#ifndef POPKIT_RC_STORE_H
#define POPKIT_RC_STORE_H

#include "popkit/module.h"

extern const struct popkit_store_ops rc_store_ops;

#endif
