/* Being written. */
#include "login_guard.h"
