/* Being written. */
#include "tls.h"
