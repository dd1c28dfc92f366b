/*
 * redis-cache in front of a store: the store operations. Bodies are
 * cached by rc_body.c, listings (with "lock": true) by rc_listing.c, and
 * the optional Redis lock is rc_lock.c. Deliveries and deletions move the
 * mailbox's generation before they report success, so no listing cached
 * before them is used after.
 */
#ifndef POPKIT_RC_STORE_H
#define POPKIT_RC_STORE_H

#include "popkit/module.h"

extern const struct popkit_store_ops rc_store_ops;

#endif
