/* Being written. */
#include "base64.h"
