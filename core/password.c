/* Being written. */
#include "password.h"
