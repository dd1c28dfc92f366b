/*
 * Handing a request to next unchanged, and its answer back unchanged: what
 * the decorator does with every call it does not cache.
 */
#ifndef POPKIT_RC_PASS_H
#define POPKIT_RC_PASS_H

#include "popkit/module.h"

void rc_pass(void *instance, struct popkit_request *req);

#endif
