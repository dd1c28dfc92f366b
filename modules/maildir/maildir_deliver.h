/*
 * Delivery (APPEND_BEGIN/WRITE/FINISH, used by popkit-deliver), the way the
 * maildir spec wants it: the message is written to tmp/<unique>, fsynced,
 * and only then linked into new/, so a reader never sees half a message
 * and a crash never loses one that was acknowledged. The final name carries
 * ",S=<raw size>,W=<crlf size>" so that no POP3 session has to read the
 * file to size it.
 *
 * Delivery does not take the POP3 lock (Dovecot's does not either): a new
 * file in new/ never disturbs a session's listing, and shows up in the next
 * session's.
 */
#ifndef POPKIT_MAILDIR_DELIVER_H
#define POPKIT_MAILDIR_DELIVER_H

#include <stddef.h>

#include "maildir.h"

struct maildir_delivery;

/* Writes this host's name, as a unique file name needs it, into
 * instance->hostname. */
void maildir_deliver_init_hostname(struct maildir_instance *instance);

/* Starts a delivery to identity's maildir, creating it when missing. */
enum popkit_result maildir_deliver_begin(const struct maildir_instance *instance,
                                         const char *identity,
                                         struct maildir_delivery **delivery_r, char *log,
                                         size_t log_size);

/* Appends raw bytes of the message. After a failure every later write fails
 * too, and the delivery can only be thrown away. */
enum popkit_result maildir_deliver_write(struct maildir_delivery *delivery,
                                         const char *data, size_t size, char *log,
                                         size_t log_size);

/* Makes the message durable and visible (commit) or throws it away, and
 * frees the delivery in both cases. */
enum popkit_result maildir_deliver_finish(struct maildir_delivery *delivery, int commit,
                                          char *log, size_t log_size);

/* Whether a handle is a delivery of this module (its magic). */
int maildir_delivery_is_valid(const struct maildir_delivery *delivery);

#endif
