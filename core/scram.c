/* Being written. */
#include "scram.h"
