/*
 * Message bodies in Redis, for READ. Bodies of messages up to
 * max_body_bytes are cached under the mailbox and the message's unique id:
 * the first RETR gathers the bytes next sends and stores them, later ones
 * are served from Redis without next. A unique id always names the same
 * bytes, so a body needs no invalidation; those of deleted messages leave
 * at QUIT. A session holds a body only while it sends it.
 */
#ifndef POPKIT_RC_BODY_H
#define POPKIT_RC_BODY_H

#include "rc_mailbox.h"

void rc_body_read(void *instance, struct popkit_store_request *req);

/* Removes the bodies of the messages req (an EXPUNGE) deleted. */
void rc_body_forget(struct rc_module *m, const struct rc_mailbox *mb,
                    const struct popkit_store_request *req);

#endif
