/*
 * redis-cache in front of a store. For now every store call goes to next
 * unchanged (its mailbox handles too), so the decorator can already stand
 * in front of any store; the listing and body cache, their invalidation
 * and the Redis mailbox lock come next (issue 5).
 */
#ifndef POPKIT_RC_STORE_H
#define POPKIT_RC_STORE_H

#include "popkit/module.h"

extern const struct popkit_store_ops rc_store_ops;

#endif
