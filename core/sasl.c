/* Being written. */
#include "sasl.h"
